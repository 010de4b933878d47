//! PNG / TIFF image decoding from bytes; every decode gives its share of the decode budget back.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = anoflow_imaging::decode_image(data, Path::new("fuzz-input.png")) {
        assert!(e.to_string().contains("fuzz-input.png"), "an error that does not name the file: {e}");
    }
    let budget = anoflow_imaging::budget::global().expect("the default decode budget");
    assert_eq!(budget.reserved(), 0, "a decode kept its share of the decode budget");
});
