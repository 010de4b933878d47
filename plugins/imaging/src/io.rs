//! Reading and writing PNG / TIFF images, binary masks and float32 point-cloud TIFFs.
//!
//! Readers load the whole file, then decode, so a truncated or corrupt file is an error
//! naming the path. Writers encode in memory and then go through [`write_atomic`], so a
//! reader never sees a half-written file.

use std::{
    io::Cursor,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anoflow_sdk::prelude::{Image, Mask, Pixels, PointCloud};

use crate::{invalid, ImagingError, Result};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Most bytes a decoded PNG or float32 point-cloud TIFF may take (1 GiB: a 16k x 16k RGB
/// image, a 9k x 9k cloud). The header's size is checked against it before allocating, so a
/// corrupt header claiming a huge image is an error, not an allocation failure that aborts
/// the process.
pub const MAX_DECODED_BYTES: usize = 1 << 30;

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ImagingError::Io { path: path.to_path_buf(), source })
}

fn sdk_err(path: &Path, e: anoflow_sdk::prelude::StageError) -> ImagingError {
    invalid(path.display().to_string(), e.message.to_string())
}

/// Pixels decoded from a file: 8-bit, 1 (grey) or 3 (RGB) channels, alpha dropped.
struct Decoded {
    height: usize,
    width: usize,
    channels: usize,
    data: Vec<u8>,
}

/// Drops the alpha channel of an interleaved buffer with `channels` channels (2 or 4).
fn drop_alpha(data: Vec<u8>, channels: usize) -> (Vec<u8>, usize) {
    match channels {
        2 => (data.chunks_exact(2).map(|p| p[0]).collect(), 1),
        4 => (data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(), 3),
        c => (data, c),
    }
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<Decoded> {
    let err = |reason: String| ImagingError::Decode { path: path.to_path_buf(), format: "PNG", reason };
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    // Palette and low-bit-depth images expand to 8 bits; 16-bit samples keep their high byte.
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader.output_buffer_size();
    if size > MAX_DECODED_BYTES {
        let (w, h) = reader.info().size();
        return Err(err(format!("{w}x{h} image would decode to {size} bytes, over the limit of {MAX_DECODED_BYTES}")));
    }
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            what: format!("PNG bit depth {depth:?}"),
            expected: "8-bit samples".into(),
        });
    }
    let channels = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(err("palette was not expanded".into()));
        }
    };
    let (data, channels) = drop_alpha(buf, channels);
    Ok(Decoded { height: info.height as usize, width: info.width as usize, channels, data })
}

fn tiff_err(path: &Path, e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Decode { path: path.to_path_buf(), format: "TIFF", reason: e.to_string() }
}

fn decode_tiff_u8(bytes: &[u8], path: &Path) -> Result<Decoded> {
    use tiff::{decoder::DecodingResult, ColorType};
    let mut dec = tiff::decoder::Decoder::new(Cursor::new(bytes)).map_err(|e| tiff_err(path, e))?;
    let (w, h) = dec.dimensions().map_err(|e| tiff_err(path, e))?;
    let color = dec.colortype().map_err(|e| tiff_err(path, e))?;
    let channels = match color {
        ColorType::Gray(8) => 1,
        ColorType::GrayA(8) => 2,
        ColorType::RGB(8) => 3,
        ColorType::RGBA(8) => 4,
        other => {
            return Err(ImagingError::Unsupported {
                path: path.to_path_buf(),
                what: format!("TIFF colour type {other:?}"),
                expected: "8-bit grey, grey+alpha, RGB or RGBA".into(),
            })
        }
    };
    let data = match dec.read_image().map_err(|e| tiff_err(path, e))? {
        DecodingResult::U8(v) => v,
        _ => return Err(tiff_err(path, "8-bit colour type but samples are not 8-bit")),
    };
    if data.len() != (w as usize) * (h as usize) * channels {
        return Err(tiff_err(path, format!("{} samples for {w}x{h}x{channels}", data.len())));
    }
    let (data, channels) = drop_alpha(data, channels);
    Ok(Decoded { height: h as usize, width: w as usize, channels, data })
}

