//! Values as bytes, for the host's node-output cache: one sample's output values in the
//! [`crate::state`] format (checksummed sections, so a damaged entry is an error, never a
//! wrong value).
//!
//! The encoding is part of the data contract: it covers every [`Value`] kind, and a change
//! to the value types (which bumps [`crate::abi::DATA_CONTRACT_VERSION`]) changes it too.
//! The writer name carries that version, so values cached under another contract are
//! refused; the host then treats the entry as a miss and recomputes it.
//!
//! Sections, for the `i`-th value (from 0): `i/port`, `i/source` (text), `i/kind` (text:
//! `image`, `mask`, `score-map`, `feature-map`, `point-cloud`, `scalar`, `text`), `i/data`
//! (the value's numbers with their shape: image `[h, w, c]` u8 or f32, mask `[h, w]` u8,
//! score map `[h, w]` f32, feature map `[c, h, w]` f32, point cloud `[h, w, 3]` f32,
//! scalar `[]` f64, text as text) and `i/stride` (f32, feature maps only); `count` (u64).

use abi_stable::std_types::RString;

use crate::abi::DATA_CONTRACT_VERSION;
use crate::state::{StateError, StateReader, StateWriter};
use crate::value::{FeatureMap, Image, Mask, Pixels, PointCloud, PortValue, ScoreMap, Value};

/// The writer name of encoded values.
const STAGE: &str = "anoflow.values";

/// Encodes one sample's output values.
pub fn encode(values: &[PortValue]) -> Result<Vec<u8>, StateError> {
    let mut w = StateWriter::new(STAGE, DATA_CONTRACT_VERSION).u64("count", &[], &[values.len() as u64]);
    for (i, pv) in values.iter().enumerate() {
        let key = |part: &str| format!("{i}/{part}");
        w = w.text(&key("port"), &pv.port).text(&key("source"), &pv.source);
        let data = key("data");
        w = match &pv.value {
            Value::Image(im) => {
                let shape = [im.height(), im.width(), im.channels()];
                let w = w.text(&key("kind"), "image");
                match im.pixels() {
                    Pixels::U8(d) => w.u8(&data, &shape, d),
                    Pixels::F32(d) => w.f32(&data, &shape, d),
                }
            }
            Value::Mask(m) => w.text(&key("kind"), "mask").u8(&data, &[m.height(), m.width()], m.data()),
            Value::ScoreMap(m) => w.text(&key("kind"), "score-map").f32(&data, &[m.height(), m.width()], m.data()),
            Value::FeatureMap(f) => w
                .text(&key("kind"), "feature-map")
                .f32(&data, &[f.channels(), f.height(), f.width()], f.data())
                .f32(&key("stride"), &[], &[f.stride()]),
            Value::PointCloud(p) => {
                w.text(&key("kind"), "point-cloud").f32(&data, &[p.height(), p.width(), 3], p.data())
            }
            Value::Scalar(v) => w.text(&key("kind"), "scalar").f64(&data, &[], &[*v]),
            Value::Text(t) => w.text(&key("kind"), "text").text(&data, t),
        };
    }
    w.finish()
}

