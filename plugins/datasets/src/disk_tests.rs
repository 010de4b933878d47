//! Loaders against on-disk fixtures in the exact MVTec AD and MVTec 3D-AD layouts, written by
//! the synthetic generator (and damaged by hand for the bad-input cases).

use std::path::{Path, PathBuf};

use anoflow_sdk::harness::{scratch_dir, ScratchDir, StageHarness};
use anoflow_sdk::prelude::*;
use serde_json::json;

use crate::{write_mvtec_3d, write_mvtec_ad, Folder, Mvtec3d, MvtecAd, Synthetic};
use anoflow_scene::{Category, SynthConfig};

fn small_cfg(categories: Vec<Category>) -> SynthConfig {
    SynthConfig { seed: 11, categories, train: 5, test_good: 1, test_defective: 3, size: 64, ..SynthConfig::default() }
}

fn ad_fixture(tag: &str) -> ScratchDir {
    let dir = scratch_dir(tag);
    write_mvtec_ad(&small_cfg(vec![Category::Tiles]), &dir).unwrap();
    dir
}

fn image_of(out: &anoflow_sdk::harness::HarnessOutputs) -> Image {
    match out.get("image") {
        Some(Value::Image(i)) => i.clone(),
        other => panic!("no image: {other:?}"),
    }
}

fn err_of<T>(r: StageResult<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.message.to_string(),
    }
}

#[test]
fn mvtec_ad_layout_is_exact_and_matches_the_in_memory_source() {
    let root = scratch_dir("ad-layout");
    let cfg = small_cfg(vec![Category::Tiles, Category::Screw]);
    assert_eq!(write_mvtec_ad(&cfg, &root).unwrap(), 2 * (5 + 1 + 3));
    for p in [
        "tiles/train/good/000.png",
        "tiles/train/good/004.png",
        "tiles/test/good/000.png",
        "tiles/test/crack/000.png",
        "tiles/ground_truth/crack/000_mask.png",
        "screw/test/scratch/000.png",
        "screw/ground_truth/scratch/000_mask.png",
    ] {
        assert!(root.join(p).is_file(), "{p} missing");
    }
    assert!(!root.join("tiles/ground_truth/good").exists());

    let disk = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "seed": 11})).unwrap();
    let mem = StageHarness::new::<Synthetic>(json!({
        "seed": 11, "categories": ["screw", "tiles"], "train": 5, "test_good": 1, "test_defective": 3, "size": 64
    }))
    .unwrap();
    for split in ["train", "validation", "test"] {
        let d = disk.list(split).unwrap();
        let m = mem.list(split).unwrap();
        let ids = |v: &[SampleMeta]| v.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&d), ids(&m), "split {split}: the disk copy lists what the source renders");
        assert!(d.iter().all(|s| s.split == split));
    }
    let test = disk.list("test").unwrap();
    assert_eq!(test[0].category, "screw");
    let crack = test.iter().find(|s| s.defect == "crack" && s.category == "tiles").unwrap();
    assert_eq!(crack.label, LABEL_ANOMALOUS);
    assert!(crack.path.ends_with("tiles/test/crack/000.png"));
    let from_disk = disk.load(crack).unwrap();
    let from_mem = mem.load(&mem.list("test").unwrap()[crack.index as usize]).unwrap();
    assert_eq!(image_of(&from_disk).to_u8(), image_of(&from_mem).to_u8());
    assert_eq!(from_disk.mask("mask").data(), from_mem.mask("mask").data());
    assert!(from_disk.mask("mask").count_ones() > 0);
    let good = test.iter().find(|s| s.defect == "good").unwrap();
    assert_eq!(disk.load(good).unwrap().mask("mask").count_ones(), 0);
    assert_eq!(good.label, LABEL_NOMINAL);

    // One category by name, or a list.
    let one = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "category": "tiles"})).unwrap();
    assert!(one.list("test").unwrap().iter().all(|s| s.category == "tiles"));
    let list = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "category": ["tiles", "screw"]}));
    assert_eq!(list.unwrap().list("test").unwrap().len(), 8);
}

