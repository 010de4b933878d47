//! Reading and writing PNG / TIFF images, binary masks and float32 point-cloud TIFFs.
//!
//! Readers look before they allocate: the file must be a regular file, its first bytes must
//! be a PNG or TIFF signature, and the header's dimensions must fit the per-image cap
//! ([`MAX_DECODED_BYTES`]), explain the file's size ([`max_file_bytes`]) and fit the
//! process's decode budget ([`crate::budget`]), all before the pixels are decoded. The file is
//! streamed into the decoder, never read whole. A truncated or corrupt file is an error naming
//! the path. Writers encode in memory and then go through [`write_atomic`], so a reader never
//! sees a half-written file.

use std::{
    fs::File,
    io::{BufRead, BufReader, Cursor, Read, Seek},
    path::{Path, PathBuf},
};

use anoflow_sdk::prelude::{Image, Mask, Pixels, PointCloud};

use crate::{
    budget::{self, DecodeBudget, Reservation},
    invalid, ImagingError, Result,
};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Most bytes a decoded PNG or float32 point-cloud TIFF may take (1 GiB: a 16k x 16k RGB
/// image, a 9k x 9k cloud). The header's size is checked against it before allocating, so a
/// corrupt header claiming a huge image is an error, not an allocation failure that aborts
/// the process.
pub const MAX_DECODED_BYTES: usize = 1 << 30;

/// Room for metadata (ICC profiles, text, EXIF) in a file beside its pixel data.
const METADATA_ALLOWANCE: u64 = 64 << 20;

/// The largest file that can hold an image whose uncompressed pixel data is `raw_bytes`:
/// twice that (LZW, the worst of the supported compressions, grows incompressible data by
/// under half) plus 64 MiB of metadata. A larger file is refused before it is read: it is
/// not that image, or it carries gigabytes of something else.
pub fn max_file_bytes(raw_bytes: u64) -> u64 {
    raw_bytes.saturating_mul(2).saturating_add(METADATA_ALLOWANCE)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Tiff,
}

fn is_tiff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*")
}

/// The format the first bytes announce.
fn sniff(head: &[u8], path: &Path) -> Result<Format> {
    if head.starts_with(PNG_MAGIC) {
        Ok(Format::Png)
    } else if is_tiff(head) {
        Ok(Format::Tiff)
    } else {
        let magic: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        let magic = if magic.is_empty() { "nothing (empty file)".to_string() } else { format!("bytes {magic}") };
        Err(ImagingError::UnknownFormat { path: path.to_path_buf(), magic })
    }
}

/// Encoded image data to decode: a stream, its length in bytes, and the format its first
/// bytes announce (read without consuming them).
struct Source<R> {
    reader: R,
    len: u64,
    format: Format,
}

/// Opens an image file without reading it: a FIFO, a device or a directory is refused
/// before it is opened (opening a FIFO blocks).
fn open(path: &Path) -> Result<Source<BufReader<File>>> {
    let io = |source| ImagingError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            what: "file type (not a regular file)".into(),
            expected: "a PNG or TIFF file".into(),
        });
    }
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let head = reader.fill_buf().map_err(io)?;
    let format = sniff(&head[..head.len().min(8)], path)?;
    Ok(Source { reader, len: meta.len(), format })
}

fn in_memory<'a>(bytes: &'a [u8], path: &Path) -> Result<Source<Cursor<&'a [u8]>>> {
    let format = sniff(bytes, path)?;
    Ok(Source { reader: Cursor::new(bytes), len: bytes.len() as u64, format })
}