fn is_tiff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*")
}

fn decode_any(bytes: &[u8], path: &Path) -> Result<Decoded> {
    if bytes.starts_with(PNG_MAGIC) {
        decode_png(bytes, path)
    } else if is_tiff(bytes) {
        decode_tiff_u8(bytes, path)
    } else {
        let magic: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        let magic = if magic.is_empty() { "nothing (empty file)".to_string() } else { format!("bytes {magic}") };
        Err(ImagingError::UnknownFormat { path: path.to_path_buf(), magic })
    }
}

/// Decodes PNG or TIFF bytes (8-bit grey / RGB / RGBA) into a u8 image with 1 or 3 channels
/// (alpha dropped). `path` only names the data in errors.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let d = decode_any(bytes, path)?;
    Image::from_u8(d.height as u32, d.width as u32, d.channels as u32, d.data).map_err(|e| sdk_err(path, e))
}

/// Reads a PNG or TIFF image (8-bit grey / RGB / RGBA) as u8 with 1 or 3 channels.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    decode_image(&read_bytes(path)?, path)
}

/// Reads an image and converts grey to RGB, so every image a source yields has 3 channels.
pub fn read_image_rgb(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    to_rgb(&read_image(path)?).map_err(|e| sdk_err(path, e))
}

/// An image with 3 channels: grey is replicated, RGB is shared as is.
pub fn to_rgb(image: &Image) -> std::result::Result<Image, anoflow_sdk::prelude::StageError> {
    match (image.channels(), image.pixels()) {
        (3, _) => Ok(image.clone()),
        (1, Pixels::U8(d)) => {
            Image::from_u8(image.height() as u32, image.width() as u32, 3, d.iter().flat_map(|&v| [v, v, v]).collect())
        }
        (1, Pixels::F32(d)) => {
            Image::from_f32(image.height() as u32, image.width() as u32, 3, d.iter().flat_map(|&v| [v, v, v]).collect())
        }
        (c, _) => Err(anoflow_sdk::prelude::StageError::invalid_input(format!(
            "cannot convert an image with {c} channels to RGB (expected 1 or 3)"
        ))),
    }
}

/// Reads a binary mask (PNG or TIFF, grey; an RGB mask must have equal channels).
///
/// Accepted values: `{0, 255}` or `{0, 1}` (any subset). Anything else, e.g. the grey
/// levels of an anti-aliased or JPEG-damaged mask, is an error listing what was found.
/// With `expected = Some((h, w))` a mask of another size is an error naming both sizes.
pub fn read_mask(path: impl AsRef<Path>, expected: Option<(usize, usize)>) -> Result<Mask> {
    let path = path.as_ref();
    let d = decode_any(&read_bytes(path)?, path)?;
    if let Some((eh, ew)) = expected {
        if (d.height, d.width) != (eh, ew) {
            return Err(ImagingError::MaskSize {
                path: path.to_path_buf(),
                found_h: d.height,
                found_w: d.width,
                expected_h: eh,
                expected_w: ew,
            });
        }
    }
    let grey: Vec<u8> = if d.channels == 1 {
        d.data
    } else {
        if d.data.chunks_exact(3).any(|p| p[0] != p[1] || p[1] != p[2]) {
            return Err(ImagingError::Unsupported {
                path: path.to_path_buf(),
                what: "colour mask (channels differ)".into(),
                expected: "a grey mask".into(),
            });
        }
        d.data.chunks_exact(3).map(|p| p[0]).collect()
    };
    let mut seen = [false; 256];
    for &v in &grey {
        seen[v as usize] = true;
    }
    let found: Vec<u8> = (0..=255u8).filter(|&v| seen[v as usize]).collect();
    let binary = found.iter().all(|&v| v == 0 || v == 255) || found.iter().all(|&v| v <= 1);
    if !binary {
        // Keep the message short on a grey-level image.
        let mut shown = found;
        shown.truncate(8);
        return Err(ImagingError::MaskNotBinary { path: path.to_path_buf(), found: shown });
    }
    Mask::new(d.height as u32, d.width as u32, grey).map_err(|e| sdk_err(path, e))
}

