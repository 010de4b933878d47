//! Decoders for the map files other tools write: NumPy `.npy` (f32/f64, C or Fortran order),
//! single-channel 32/64-bit float TIFF, and 8/16-bit greyscale PNG (values times a scale).

use std::io::Cursor;

/// A decoded map, `height x width`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMap {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a .npy file ({0})")]
    Npy(String),
    #[error("not a readable TIFF map ({0})")]
    Tiff(String),
    #[error("not a readable PNG map ({0})")]
    Png(String),
    #[error("expected a single-channel 2-D map, found shape {0:?}")]
    Shape(Vec<usize>),
}

/// Height and width of a map shape: `(h, w)`, `(1, h, w)` or `(h, w, 1)`.
fn map_shape(shape: &[usize]) -> Result<(usize, usize), FormatError> {
    match *shape {
        [h, w] | [1, h, w] | [h, w, 1] if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(FormatError::Shape(shape.to_vec())),
    }
}

/// The value of `'key':` in a `.npy` header dict, as raw text up to the next top-level comma.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str, FormatError> {
    let pat = format!("'{key}':");
    let start = header.find(&pat).ok_or_else(|| FormatError::Npy(format!("header has no `{key}`")))? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') { rest.find(')').map(|i| i + 1) } else { rest.find([',', '}']) }
        .ok_or_else(|| FormatError::Npy(format!("header field `{key}` is not terminated")))?;
    Ok(rest[..end].trim())
}

/// Decodes a NumPy `.npy` file holding a float32 or float64 map.
pub fn decode_npy(bytes: &[u8]) -> Result<RawMap, FormatError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(FormatError::Npy("missing the \\x93NUMPY magic".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(FormatError::Npy(format!("unsupported format version {v}"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| FormatError::Npy("header is truncated".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| FormatError::Npy("header is not text".into()))?;
    let descr = header_field(header, "descr")?.trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(header, "fortran_order")? == "True";
    let shape_text = header_field(header, "shape")?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| FormatError::Npy(format!("bad shape {shape_text}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (h, w) = map_shape(&shape)?;
    let body = &bytes[start + header_len..];
    let n = h * w;
    let values: Vec<f32> = match descr {
        "<f4" | "=f4" | ">f4" => {
            let need = n * 4;
            let raw = body
                .get(..need)
                .ok_or_else(|| FormatError::Npy(format!("data holds {} bytes, shape needs {need}", body.len())))?;
            raw.chunks_exact(4)
                .map(|b| {
                    let a = [b[0], b[1], b[2], b[3]];
                    if descr == ">f4" {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .collect()
        }
        "<f8" | "=f8" | ">f8" => {
            let need = n * 8;
            let raw = body
                .get(..need)
                .ok_or_else(|| FormatError::Npy(format!("data holds {} bytes, shape needs {need}", body.len())))?;
            raw.chunks_exact(8)
                .map(|b| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    (if descr == ">f8" { f64::from_be_bytes(a) } else { f64::from_le_bytes(a) }) as f32
                })
                .collect()
        }
        other => return Err(FormatError::Npy(format!("dtype `{other}` is not float32 or float64"))),
    };
    let data = if fortran {
        // Column-major on disk: element (y, x) sits at x * h + y.
        let mut out = vec![0.0; n];
        for x in 0..w {
            for y in 0..h {
                out[y * w + x] = values[x * h + y];
            }
        }
        out
    } else {
        values
    };
    Ok(RawMap { height: h, width: w, data })
}

/// Decodes a single-channel float TIFF (32- or 64-bit samples).
pub fn decode_tiff(bytes: &[u8]) -> Result<RawMap, FormatError> {
    use tiff::decoder::{Decoder, DecodingResult};
    let err = |e: tiff::TiffError| FormatError::Tiff(e.to_string());
    let mut dec = Decoder::new(Cursor::new(bytes)).map_err(err)?;
    let (w, h) = dec.dimensions().map_err(err)?;
    let color = dec.colortype().map_err(err)?;
    if !matches!(color, tiff::ColorType::Gray(32) | tiff::ColorType::Gray(64)) {
        return Err(FormatError::Tiff(format!("expected one 32- or 64-bit float channel, found {color:?}")));
    }
    let data: Vec<f32> = match dec.read_image().map_err(err)? {
        DecodingResult::F32(v) => v,
        DecodingResult::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        _ => return Err(FormatError::Tiff("samples are integers, not floats".into())),
    };
    let (h, w) = (h as usize, w as usize);
    if data.len() != h * w {
        return Err(FormatError::Tiff(format!("{} samples for a {h}x{w} image", data.len())));
    }
    Ok(RawMap { height: h, width: w, data })
}

/// Decodes an 8- or 16-bit greyscale PNG; each stored integer is multiplied by `scale`.
pub fn decode_png(bytes: &[u8], scale: f32) -> Result<RawMap, FormatError> {
    let err = |e: png::DecodingError| FormatError::Png(e.to_string());
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(err)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(err)?;
    if info.color_type != png::ColorType::Grayscale {
        return Err(FormatError::Png(format!("expected greyscale, found {:?}", info.color_type)));
    }
    let (h, w) = (info.height as usize, info.width as usize);
    let data: Vec<f32> = match info.bit_depth {
        png::BitDepth::Sixteen => {
            buf[..h * w * 2].chunks_exact(2).map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) * scale).collect()
        }
        png::BitDepth::Eight => buf[..h * w].iter().map(|&v| f32::from(v) * scale).collect(),
        other => return Err(FormatError::Png(format!("expected 8 or 16 bits per sample, found {other:?}"))),
    };
    Ok(RawMap { height: h, width: w, data })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A `.npy` file as numpy writes it (version 1, header padded to 64 bytes).
    pub fn npy_bytes(descr: &str, fortran: bool, shape: &str, body: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn npy_f32_f64_and_fortran_order() {
        let vals: Vec<f32> = (0..6).map(|v| v as f32 * 0.5).collect();
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = decode_npy(&npy_bytes("<f4", false, "(2, 3)", &body)).unwrap();
        assert_eq!((m.height, m.width, m.data.clone()), (2, 3, vals.clone()));
        // The same bytes read as Fortran order are the transpose of a 3x2 C-order read.
        let f = decode_npy(&npy_bytes("<f4", true, "(2, 3)", &body)).unwrap();
        assert_eq!(f.data, vec![0.0, 1.0, 2.0, 0.5, 1.5, 2.5]);
        let body64: Vec<u8> = vals.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect();
        assert_eq!(decode_npy(&npy_bytes("<f8", false, "(1, 2, 3)", &body64)).unwrap().data, vals);
        let err = decode_npy(&npy_bytes("<i4", false, "(2, 3)", &body)).unwrap_err().to_string();
        assert!(err.contains("dtype `<i4` is not float32 or float64"), "{err}");
        let err = decode_npy(&npy_bytes("<f4", false, "(2, 3, 3)", &body)).unwrap_err().to_string();
        assert!(err.contains("single-channel 2-D map, found shape [2, 3, 3]"), "{err}");
        assert!(decode_npy(&npy_bytes("<f4", false, "(4, 3)", &body)).is_err(), "short data");
    }
}
