//! A compact binary encoding of a sample's output values, for the node-output cache.
//! Integrity is the caller's job (the cache wraps this in a SHA-256-checked envelope).

use abi_stable::std_types::RString;
use anoflow_sdk::value::{FeatureMap, Image, Mask, Pixels, PointCloud, PortValue, ScoreMap, Value};

const MAGIC: &[u8; 4] = b"AFV1";

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn f32s(&mut self, d: &[f32]) {
        self.u32(d.len());
        self.0.reserve(d.len() * 4);
        for v in d {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn bytes(&mut self, d: &[u8]) {
        self.u32(d.len());
        self.0.extend_from_slice(d);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<usize> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()?;
        self.take(n).and_then(|b| String::from_utf8(b.to_vec()).ok())
    }
    fn f32s(&mut self) -> Option<Vec<f32>> {
        let n = self.u32()?;
        let raw = self.take(n.checked_mul(4)?)?;
        Some(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()?;
        self.take(n).map(<[u8]>::to_vec)
    }
}

pub fn encode(values: &[PortValue]) -> Vec<u8> {
    let mut w = Writer(MAGIC.to_vec());
    w.u32(values.len());
    for pv in values {
        w.str(&pv.port);
        w.str(&pv.source);
        match &pv.value {
            Value::Image(i) => {
                w.0.push(0);
                w.u32(i.height());
                w.u32(i.width());
                w.u32(i.channels());
                match i.pixels() {
                    Pixels::U8(d) => {
                        w.0.push(0);
                        w.bytes(d);
                    }
                    Pixels::F32(d) => {
                        w.0.push(1);
                        w.f32s(d);
                    }
                }
            }
            Value::Mask(m) => {
                w.0.push(1);
                w.u32(m.height());
                w.u32(m.width());
                w.bytes(m.data());
            }
            Value::ScoreMap(m) => {
                w.0.push(2);
                w.u32(m.height());
                w.u32(m.width());
                w.f32s(m.data());
            }
            Value::FeatureMap(f) => {
                w.0.push(3);
                w.u32(f.channels());
                w.u32(f.height());
                w.u32(f.width());
                w.0.extend_from_slice(&f.stride().to_le_bytes());
                w.f32s(f.data());
            }
            Value::PointCloud(p) => {
                w.0.push(4);
                w.u32(p.height());
                w.u32(p.width());
                w.f32s(p.data());
            }
            Value::Scalar(v) => {
                w.0.push(5);
                w.0.extend_from_slice(&v.to_le_bytes());
            }
            Value::Text(t) => {
                w.0.push(6);
                w.str(t);
            }
        }
    }
    w.0
}

/// Decodes what [`encode`] wrote; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<Vec<PortValue>> {
    let mut r = Reader(bytes.strip_prefix(MAGIC)?);
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let port = r.str()?;
        let source = r.str()?;
        let dim = |r: &mut Reader| r.u32().map(|v| v as u32);
        let value = match r.u8()? {
            0 => {
                let (h, w, c) = (dim(&mut r)?, dim(&mut r)?, dim(&mut r)?);
                match r.u8()? {
                    0 => Value::Image(Image::from_u8(h, w, c, r.bytes()?).ok()?),
                    _ => Value::Image(Image::from_f32(h, w, c, r.f32s()?).ok()?),
                }
            }
            1 => {
                let (h, w) = (dim(&mut r)?, dim(&mut r)?);
                Value::Mask(Mask::new(h, w, r.bytes()?).ok()?)
            }
            2 => {
                let (h, w) = (dim(&mut r)?, dim(&mut r)?);
                Value::ScoreMap(ScoreMap::new(h, w, r.f32s()?).ok()?)
            }
            3 => {
                let (c, h, w) = (dim(&mut r)?, dim(&mut r)?, dim(&mut r)?);
                let s = r.take(4)?;
                let stride = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                Value::FeatureMap(FeatureMap::new(c, h, w, stride, r.f32s()?).ok()?)
            }
            4 => {
                let (h, w) = (dim(&mut r)?, dim(&mut r)?);
                Value::PointCloud(PointCloud::new(h, w, r.f32s()?).ok()?)
            }
            5 => {
                let b = r.take(8)?;
                Value::Scalar(f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            }
            6 => Value::Text(RString::from(r.str()?)),
            _ => return None,
        };
        out.push(PortValue { port: port.into(), source: source.into(), value });
    }
    r.0.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(port: &str, value: Value) -> PortValue {
        PortValue { port: port.into(), source: "layer2".into(), value }
    }

    #[test]
    fn every_kind_round_trips() {
        let values = vec![
            pv("image", Image::from_u8(2, 2, 3, (0..12).collect()).unwrap().into()),
            pv("imagef", Image::from_f32(1, 2, 1, vec![0.5, -1.0]).unwrap().into()),
            pv("mask", Mask::new(2, 2, vec![0, 1, 1, 0]).unwrap().into()),
            pv("score", ScoreMap::new(1, 3, vec![0.1, f32::MAX, -3.0]).unwrap().into()),
            pv("features", FeatureMap::new(2, 1, 2, 8.0, vec![1.0, 2.0, 3.0, 4.0]).unwrap().into()),
            pv("xyz", PointCloud::new(1, 1, vec![1.0, 2.0, 3.0]).unwrap().into()),
            pv("image_score", Value::Scalar(0.25)),
            pv("note", Value::Text("hi".into())),
        ];
        let back = decode(&encode(&values)).unwrap();
        assert_eq!(back.len(), values.len());
        assert_eq!(encode(&back), encode(&values));
        assert_eq!(back[4].source, "layer2");
    }

    #[test]
    fn malformed_input_is_rejected() {
        let enc = encode(&[pv("score", ScoreMap::new(1, 2, vec![1.0, 2.0]).unwrap().into())]);
        assert!(decode(&enc[..enc.len() - 1]).is_none());
        assert!(decode(b"nope").is_none());
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_none());
    }
}
