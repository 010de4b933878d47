//! The pipeline parser on arbitrary text: YAML loader, pipeline spec, `--set` overrides; a NUL
//! must be an error and a leading byte-order mark must change nothing.
#![no_main]

use std::{collections::BTreeMap, path::Path};

use anoflow_core::{
    spec::{self, Override},
    yaml,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = yaml::parse(&text).map(|n| n.map(|n| n.to_json()));
    // A NUL is always an error: the YAML scanner would otherwise end the text there.
    if text.contains('\0') {
        assert!(parsed.is_err(), "a text with a NUL parsed");
    }
    // A leading byte-order mark changes nothing.
    if !text.starts_with('\u{feff}') {
        let with_bom = format!("\u{feff}{text}");
        assert_eq!(yaml::parse(&with_bom).map(|n| n.map(|n| n.to_json())), parsed, "a leading BOM changed the result");
    }
    let env = BTreeMap::from([("ROOT".to_string(), "/data".to_string())]);
    // The first line doubles as a `--set` override, so override parsing is fuzzed too.
    let overrides: Vec<Override> = text.lines().next().and_then(|l| l.parse().ok()).into_iter().collect();
    match spec::parse(Path::new("fuzz.yaml"), &text, &overrides, &env) {
        Ok(s) => {
            let _ = s.to_json();
        }
        Err(d) => {
            for diag in d.into_vec() {
                assert!(!diag.message.is_empty(), "a diagnostic without a message");
                assert!(diag.to_string().starts_with("fuzz.yaml"), "a diagnostic that does not name the file");
            }
        }
    }
});
