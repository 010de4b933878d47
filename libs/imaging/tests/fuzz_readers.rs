//! Bounded fuzzing of the image, mask and point-cloud readers.
//!
//! Valid PNG and TIFF files are generated here (8-bit grey / grey+alpha / RGB / RGBA, 16-bit,
//! palette and 1-bit PNGs; uncompressed, LZW, Deflate and PackBits TIFFs; float32 xyz TIFFs),
//! then damaged by a seeded generator: truncation, bit flips, "interesting" values written
//! over header fields, inserted and deleted bytes, and PNG chunk edits with the CRC fixed up
//! (so the decoder gets past the checksum to the fields behind it). Random bytes behind a
//! PNG or TIFF signature complete the set.
//!
//! Properties: no reader panics or hangs; every error names the file it is about.
//! `ANOFLOW_FUZZ_SCALE=N` multiplies the number of cases (default 1, a few seconds).

use std::{
    io::Cursor,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anoflow_imaging::{decode_image, encode_png, read_image, read_mask, read_tiff_f32_xyz, ImagingError};
use anoflow_sdk::prelude::PointCloud;

// ---- a tiny seeded generator (SplitMix64) ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn scale() -> usize {
    std::env::var("ANOFLOW_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

// ---- valid inputs ----

fn pattern(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 5 + salt * 13) % 256) as u8).collect()
}

fn png_with(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<Vec<u8>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p);
        }
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }
    out
}

fn tiff_u8<C: tiff::encoder::colortype::ColorType<Inner = u8>>(w: u32, h: u32, data: &[u8], comp: usize) -> Vec<u8> {
    use tiff::encoder::{compression::*, TiffEncoder};
    let mut buf = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut buf).unwrap();
    match comp {
        0 => enc.write_image::<C>(w, h, data).unwrap(),
        1 => enc.write_image_with_compression::<C, _>(w, h, Lzw, data).unwrap(),
        2 => enc.write_image_with_compression::<C, _>(w, h, Deflate::default(), data).unwrap(),
        _ => enc.write_image_with_compression::<C, _>(w, h, Packbits, data).unwrap(),
    }
    buf.into_inner()
}

fn tiff_xyz(w: u32, h: u32, lzw: bool) -> Vec<u8> {
    use tiff::encoder::{colortype::RGB32Float, compression::Lzw, TiffEncoder};
    let data: Vec<f32> =
        (0..(w * h * 3) as usize).map(|i| if i % 7 == 0 { 0.0 } else { i as f32 * 0.5 - 40.0 }).collect();
    if !lzw {
        return anoflow_imaging::encode_tiff_f32_xyz(&PointCloud::new(h, w, data).unwrap()).unwrap();
    }
    let mut buf = Cursor::new(Vec::new());
    TiffEncoder::new(&mut buf).unwrap().write_image_with_compression::<RGB32Float, _>(w, h, Lzw, &data).unwrap();
    buf.into_inner()
}

/// Valid images: (name, bytes). Every one decodes before it is damaged.
fn images() -> Vec<(&'static str, Vec<u8>)> {
    use png::{BitDepth as D, ColorType as C};
    use tiff::encoder::colortype::{Gray8, RGB8, RGBA8};
    vec![
        ("png-rgb-224", encode_png(224, 224, 3, &pattern(224 * 224 * 3, 1)).unwrap()),
        ("png-grey", encode_png(33, 17, 1, &pattern(33 * 17, 2)).unwrap()),
        ("png-grey-alpha", encode_png(16, 9, 2, &pattern(16 * 9 * 2, 3)).unwrap()),
        ("png-rgba", encode_png(12, 20, 4, &pattern(12 * 20 * 4, 4)).unwrap()),
        ("png-grey16", png_with(10, 6, C::Grayscale, D::Sixteen, &pattern(10 * 6 * 2, 5), None)),
        ("png-rgb16", png_with(5, 7, C::Rgb, D::Sixteen, &pattern(5 * 7 * 6, 6), None)),
        (
            "png-palette",
            png_with(
                9,
                9,
                C::Indexed,
                D::Eight,
                &pattern(81, 7).iter().map(|v| v % 4).collect::<Vec<_>>(),
                Some(pattern(12, 8)),
            ),
        ),
        ("png-1bit", png_with(16, 4, C::Grayscale, D::One, &pattern(8, 9), None)),
        ("tiff-rgb", tiff_u8::<RGB8>(21, 13, &pattern(21 * 13 * 3, 10), 0)),
        ("tiff-rgb-lzw", tiff_u8::<RGB8>(64, 64, &pattern(64 * 64 * 3, 11), 1)),
        ("tiff-grey-deflate", tiff_u8::<Gray8>(40, 30, &pattern(1200, 12), 2)),
        ("tiff-rgba-packbits", tiff_u8::<RGBA8>(17, 11, &pattern(17 * 11 * 4, 13), 3)),
    ]
}

