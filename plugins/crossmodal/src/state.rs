//! The fitted crossmodal mappings as bytes, for the host's cache. Little-endian throughout:
//!
//! ```text
//! magic "ANOFLOWX" | version u32 | dim_2d u64 | dim_3d u64
//! map 2d->3d: weights (dim_2d x dim_3d) f32, mean_in (dim_2d) f32, mean_out (dim_3d) f32
//! map 3d->2d: weights (dim_3d x dim_2d) f32, mean_in (dim_3d) f32, mean_out (dim_2d) f32
//! FNV-1a 64 checksum of every byte before it
//! ```

use crate::ridge::LinearMap;

const MAGIC: &[u8; 8] = b"ANOFLOWX";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("fitted state is {found} bytes, expected {expected} for dims {d2} (2D) and {d3} (3D)")]
    Size { found: usize, expected: usize, d2: usize, d3: usize },
    #[error("fitted state is too short ({0} bytes) to hold a header")]
    Short(usize),
    #[error("fitted state does not start with the crossmodal-mapping magic")]
    Magic,
    #[error("fitted state has format version {0}, this build reads version {VERSION}")]
    Version(u32),
    #[error("fitted state checksum mismatch: the bytes are corrupted")]
    Checksum,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn encode(to3: &LinearMap, to2: &LinearMap) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&(to3.dim_in as u64).to_le_bytes());
    buf.extend_from_slice(&(to3.dim_out as u64).to_le_bytes());
    for m in [to3, to2] {
        for v in m.weights.iter().chain(&m.mean_in).chain(&m.mean_out) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum = fnv1a(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    buf
}

pub fn decode(bytes: &[u8]) -> Result<(LinearMap, LinearMap), StateError> {
    const HEADER: usize = 8 + 4 + 16;
    if bytes.len() < HEADER + 8 {
        return Err(StateError::Short(bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err(StateError::Magic);
    }
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let (d2, d3) = (u64_at(12) as usize, u64_at(20) as usize);
    let floats = d2.checked_mul(d3).and_then(|p| p.checked_mul(2)).and_then(|p| p.checked_add(2 * (d2 + d3)));
    let expected = floats.and_then(|f| f.checked_mul(4)).and_then(|b| b.checked_add(HEADER + 8));
    if expected != Some(bytes.len()) {
        return Err(StateError::Size { found: bytes.len(), expected: expected.unwrap_or(usize::MAX), d2, d3 });
    }
    let body = bytes.len() - 8;
    if fnv1a(&bytes[..body]) != u64_at(body) {
        return Err(StateError::Checksum);
    }
    let mut at = HEADER;
    let mut take = |n: usize| -> Vec<f32> {
        let v = bytes[at..at + 4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        at += 4 * n;
        v
    };
    let to3 = LinearMap { dim_in: d2, dim_out: d3, weights: take(d2 * d3), mean_in: take(d2), mean_out: take(d3) };
    let to2 = LinearMap { dim_in: d3, dim_out: d2, weights: take(d3 * d2), mean_in: take(d3), mean_out: take(d2) };
    Ok((to3, to2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let to3 = LinearMap {
            dim_in: 2,
            dim_out: 3,
            weights: (0..6).map(|v| v as f32).collect(),
            mean_in: vec![1.0, 2.0],
            mean_out: vec![3.0, 4.0, 5.0],
        };
        let to2 = LinearMap {
            dim_in: 3,
            dim_out: 2,
            weights: (0..6).map(|v| -(v as f32)).collect(),
            mean_in: vec![6.0, 7.0, 8.0],
            mean_out: vec![9.0, 10.0],
        };
        let bytes = encode(&to3, &to2);
        assert_eq!(decode(&bytes).unwrap(), (to3, to2));
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert_eq!(decode(&bad).unwrap_err(), StateError::Checksum);
        assert!(matches!(decode(&bytes[..bytes.len() - 4]).unwrap_err(), StateError::Size { .. }));
        assert_eq!(decode(b"nonsense-nonsense-nonsense-nonsense-nonsense").unwrap_err(), StateError::Magic);
    }
}
