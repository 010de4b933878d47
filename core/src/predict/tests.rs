use super::*;

#[test]
fn components_are_8_connected_with_boxes_and_areas() {
    #[rustfmt::skip]
    let m = [
        1, 0, 0, 0, 1,
        0, 1, 0, 0, 1,
        0, 0, 0, 0, 0,
        0, 0, 1, 1, 0,
    ];
    let c = components(&m, 4, 5);
    assert_eq!(
        c,
        vec![
            Component { x: 0, y: 0, width: 2, height: 2, area: 2 },
            Component { x: 4, y: 0, width: 1, height: 2, area: 2 },
            Component { x: 2, y: 3, width: 2, height: 1, area: 2 },
        ]
    );
}

#[test]
fn a_cropped_mask_goes_back_to_its_place_in_the_original_image() {
    // 8x8 -> shorter side 8 (kept), centre crop 4: the window starts at (2, 2).
    let g = Some(Geometry { resize: 8, crop: 4 });
    let mut small = vec![0u8; 16];
    small[0] = 1; // top-left of the crop
    small[15] = 1; // bottom-right
    let full = to_original(&small, 4, 4, 8, 8, g, 0);
    assert_eq!(full.len(), 64);
    assert_eq!(full.iter().filter(|&&v| v == 1).count(), 2);
    assert_eq!((full[2 * 8 + 2], full[5 * 8 + 5]), (1, 1));
    // 16x16 -> resized to 8x8 then cropped: each crop pixel covers 2x2 original pixels.
    let full = to_original(&small, 4, 4, 16, 16, g, 0);
    assert_eq!(full.iter().filter(|&&v| v == 1).count(), 8);
    assert_eq!((full[4 * 16 + 4], full[5 * 16 + 5], full[11 * 16 + 11]), (1, 1, 1));
    // No geometry: resized directly.
    assert_eq!(to_original(&[1u8, 0, 0, 1], 2, 2, 4, 4, None, 0).iter().filter(|&&v| v == 1).count(), 8);
}

#[test]
fn ids_and_categories_follow_the_directory_rule() {
    let img = |rel: &str| InputImage { path: PathBuf::from(rel), rel: rel.into() };
    let cats = vec!["pill".to_string(), "tiles".to_string()];
    assert_eq!(img("tiles/test/crack/003.png").id(), "tiles/test/crack/003");
    assert_eq!(img("a.b/c").id(), "a.b/c");
    assert_eq!(category_of(&img("tiles/x.png"), None, &cats), Ok("tiles".into()));
    assert_eq!(category_of(&img("tiles/x.png"), Some("pill"), &cats), Ok("pill".into()));
    assert!(category_of(&img("x.png"), None, &cats).unwrap_err().contains("pill, tiles"));
    assert_eq!(category_of(&img("x.png"), None, &cats[..1]), Ok("pill".into()));
}

#[test]
fn a_failed_append_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.jsonl");
    append_line(&path, "{\"a\":1}").unwrap();
    append_line(&path, "{\"b\":2}").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
    let err = append_line(&dir.path().join("missing/lines.jsonl"), "x").unwrap_err();
    assert!(err.to_string().contains("missing/lines.jsonl"), "{err}");
}