/// Valid masks (grey 0/255, grey 0/1, RGB with equal channels): (name, bytes, (h, w)).
fn masks() -> Vec<(&'static str, Vec<u8>, (usize, usize))> {
    use tiff::encoder::colortype::Gray8;
    let m: Vec<u8> = (0..64 * 48).map(|i| if (i / 48 + i % 48) % 9 < 3 { 255 } else { 0 }).collect();
    let rgb: Vec<u8> = m.iter().flat_map(|&v| [v, v, v]).collect();
    vec![
        ("mask-png", encode_png(64, 48, 1, &m).unwrap(), (64, 48)),
        ("mask-png01", encode_png(64, 48, 1, &m.iter().map(|v| v / 255).collect::<Vec<_>>()).unwrap(), (64, 48)),
        ("mask-png-rgb", encode_png(64, 48, 3, &rgb).unwrap(), (64, 48)),
        ("mask-tiff-lzw", tiff_u8::<Gray8>(48, 64, &m, 1), (64, 48)),
    ]
}

fn clouds() -> Vec<(&'static str, Vec<u8>)> {
    vec![("xyz", tiff_xyz(40, 24, false)), ("xyz-lzw", tiff_xyz(19, 31, true))]
}

// ---- damage ----

/// (offset of the chunk's length field, data length) for each PNG chunk.
fn png_chunks(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if at + 12 + len > bytes.len() {
            break;
        }
        out.push((at, len));
        at += 12 + len;
    }
    out
}

const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    16,
    255,
    256,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

fn put_u32(bytes: &mut [u8], at: usize, v: u32, big_endian: bool) {
    let b = if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let end = (at + 4).min(bytes.len());
    bytes[at..end].copy_from_slice(&b[..end - at]);
}

fn damage(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    let is_png = b.starts_with(b"\x89PNG");
    let big_endian = b.starts_with(b"MM");
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        if len == 0 {
            b.push(rng.next() as u8);
            continue;
        }
        // Headers matter most: half the edits land in the first 128 bytes.
        let at = if rng.below(2) == 0 { rng.below(len.min(128)) } else { rng.below(len) };
        match rng.below(if is_png { 8 } else { 7 }) {
            0 => b.truncate(rng.below(len)),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(len);
                    b[i] ^= 1 << rng.below(8);
                }
            }
            2 => b[at] = [0u8, 1, 0x7f, 0x80, 0xff][rng.below(5)],
            3 => put_u32(&mut b, at, INTERESTING_U32[rng.below(INTERESTING_U32.len())], big_endian),
            4 => {
                let end = (at + 1 + rng.below(32)).min(len);
                b.drain(at..end);
            }
            5 => {
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(at..at, extra).for_each(drop);
            }
            6 => {
                // Aligned 16-bit field (TIFF tags, types, counts).
                let i = at & !1;
                if i + 2 <= len {
                    let v = [0u16, 1, 2, 3, 4, 5, 11, 12, 16, 0xffff][rng.below(10)];
                    let bytes = if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
                    b[i..i + 2].copy_from_slice(&bytes);
                }
            }
            _ => {
                // A PNG chunk edit with its CRC recomputed, so the decoder reads the field.
                let chunks = png_chunks(&b);
                if chunks.is_empty() {
                    continue;
                }
                let (start, clen) = chunks[rng.below(chunks.len())];
                if clen > 0 {
                    let off = start + 8 + rng.below(clen);
                    if rng.below(2) == 0 {
                        put_u32(
                            &mut b,
                            off.min(start + 8 + clen - 1),
                            INTERESTING_U32[rng.below(INTERESTING_U32.len())],
                            true,
                        );
                    } else {
                        b[off] = rng.next() as u8;
                    }
                }
                let crc = crc32fast::hash(&b[start + 4..start + 8 + clen]);
                put_u32(&mut b, start + 8 + clen, crc, true);
            }
        }
    }
    b
}

fn random_with_signature(rng: &mut Rng) -> Vec<u8> {
    let sig: &[u8] = match rng.below(4) {
        0 => b"\x89PNG\r\n\x1a\n",
        1 => b"II*\0",
        2 => b"MM\0*",
        _ => b"",
    };
    let n = rng.below(400);
    sig.iter().copied().chain((0..n).map(|_| rng.next() as u8)).collect()
}