/// Decodes what [`encode`] wrote; an error names what is wrong (old format, damaged section).
pub fn decode(bytes: &[u8]) -> Result<Vec<PortValue>, StateError> {
    let r = StateReader::parse(bytes, STAGE, DATA_CONTRACT_VERSION)?;
    let n = r.scalar::<u64>("count")?;
    let mut out = Vec::with_capacity((n as usize).min(64));
    for i in 0..n {
        let key = |part: &str| format!("{i}/{part}");
        let data = key("data");
        let dims = |d: &[usize]| d.iter().map(|&v| u32::try_from(v).unwrap_or(u32::MAX)).collect::<Vec<u32>>();
        let invalid = |e: crate::error::StageError| r.error(&data, e.message.to_string());
        let kind = r.text(&key("kind"))?;
        let value = match kind.as_str() {
            "image" => {
                let im = if r.u8(&data).is_ok() {
                    let (shape, d) = r.u8(&data)?;
                    let s = dims(&shape);
                    rank(&r, &data, &s, 3)?;
                    Image::from_u8(s[0], s[1], s[2], d)
                } else {
                    let (shape, d) = r.f32_rank(&data, 3)?;
                    let s = dims(&shape);
                    Image::from_f32(s[0], s[1], s[2], d)
                };
                Value::Image(im.map_err(invalid)?)
            }
            "mask" => {
                let (shape, d) = r.u8(&data)?;
                let s = dims(&shape);
                rank(&r, &data, &s, 2)?;
                Value::Mask(Mask::new(s[0], s[1], d).map_err(invalid)?)
            }
            "score-map" => {
                let (shape, d) = r.f32_rank(&data, 2)?;
                let s = dims(&shape);
                Value::ScoreMap(ScoreMap::new(s[0], s[1], d).map_err(invalid)?)
            }
            "feature-map" => {
                let (shape, d) = r.f32_rank(&data, 3)?;
                let s = dims(&shape);
                let stride = r.scalar::<f32>(&key("stride"))?;
                Value::FeatureMap(FeatureMap::new(s[0], s[1], s[2], stride, d).map_err(invalid)?)
            }
            "point-cloud" => {
                let (shape, d) = r.f32_rank(&data, 3)?;
                let s = dims(&shape);
                Value::PointCloud(PointCloud::new(s[0], s[1], d).map_err(invalid)?)
            }
            "scalar" => Value::Scalar(r.scalar::<f64>(&data)?),
            "text" => Value::Text(RString::from(r.text(&data)?)),
            other => return Err(r.error(&key("kind"), format!("unknown value kind `{other}`"))),
        };
        out.push(PortValue { port: r.text(&key("port"))?.into(), source: r.text(&key("source"))?.into(), value });
    }
    Ok(out)
}

fn rank(r: &StateReader<'_>, name: &str, dims: &[u32], rank: usize) -> Result<(), StateError> {
    if dims.len() == rank {
        Ok(())
    } else {
        Err(r.error(name, format!("expected rank {rank}, found shape {dims:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(port: &str, value: Value) -> PortValue {
        PortValue { port: port.into(), source: "layer2".into(), value }
    }

    fn values() -> Vec<PortValue> {
        vec![
            pv("image", Image::from_u8(2, 2, 3, (0..12).collect()).unwrap().into()),
            pv("imagef", Image::from_f32(1, 2, 1, vec![0.5, -1.0]).unwrap().into()),
            pv("mask", Mask::new(2, 2, vec![0, 1, 1, 0]).unwrap().into()),
            pv("score", ScoreMap::new(1, 3, vec![0.1, f32::MAX, -3.0]).unwrap().into()),
            pv("features", FeatureMap::new(2, 1, 2, 8.0, vec![1.0, 2.0, 3.0, 4.0]).unwrap().into()),
            pv("xyz", PointCloud::new(1, 1, vec![1.0, 2.0, 3.0]).unwrap().into()),
            pv("image_score", Value::Scalar(0.25)),
            pv("note", Value::Text("hi".into())),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let values = values();
        let enc = encode(&values).unwrap();
        let back = decode(&enc).unwrap();
        assert_eq!(back.len(), values.len());
        assert_eq!(encode(&back).unwrap(), enc);
        assert_eq!(back[4].source, "layer2");
        assert_eq!(back[7].port, "note");
        assert!(decode(&encode(&[]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn malformed_or_old_input_is_rejected() {
        let enc = encode(&[pv("score", ScoreMap::new(1, 2, vec![1.0, 2.0]).unwrap().into())]).unwrap();
        assert!(decode(&enc[..enc.len() - 1]).is_err());
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // The value format before the shared state format.
        assert_eq!(decode(b"AFV1\x00\x00\x00\x00").unwrap_err(), StateError::BadMagic);
        let other = StateWriter::new("patchcore", 1).finish().unwrap();
        assert!(matches!(decode(&other), Err(StateError::WrongStage { .. })));
    }
}
