//! The donor pool: the clean images a fitted `synthetic-defects` instance observed, and
//! their versioned binary encoding for the fitted-state cache.
//!
//! Encoding: the SDK's state format, a JSON section `ids` (the images' sample ids, in
//! order) and per image `<k>/image` (`[h, w, c]`, u8 or f32 as observed).

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const STATE_NAME: &str = "synthetic-defects";
/// The layout of the sections above.
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

    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        let ids: Vec<&str> = self.donors.iter().map(|d| d.id.as_str()).collect();
        let mut w = StateWriter::new(STATE_NAME, VERSION).json("ids", &ids);
        for (k, d) in self.donors.iter().enumerate() {
            let (h, wd, c) = shape(&d.image);
            w = match d.image.pixels() {
                Pixels::U8(p) => w.u8(&format!("{k}/image"), &[h, wd, c], p),
                Pixels::F32(p) => w.f32(&format!("{k}/image"), &[h, wd, c], p),
            };
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let r = StateReader::parse(bytes, STATE_NAME, VERSION).map_err(|e| e.to_string())?;
        let ids: Vec<String> = r.json("ids").map_err(|e| e.to_string())?;
        let mut pool = Pool::default();
        for (k, id) in ids.into_iter().enumerate() {
            let name = format!("{k}/image");
            let dims = |d: &[usize]| -> Result<(u32, u32, u32), String> {
                match d {
                    [h, w, c] => Ok((*h as u32, *w as u32, *c as u32)),
                    _ => Err(format!("image {k} (`{id}`): shape {d:?}, expected [h, w, c]")),
                }
            };
            let image = if let Ok((d, px)) = r.u8(&name) {
                let (h, w, c) = dims(&d)?;
                Image::from_u8(h, w, c, px)
            } else {
                let (d, px) = r.f32(&name).map_err(|e| e.to_string())?;
                let (h, w, c) = dims(&d)?;
                Image::from_f32(h, w, c, px)
            }
            .map_err(|e| format!("image {k} (`{id}`): {e}"))?;
            pool.add(&id, image).map_err(|e| format!("image {k} (`{id}`): {e}"))?;
        }
        Ok(pool)
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
        let bytes = pool.encode().unwrap();
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
        assert!(Pool::decode(&longer).unwrap_err().contains("unexpected bytes"));
        let other = StateWriter::new(STATE_NAME, VERSION + 1).json("ids", &["a"]).finish().unwrap();
        assert!(Pool::decode(&other).unwrap_err().contains("format 2"));
    }
}
