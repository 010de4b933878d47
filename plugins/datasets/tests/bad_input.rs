//! Bad data through the sources, one case per test, each checking the message: the cases of
//! issue 9 that `src/disk_tests.rs` does not already cover (it covers truncated PNG images,
//! truncated point-cloud TIFFs, grey and wrongly sized MVTec AD masks, missing masks and
//! point clouds, and empty train/validation splits).

use std::path::Path;

use anoflow_plugin_datasets::{write_mvtec_3d, write_mvtec_ad, Folder, Mvtec3d, MvtecAd, Synthetic};
use anoflow_scene::{Category, SynthConfig};
use anoflow_sdk::harness::{scratch_dir, ScratchDir, StageHarness};
use anoflow_sdk::prelude::*;
use serde_json::json;

fn cfg(categories: Vec<Category>) -> SynthConfig {
    SynthConfig { seed: 5, categories, train: 4, test_good: 1, test_defective: 2, size: 64, ..SynthConfig::default() }
}

fn ad_root(tag: &str) -> ScratchDir {
    let dir = scratch_dir(&format!("bad-input-{tag}"));
    write_mvtec_ad(&cfg(vec![Category::Tiles]), &dir).unwrap();
    dir
}

fn ad3_root(tag: &str) -> ScratchDir {
    let dir = scratch_dir(&format!("bad-input-{tag}"));
    write_mvtec_3d(&SynthConfig { xyz: true, ..cfg(vec![Category::Washer]) }, &dir).unwrap();
    dir
}

fn err_of<T>(r: StageResult<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.message.to_string(),
    }
}

/// Loads the test sample whose id ends with `suffix` and returns the error.
fn load_error(h: &StageHarness, split: &str, suffix: &str) -> String {
    let list = h.list(split).unwrap();
    let s = list.iter().find(|s| s.id.ends_with(suffix)).unwrap_or_else(|| panic!("no sample `{suffix}` in {list:?}"));
    err_of(h.load(s))
}

fn ad(root: &Path) -> StageHarness {
    StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap()
}

/// The first defect directory of a category's test split (its name depends on the seed).
fn first_defect(test_dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(test_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "good")
        .collect();
    names.sort();
    names.remove(0)
}

// ---- corrupt images ----

#[test]
fn bit_flipped_png_is_named() {
    // A flip inside the pixel data keeps the length and breaks the chunk checksum.
    let root = ad_root("flip");
    let img = root.join("tiles/test/good/000.png");
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&img, &bytes).unwrap();
    let err = load_error(&ad(&root), "test", "test/good/000");
    assert!(err.contains("tiles/test/good/000.png") && err.contains("not a valid PNG file"), "{err}");
}

#[test]
fn empty_image_file_is_named() {
    let root = ad_root("empty-file");
    let img = root.join("tiles/test/good/000.png");
    std::fs::write(&img, b"").unwrap();
    let err = load_error(&ad(&root), "test", "test/good/000");
    assert!(err.contains("tiles/test/good/000.png") && err.contains("nothing (empty file)"), "{err}");
}