#[test]
fn mvtec_3d_layout_with_float_tiff() {
    let root = scratch_dir("ad3d-layout");
    let cfg = SynthConfig { xyz: true, test_defective: 9, ..small_cfg(vec![Category::Pill]) };
    write_mvtec_3d(&cfg, &root).unwrap();
    for p in [
        "pill/train/good/rgb/000.png",
        "pill/train/good/xyz/000.tiff",
        "pill/validation/good/rgb/000.png",
        "pill/test/good/gt/000.png",
        "pill/test/dent/rgb/000.png",
        "pill/test/dent/xyz/000.tiff",
        "pill/test/dent/gt/000.png",
    ] {
        assert!(root.join(p).is_file(), "{p} missing");
    }
    // A real 3-channel float32 TIFF: header, then samples per pixel = 3 and 32 bits each.
    let tiff = std::fs::read(root.join("pill/test/dent/xyz/000.tiff")).unwrap();
    assert!(tiff.starts_with(b"II*\0") || tiff.starts_with(b"MM\0*"));
    assert!(tiff.len() > 64 * 64 * 12);

    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap(), "category": "pill"})).unwrap();
    assert_eq!(h.list("train").unwrap().len(), 4);
    assert_eq!(h.list("validation").unwrap().len(), 1);
    let test = h.list("test").unwrap();
    assert_eq!(test.len(), 10);
    let dent = test.iter().find(|s| s.defect == "dent").unwrap();
    let out = h.load(dent).unwrap();
    let Some(Value::PointCloud(pc)) = out.get("xyz") else { panic!("xyz") };
    assert_eq!((pc.height(), pc.width()), (64, 64));

    let mem = StageHarness::new::<Synthetic>(json!({
        "seed": 11, "categories": ["pill"], "train": 5, "test_good": 1, "test_defective": 9, "size": 64, "xyz": true
    }))
    .unwrap();
    let m = mem.list("test").unwrap().into_iter().find(|s| s.id == "pill/test/dent/000").unwrap();
    let mo = mem.load(&m).unwrap();
    let Some(Value::PointCloud(mpc)) = mo.get("xyz") else { panic!("xyz") };
    assert_eq!(pc.data(), mpc.data(), "float32 TIFF round trip is bit-exact");
    assert_eq!(out.mask("mask").data(), mo.mask("mask").data());
    assert!(out.mask("mask").count_ones() > 0);
}

// ---- bad input, one case per test ----

#[test]
fn missing_root_is_named() {
    let err = err_of(StageHarness::new::<MvtecAd>(json!({"root": "/no/such/mvtec-root"})));
    assert!(err.contains("mvtec-ad: dataset root `/no/such/mvtec-root` does not exist"), "{err}");
    let err = err_of(StageHarness::new::<Mvtec3d>(json!({"root": "/no/such/3d-root"})));
    assert!(err.contains("/no/such/3d-root"), "{err}");
}

#[test]
fn unknown_category_lists_those_that_exist() {
    let root = ad_fixture("ad-unknown-cat");
    let err = err_of(StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "category": "tils"})));
    assert!(err.contains("category `tils` not found") && err.contains("categories there: tiles"), "{err}");
    assert!(err.contains("did you mean `tiles`?"), "{err}");
    assert!(err.contains(&format!("under `{}`", root.display())), "the root is named: {err}");
}

#[test]
fn test_image_without_mask_is_named() {
    let root = ad_fixture("ad-no-mask");
    let mask = root.join("tiles/ground_truth/crack/000_mask.png");
    std::fs::remove_file(&mask).unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains("tiles/test/crack/000.png") && err.contains("has no ground-truth mask"), "{err}");
    assert!(err.contains(mask.to_str().unwrap()), "{err}");
    // Train and validation do not need masks.
    assert!(h.list("train").is_ok());
}

#[test]
fn wrong_size_mask_is_named() {
    let root = ad_fixture("ad-mask-size");
    let mask = root.join("tiles/ground_truth/crack/000_mask.png");
    anoflow_imaging::write_png_u8(&mask, 32, 64, 1, &vec![0; 32 * 64]).unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap();
    let s = h.list("test").unwrap().into_iter().find(|s| s.defect == "crack").unwrap();
    let err = err_of(h.load(&s));
    assert!(err.contains("000_mask.png") && err.contains("mask is 32x64") && err.contains("expected 64x64"), "{err}");
}