/// Decoder limits for point clouds: the decoded cloud up to [`MAX_DECODED_BYTES`] (the
/// default 256 MiB would refuse large clouds), so a header claiming a huge cloud is refused
/// before anything that size is allocated.
fn xyz_limits() -> tiff::decoder::Limits {
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = MAX_DECODED_BYTES;
    limits.intermediate_buffer_size = MAX_DECODED_BYTES;
    limits.ifd_value_size = 16 << 20;
    limits
}

/// Reads an organized point cloud from a 3-channel 32-bit float TIFF (x, y, z per pixel,
/// zeros where there is no point), as in MVTec 3D-AD.
pub fn read_tiff_f32_xyz(path: impl AsRef<Path>) -> Result<PointCloud> {
    use tiff::{decoder::DecodingResult, ColorType};
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    if !is_tiff(&bytes) {
        return Err(tiff_err(path, "missing TIFF header"));
    }
    let mut dec =
        tiff::decoder::Decoder::new(Cursor::new(&bytes[..])).map_err(|e| tiff_err(path, e))?.with_limits(xyz_limits());
    let (w, h) = dec.dimensions().map_err(|e| tiff_err(path, e))?;
    let color = dec.colortype().map_err(|e| tiff_err(path, e))?;
    if color != ColorType::RGB(32) {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            what: format!("TIFF colour type {color:?}"),
            expected: "3 channels of 32-bit float (x, y, z)".into(),
        });
    }
    let data = match dec.read_image().map_err(|e| tiff_err(path, e))? {
        DecodingResult::F32(v) => v,
        _ => {
            return Err(ImagingError::Unsupported {
                path: path.to_path_buf(),
                what: "3 x 32-bit integer samples".into(),
                expected: "3 channels of 32-bit float (x, y, z)".into(),
            })
        }
    };
    if data.len() != (w as usize) * (h as usize) * 3 {
        return Err(tiff_err(path, format!("{} samples for {w}x{h}x3", data.len())));
    }
    PointCloud::new(h, w, data).map_err(|e| sdk_err(path, e))
}

/// Encodes a point cloud as a 3-channel float32 TIFF.
pub fn encode_tiff_f32_xyz(cloud: &PointCloud) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let err = |e: tiff::TiffError| ImagingError::Encode {
        path: PathBuf::from("<memory>"),
        format: "TIFF",
        reason: e.to_string(),
    };
    let mut enc = tiff::encoder::TiffEncoder::new(&mut out).map_err(err)?;
    enc.write_image::<tiff::encoder::colortype::RGB32Float>(cloud.width() as u32, cloud.height() as u32, cloud.data())
        .map_err(err)?;
    Ok(out.into_inner())
}

/// Writes a point cloud as a 3-channel float32 TIFF, atomically.
pub fn write_tiff_f32_xyz(path: impl AsRef<Path>, cloud: &PointCloud) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_tiff_f32_xyz(cloud).map_err(|e| match e {
        ImagingError::Encode { format, reason, .. } => {
            ImagingError::Encode { path: path.to_path_buf(), format, reason }
        }
        other => other,
    })?;
    write_atomic(path, &bytes)
}

