use super::*;

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("ROOT".to_string(), "/data/mvtec".to_string())])
}

fn parse_ok(text: &str, overrides: &[Override]) -> PipelineSpec {
    match parse(Path::new("p.yaml"), text, overrides, &env()) {
        Ok(s) => s,
        Err(d) => panic!("{:?}", d.into_vec()),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("p.yaml"), text, &[], &env()) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.into_vec().iter().map(ToString::to_string).collect(),
    }
}

const PIPE: &str = "name: t
vars: { root: \"${ROOT}\", category: bottle, k: 3 }
nodes:
  data: { plugin: mvtec-ad, with: { root: \"{{root}}/x\", category: \"{{category}}\" } }
  thr: { plugin: threshold-mean-std, fit: validation, with: { k: \"{{k}}\" }, inputs: { score: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { masks: [thr.mask, data.mask] } }
";

#[test]
fn vars_env_and_types() {
    let s = parse_ok(PIPE, &[]);
    assert_eq!(s.name, "t");
    assert_eq!(s.node("data").unwrap().params["root"], "/data/mvtec/x");
    assert_eq!(s.node("thr").unwrap().params["k"], 3, "a whole-string var keeps its type");
    assert_eq!(s.node("thr").unwrap().fit.as_ref().unwrap().0, "validation");
    let eval = s.node("eval").unwrap();
    assert_eq!(eval.inputs[0].edges.len(), 2);
    assert_eq!(
        eval.inputs[0].edges[1],
        EdgeRef { node: "data".into(), port: "mask".into(), pos: Pos { line: 6, col: 69 } }
    );
}

#[test]
fn overrides_apply_to_vars_and_params() {
    let o: Vec<Override> =
        vec!["vars.category=carpet".parse().unwrap(), "thr.k=2.5".parse().unwrap(), "thr.extra.c=1".parse().unwrap()];
    let s = parse_ok(PIPE, &o);
    assert_eq!(s.node("data").unwrap().params["category"], "carpet");
    assert_eq!(s.node("thr").unwrap().params["k"], 2.5);
    assert_eq!(s.node("thr").unwrap().params["extra"]["c"], 1);
    assert!("nodot=1".parse::<Override>().is_err());
}

#[test]
fn structural_errors_reported_together() {
    let errs = errors(
        "name: t\nnodez: {}\nnodes:\n  a: { plugn: x }\n  b: { plugin: y, inputs: { i: nodot } }\n  c: { plugin: z, with: { p: \"{{nope}}\" } }\n",
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("p.yaml:2:1: error: unknown top-level key `nodez` (did you mean `nodes`?)"),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|e| e.contains("node `a`: unknown key `plugn` (did you mean `plugin`?)")));
    assert!(errs.iter().any(|e| e.contains("node `a`: missing `plugin")));
    assert!(errs.iter().any(|e| e.contains("node `b`: input `i`: expected an edge `node.port`")));
    assert!(errs.iter().any(|e| e.contains("node `c`: unknown variable `{{nope}}`")));
}

#[test]
fn variable_errors_point_at_the_var_or_the_param_using_it() {
    let errs = errors("vars:\n  root: \"${NOPE}/x\"\nnodes:\n  a: { plugin: x, with: { q: 1, p: \"{{nope}}/y\" } }\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("p.yaml:2:9: error: environment variable `NOPE` is not set"), "{errs:#?}");
    assert!(errs[1].starts_with("p.yaml:4:33: error: node `a`: unknown variable `{{nope}}`"), "{errs:#?}");
}

#[test]
fn missing_env_is_an_error_unless_defaulted() {
    let errs = errors("nodes:\n  a: { plugin: x, with: { p: \"${NOPE}\" } }\n");
    assert!(errs[0].contains("environment variable `NOPE` is not set"), "{errs:?}");
    let s = parse_ok("nodes:\n  a: { plugin: x, with: { p: \"${NOPE:-d}/x\" } }\n", &[]);
    assert_eq!(s.nodes[0].params["p"], "d/x");
}

#[test]
fn names_that_leave_the_runs_directory_are_refused_at_their_position() {
    for bad in ["/tmp/x", "../..", "..", ".", "a/b", "", "a\\b", "tab\there"] {
        let text = format!("name: \"{}\"\nnodes:\n  a: {{ plugin: x }}\n", bad.escape_default());
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{bad:?}: {errs:#?}");
        assert!(errs[0].starts_with("p.yaml:1:7: error: `name`"), "{bad:?}: {errs:#?}");
        assert!(errs[0].contains("one path component"), "{bad:?}: {errs:#?}");
    }
    let errs = errors("name: ../../etc\nnodes:\n  a: { plugin: x }\n");
    assert!(errs[0].starts_with("p.yaml:1:7: error: `name` \"../../etc\""), "{errs:#?}");
    assert_eq!(parse_ok("name: run-1.v2_x\nnodes:\n  a: { plugin: x }\n", &[]).name, "run-1.v2_x");
}

#[test]
fn a_name_from_the_file_stem_is_cleaned() {
    assert_eq!(name_from_file(Path::new("dir/my pipeline.yaml")), "my_pipeline");
    assert_eq!(name_from_file(Path::new("..yaml")), "pipeline");
    assert_eq!(name_from_file(Path::new("/")), "pipeline");
    assert_eq!(name_from_file(Path::new("a/qc-v2.yaml")), "qc-v2");
}

#[test]
fn empty_and_non_yaml_files() {
    assert!(errors("")[0].contains("the pipeline file is empty"));
    assert!(errors("nodes: [unclosed\n")[0].contains("not valid YAML"));
    assert!(errors("just a string")[0].contains("expected a mapping"));
}

#[test]
fn a_calibration_group_may_set_its_own_tolerance() {
    let text = format!(
        "{PIPE}calibrate:\n  defects: data\n  tolerance: 0.05\n  search:\n    thr: {{ thr.k: [2, 3], tolerance: 0.15 }}\n    eval: {{ thr.k: [4] }}\n"
    );
    let s = parse_ok(&text, &[]);
    let c = s.calibrate.as_ref().unwrap();
    assert_eq!(c.tolerance, 0.05);
    assert_eq!(c.groups[0].tolerance, Some(0.15));
    assert_eq!(c.groups[0].axes.len(), 1, "`tolerance` is not an axis");
    assert_eq!(c.groups[1].tolerance, None);
    assert_eq!(s.to_json()["calibrate"]["search"]["thr"]["tolerance"], 0.15);

    let bad = format!("{PIPE}calibrate:\n  defects: data\n  search:\n    thr: {{ thr.k: [2, 3], tolerance: 1.5 }}\n");
    let e = errors(&bad);
    assert!(e.iter().any(|m| m.contains("`tolerance`: expected a fraction in [0, 1), found 1.5")), "{e:?}");
}
