//! The `calibrate:` phase through the real binary: per-category choices from synthetic defects
//! on clean validation images, what run.json and calibration.md say, fallbacks and flags, and
//! that no test image takes part.

use std::path::Path;

use anoflow_e2e::{anoflow, write_pipeline};
use serde_json::Value;

/// A cheap scorer (Sobel magnitude) with THR as written and a calibrated copy of it.
fn pipeline(min_images: usize, scale: f64, grid: &str, test_defective: usize) -> String {
    format!(
        "name: calib
nodes:
  data: {{ plugin: synthetic, with: {{ seed: 3, categories: [woven, washer], train: 20, test_good: 3, test_defective: {test_defective} }} }}
  defects: {{ plugin: synthetic-defects, fit: validation, with: {{ seed: 1 }}, inputs: {{ image: data.image }} }}
  grad: {{ plugin: gradient-magnitude, with: {{ scale: {scale} }}, inputs: {{ image: data.image }} }}
  thr: {{ plugin: threshold-mean-std, fit: validation, with: {{ k: 3 }}, inputs: {{ score: grad.score }} }}
  thr_cal: {{ plugin: threshold-mean-std, fit: validation, with: {{ k: 3 }}, inputs: {{ score: grad.score }} }}
  eval: {{ plugin: segmentation-metrics, inputs: {{ gt: data.mask, masks: [thr.mask, thr_cal.mask] }} }}
calibrate:
  defects: defects
  min_images: {min_images}
  search:
    thr_cal: {{ thr_cal.k: {grid} }}
"
    )
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn run(dir: &Path, text: &str, out: &str, extra: &[&str]) -> (anoflow_e2e::Run, Value) {
    let p = write_pipeline(dir, &format!("{out}.yaml"), text);
    let out = dir.join(out);
    let mut args = vec!["run", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    let r = anoflow(dir, &args, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report = read_json(&out.join("run.json"));
    (r, report["run"]["calibration"].clone())
}

fn choices(calibration: &Value) -> Vec<(String, Value)> {
    calibration["groups"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["category"].as_str().unwrap().to_string(), c["chosen"]["thr_cal.k"].clone()))
        .collect()
}

fn f1(results: &Value, source: &str, category: &str) -> f64 {
    results["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| {
            x["category"] == category
                && x["source"] == source
                && x["metric"] == "f1"
                && x["subset"] == "anomalous"
                && x["pooling"] == "pixels"
        })
        .and_then(|x| x["value"].as_f64())
        .unwrap_or_else(|| panic!("no f1 for {source} on {category}"))
}

#[test]
fn calibration_picks_the_best_candidate_per_category_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let grid = "[1, 2, 4, 8, 16]";
    let (r, cal) = run(dir.path(), &pipeline(3, 1.0, grid, 6), "a", &["--no-cache"]);
    assert!(r.stdout.contains("## calibration"), "the choices are printed:\n{}", r.stdout);
    let cats = cal["groups"][0]["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 2, "{cal}");
    for c in cats {
        assert!(c["flag"].is_null(), "{c}");
        let candidates = c["candidates"].as_array().unwrap();
        assert_eq!(candidates.len(), 5);
        assert!(c["clean_images"].as_u64().unwrap() >= 3);
        assert_eq!(c["defect_images"].as_u64().unwrap(), 4 * c["clean_images"].as_u64().unwrap());
        // The chosen one is the best F1 among those within the false-positive bound.
        let best = candidates
            .iter()
            .filter(|s| s["feasible"] == true)
            .map(|s| s["f1"].as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        let chosen = &candidates[c["chosen_index"].as_u64().unwrap() as usize];
        assert_eq!(chosen["f1"].as_f64().unwrap(), best, "{c}");
        assert_eq!(chosen["params"]["thr_cal.k"], c["chosen"]["thr_cal.k"]);
        // Candidates differ: the search is not degenerate on a real scorer.
        let f1s: Vec<f64> = candidates.iter().map(|s| s["f1"].as_f64().unwrap()).collect();
        assert!(f1s.iter().any(|&x| x != f1s[0]), "{f1s:?}");
    }
    let md = std::fs::read_to_string(dir.path().join("a/calibration.md")).unwrap();
    assert!(md.contains("thr_cal.k=") && md.contains("every candidate"), "{md}");

    // The same run again gives the same choices and results; more test images change no choice
    // (calibration never sees the test split), and a cached rerun equals the uncached run.
    let (_, again) = run(dir.path(), &pipeline(3, 1.0, grid, 6), "b", &["--no-cache"]);
    assert_eq!(choices(&cal), choices(&again));
    assert_eq!(cal["groups"][0]["categories"], again["groups"][0]["categories"]);
    let (_, more_test) = run(dir.path(), &pipeline(3, 1.0, grid, 9), "c", &["--no-cache"]);
    assert_eq!(choices(&cal), choices(&more_test));
    let cache = dir.path().join("cache");
    let cache_args = ["--cache", cache.to_str().unwrap()];
    run(dir.path(), &pipeline(3, 1.0, grid, 6), "d", &cache_args);
    let (_, cached) = run(dir.path(), &pipeline(3, 1.0, grid, 6), "e", &cache_args);
    assert_eq!(cal["groups"][0]["categories"], cached["groups"][0]["categories"]);
    assert_eq!(
        std::fs::read(dir.path().join("a/eval/results.json")).unwrap(),
        std::fs::read(dir.path().join("e/eval/results.json")).unwrap()
    );

    // Other defects (another generator seed) are never served from the cache: the cached run
    // equals the uncached one, and differs from the first seed's.
    let reseeded = pipeline(3, 1.0, grid, 6).replace("with: { seed: 1 }", "with: { seed: 2 }");
    let (_, fresh) = run(dir.path(), &reseeded, "f", &["--no-cache"]);
    let (_, from_cache) = run(dir.path(), &reseeded, "g", &cache_args);
    assert_eq!(fresh["groups"][0]["categories"], from_cache["groups"][0]["categories"]);
    assert_ne!(fresh["groups"][0]["categories"], cal["groups"][0]["categories"]);

    // With k as written (3) unavailable, the calibrated mask differs from THR's where k moved.
    let results = read_json(&dir.path().join("a/eval/results.json"));
    for (category, k) in choices(&cal) {
        let (thr, cal_f1) = (f1(&results, "thr.mask", &category), f1(&results, "thr_cal.mask", &category));
        assert!(thr != cal_f1, "{category}: k {k} should change the masks ({thr} vs {cal_f1})");
    }
}

#[test]
fn a_group_with_its_own_tolerance_takes_the_earliest_candidate_within_it() {
    let dir = tempfile::tempdir().unwrap();
    // High k first: on this scorer the best F1 sits at a low k, so a wide tolerance moves the
    // choice away from it.
    let grid = "[16, 8, 4, 2, 1]";
    let text = pipeline(3, 1.0, grid, 3).replace(
        &format!("thr_cal: {{ thr_cal.k: {grid} }}"),
        &format!("thr_cal: {{ thr_cal.k: {grid}, tolerance: 0.9 }}"),
    );
    assert!(text.contains("tolerance: 0.9"), "{text}");
    let (_, cal) = run(dir.path(), &text, "t", &["--no-cache"]);
    assert!(cal["objective"].as_str().unwrap().contains("`thr_cal`: 0.9"), "{cal}");
    let mut moved = false;
    for c in cal["groups"][0]["categories"].as_array().unwrap() {
        let candidates = c["candidates"].as_array().unwrap();
        let feasible: Vec<(usize, f64)> = candidates
            .iter()
            .enumerate()
            .filter(|(_, s)| s["feasible"] == true)
            .map(|(i, s)| (i, s["f1"].as_f64().unwrap()))
            .collect();
        let best = feasible.iter().map(|&(_, f)| f).fold(f64::NEG_INFINITY, f64::max);
        let earliest = feasible.iter().find(|&&(_, f)| f >= best * 0.1).unwrap().0;
        let chosen = c["chosen_index"].as_u64().unwrap() as usize;
        assert_eq!(chosen, earliest, "{c}");
        moved |= candidates[chosen]["f1"].as_f64().unwrap() < best;
    }
    assert!(moved, "a tolerance of 0.9 should pick a candidate below the best somewhere: {cal}");
}

#[test]
fn too_few_clean_images_fall_back_to_the_written_params_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (r, cal) = run(dir.path(), &pipeline(100, 1.0, "[1, 2, 4]", 6), "a", &["--no-cache"]);
    for c in cal["groups"][0]["categories"].as_array().unwrap() {
        assert!(c["flag"].as_str().unwrap().contains("fewer than min_images 100"), "{c}");
        assert_eq!(c["chosen"]["thr_cal.k"], 3.0);
        assert!(c["chosen_index"].is_null());
    }
    assert!(r.stderr.contains("min_images"), "{}", r.stderr);
    let results = read_json(&dir.path().join("a/eval/results.json"));
    for category in ["woven", "washer"] {
        assert_eq!(f1(&results, "thr.mask", category), f1(&results, "thr_cal.mask", category));
    }
}

#[test]
fn constant_score_maps_are_flagged_not_calibrated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cal) = run(dir.path(), &pipeline(3, 0.0, "[1, 2, 4]", 6), "a", &["--no-cache"]);
    for c in cal["groups"][0]["categories"].as_array().unwrap() {
        let flag = c["flag"].as_str().unwrap_or_default();
        assert!(flag.contains("score maps of `grad` are constant"), "{c}");
        assert_eq!(c["chosen"]["thr_cal.k"], 3.0);
    }
}