// ---- properties ----

struct Tally {
    target: &'static str,
    cases: usize,
    errors: usize,
    failures: Vec<String>,
    slowest: Duration,
    started: Instant,
}

impl Tally {
    fn new(target: &'static str) -> Self {
        Self { target, cases: 0, errors: 0, failures: Vec::new(), slowest: Duration::ZERO, started: Instant::now() }
    }

    /// Runs one reader call on damaged bytes named `path`; `Ok` results are fine (a flip in
    /// pixel data can leave a valid file), errors must name the file, panics are failures.
    fn run<T>(&mut self, what: &str, path: &Path, bytes: &[u8], f: impl FnOnce() -> Result<T, ImagingError>) {
        self.cases += 1;
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(f));
        let took = t.elapsed();
        self.slowest = self.slowest.max(took);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let problem = match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                self.errors += 1;
                let msg = e.to_string();
                (!msg.contains(&name)).then(|| format!("error does not name the file `{name}`: {msg}"))
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("PANIC: {msg}"))
            }
        };
        let problem = problem.or_else(|| (took > Duration::from_secs(2)).then(|| format!("took {took:?}")));
        if let Some(p) = problem {
            // Keep the failing input for cargo-fuzz / a regression test.
            let keep = std::env::temp_dir().join(format!(
                "anoflow-fuzz-failure-{}-{}",
                self.target.replace('/', "-"),
                self.failures.len()
            ));
            let _ = std::fs::write(&keep, bytes);
            self.failures.push(format!("{what}: {p} (input saved to {})", keep.display()));
        }
    }

    fn finish(self) {
        eprintln!(
            "{}: {} cases ({} refused with an error) in {:.1?}, slowest {:.1?}",
            self.target,
            self.cases,
            self.errors,
            self.started.elapsed(),
            self.slowest
        );
        assert!(self.errors > 0, "{}: no input was refused: the damage is not reaching the decoder", self.target);
        let n = self.failures.len();
        let shown: Vec<&String> = self.failures.iter().take(8).collect();
        assert!(n == 0, "{}: {n} failing inputs; first ones:\n{shown:#?}", self.target);
    }
}

fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(old);
    out
}

fn scratch(tag: &str) -> anoflow_sdk::harness::ScratchDir {
    anoflow_sdk::harness::scratch_dir(&format!("fuzz-readers-{tag}"))
}