/// Encodes an 8-bit PNG with 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels.
pub fn encode_png(height: usize, width: usize, channels: usize, data: &[u8]) -> Result<Vec<u8>> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(invalid("PNG encoder", format!("{c} channels; expected 1, 2, 3 or 4"))),
    };
    if height == 0 || width == 0 || data.len() != height * width * channels {
        return Err(invalid(
            "PNG encoder",
            format!("buffer of {} bytes does not match {height}x{width}x{channels}", data.len()),
        ));
    }
    let err = |e: png::EncodingError| ImagingError::Encode {
        path: PathBuf::from("<memory>"),
        format: "PNG",
        reason: e.to_string(),
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(data).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Writes an 8-bit PNG atomically (see [`encode_png`] for the channel counts).
pub fn write_png_u8(path: impl AsRef<Path>, height: usize, width: usize, channels: usize, data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_png(height, width, channels, data).map_err(|e| match e {
        ImagingError::Invalid { reason, .. } => invalid(path.display().to_string(), reason),
        ImagingError::Encode { format, reason, .. } => {
            ImagingError::Encode { path: path.to_path_buf(), format, reason }
        }
        other => other,
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a
/// rename, so a reader sees the old file or the new one, never a partial one. Creates the
/// parent directory if needed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let io = |source| ImagingError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> anoflow_sdk::harness::ScratchDir {
        anoflow_sdk::harness::scratch_dir(&format!("imaging-{tag}"))
    }

    fn gradient_rgb(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3).map(|i| ((i * 7 + i / 3) % 256) as u8).collect()
    }

    #[test]
    fn png_rgb_round_trip_is_exact() {
        let dir = scratch("png-rt");
        let data = gradient_rgb(256, 240);
        let p = dir.join("a.png");
        write_png_u8(&p, 256, 240, 3, &data).unwrap();
        let img = read_image(&p).unwrap();
        assert_eq!((img.height(), img.width(), img.channels()), (256, 240, 3));
        assert_eq!(img.to_u8(), data);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn grey_and_rgba_png_and_tiff_decode() {
        let dir = scratch("formats");
        let grey: Vec<u8> = (0..64).map(|v| v * 3).collect();
        write_png_u8(dir.join("g.png"), 8, 8, 1, &grey).unwrap();
        let g = read_image(dir.join("g.png")).unwrap();
        assert_eq!(g.channels(), 1);
        assert_eq!(g.to_u8(), grey);
        let rgb = read_image_rgb(dir.join("g.png")).unwrap();
        assert_eq!(rgb.channels(), 3);
        assert_eq!(&rgb.to_u8()[..6], &[0, 0, 0, 3, 3, 3]);

        let rgba: Vec<u8> = (0..16 * 4).map(|i| i as u8).collect();
        write_png_u8(dir.join("a.png"), 4, 4, 4, &rgba).unwrap();
        let a = read_image(dir.join("a.png")).unwrap();
        assert_eq!(a.channels(), 3);
        assert_eq!(&a.to_u8()[..6], &[0, 1, 2, 4, 5, 6]);

        // An 8-bit RGB TIFF.
        let data = gradient_rgb(5, 7);
        let mut buf = Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .write_image::<tiff::encoder::colortype::RGB8>(7, 5, &data)
            .unwrap();
        std::fs::write(dir.join("t.tiff"), buf.into_inner()).unwrap();
        let t = read_image(dir.join("t.tiff")).unwrap();
        assert_eq!((t.height(), t.width(), t.channels()), (5, 7, 3));
        assert_eq!(t.to_u8(), data);
    }

    #[test]
    fn truncated_png_names_the_file() {
        let dir = scratch("trunc");
        let p = dir.join("broken.png");
        let bytes = encode_png(64, 64, 3, &gradient_rgb(64, 64)).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_image(&p).unwrap_err().to_string();
        assert!(err.contains("broken.png") && err.contains("not a valid PNG file"), "{err}");
    }

    #[test]
    fn garbage_and_missing_files_are_named() {
        let dir = scratch("garbage");
        let p = dir.join("x.png");
        std::fs::write(&p, b"hello, not an image").unwrap();
        let err = read_image(&p).unwrap_err().to_string();
        assert!(err.contains("x.png") && err.contains("expected PNG or TIFF") && err.contains("68 65 6c"), "{err}");
        let missing = dir.join("nope.png");
        let err = read_image(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.png") && err.contains("No such file"), "{err}");
        // A corrupt TIFF body behind a valid header.
        let t = dir.join("bad.tiff");
        std::fs::write(&t, b"II*\0\xff\xff\xff\x7f garbage").unwrap();
        let err = read_image(&t).unwrap_err().to_string();
        assert!(err.contains("bad.tiff") && err.contains("not a valid TIFF file"), "{err}");
    }

    #[test]
    fn masks_binary_and_size_checked() {
        let dir = scratch("masks");
        let m255: Vec<u8> = (0..12).map(|i| if i % 3 == 0 { 255 } else { 0 }).collect();
        write_png_u8(dir.join("m.png"), 3, 4, 1, &m255).unwrap();
        let m = read_mask(dir.join("m.png"), Some((3, 4))).unwrap();
        assert_eq!(m.count_ones(), 4);
        assert_eq!(m.data()[0], 1);

        let m01: Vec<u8> = m255.iter().map(|&v| v / 255).collect();
        write_png_u8(dir.join("m01.png"), 3, 4, 1, &m01).unwrap();
        assert_eq!(read_mask(dir.join("m01.png"), None).unwrap().data(), m.data());

        let err = read_mask(dir.join("m.png"), Some((4, 4))).unwrap_err().to_string();
        assert!(err.contains("m.png") && err.contains("mask is 3x4") && err.contains("expected 4x4"), "{err}");

        let grey: Vec<u8> = vec![0, 128, 255, 0];
        write_png_u8(dir.join("grey.png"), 2, 2, 1, &grey).unwrap();
        let err = read_mask(dir.join("grey.png"), None).unwrap_err().to_string();
        assert!(err.contains("grey.png") && err.contains("not binary") && err.contains("[0, 128, 255]"), "{err}");

        // Mixing the two conventions is not binary either.
        write_png_u8(dir.join("mixed.png"), 1, 3, 1, &[0, 1, 255]).unwrap();
        assert!(read_mask(dir.join("mixed.png"), None).is_err());
    }

    #[test]
    fn float_tiff_round_trip_and_wrong_kind() {
        let dir = scratch("xyz");
        let (h, w) = (33usize, 47usize);
        let data: Vec<f32> = (0..h * w * 3).map(|i| if i % 11 == 0 { 0.0 } else { i as f32 * 0.25 - 100.0 }).collect();
        let cloud = PointCloud::new(h as u32, w as u32, data.clone()).unwrap();
        let p = dir.join("000.tiff");
        write_tiff_f32_xyz(&p, &cloud).unwrap();
        let back = read_tiff_f32_xyz(&p).unwrap();
        assert_eq!((back.height(), back.width()), (h, w));
        assert_eq!(back.data(), &data[..]);

        // An 8-bit RGB TIFF is not a point cloud.
        let mut buf = Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .write_image::<tiff::encoder::colortype::RGB8>(2, 2, &[0u8; 12])
            .unwrap();
        std::fs::write(dir.join("rgb.tiff"), buf.into_inner()).unwrap();
        let err = read_tiff_f32_xyz(dir.join("rgb.tiff")).unwrap_err().to_string();
        assert!(err.contains("rgb.tiff") && err.contains("32-bit float"), "{err}");

        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(dir.join("cut.tiff"), &bytes[..bytes.len() / 3]).unwrap();
        let err = read_tiff_f32_xyz(dir.join("cut.tiff")).unwrap_err().to_string();
        assert!(err.contains("cut.tiff") && err.contains("TIFF"), "{err}");
    }

    #[test]
    fn encode_png_rejects_bad_shapes() {
        assert!(encode_png(2, 2, 3, &[0; 11]).is_err());
        assert!(encode_png(2, 2, 5, &[0; 20]).is_err());
        // The parent "directory" is a file: the error names the target.
        let dir = scratch("enc");
        std::fs::write(dir.join("file"), b"x").unwrap();
        let err = write_png_u8(dir.join("file").join("x.png"), 1, 1, 1, &[0]).unwrap_err().to_string();
        assert!(err.contains("file/x.png"), "{err}");
    }
}