/// Checks what a header claims against the caps and reserves the decode's memory.
/// `raw_bytes`: the uncompressed pixel data; `decode_bytes`: what decoding it allocates.
fn admit<'b>(
    path: &Path,
    format: &'static str,
    (w, h): (u32, u32),
    file_len: u64,
    raw_bytes: u64,
    decode_bytes: u64,
    budget: &'b DecodeBudget,
) -> Result<Reservation<'b>> {
    let err = |reason: String| ImagingError::Decode { path: path.to_path_buf(), format, reason };
    if decode_bytes > MAX_DECODED_BYTES as u64 {
        return Err(err(format!(
            "{w}x{h} image would decode to {decode_bytes} bytes, over the limit of {MAX_DECODED_BYTES}"
        )));
    }
    let max_len = max_file_bytes(raw_bytes);
    if file_len > max_len {
        return Err(err(format!(
            "the file is {file_len} bytes, more than a {w}x{h} image can take ({max_len} at most); refused before reading it"
        )));
    }
    // The decoder's buffer, and the copy that dropping alpha or widening grey to RGB makes.
    let working = decode_bytes + u64::from(w) * u64::from(h) * 3;
    budget.reserve(working).map_err(|over| ImagingError::OverBudget {
        path: path.to_path_buf(),
        width: w,
        height: h,
        needed: over.needed,
        limit: over.limit,
    })
}

fn the_budget() -> Result<&'static DecodeBudget> {
    budget::global().map_err(|reason| invalid(budget::BUDGET_ENV, reason))
}

fn decode_png<'b, R: Read>(
    src: Source<R>,
    path: &Path,
    budget: &'b DecodeBudget,
) -> Result<(Decoded, Reservation<'b>)> {
    let err = |reason: String| ImagingError::Decode { path: path.to_path_buf(), format: "PNG", reason };
    let mut dec = png::Decoder::new(src.reader);
    // Palette and low-bit-depth images expand to 8 bits; 16-bit samples keep their high byte.
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader.output_buffer_size();
    let (w, h) = reader.info().size();
    let raw = reader.info().raw_bytes() as u64;
    let held = admit(path, "PNG", (w, h), src.len, raw, size as u64, budget)?;
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
    Ok((Decoded { height: info.height as usize, width: info.width as usize, channels, data }, held))
}

fn tiff_err(path: &Path, e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Decode { path: path.to_path_buf(), format: "TIFF", reason: e.to_string() }
}

/// Decoder limits: a decoded image up to [`MAX_DECODED_BYTES`] (the default 256 MiB would
/// refuse large clouds), so a header claiming a huge image is refused before anything that
/// size is allocated.
fn tiff_limits() -> tiff::decoder::Limits {
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = MAX_DECODED_BYTES;
    limits.intermediate_buffer_size = MAX_DECODED_BYTES;
    limits.ifd_value_size = 16 << 20;
    limits
}

/// A TIFF whose header was read and admitted; its pixels are not decoded yet.
struct AdmittedTiff<'b, R: Read + Seek> {
    dec: tiff::decoder::Decoder<R>,
    width: u32,
    height: u32,
    color: tiff::ColorType,
    held: Reservation<'b>,
}

/// Opens a TIFF stream and checks and reserves what its header claims (`bytes_per_pixel` of
/// the decoded image).
fn open_tiff<'b, R: Read + Seek>(
    src: Source<R>,
    path: &Path,
    budget: &'b DecodeBudget,
    bytes_per_pixel: impl FnOnce(tiff::ColorType) -> Result<u64>,
) -> Result<AdmittedTiff<'b, R>> {
    let mut dec = tiff::decoder::Decoder::new(src.reader).map_err(|e| tiff_err(path, e))?.with_limits(tiff_limits());
    let (width, height) = dec.dimensions().map_err(|e| tiff_err(path, e))?;
    let color = dec.colortype().map_err(|e| tiff_err(path, e))?;
    let decoded = u64::from(width) * u64::from(height) * bytes_per_pixel(color)?;
    let held = admit(path, "TIFF", (width, height), src.len, decoded, decoded, budget)?;
    Ok(AdmittedTiff { dec, width, height, color, held })
}