#[test]
fn a_bad_calibrate_section_is_reported_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline(3, 1.0, "[]", 6).replace("defects: defects\n", "defects: defectz\n  variants: 0\n");
    let p = write_pipeline(dir.path(), "bad.yaml", &text);
    let r = anoflow(dir.path(), &["validate", p.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    let all = r.all();
    assert!(all.contains("variants"), "{all}");
    assert!(all.contains("thr_cal.k"), "the empty grid is named:\n{all}");
    assert!(all.contains("bad.yaml:"), "positions are given:\n{all}");

    let text = pipeline(3, 1.0, "[2]", 6).replace("thr_cal.k:", "thr.k:");
    let p = write_pipeline(dir.path(), "unrelated.yaml", &text);
    let r = anoflow(dir.path(), &["validate", p.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("does not depend on `thr`"), "{}", r.all());
}

#[test]
fn a_later_group_chooses_among_masks_refined_after_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline(3, 1.0, "[2, 4, 8]", 6).replace(
        "  eval:",
        "  refined: { plugin: mask-refine, with: { min_area: 4 }, inputs: { mask: thr_cal.mask, image: data.image } }
  pick: { plugin: select-mask, with: { pick: refined.mask }, inputs: { masks: [refined.mask, thr.mask] } }
  eval:",
    )
    .replace("masks: [thr.mask, thr_cal.mask]", "masks: [thr.mask, thr_cal.mask, pick.mask]")
    + "    pick: { pick.pick: [thr.mask, refined.mask] }\n";
    let (_, cal) = run(dir.path(), &text, "a", &["--no-cache"]);
    let groups = cal["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{cal}");
    for c in groups[1]["categories"].as_array().unwrap() {
        let picked = c["chosen"]["pick.pick"].as_str().unwrap();
        assert!(["thr.mask", "refined.mask"].contains(&picked), "{c}");
        // The refined masks were computed with each category's chosen k: they cannot all be empty.
        let refined = c["candidates"].as_array().unwrap().iter().find(|s| s["params"]["pick.pick"] == "refined.mask");
        assert!(refined.unwrap()["recall"].as_f64().unwrap() > 0.0, "{c}");
    }
    let results = read_json(&dir.path().join("a/eval/results.json"));
    for category in ["woven", "washer"] {
        f1(&results, "pick.mask", category);
    }
}
