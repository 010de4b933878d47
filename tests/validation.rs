//! `anoflow validate` on real plugin libraries: one test per class of mistake, and one file
//! with several mistakes reported together with their positions.

use anoflow_e2e::{anoflow, write_pipeline};

const GOOD: &str = "name: v
nodes:
  data: { plugin: synthetic, with: { seed: 1 } }
  grad: { plugin: gradient-magnitude, with: { scale: 2.0 }, inputs: { image: data.image } }
  thr:  { plugin: threshold-mean-std, fit: validation, with: { k: 3 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
";

/// Validates `text` (GOOD with one replacement) and returns (exit code, stderr).
fn validate(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.yaml", text);
    let run = anoflow(dir.path(), &["validate", p.to_str().unwrap()], &[]);
    (run.code, run.all())
}

fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test bug: `{from}` not in the base pipeline");
    GOOD.replacen(from, to, 1)
}

#[test]
fn the_base_pipeline_is_valid() {
    let (code, out) = validate(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (4 nodes, source `data`"), "{out}");
}

#[test]
fn unknown_plugin_with_suggestion() {
    let (code, out) = validate(&with("plugin: gradient-magnitude", "plugin: gradient-magnitud"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("p.yaml:4:19: error: node `grad`: unknown plugin stage `gradient-magnitud` (did you mean `gradient-magnitude`?)"), "{out}");
}

#[test]
fn unknown_param_wrong_type_and_missing() {
    let (code, out) = validate(&with("with: { scale: 2.0 }", "with: { scal: 2.0 }"));
    assert_eq!(code, 1);
    assert!(out.contains("p.yaml:4:47: error: node `grad`: unknown param `scal` (did you mean `scale`?)"), "{out}");
    let (_, out) = validate(&with("with: { k: 3 }", "with: { k: high }"));
    assert!(out.contains("node `thr`: param `k`: expected number, found string \"high\""), "{out}");
}

#[test]
fn unknown_and_unconnected_ports() {
    let (code, out) = validate(&with("inputs: { image: data.image }", "inputs: { img: data.image }"));
    assert_eq!(code, 1);
    assert!(out.contains("node `grad`: stage `gradient-magnitude` has no input port `img`"), "{out}");
    assert!(
        out.contains("node `grad`: required input `image` (image) of stage `gradient-magnitude` is not connected"),
        "{out}"
    );
    let (_, out) = validate(&with("image: data.image", "image: data.picture"));
    assert!(out.contains("node `data` (stage `synthetic`) has no output `picture`"), "{out}");
}

#[test]
fn type_mismatch_on_an_edge() {
    let (code, out) = validate(&with("score: grad.score", "score: data.image"));
    assert_eq!(code, 1);
    assert!(out.contains("type mismatch on edge data.image -> thr.score: expected score-map, found image"), "{out}");
}

#[test]
fn fit_split_the_source_does_not_provide() {
    let (code, out) = validate(&with("fit: validation", "fit: calibration"));
    assert_eq!(code, 1);
    assert!(out.contains("node `thr`: fit split `calibration` is not provided by source `data`; it provides: train, validation, test"), "{out}");
    let (_, out) = validate(&with("fit: validation, ", ""));
    assert!(out.contains("node `thr`: stage `threshold-mean-std` is fitted: say which split fits it"), "{out}");
}

#[test]
fn cycles_are_shown_as_chains() {
    let text = "name: c
nodes:
  data: { plugin: synthetic }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  b1: { plugin: gaussian-blur, inputs: { score: b3.score } }
  b2: { plugin: gaussian-blur, inputs: { score: b1.score } }
  b3: { plugin: gaussian-blur, inputs: { score: b2.score } }
";
    let (code, out) = validate(text);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("p.yaml:5:3: error: cycle: b1 -> b2 -> b3 -> b1"), "{out}");
}

#[test]
fn several_mistakes_reported_together_in_file_order() {
    let text = "name: many
nodes:
  data: { plugin: synthetic, with: { sed: 1 } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.imag } }
  thr:  { plugin: threshold-mean-std, fit: tuning, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metric, inputs: { gt: data.mask } }
";
    let (code, out) = validate(text);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("p.yaml:3:38") && lines[0].contains("unknown param `sed` (did you mean `seed`?)"),
        "{out}"
    );
    assert!(
        lines[1].contains("p.yaml:4:56") && lines[1].contains("has no output `imag` (did you mean `image`?)"),
        "{out}"
    );
    assert!(lines[2].contains("p.yaml:5:44") && lines[2].contains("fit split `tuning`"), "{out}");
    assert!(lines[3].contains("p.yaml:6:19") && lines[3].contains("did you mean `segmentation-metrics`?"), "{out}");
    assert!(out.contains("4 errors found"), "{out}");
}

#[test]
fn broken_files() {
    let (code, out) = validate("");
    assert_eq!(code, 1);
    assert!(out.contains("the pipeline file is empty"), "{out}");
    let (_, out) = validate("nodes: { data: [unclosed\n");
    assert!(out.contains("p.yaml:") && out.contains("not valid YAML"), "{out}");
    let (_, out) = validate(&format!("{GOOD}stages: {{}}\n"));
    assert!(out.contains("unknown top-level key `stages`"), "{out}");
    let (_, out) = validate(&format!("{GOOD}  grad: {{ plugin: gradient-magnitude }}\n"));
    assert!(
        out.contains("p.yaml:7:3: error: not valid YAML: duplicate key `grad` (first defined at line 4, column 3)"),
        "{out}"
    );
    let (_, out) = validate(&with("gt: data.mask", "gt: dta.mask"));
    assert!(out.contains("input `gt`: no node `dta` (did you mean `data`?)"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let run = anoflow(dir.path(), &["validate", "missing.yaml"], &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("missing.yaml: error: cannot read the pipeline file"), "{}", run.stderr);
}

#[test]
fn overrides_are_checked_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.yaml", GOOD);
    let run =
        anoflow(dir.path(), &["validate", p.to_str().unwrap(), "--set", "thr.k=\"x\"", "--set", "grd.scale=1"], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("--set grd.scale: no node `grd` (did you mean `grad`?)"), "{}", run.stderr);
}

// ---- Issue 15: param ranges and choices, positions of source and variable errors ----------

const BLUR: &str = "name: r
nodes:
  data: { plugin: synthetic, with: { size: 64, categories: [tiles] } }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  blur: { plugin: gaussian-blur, with: { sigma: 4 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, scores: [blur.score] } }
";

fn blur_with(from: &str, to: &str) -> String {
    assert!(BLUR.contains(from), "test bug: `{from}` not in the pipeline");
    BLUR.replacen(from, to, 1)
}

#[test]
fn a_param_out_of_its_declared_range_is_an_error_at_its_position() {
    let (code, out) = validate(&blur_with("sigma: 4", "sigma: -3"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "p.yaml:5:42: error: node `blur`: param `sigma`: -3 is out of range: expected a value in [0, 1000] (stage `gaussian-blur`)"
        ),
        "{out}"
    );
    let (code, out) = validate(&blur_with("size: 64", "size: 10"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "p.yaml:3:38: error: node `data`: param `size`: 10 is out of range: expected a value in [64, 4096]"
        ),
        "{out}"
    );
    let (code, out) = validate(&blur_with("categories: [tiles]", "categories: [tiles, zebra]"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("p.yaml:3:48: error: node `data`: param `categories`: `zebra` is not one of woven, grain, tiles,"),
        "{out}"
    );
}

#[test]
fn values_on_the_bounds_pass() {
    for (from, to) in [("sigma: 4", "sigma: 0"), ("sigma: 4", "sigma: 1000"), ("size: 64", "size: 4096")] {
        let (code, out) = validate(&blur_with(from, to));
        assert_eq!(code, 0, "{to}: {out}");
    }
    let (code, out) = validate(&blur_with(
        "eval: { plugin: segmentation-metrics,",
        "eval: { plugin: segmentation-metrics, with: { fpr_limit: 1.0 },",
    ));
    assert_eq!(code, 0, "{out}");
    let (code, out) = validate(&blur_with(
        "eval: { plugin: segmentation-metrics,",
        "eval: { plugin: segmentation-metrics, with: { fpr_limit: 0 },",
    ));
    assert_eq!(code, 1, "an exclusive bound is refused: {out}");
    assert!(out.contains("param `fpr_limit`: 0 is out of range: expected a value in (0, 1]"), "{out}");
}

#[test]
fn schema_and_inspect_show_the_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let r = anoflow(dir.path(), &["schema"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let schema: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let variants = schema["properties"]["nodes"]["additionalProperties"]["oneOf"].as_array().unwrap();
    let params = |stage: &str| {
        variants.iter().find(|v| v["title"] == stage).unwrap_or_else(|| panic!("{stage} in schema"))["properties"]
            ["with"]["properties"]
            .clone()
    };
    let blur = params("gaussian-blur");
    assert_eq!(blur["sigma"]["minimum"].as_f64(), Some(0.0), "{blur}");
    assert_eq!(blur["sigma"]["maximum"].as_f64(), Some(1000.0), "{blur}");
    let metrics = params("segmentation-metrics");
    assert_eq!(metrics["fpr_limit"]["exclusiveMinimum"].as_f64(), Some(0.0), "{metrics}");
    let synth = params("synthetic");
    assert!(synth["categories"]["items"]["enum"].as_array().unwrap().iter().any(|c| c == "tiles"), "{synth}");

    let r = anoflow(dir.path(), &["plugins", "inspect", "gaussian-blur"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("- `sigma` (number, default 4.0, in [0, 1000]): "), "{}", r.stdout);
    let r = anoflow(dir.path(), &["plugins", "inspect", "patchcore"], &[]);
    assert!(r.stdout.contains("- `coreset` (number, default 0.1, in (0, 1]): "), "{}", r.stdout);
}

#[test]
fn several_sources_are_an_error_at_the_second_one() {
    let (code, out) = validate(&format!("{GOOD}  data2: {{ plugin: synthetic }}\n"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "p.yaml:7:3: error: node `data2`: a pipeline has exactly one source node, found 2: `data` (line 3), `data2` (line 7)"
        ),
        "{out}"
    );
    let (code, out) =
        validate("name: n\nnodes:\n  grad: { plugin: gradient-magnitude, inputs: { image: grad.score } }\n");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("p.yaml:3:3: error: the pipeline has no source node"), "{out}");
}

#[test]
fn variable_errors_point_at_the_var_or_the_param_using_it() {
    let text = GOOD.replacen("name: v\n", "name: v\nvars: { root: \"${ANOFLOW_TEST_UNSET_VAR}/x\" }\n", 1);
    let (code, out) = validate(&text.replacen("scale: 2.0", "scale: \"{{scael}}\"", 1));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("p.yaml:2:15: error: environment variable `ANOFLOW_TEST_UNSET_VAR` is not set"), "{out}");
    assert!(out.contains("p.yaml:5:47: error: node `grad`: unknown variable `{{scael}}`"), "{out}");
}