fn decode_tiff_u8<'b, R: Read + Seek>(
    src: Source<R>,
    path: &Path,
    budget: &'b DecodeBudget,
) -> Result<(Decoded, Reservation<'b>)> {
    use tiff::{decoder::DecodingResult, ColorType};
    let channels_of = |color: ColorType| match color {
        ColorType::Gray(8) => Ok(1),
        ColorType::GrayA(8) => Ok(2),
        ColorType::RGB(8) => Ok(3),
        ColorType::RGBA(8) => Ok(4),
        other => Err(ImagingError::Unsupported {
            path: path.to_path_buf(),
            what: format!("TIFF colour type {other:?}"),
            expected: "8-bit grey, grey+alpha, RGB or RGBA".into(),
        }),
    };
    let AdmittedTiff { mut dec, width: w, height: h, color, held } =
        open_tiff(src, path, budget, |c| channels_of(c).map(|n| n as u64))?;
    let channels = channels_of(color)?;
    let data = match dec.read_image().map_err(|e| tiff_err(path, e))? {
        DecodingResult::U8(v) => v,
        _ => return Err(tiff_err(path, "8-bit colour type but samples are not 8-bit")),
    };
    if data.len() != (w as usize) * (h as usize) * channels {
        return Err(tiff_err(path, format!("{} samples for {w}x{h}x{channels}", data.len())));
    }
    let (data, channels) = drop_alpha(data, channels);
    Ok((Decoded { height: h as usize, width: w as usize, channels, data }, held))
}

fn decode_any<'b, R: Read + Seek>(
    src: Source<R>,
    path: &Path,
    budget: &'b DecodeBudget,
) -> Result<(Decoded, Reservation<'b>)> {
    match src.format {
        Format::Png => decode_png(src, path, budget),
        Format::Tiff => decode_tiff_u8(src, path, budget),
    }
}

fn image_from(d: Decoded, path: &Path) -> Result<Image> {
    Image::from_u8(d.height as u32, d.width as u32, d.channels as u32, d.data).map_err(|e| sdk_err(path, e))
}

/// Decodes PNG or TIFF bytes (8-bit grey / RGB / RGBA) into a u8 image with 1 or 3 channels
/// (alpha dropped). `path` only names the data in errors.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let (d, _held) = decode_any(in_memory(bytes, path)?, path, the_budget()?)?;
    image_from(d, path)
}

/// Reads a PNG or TIFF image (8-bit grey / RGB / RGBA) as u8 with 1 or 3 channels.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    read_image_within(path.as_ref(), the_budget()?)
}

fn read_image_within(path: &Path, budget: &DecodeBudget) -> Result<Image> {
    let (d, _held) = decode_any(open(path)?, path, budget)?;
    image_from(d, path)
}

