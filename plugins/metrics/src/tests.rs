//! Stage-level tests of `segmentation-metrics` through the SDK harness.

use super::*;
use anoflow_sdk::harness::{scratch_dir, ScratchDir, StageHarness};
use anoflow_sdk::prelude::*;
use anoflow_sdk::value::PortValue;
use anoflow_seg_metrics::results::{Results, MEAN};
use anoflow_seg_metrics::testing::{mask, port, realistic, sample_meta, score};
use anoflow_seg_metrics::{ACCUMULATORS_FILE, SAMPLES_FILE};

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

/// Two categories of tiny images whose every figure is computed by hand in the comments.
fn hand_case() -> Vec<(SampleMeta, Vec<PortValue>)> {
    vec![
        // Category a, anomalous 2x3: GT = top-left two pixels (one component of 2).
        (
            sample_meta("a/1", "a", true, 0),
            vec![
                port("gt", "data.mask", mask(2, 3, &[1, 1, 0, 0, 0, 0])),
                port("masks", "thr.mask", mask(2, 3, &[1, 0, 0, 1, 0, 0])),
                port("scores", "scorer.score", score(2, 3, &[0.9, 0.8, 0.1, 0.85, 0.2, 0.3])),
            ],
        ),
        // Category a, good.
        (
            sample_meta("a/2", "a", false, 1),
            vec![
                port("gt", "data.mask", mask(2, 3, &[0; 6])),
                port("masks", "thr.mask", mask(2, 3, &[0, 0, 0, 0, 0, 1])),
                port("scores", "scorer.score", score(2, 3, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
            ],
        ),
        // Category b, one anomalous 1x2 image, predicted perfectly.
        (
            sample_meta("b/1", "b", true, 2),
            vec![
                port("gt", "data.mask", mask(1, 2, &[1, 0])),
                port("masks", "thr.mask", mask(1, 2, &[1, 0])),
                port("scores", "scorer.score", score(1, 2, &[0.2, 0.1])),
            ],
        ),
    ]
}

fn run(params: serde_json::Value, samples: Vec<(SampleMeta, Vec<PortValue>)>) -> (Results, SinkReport, ScratchDir) {
    let mut h = StageHarness::new::<SegmentationMetrics>(params).unwrap();
    for (m, inputs) in samples {
        h.consume(&m, inputs).unwrap();
    }
    let dir = scratch_dir("metrics");
    let report = h.finish(&dir).unwrap();
    let res: Results = serde_json::from_str(&report.json).unwrap();
    (res, report, dir)
}

#[test]
fn hand_computed_figures() {
    let (res, report, dir) = run(serde_json::json!({"save_accumulators": true}), hand_case());
    let g =
        |cat: &str, src: &str, metric: &str, subset: &str, pooling: &str| res.get(cat, src, metric, subset, pooling);
    // Mask, category a. Anomalous image: tp 1, fp 1, fn 1, tn 3. Good image: fp 1, tn 5.
    assert!(close(g("a", "thr.mask", "precision", "anomalous", "pixels"), 0.5));
    assert!(close(g("a", "thr.mask", "recall", "anomalous", "pixels"), 0.5));
    assert!(close(g("a", "thr.mask", "f1", "anomalous", "pixels"), 0.5));
    assert!(close(g("a", "thr.mask", "iou", "anomalous", "pixels"), 1.0 / 3.0));
    // All images pooled: tp 1, fp 2, fn 1 -> P 1/3, R 1/2, F1 2/5, IoU 1/4.
    assert!(close(g("a", "thr.mask", "precision", "all", "pixels"), 1.0 / 3.0));
    assert!(close(g("a", "thr.mask", "f1", "all", "pixels"), 0.4));
    assert!(close(g("a", "thr.mask", "iou", "all", "pixels"), 0.25));
    // Per image: F1 0.5 and 0 (a false alarm on a good image) -> mean 0.25.
    assert!(close(g("a", "thr.mask", "f1", "all", "image-mean"), 0.25));
    assert!(close(g("a", "thr.mask", "fp_area", "good", "pixels"), 1.0 / 6.0));
    assert!(close(g("a", "thr.mask", "good_images_with_fp", "good", "images"), 1.0));
    // Means over categories: F1 (0.5 + 1) / 2; fp_area only defined in a.
    assert!(close(g(MEAN, "thr.mask", "f1", "anomalous", "pixels"), 0.75));
    assert!(close(g(MEAN, "thr.mask", "fp_area", "good", "pixels"), 1.0 / 6.0));
    assert_eq!(res.records.iter().find(|r| r.category == MEAN && r.metric == "fp_area").unwrap().n, 1);

    // Scores, category a. Positives 0.9, 0.8; 10 negatives, of which only 0.85 lies between them.
    // AUROC = (10 + 9) / 20.
    assert!(close(g("a", "scorer.score", "pixel_auroc", "all", "pixels"), 0.95));
    // F1 by threshold: .9 -> 2/3, .85 -> 1/2, .8 -> 4/5 (tp 2, fp 1), lower -> less.
    assert!(close(g("a", "scorer.score", "f1_max", "all", "pixels"), 0.8));
    assert!(close(g("a", "scorer.score", "f1_max_threshold", "all", "pixels"), f64::from(0.8f32)));
    assert!(close(g("a", "scorer.score", "f1_max", "anomalous", "pixels"), 0.8));
    // PRO curve (fpr, pro): (0,0) (0,.5) (.1,.5) (.1,1) (.2,1) (.3,1) ... -> area .05 + .2 = .25, / .3.
    assert!(close(g("a", "scorer.score", "aupro", "all", "pixels"), 0.25 / 0.3));
    // Image AUROC from the map maxima .9 vs .6.
    assert!(close(g("a", "scorer.score", "image_auroc", "all", "images"), 1.0));
    assert_eq!(g("b", "scorer.score", "image_auroc", "all", "images"), None, "b has no good image");
    assert!(close(g(MEAN, "scorer.score", "pixel_auroc", "all", "pixels"), 0.975));
    assert_eq!(res.image_score_origin["scorer.score"], "max");

    // Labels: masks deployable, score figures oracle.
    for r in &res.records {
        let expected = if r.source_kind == "mask" { "deployable" } else { "oracle" };
        assert_eq!(r.regime, expected, "{r:?}");
    }
    // Files and the printed table.
    for f in ["results.json", "results.csv", "results.md", SAMPLES_FILE, ACCUMULATORS_FILE] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let md = report.markdown.as_str();
    assert!(md.contains("| category | thr |"), "{md}");
    assert!(md.contains("| a | 0.500 |"), "{md}");
    assert!(md.contains("| **mean** | 0.750 |"), "{md}");
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(csv.contains("a,thr.mask,mask,f1,anomalous,pixels,deployable,0.5,1\n"), "{csv}");
    assert!(report.files.iter().any(|f| f.ends_with("/results.json")));

    // Per-sample table: a/1 has GT 2 px, map max 0.9, mask tp 1 fp 1 fn 1.
    let rows = std::fs::read_to_string(dir.join(SAMPLES_FILE)).unwrap();
    let expected = [
        "category,sample,defect,anomalous,gt_pixels,source,figure,value",
        "a,a/1,crack,true,2,scorer.score,map_max,0.9",
        "a,a/1,crack,true,2,thr.mask,tp,1",
        "a,a/1,crack,true,2,thr.mask,fp,1",
        "a,a/1,crack,true,2,thr.mask,fn,1",
        "a,a/2,good,false,0,scorer.score,map_max,0.6",
        "a,a/2,good,false,0,thr.mask,tp,0",
        "a,a/2,good,false,0,thr.mask,fp,1",
        "a,a/2,good,false,0,thr.mask,fn,0",
        "b,b/1,crack,true,1,scorer.score,map_max,0.2",
    ];
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[..expected.len()], expected, "{rows}");
    assert!(report.files.iter().any(|f| f.ends_with("/samples.csv")));
}

#[test]
fn paired_image_scores_are_used_and_lone_ones_reported() {
    let mut samples = hand_case();
    // Image scores that rank the good image above the anomalous one: AUROC 0.
    samples[0].1.push(port("image_scores", "scorer.image_score", Value::Scalar(0.1)));
    samples[1].1.push(port("image_scores", "scorer.image_score", Value::Scalar(0.7)));
    samples[2].1.push(port("image_scores", "scorer.image_score", Value::Scalar(0.5)));
    samples[0].1.push(port("image_scores", "other.image_score", Value::Scalar(0.9)));
    samples[1].1.push(port("image_scores", "other.image_score", Value::Scalar(0.2)));
    samples[2].1.push(port("image_scores", "other.image_score", Value::Scalar(0.5)));
    let (res, report, dir) = run(serde_json::json!({}), samples);
    assert_eq!(res.get("a", "scorer.score", "image_auroc", "all", "images"), Some(0.0));
    assert_eq!(res.image_score_origin["scorer.score"], "scorer.image_score");
    assert_eq!(res.get("a", "other.image_score", "image_auroc", "all", "images"), Some(1.0));
    assert!(report.markdown.contains("| other.image_score | 1.000 |"), "{}", report.markdown);
    let rows = std::fs::read_to_string(dir.join(SAMPLES_FILE)).unwrap();
    assert!(rows.contains("a,a/2,good,false,0,scorer.image_score,image_score,0.7\n"), "{rows}");
}

#[test]
fn size_mismatch_names_sample_and_sizes() {
    let mut h = StageHarness::new::<SegmentationMetrics>(serde_json::json!({})).unwrap();
    let inputs = vec![
        port("gt", "data.mask", Mask::zeros(224, 224).unwrap().into()),
        port("masks", "ttt.mask", Mask::zeros(224, 200).unwrap().into()),
    ];
    let err = h.consume(&sample_meta("bottle/test/crack/003", "bottle", true, 0), inputs).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sample `bottle/test/crack/003`"), "{msg}");
    assert!(msg.contains("mask `ttt.mask` is 224x200 (h x w) but its ground truth mask is 224x224"), "{msg}");

    let inputs = vec![
        port("gt", "data.mask", Mask::zeros(2, 2).unwrap().into()),
        port("scores", "s.score", score(2, 2, &[0.0, f32::NAN, 0.0, 0.0])),
    ];
    let err = h.consume(&sample_meta("x/1", "x", true, 0), inputs).unwrap_err();
    assert!(err.to_string().contains("score map `s.score` holds a non-finite value (NaN) at pixel 1"), "{err}");
}

#[test]
fn changing_sources_mid_run_is_an_error() {
    let mut h = StageHarness::new::<SegmentationMetrics>(serde_json::json!({})).unwrap();
    let samples = hand_case();
    let (m, inputs) = samples[0].clone();
    h.consume(&m, inputs).unwrap();
    let inputs = vec![port("gt", "data.mask", mask(2, 3, &[0; 6])), port("masks", "ttt.mask", mask(2, 3, &[0; 6]))];
    let err = h.consume(&sample_meta("a/9", "a", false, 9), inputs).unwrap_err();
    assert!(err
        .to_string()
        .contains("its masks inputs are [ttt.mask], but earlier samples of the category had [thr.mask]"));
}

/// Interleaved shards (`index % 3`, as `--shard i/3` splits a run) merged through the sink's
/// state give every file one run writes, byte for byte: per-image means summed in another
/// order differ in the last digit, and the per-sample table would be out of order.
#[test]
fn interleaved_shards_merge_to_the_same_files_byte_for_byte() {
    let samples = realistic(30, &["bottle", "cable"], 11);
    let params = serde_json::json!({});
    let (_, whole_report, whole_dir) = run(params.clone(), samples.clone());

    let mut states = Vec::new();
    for shard in 0..3 {
        let mut h = StageHarness::new::<SegmentationMetrics>(params.clone()).unwrap();
        for (m, inputs) in samples.iter().filter(|(m, _)| m.index % 3 == shard) {
            h.consume(m, inputs.clone()).unwrap();
        }
        states.push(h.save_state().unwrap());
    }
    let mut merged = StageHarness::new::<SegmentationMetrics>(params).unwrap();
    for state in states {
        merged.load_state(state).unwrap();
    }
    let dir = scratch_dir("metrics-interleaved");
    let report = merged.finish(&dir).unwrap();
    assert_eq!(report.json, whole_report.json, "merged figures must equal one run's, bit for bit");
    for f in ["results.json", "results.csv", "results.md", SAMPLES_FILE] {
        let (a, b) = (std::fs::read(whole_dir.join(f)).unwrap(), std::fs::read(dir.join(f)).unwrap());
        assert!(a == b, "{f} differs between the merged shards and one run");
    }
}

#[test]
fn headline_figures_are_in_the_report_not_in_the_json() {
    let (res, report, _dir) = run(serde_json::json!({}), hand_case());
    let json: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert!(json.get("headline").is_none(), "{json}");
    let names: Vec<&str> = report.headline.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["scorer.score AUPRO", "scorer.score pixel AUROC", "thr.mask F1", "thr.mask F1 (all images)", "thr.mask IoU"]
    );
    let f1 = report.headline.iter().find(|h| h.name.as_str() == "thr.mask F1").unwrap().value;
    assert_eq!(Some(f1), res.get(MEAN, "thr.mask", "f1", "anomalous", "pixels"));
}

#[test]
fn bad_params_are_refused_by_name() {
    let err = StageHarness::new::<SegmentationMetrics>(serde_json::json!({"fpr_limit": 0})).err().unwrap();
    assert!(err.message.contains("param `fpr_limit`: 0 is out of range: expected a value in (0, 1]"), "{err}");
    let err = StageHarness::new::<SegmentationMetrics>(serde_json::json!({"save_accumulator": true})).err().unwrap();
    assert!(err.message.contains("unknown param `save_accumulator` (did you mean `save_accumulators`?)"), "{err}");
}
