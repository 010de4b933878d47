//! A sample that arrives without one source's value (its producer failed on it under
//! `--keep-going`) counts as missing for that source only; a value the sink cannot use is
//! refused naming its edge, so the host can blame the node that produced it.

use super::*;
use anoflow_sdk::harness::{scratch_dir, StageHarness};
use anoflow_sdk::prelude::*;
use anoflow_sdk::value::PortValue;
use anoflow_seg_metrics::results::{self, Results, MEAN};
use anoflow_seg_metrics::testing::{mask, port, sample_meta, score};

const EDGES: &[(&str, &str)] =
    &[("gt", "data.mask"), ("masks", "good.mask"), ("masks", "flaky.mask"), ("scores", "scorer.score")];

/// Sample `i` of category `c` (2x2, GT top-left pixel on anomalous ones), with `flaky.mask`
/// and `scorer.score` only when asked.
fn sample(i: u64, flaky: bool, scored: bool) -> (SampleMeta, Vec<PortValue>) {
    let anomalous = i.is_multiple_of(2);
    let gt = if anomalous { [1, 0, 0, 0] } else { [0; 4] };
    let mut inputs = vec![port("gt", "data.mask", mask(2, 2, &gt)), port("masks", "good.mask", mask(2, 2, &gt))];
    if flaky {
        inputs.push(port("masks", "flaky.mask", mask(2, 2, &[1, 1, 0, 0])));
    }
    if scored {
        inputs.push(port("scores", "scorer.score", score(2, 2, &[0.9, 0.1, 0.2, 0.3])));
    }
    (sample_meta(&format!("c/{i}"), "c", anomalous, i), inputs)
}

fn finish(h: &mut StageHarness) -> Results {
    let dir = scratch_dir("metrics-missing");
    serde_json::from_str(&h.finish(&dir).unwrap().json).unwrap()
}

fn n_of(res: &Results, source: &str, metric: &str) -> u64 {
    res.records
        .iter()
        .find(|r| r.category == "c" && r.source == source && r.metric == metric && r.subset == "all")
        .map(|r| r.n)
        .unwrap()
}

#[test]
fn a_sample_without_one_mask_counts_as_missing_for_that_source_only() {
    let mut h = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
    for (i, flaky) in [(0, true), (1, false), (2, true), (3, false)] {
        let (m, inputs) = sample(i, flaky, true);
        h.consume(&m, inputs).unwrap();
    }
    let res = finish(&mut h);
    assert_eq!(res.mask_sources, ["good.mask", "flaky.mask"]);
    assert_eq!(n_of(&res, "good.mask", "f1"), 4, "the other source keeps every sample");
    assert_eq!(n_of(&res, "flaky.mask", "f1"), 2, "the failing source is figured on the samples it has");
    assert_eq!(res.get("c", "good.mask", "f1", "anomalous", "pixels"), Some(1.0));
    assert_eq!(res.get("c", "flaky.mask", "precision", "anomalous", "pixels"), Some(0.5));
    assert_eq!(res.missing["flaky.mask"]["c"], 2);
    assert!(!res.missing.contains_key("good.mask"));
    let md = results::markdown(&res);
    assert!(md.contains("| flaky.mask | c | 2 |"), "{md}");
}

#[test]
fn a_source_missing_on_every_sample_keeps_its_column() {
    let mut h = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
    for i in 0..3 {
        let (m, inputs) = sample(i, false, false);
        h.consume(&m, inputs).unwrap();
    }
    let res = finish(&mut h);
    assert_eq!(res.mask_sources, ["good.mask", "flaky.mask"]);
    assert_eq!(res.score_sources, ["scorer.score"]);
    assert_eq!(res.get(MEAN, "flaky.mask", "f1", "all", "pixels"), None, "no figure without a sample");
    assert_eq!(res.missing["flaky.mask"]["c"], 3);
    assert_eq!(res.missing["scorer.score"]["c"], 3);
    assert_eq!(n_of(&res, "scorer.score", "pixel_auroc"), 0);
}

#[test]
fn a_score_map_missing_on_some_samples_leaves_them_out_of_its_figures() {
    let mut h = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
    for (i, scored) in [(0, true), (1, true), (2, false)] {
        let (m, inputs) = sample(i, true, scored);
        h.consume(&m, inputs).unwrap();
    }
    let res = finish(&mut h);
    assert_eq!(n_of(&res, "scorer.score", "pixel_auroc"), 2);
    assert_eq!(n_of(&res, "scorer.score", "image_auroc"), 2);
    assert_eq!(res.missing["scorer.score"]["c"], 1);
    assert_eq!(n_of(&res, "flaky.mask", "f1"), 3);
}

#[test]
fn a_value_of_the_wrong_size_is_refused_naming_its_edge_and_leaves_no_trace() {
    let mut h = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
    let (m, mut inputs) = sample(0, false, true);
    inputs.push(port("masks", "flaky.mask", mask(1, 2, &[1, 0])));
    let err = h.consume(&m, inputs.clone()).unwrap_err();
    assert_eq!(err.input, "flaky.mask");
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(err.message.contains("mask `flaky.mask` is 1x2 (h x w) but its ground truth mask is 2x2"), "{err}");
    // The host offers the sample again without the refused value.
    inputs.pop();
    h.consume(&m, inputs).unwrap();
    let res = finish(&mut h);
    assert_eq!(n_of(&res, "good.mask", "f1"), 1, "the refused attempt added nothing");
    assert_eq!(res.missing["flaky.mask"]["c"], 1);
}

#[test]
fn missing_values_survive_the_state_round_trip_and_merging() {
    let shard = |ids: &[(u64, bool)]| {
        let mut h = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
        for &(i, flaky) in ids {
            let (m, inputs) = sample(i, flaky, i != 3);
            h.consume(&m, inputs).unwrap();
        }
        h
    };
    let mut whole = shard(&[(0, true), (1, false), (2, true), (3, true)]);
    let (a, b) = (shard(&[(0, true), (2, true)]), shard(&[(1, false), (3, true)]));
    let mut merged = StageHarness::with_edges::<SegmentationMetrics>(serde_json::json!({}), EDGES).unwrap();
    merged.load_state(a.save_state().unwrap()).unwrap();
    merged.load_state(b.save_state().unwrap()).unwrap();
    let (w, m) = (finish(&mut whole), finish(&mut merged));
    assert_eq!(w, m);
    assert_eq!(m.missing["flaky.mask"]["c"], 1);
    assert_eq!(m.missing["scorer.score"]["c"], 1);
}