#[test]
fn non_binary_mask_is_named() {
    let root = ad_fixture("ad-mask-grey");
    let mask = root.join("tiles/ground_truth/crack/000_mask.png");
    let grey: Vec<u8> = (0..64 * 64).map(|i| (i % 3 * 100) as u8).collect();
    anoflow_imaging::write_png_u8(&mask, 64, 64, 1, &grey).unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap();
    let s = h.list("test").unwrap().into_iter().find(|s| s.defect == "crack").unwrap();
    let err = err_of(h.load(&s));
    assert!(err.contains("000_mask.png") && err.contains("not binary") && err.contains("[0, 100, 200]"), "{err}");
}

#[test]
fn corrupt_png_is_named() {
    let root = ad_fixture("ad-corrupt");
    let img = root.join("tiles/train/good/002.png");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() / 2]).unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "validation_fraction": 0.0})).unwrap();
    let s = h.list("train").unwrap().into_iter().find(|s| s.id == "tiles/train/good/002").unwrap();
    let err = err_of(h.load(&s));
    assert!(err.contains("tiles/train/good/002.png") && err.contains("not a valid PNG"), "{err}");
}

#[test]
fn empty_split_is_explained() {
    let root = ad_fixture("ad-empty");
    for f in std::fs::read_dir(root.join("tiles/train/good")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("train"));
    assert!(err.contains("split `train` is empty") && err.contains("train/good"), "{err}");
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap(), "validation_fraction": 0.0})).unwrap();
    let err = err_of(h.list("validation"));
    assert!(err.contains("split `validation` is empty: validation_fraction is 0"), "{err}");
}

#[test]
fn missing_train_dir_is_named() {
    let root = ad_fixture("ad-no-train");
    std::fs::remove_dir_all(root.join("tiles/train")).unwrap();
    let h = StageHarness::new::<MvtecAd>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("train"));
    assert!(err.contains("missing directory") && err.contains("tiles/train/good"), "{err}");
}

fn ad3_fixture(tag: &str) -> ScratchDir {
    let root = scratch_dir(tag);
    write_mvtec_3d(&SynthConfig { xyz: true, ..small_cfg(vec![Category::Washer]) }, &root).unwrap();
    root
}

fn ad3_sample(root: &Path, id: &str) -> (StageHarness, SampleMeta) {
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let split = id.split('/').nth(1).unwrap().to_string();
    let s = h.list(&split).unwrap().into_iter().find(|s| s.id == id).unwrap();
    (h, s)
}

#[test]
fn xyz_of_another_size_is_named() {
    let root = ad3_fixture("ad3-size");
    let xyz = root.join("washer/train/good/xyz/001.tiff");
    anoflow_imaging::write_tiff_f32_xyz(&xyz, &PointCloud::new(32, 64, vec![1.0; 32 * 64 * 3]).unwrap()).unwrap();
    let (h, s) = ad3_sample(&root, "washer/train/good/001");
    let err = err_of(h.load(&s));
    assert!(err.contains("xyz/001.tiff` is 32x64 but its image") && err.contains("is 64x64"), "{err}");
}

#[test]
fn corrupt_tiff_is_named() {
    let root = ad3_fixture("ad3-corrupt");
    let xyz = root.join("washer/train/good/xyz/000.tiff");
    let bytes = std::fs::read(&xyz).unwrap();
    std::fs::write(&xyz, &bytes[..bytes.len() / 4]).unwrap();
    let (h, s) = ad3_sample(&root, "washer/train/good/000");
    let err = err_of(h.load(&s));
    assert!(err.contains("xyz/000.tiff") && err.contains("TIFF"), "{err}");
}

#[test]
fn missing_point_cloud_is_named() {
    let root = ad3_fixture("ad3-missing-xyz");
    std::fs::remove_file(root.join("washer/test/good/xyz/000.tiff")).unwrap();
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains("no point cloud for") && err.contains("test/good/xyz/000.tiff"), "{err}");
}

#[test]
fn missing_3d_gt_for_a_defect_is_named() {
    let root = ad3_fixture("ad3-missing-gt");
    let test_dir = root.join("washer/test");
    let defect = std::fs::read_dir(&test_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n != "good")
        .unwrap();
    std::fs::remove_file(test_dir.join(&defect).join("gt/000.png")).unwrap();
    let h = StageHarness::new::<Mvtec3d>(json!({"root": root.to_str().unwrap()})).unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains(&format!("{defect}/gt/000.png")) && err.contains("no ground-truth mask"), "{err}");
}

