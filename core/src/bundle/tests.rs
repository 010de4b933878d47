use super::*;

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT.into(),
        anoflow: "0".into(),
        sdk_abi: 1,
        data_contract: 1,
        pipeline: PIPELINE_FILE.into(),
        name: "p".into(),
        input: Input { node: "data".into(), channels: Some(3), geometry: Some(Geometry { resize: 256, crop: 224 }) },
        outputs: Outputs {
            mask: OutputRef { node: "thr".into(), port: "mask".into() },
            score: None,
            image_score: None,
        },
        categories: vec!["a".into()],
        category_settings: BTreeMap::new(),
        states: Vec::new(),
        plugins: Vec::new(),
        models: Vec::new(),
        metrics: Some(json!({"eval": {"f1": 0.5}})),
        evaluated_by: None,
        files: BTreeMap::new(),
        digest: String::new(),
    }
}

#[test]
fn the_digest_sees_any_edit_of_the_manifest() {
    let mut m = manifest();
    m.digest = m.computed_digest();
    let text = serde_json::to_string_pretty(&m).unwrap();
    let back: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(back.digest, back.computed_digest(), "a round trip keeps the digest");
    let edited: Manifest = serde_json::from_str(&text.replace("0.5", "0.9")).unwrap();
    assert_ne!(edited.digest, edited.computed_digest());
}

#[test]
fn bundle_paths_stay_inside_the_bundle() {
    assert!(inside_bundle("states/scorer/pill.state"));
    assert!(!inside_bundle("../outside.state"));
    assert!(!inside_bundle("states/../../x"));
    assert!(!inside_bundle("/etc/passwd"));
}

#[test]
fn only_the_value_naming_the_file_is_rewritten() {
    let base = Path::new("/p");
    let named = |param: &str, path: &str, model: Option<&str>| provenance::NamedPath {
        param: param.into(),
        model: model.map(str::to_string),
        is_model: param == "model",
        path: PathBuf::from(path),
        is_dir: false,
    };
    let mut params: Map<String, Json> = serde_json::from_value(json!({
        "model": "mobilenet_v2", "maps": ["a.bin", "b.bin"], "file": "x/y.bin", "k": 3
    }))
    .unwrap();
    rewrite_param(&mut params, &named("model", "/m/net.onnx", Some("mobilenet_v2")), base, "mobilenet_v2");
    rewrite_param(&mut params, &named("maps", "/p/b.bin", None), base, "files/n/maps/b.bin");
    rewrite_param(&mut params, &named("file", "/p/x/y.bin", None), base, "files/n/file/y.bin");
    rewrite_param(&mut params, &named("file", "/p/other.bin", None), base, "never");
    assert_eq!(
        Json::Object(params),
        json!({"model": "mobilenet_v2", "maps": ["a.bin", "files/n/maps/b.bin"], "file": "files/n/file/y.bin", "k": 3})
    );
}

#[test]
fn output_refs_parse_node_and_port() {
    assert_eq!(OutputRef::parse("best.mask"), Some(OutputRef { node: "best".into(), port: "mask".into() }));
    assert_eq!(OutputRef::parse("best"), None);
    assert_eq!(OutputRef::parse(".mask"), None);
}