/// Reads an image and converts grey to RGB, so every image a source yields has 3 channels.
pub fn read_image_rgb(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    // The reservation covers the grey-to-RGB copy too.
    let (d, _held) = decode_any(open(path)?, path, the_budget()?)?;
    to_rgb(&image_from(d, path)?).map_err(|e| sdk_err(path, e))
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
    let (d, _held) = decode_any(open(path)?, path, the_budget()?)?;
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

/// Reads an organized point cloud from a 3-channel 32-bit float TIFF (x, y, z per pixel,
/// zeros where there is no point), as in MVTec 3D-AD.
pub fn read_tiff_f32_xyz(path: impl AsRef<Path>) -> Result<PointCloud> {
    use tiff::{decoder::DecodingResult, ColorType};
    let path = path.as_ref();
    let src = open(path).map_err(|e| match e {
        ImagingError::UnknownFormat { .. } => tiff_err(path, "missing TIFF header"),
        other => other,
    })?;
    if src.format != Format::Tiff {
        return Err(tiff_err(path, "missing TIFF header"));
    }
    let wrong_kind = |what: String| ImagingError::Unsupported {
        path: path.to_path_buf(),
        what,
        expected: "3 channels of 32-bit float (x, y, z)".into(),
    };
    let AdmittedTiff { mut dec, width: w, height: h, held: _held, .. } =
        open_tiff(src, path, the_budget()?, |color| match color {
            ColorType::RGB(32) => Ok(12),
            other => Err(wrong_kind(format!("TIFF colour type {other:?}"))),
        })?;
    let data = match dec.read_image().map_err(|e| tiff_err(path, e))? {
        DecodingResult::F32(v) => v,
        _ => return Err(wrong_kind("3 x 32-bit integer samples".into())),
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

/// Writes `bytes` to `path` atomically and durably ([`crate::atomic::write_file_atomic`]),
/// naming the file in the error.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    crate::atomic::write_file_atomic(path, bytes)
        .map_err(|source| ImagingError::Io { path: path.to_path_buf(), source })
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

    /// A small RGBA PNG whose IHDR claims `w` x `h` (CRC fixed): a 1 KB file, a huge header.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut b = encode_png(4, 4, 4, &[7; 64]).unwrap();
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32fast::hash(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Runs `f` on another thread and fails the test if it takes longer than `limit`.
    fn within<T: Send + 'static>(limit: std::time::Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).expect("took too long (blocked, or read the whole file)")
    }

    #[test]
    fn a_header_larger_than_the_whole_budget_is_refused_before_decoding() {
        let dir = scratch("budget");
        let p = dir.join("claims-16000.png");
        std::fs::write(&p, png_claiming(16_000, 16_000)).unwrap();
        let budget = DecodeBudget::new(1 << 30);
        let err = read_image_within(&p, &budget).unwrap_err();
        assert!(matches!(err, ImagingError::OverBudget { width: 16_000, height: 16_000, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("claims-16000.png") && msg.contains("decode budget of 1073741824"), "{msg}");
        assert!(msg.contains("ANOFLOW_DECODE_BUDGET"), "{msg}");
        assert_eq!(budget.reserved(), 0);

        // Within a larger budget it is admitted, fails on its missing pixel data, and gives
        // its reservation back.
        let budget = DecodeBudget::new(4 << 30);
        let err = read_image_within(&p, &budget).unwrap_err().to_string();
        assert!(err.contains("claims-16000.png") && err.contains("not a valid PNG"), "{err}");
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn every_read_gives_its_reservation_back() {
        let dir = scratch("give-back");
        let p = dir.join("a.png");
        write_png_u8(&p, 16, 8, 3, &gradient_rgb(16, 8)).unwrap();
        let budget = DecodeBudget::new(1 << 20);
        for _ in 0..3 {
            assert_eq!(read_image_within(&p, &budget).unwrap().height(), 16);
            assert_eq!(budget.reserved(), 0);
        }
        // A 16x8 RGB image reserves its buffer and one RGB copy: 2 x 384 bytes.
        let tiny = DecodeBudget::new(767);
        let err = read_image_within(&p, &tiny).unwrap_err();
        assert!(matches!(err, ImagingError::OverBudget { needed: 768, limit: 767, .. }), "{err}");
    }

    /// A sparse file of 3 GB costs no disk, and reading it whole would cost 3 GB of memory.
    fn sparse_file(path: &Path, head: &[u8], len: u64) {
        let f = std::fs::File::create(path).unwrap();
        std::io::Write::write_all(&mut &f, head).unwrap();
        f.set_len(len).unwrap();
    }

    #[test]
    fn a_file_larger_than_its_header_explains_is_refused_unread() {
        let dir = scratch("oversized");
        let p = dir.join("big.png");
        sparse_file(&p, &encode_png(8, 8, 3, &gradient_rgb(8, 8)).unwrap(), 3 << 30);
        let path = p.clone();
        let err = within(std::time::Duration::from_secs(2), move || read_image(&path).unwrap_err().to_string());
        assert!(err.contains("big.png") && err.contains("more than a 8x8 image can take"), "{err}");

        // Zeros behind a .png name: refused on the signature, from the first bytes.
        let z = dir.join("zeros.png");
        sparse_file(&z, &[], 3 << 30);
        let err = within(std::time::Duration::from_secs(2), move || read_image(&z).unwrap_err().to_string());
        assert!(err.contains("zeros.png") && err.contains("bytes 00 00 00 00 00 00 00 00"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let p = dir.join("pipe.png");
        assert!(std::process::Command::new("mkfifo").arg(&p).status().unwrap().success());
        let path = p.clone();
        let err = within(std::time::Duration::from_secs(5), move || read_image(&path).unwrap_err().to_string());
        assert!(err.contains("pipe.png") && err.contains("not a regular file"), "{err}");
        let err = within(std::time::Duration::from_secs(5), move || read_tiff_f32_xyz(&p).unwrap_err().to_string());
        assert!(err.contains("pipe.png") && err.contains("not a regular file"), "{err}");
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
