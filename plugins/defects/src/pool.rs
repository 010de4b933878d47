//! The donor pool: the clean images a fitted `synthetic-defects` instance observed, and
//! their versioned binary encoding for the fitted-state cache.
//!
//! Encoding (little-endian): magic `ANOFLOW-DEFECT-POOL`, version `u32`, image count `u32`,
//! then per image: id length `u32` and UTF-8 bytes, height, width, channels (`u32` each),
//! pixel type `u8` (0 u8, 1 f32) and the pixels.

use anoflow_sdk::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const MAGIC: &[u8] = b"ANOFLOW-DEFECT-POOL";
const VERSION: u32 = 1;

/// One clean image and the id of its sample.
#[derive(Debug, Clone)]
pub struct Donor {
    pub id: String,
    pub image: Image,
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    donors: Vec<Donor>,
}

/// `height x width x channels` of an image.
pub fn shape(image: &Image) -> (usize, usize, usize) {
    (image.height(), image.width(), image.channels())
}

impl Pool {
    pub fn len(&self) -> usize {
        self.donors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.donors.is_empty()
    }

    /// The shape every image of the pool has.
    pub fn shape(&self) -> Option<(usize, usize, usize)> {
        self.donors.first().map(|d| shape(&d.image))
    }

    /// Adds an image; one of another shape than the pool's is refused with both shapes.
    pub fn add(&mut self, id: &str, image: Image) -> Result<(), String> {
        if let Some(expected) = self.shape() {
            let found = shape(&image);
            if found != expected {
                return Err(format!(
                    "image is {}x{}x{} but the donor pool's images are {}x{}x{}: every clean image of a \
                     category must have the same size",
                    found.0, found.1, found.2, expected.0, expected.1, expected.2
                ));
            }
        }
        self.donors.push(Donor { id: id.to_string(), image });
        Ok(())
    }

    /// A donor drawn at random among the images whose id is not `own_id`; `None` when the
    /// pool holds no other image.
    pub fn pick_other(&self, own_id: &str, rng: &mut ChaCha8Rng) -> Option<&Donor> {
        let others: Vec<&Donor> = self.donors.iter().filter(|d| d.id != own_id).collect();
        if others.is_empty() {
            None
        } else {
            Some(others[rng.gen_range(0..others.len())])
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let put = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u32).to_le_bytes());
        put(&mut out, VERSION as usize);
        put(&mut out, self.donors.len());
        for d in &self.donors {
            put(&mut out, d.id.len());
            out.extend_from_slice(d.id.as_bytes());
            let (h, w, c) = shape(&d.image);
            for v in [h, w, c] {
                put(&mut out, v);
            }
            match d.image.pixels() {
                Pixels::U8(p) => {
                    out.push(0);
                    out.extend_from_slice(p);
                }
                Pixels::F32(p) => {
                    out.push(1);
                    out.extend(p.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a synthetic-defects donor pool".into());
        }
        let version = r.u32()?;
        if version != VERSION as usize {
            return Err(format!("donor pool version {version}, expected {VERSION}"));
        }
        let count = r.u32()?;
        let mut pool = Pool::default();
        for k in 0..count {
            let id_len = r.u32()?;
            let id = String::from_utf8(r.take(id_len)?.to_vec()).map_err(|_| format!("image {k}: id is not UTF-8"))?;
            let (h, w, c) = (r.u32()?, r.u32()?, r.u32()?);
            let n = h.checked_mul(w).and_then(|v| v.checked_mul(c)).ok_or("image size overflows")?;
            let image = match r.take(1)?[0] {
                0 => Image::from_u8(h as u32, w as u32, c as u32, r.take(n)?.to_vec()),
                1 => {
                    let raw = r.take(n.checked_mul(4).ok_or("image size overflows")?)?;
                    let px = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                    Image::from_f32(h as u32, w as u32, c as u32, px)
                }
                t => return Err(format!("image {k} (`{id}`): unknown pixel type {t}")),
            }
            .map_err(|e| format!("image {k} (`{id}`): {e}"))?;
            pool.add(&id, image).map_err(|e| format!("image {k} (`{id}`): {e}"))?;
        }
        if r.at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - r.at));
        }
        Ok(pool)
    }
}

/// Bounds-checked reads: a truncated or corrupt state is an error, never an allocation of a
/// size read from the bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: {n} bytes wanted at offset {} of {}", self.at, self.bytes.len()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_ids_types_and_pixels() {
        let mut pool = Pool::default();
        pool.add("a", Image::from_u8(2, 3, 1, (0..6).collect()).unwrap()).unwrap();
        pool.add("b", Image::from_f32(2, 3, 1, vec![0.5, -1.0, 2.0, 3.0, 4.0, 1e-7]).unwrap()).unwrap();
        let err = pool.add("c", Image::from_u8(3, 2, 1, vec![0; 6]).unwrap()).unwrap_err();
        assert!(err.contains("2x3x1") && err.contains("3x2x1"), "{err}");
        let bytes = pool.encode();
        let back = Pool::decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.donors[0].id, "a");
        assert_eq!(back.donors[0].image.to_u8(), (0..6).collect::<Vec<u8>>());
        assert_eq!(back.donors[1].image.to_f32(), vec![0.5, -1.0, 2.0, 3.0, 4.0, 1e-7]);
        assert!(matches!(back.donors[1].image.pixels(), Pixels::F32(_)));
        for cut in [0, 10, bytes.len() - 1] {
            assert!(Pool::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Pool::decode(&longer).unwrap_err().contains("trailing"));
        let mut future = bytes;
        future[MAGIC.len()] = 9;
        assert!(Pool::decode(&future).unwrap_err().contains("version 9"));
    }
}
