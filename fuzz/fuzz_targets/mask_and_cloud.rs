//! Mask and float32 point-cloud readers (they read files: the input goes to a temp file).
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

/// This input's scratch directory, removed when dropped: libFuzzer ends the process with
/// `exit`, so a directory kept for the whole run would never be removed.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("anoflow-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fuzz_target!(|data: &[u8]| {
    let scratch = Scratch::new();
    let dir = &scratch.0;
    let mask = dir.join("mask.png");
    std::fs::write(&mask, data).expect("write input");
    let expected = data.first().map(|&b| (usize::from(b % 8) + 1, usize::from(b / 32) + 1));
    if let Err(e) = anoflow_imaging::read_mask(&mask, expected) {
        assert!(e.to_string().contains("mask.png"), "an error that does not name the file: {e}");
    }
    let cloud = dir.join("cloud.tiff");
    std::fs::write(&cloud, data).expect("write input");
    if let Err(e) = anoflow_imaging::read_tiff_f32_xyz(&cloud) {
        assert!(e.to_string().contains("cloud.tiff"), "an error that does not name the file: {e}");
    }
    let budget = anoflow_imaging::budget::global().expect("the default decode budget");
    assert_eq!(budget.reserved(), 0, "a read kept its share of the decode budget");
});