#[test]
fn jpeg_named_png_is_named() {
    let root = ad_root("jpeg");
    let img = root.join("tiles/train/good/001.png");
    std::fs::write(&img, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00").unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "validation_fraction": 0.0})).unwrap();
    let err = load_error(&h, "train", "train/good/001");
    assert!(
        err.contains("train/good/001.png") && err.contains("expected PNG or TIFF") && err.contains("ff d8 ff e0"),
        "{err}"
    );
}

#[test]
fn corrupt_tiff_image_through_the_folder_source_is_named() {
    let root = scratch_dir("bad-input-folder-tiff");
    let (train, test) = (root.join("train"), root.join("test/good"));
    std::fs::create_dir_all(&train).unwrap();
    std::fs::create_dir_all(&test).unwrap();
    for i in 0..3 {
        anoflow_imaging::write_png_u8(train.join(format!("{i}.png")), 64, 64, 3, &vec![90; 64 * 64 * 3]).unwrap();
    }
    // A real TIFF cut in half: the header parses, the strip does not.
    let cloud = PointCloud::new(64, 64, vec![1.5; 64 * 64 * 3]).unwrap();
    let tiff = anoflow_imaging::encode_tiff_f32_xyz(&cloud).unwrap();
    std::fs::write(test.join("a.tif"), &tiff[..tiff.len() / 2]).unwrap();
    let h = StageHarness::new::<Folder>(json!({
        "train": [train.to_str().unwrap()], "test": [root.join("test").to_str().unwrap()]
    }))
    .unwrap();
    let err = load_error(&h, "test", "good/a.tif");
    assert!(err.contains("test/good/a.tif") && err.contains("TIFF"), "{err}");
}

#[test]
fn png_saved_as_point_cloud_is_named() {
    let root = ad3_root("xyz-png");
    let xyz = root.join("washer/train/good/xyz/000.tiff");
    std::fs::write(&xyz, anoflow_imaging::encode_png(64, 64, 3, &vec![7u8; 64 * 64 * 3]).unwrap()).unwrap();
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = load_error(&h, "train", "train/good/000");
    assert!(err.contains("xyz/000.tiff") && err.contains("not a valid TIFF file (missing TIFF header)"), "{err}");
}

// ---- masks ----

#[test]
fn truncated_mask_is_named() {
    let root = ad_root("mask-cut");
    let defect = first_defect(&root.join("tiles/test"));
    let mask = root.join(format!("tiles/ground_truth/{defect}/000_mask.png"));
    let bytes = std::fs::read(&mask).unwrap();
    std::fs::write(&mask, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = load_error(&ad(&root), "test", &format!("test/{defect}/000"));
    assert!(err.contains(&format!("{defect}/000_mask.png")) && err.contains("not a valid PNG"), "{err}");
}

#[test]
fn colour_mask_is_named() {
    let root = ad_root("mask-colour");
    let defect = first_defect(&root.join("tiles/test"));
    let mask = root.join(format!("tiles/ground_truth/{defect}/000_mask.png"));
    let rgb: Vec<u8> = (0..64 * 64).flat_map(|i| if i % 7 == 0 { [255, 0, 0] } else { [0, 0, 0] }).collect();
    anoflow_imaging::write_png_u8(&mask, 64, 64, 3, &rgb).unwrap();
    let err = load_error(&ad(&root), "test", &format!("test/{defect}/000"));
    assert!(err.contains("000_mask.png") && err.contains("colour mask") && err.contains("grey mask"), "{err}");
}

#[test]
fn non_binary_3d_gt_is_named() {
    let root = ad3_root("gt-grey");
    let defect = first_defect(&root.join("washer/test"));
    let gt = root.join(format!("washer/test/{defect}/gt/000.png"));
    let grey: Vec<u8> = (0..64 * 64).map(|i| [0u8, 64, 255][i % 3]).collect();
    anoflow_imaging::write_png_u8(&gt, 64, 64, 1, &grey).unwrap();
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = load_error(&h, "test", &format!("test/{defect}/000"));
    assert!(err.contains(&format!("{defect}/gt/000.png")) && err.contains("not binary") && err.contains("64"), "{err}");
}

#[test]
fn wrong_size_mask_through_the_folder_source_is_named() {
    let root = scratch_dir("bad-input-folder-mask");
    for d in ["train", "test/bad", "masks/bad"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..3 {
        anoflow_imaging::write_png_u8(root.join(format!("train/{i}.png")), 64, 64, 3, &vec![90; 64 * 64 * 3]).unwrap();
    }
    anoflow_imaging::write_png_u8(root.join("test/bad/x.png"), 64, 64, 3, &vec![90; 64 * 64 * 3]).unwrap();
    anoflow_imaging::write_png_u8(root.join("masks/bad/x_mask.png"), 64, 32, 1, &vec![255; 64 * 32]).unwrap();
    let h = StageHarness::new::<Folder>(json!({
        "train": [root.join("train").to_str().unwrap()], "test": [root.join("test").to_str().unwrap()],
        "masks": root.join("masks").to_str().unwrap()
    }))
    .unwrap();
    let err = load_error(&h, "test", "bad/x.png");
    assert!(err.contains("x_mask.png") && err.contains("mask is 64x32") && err.contains("expected 64x64"), "{err}");
}

#[test]
fn mask_removed_after_listing_is_named() {
    // Listing checks that masks exist; a mask deleted between listing and loading (a dataset
    // being synced) is an error naming the missing file, not a panic or a silent zero mask.
    let root = ad_root("mask-gone");
    let defect = first_defect(&root.join("tiles/test"));
    let h = ad(&root);
    let list = h.list("test").unwrap();
    let mask = root.join(format!("tiles/ground_truth/{defect}/000_mask.png"));
    std::fs::remove_file(&mask).unwrap();
    let s = list.iter().find(|s| s.id.ends_with(&format!("test/{defect}/000"))).unwrap();
    let err = err_of(h.load(s));
    assert!(err.contains(&format!("{defect}/000_mask.png")) && err.contains("No such file"), "{err}");
}

// ---- empty splits ----

#[test]
fn empty_test_split_is_explained() {
    let root = ad_root("empty-test");
    let test_dir = root.join("tiles/test");
    for d in std::fs::read_dir(&test_dir).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
    let err = err_of(ad(&root).list("test"));
    assert!(
        err.contains("split `test` is empty") && err.contains("<category>/test/*") && err.contains("tiles"),
        "{err}"
    );
}

#[test]
fn empty_3d_split_is_explained() {
    let root = ad3_root("empty-3d");
    let good = root.join("washer/validation/good");
    for sub in ["rgb", "xyz"] {
        for f in std::fs::read_dir(good.join(sub)).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("validation"));
    assert!(err.contains("split `validation` is empty") && err.contains("washer"), "{err}");
}

#[test]
fn empty_folder_test_split_is_explained() {
    let root = scratch_dir("bad-input-folder-empty");
    std::fs::create_dir_all(root.join("train")).unwrap();
    std::fs::create_dir_all(root.join("test/good")).unwrap();
    anoflow_imaging::write_png_u8(root.join("train/0.png"), 64, 64, 3, &vec![1; 64 * 64 * 3]).unwrap();
    // Not an image: ignored by listing.
    std::fs::write(root.join("test/good/notes.txt"), b"x").unwrap();
    let h = StageHarness::new::<Folder>(json!({
        "train": [root.join("train").to_str().unwrap()], "test": [root.join("test").to_str().unwrap()]
    }))
    .unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains("split `test` is empty") && err.contains("no PNG or TIFF images matched"), "{err}");
}

#[test]
fn synthetic_without_test_samples_is_explained() {
    let h =
        StageHarness::new::<Synthetic>(json!({"categories": ["tiles"], "test_good": 0, "test_defective": 0})).unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains("split `test` is empty") && err.contains("`test_good` and `test_defective` are 0"), "{err}");
}