// ---- folder ----

/// A folder dataset: train/*.png, test/good/*.png, test/bad/*.png with masks/bad/*_m.png. The
/// guard comes along with the dataset's path: the files go when it is dropped.
fn folder_fixture(tag: &str) -> (ScratchDir, PathBuf) {
    let root = scratch_dir(tag);
    let ad = root.join("src");
    write_mvtec_ad(&SynthConfig { test_defective: 2, ..small_cfg(vec![Category::Woven]) }, &ad).unwrap();
    let copy = |from: &str, to: &str| {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(ad.join(from), to).unwrap();
    };
    for i in 0..5 {
        copy(&format!("woven/train/good/00{i}.png"), &format!("line/train/img{i}.png"));
    }
    copy("woven/test/good/000.png", "line/test/good/a.png");
    copy("woven/test/crack/000.png", "line/test/bad/b.png");
    copy("woven/ground_truth/crack/000_mask.png", "line/masks/bad/b_m.png");
    copy("woven/test/scratch/000.png", "line/test/bad/c.png");
    copy("woven/ground_truth/scratch/000_mask.png", "line/masks/bad/c_m.png");
    let line = root.join("line");
    (root, line)
}

#[test]
fn folder_matches_masks_by_relative_stem_and_suffix() {
    let (_dir, root) = folder_fixture("folder-ok");
    let r = root.to_str().unwrap();
    let h = StageHarness::new::<Folder>(json!({
        "train": [format!("{r}/train/*.png")], "test": [format!("{r}/test")],
        "masks": format!("{r}/masks"), "mask_suffix": "_m", "category": "line"
    }))
    .unwrap();
    assert_eq!(h.list("train").unwrap().len() + h.list("validation").unwrap().len(), 5);
    let test = h.list("test").unwrap();
    let labels: Vec<(&str, i32)> = test.iter().map(|s| (s.defect.as_str(), s.label)).collect();
    assert_eq!(labels, vec![("bad", LABEL_ANOMALOUS), ("bad", LABEL_ANOMALOUS), ("good", LABEL_NOMINAL)]);
    let b = h.load(&test[0]).unwrap();
    assert!(b.mask("mask").count_ones() > 0);
    assert_eq!(h.load(&test[2]).unwrap().mask("mask").count_ones(), 0);
}

#[test]
fn folder_missing_mask_policies() {
    let (_dir, root) = folder_fixture("folder-missing");
    std::fs::remove_file(root.join("masks/bad/c_m.png")).unwrap();
    let r = root.to_str().unwrap();
    let params = |policy: &str| {
        json!({"train": [format!("{r}/train")], "test": [format!("{r}/test/**/*.png")],
               "masks": format!("{r}/masks"), "mask_suffix": "_m", "missing_mask": policy})
    };
    let h = StageHarness::new::<Folder>(params("error")).unwrap();
    let err = err_of(h.list("test"));
    assert!(err.contains("test/bad/c.png") && err.contains("masks/bad/c_m.png"), "{err}");
    let h = StageHarness::new::<Folder>(params("skip")).unwrap();
    assert_eq!(h.list("test").unwrap().len(), 2);
    let h = StageHarness::new::<Folder>(params("nominal")).unwrap();
    let test = h.list("test").unwrap();
    assert_eq!(test.iter().filter(|s| s.label == LABEL_NOMINAL).count(), 2);
}

#[test]
fn folder_missing_dir_and_empty_glob() {
    let (_dir, root) = folder_fixture("folder-bad");
    let r = root.to_str().unwrap();
    let h =
        StageHarness::new::<Folder>(json!({"train": [format!("{r}/nope")], "test": [format!("{r}/test")]})).unwrap();
    let err = err_of(h.list("train"));
    assert!(err.contains("missing directory") && err.contains("line/nope"), "{err}");
    let h = StageHarness::new::<Folder>(json!({"train": [format!("{r}/train/*.tiff")], "test": [format!("{r}/test")]}))
        .unwrap();
    let err = err_of(h.list("train"));
    assert!(err.contains("split `train` is empty") && err.contains("*.tiff"), "{err}");
}