#[test]
fn the_valid_inputs_decode() {
    for (name, bytes) in images() {
        let img = decode_image(&bytes, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(img.height() > 0 && img.width() > 0, "{name}");
    }
    let dir = scratch("valid");
    for (name, bytes, hw) in masks() {
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        let m = read_mask(&p, Some(hw)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.count_ones() > 0, "{name}");
    }
    for (name, bytes) in clouds() {
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        read_tiff_f32_xyz(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn damaged_images_decode_or_fail_with_the_file_name() {
    let valid = images();
    let mut t = Tally::new("imaging/decode_image");
    quiet_panics(|| {
        for seed in 0..(6000 * scale()) as u64 {
            let mut rng = Rng(seed);
            let (name, bytes) = &valid[rng.below(valid.len())];
            let input = if seed % 10 == 9 { random_with_signature(&mut rng) } else { damage(&mut rng, bytes) };
            let path = PathBuf::from(format!("fuzz-{seed}-{name}.img"));
            t.run(&format!("seed {seed} ({name})"), &path, &input, || decode_image(&input, &path));
        }
    });
    t.finish();
}

#[test]
fn damaged_image_files_fail_with_the_file_name() {
    // The file path goes through read_image (I/O + decode) for a share of the cases.
    let dir = scratch("files");
    let valid = images();
    let mut t = Tally::new("imaging/read_image");
    quiet_panics(|| {
        for seed in 0..(600 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0xf11e);
            let (name, bytes) = &valid[rng.below(valid.len())];
            let input = damage(&mut rng, bytes);
            let path = dir.join(format!("{name}-{}.png", seed % 8));
            std::fs::write(&path, &input).unwrap();
            t.run(&format!("seed {seed} ({name})"), &path, &input, || read_image(&path));
        }
    });
    t.finish();
}

#[test]
fn damaged_masks_fail_with_the_file_name() {
    let dir = scratch("masks");
    let valid = masks();
    let mut t = Tally::new("imaging/read_mask");
    quiet_panics(|| {
        for seed in 0..(3000 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0x3a5c);
            let (name, bytes, hw) = &valid[rng.below(valid.len())];
            let input = if seed % 10 == 9 { random_with_signature(&mut rng) } else { damage(&mut rng, bytes) };
            let path = dir.join(format!("{name}-{}.png", seed % 8));
            std::fs::write(&path, &input).unwrap();
            let expected = (seed % 2 == 0).then_some(*hw);
            t.run(&format!("seed {seed} ({name})"), &path, &input, || read_mask(&path, expected));
        }
    });
    t.finish();
}

#[test]
fn damaged_point_clouds_fail_with_the_file_name() {
    let dir = scratch("xyz");
    let valid = clouds();
    let mut t = Tally::new("imaging/read_tiff_f32_xyz");
    quiet_panics(|| {
        for seed in 0..(3000 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0x0c10);
            let (name, bytes) = &valid[rng.below(valid.len())];
            let input = if seed % 10 == 9 { random_with_signature(&mut rng) } else { damage(&mut rng, bytes) };
            let path = dir.join(format!("{name}-{}.tiff", seed % 8));
            std::fs::write(&path, &input).unwrap();
            t.run(&format!("seed {seed} ({name})"), &path, &input, || read_tiff_f32_xyz(&path));
        }
    });
    t.finish();
}

/// A header that claims a huge image over a few bytes of data must be refused before
/// anything that size is allocated (else the process aborts on allocation failure).
#[test]
fn dimension_bombs_are_refused_without_allocating() {
    let dir = scratch("bombs");
    // PNG: IHDR 0x7fffffff x 0x7fffffff, CRC fixed, tiny IDAT.
    let mut png_bomb = encode_png(4, 4, 3, &[7; 48]).unwrap();
    put_u32(&mut png_bomb, 16, 0x7fff_ffff, true);
    put_u32(&mut png_bomb, 20, 0x7fff_ffff, true);
    let crc = crc32fast::hash(&png_bomb[12..29]);
    put_u32(&mut png_bomb, 29, crc, true);
    let err = decode_image(&png_bomb, Path::new("bomb.png")).unwrap_err().to_string();
    assert!(err.contains("bomb.png"), "{err}");

    // TIFF: width, height and rows-per-strip tags set to 100000 in LZW files of one strip (the
    // strip's byte count is its compressed size, so the sizes stay consistent).
    for (name, valid, reader) in [
        ("bomb-u8.tiff", tiff_u8::<tiff::encoder::colortype::RGB8>(4, 4, &[1; 48], 1), 0),
        ("bomb-xyz.tiff", tiff_xyz(4, 4, true), 1),
    ] {
        let mut b = valid.clone();
        let ifd = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
        for e in 0..n {
            let at = ifd + 2 + 12 * e;
            let tag = u16::from_le_bytes([b[at], b[at + 1]]);
            if tag == 256 || tag == 257 || tag == 278 {
                // Write a LONG value of 100000.
                b[at + 2..at + 4].copy_from_slice(&4u16.to_le_bytes());
                b[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
                b[at + 8..at + 12].copy_from_slice(&100_000u32.to_le_bytes());
            }
        }
        let p = dir.join(name);
        std::fs::write(&p, &b).unwrap();
        let err = if reader == 0 {
            read_image(&p).map(|_| ()).unwrap_err().to_string()
        } else {
            read_tiff_f32_xyz(&p).map(|_| ()).unwrap_err().to_string()
        };
        assert!(err.contains(name), "{err}");
        assert!(!err.contains("Inconsistent sizes"), "the bomb did not reach the size check: {err}");
    }

    // A float32 xyz TIFF of 200000 x 20000 points in strips of one row: every strip is small
    // enough for the decoder's per-strip check, the whole cloud would take 48 GB.
    let p = dir.join("bomb-strips.tiff");
    std::fs::write(&p, xyz_strip_bomb(200_000, 20_000)).unwrap();
    let err = read_tiff_f32_xyz(&p).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("bomb-strips.tiff") && err.contains("over the limit of"), "{err}");
}

/// A little-endian float32 RGB TIFF header for `w` x `h` points in `h` uncompressed strips of
/// one row each, with no pixel data behind it.
fn xyz_strip_bomb(w: u32, h: u32) -> Vec<u8> {
    let n_tags = 11u16;
    let ifd_end = 8 + 2 + 12 * n_tags as u32 + 4;
    let (bits_at, format_at) = (ifd_end, ifd_end + 6);
    let (offsets_at, counts_at) = (ifd_end + 12, ifd_end + 12 + 4 * h);
    let mut b: Vec<u8> = b"II*\0".to_vec();
    b.extend(8u32.to_le_bytes());
    b.extend(n_tags.to_le_bytes());
    let mut entry = |tag: u16, kind: u16, count: u32, value: u32| {
        b.extend(tag.to_le_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(count.to_le_bytes());
        b.extend(value.to_le_bytes());
    };
    let (short, long) = (3u16, 4u16);
    entry(256, long, 1, w);
    entry(257, long, 1, h);
    entry(258, short, 3, bits_at);
    entry(259, short, 1, 1);
    entry(262, short, 1, 2);
    entry(273, long, h, offsets_at);
    entry(277, short, 1, 3);
    entry(278, long, 1, 1);
    entry(279, long, h, counts_at);
    entry(284, short, 1, 1);
    entry(339, short, 3, format_at);
    b.extend(0u32.to_le_bytes());
    for v in [32u16, 32, 32, 3, 3, 3] {
        b.extend(v.to_le_bytes());
    }
    for _ in 0..h {
        b.extend(8u32.to_le_bytes());
    }
    for _ in 0..h {
        b.extend((w * 12).to_le_bytes());
    }
    b
}

// ---- huge headers and oversized files (issue 15) ----

/// `valid` with its width and height set to `w` x `h` in the header: the PNG IHDR (CRC
/// fixed) or the TIFF's width, height and rows-per-strip tags.
fn with_header_size(valid: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = valid.to_vec();
    if b.starts_with(b"\x89PNG") {
        put_u32(&mut b, 16, w, true);
        put_u32(&mut b, 20, h, true);
        let crc = crc32fast::hash(&b[12..29]);
        put_u32(&mut b, 29, crc, true);
        return b;
    }
    // The generated TIFFs are little-endian with one IFD.
    let ifd = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
    for e in 0..n {
        let at = ifd + 2 + 12 * e;
        let value = match u16::from_le_bytes([b[at], b[at + 1]]) {
            256 => w,
            257 | 278 => h,
            _ => continue,
        };
        b[at + 2..at + 4].copy_from_slice(&4u16.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&value.to_le_bytes());
    }
    b
}

/// Headers claiming large to absurd sizes over a few hundred bytes of data: every reader
/// refuses them (or, for a size that fits, fails on the missing data) quickly, with the file
/// name, and without allocating what they claim.
#[test]
fn huge_headers_are_refused_quickly() {
    let dir = scratch("huge-headers");
    let sizes = [(16_000, 16_000), (30_000, 30_000), (65_535, 65_535), (100_000, 3), (3, 100_000), (0x7fff_ffff, 2)];
    let mut t = Tally::new("imaging/huge-headers");
    quiet_panics(|| {
        let all: Vec<(&str, Vec<u8>)> =
            images().into_iter().chain(clouds()).chain(masks().into_iter().map(|(n, b, _)| (n, b))).collect();
        for (name, valid) in &all {
            for &(w, h) in &sizes {
                let input = with_header_size(valid, w, h);
                let path = dir.join(format!("{name}-{w}x{h}.img"));
                std::fs::write(&path, &input).unwrap();
                let what = format!("{name} claiming {w}x{h}");
                t.run(&what, &path, &input, || decode_image(&input, &path).map(|_| ()));
                t.run(&what, &path, &input, || read_image(&path).map(|_| ()));
                t.run(&what, &path, &input, || read_mask(&path, None).map(|_| ()));
                t.run(&what, &path, &input, || read_tiff_f32_xyz(&path).map(|_| ()));
            }
        }
    });
    t.finish();
}

/// Valid images followed by gigabytes (sparse: no disk) are refused from their header and
/// their length, without being read.
#[test]
fn oversized_files_are_refused_unread() {
    let dir = scratch("oversized");
    let all: Vec<(&str, Vec<u8>)> = images().into_iter().chain(clouds()).collect();
    let mut t = Tally::new("imaging/oversized-files");
    quiet_panics(|| {
        for (i, (name, valid)) in all.iter().enumerate() {
            let path = dir.join(format!("{name}-padded"));
            let f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, valid).unwrap();
            f.set_len((1u64 << 30) + (i as u64) * 977).unwrap();
            let what = format!("{name} + ~1 GiB");
            t.run(&what, &path, valid, || match read_image(&path) {
                Err(e) if e.to_string().contains("image can take") || name.starts_with("xyz") => Err::<(), _>(e),
                other => panic!("not refused for its size: {:?}", other.map(|_| ())),
            });
            t.run(&what, &path, valid, || read_tiff_f32_xyz(&path).map(|_| ()));
            std::fs::remove_file(&path).unwrap();
        }
    });
    t.finish();
}
