//! The fitted crossmodal mappings as bytes, for the host's cache, in the SDK's state format:
//! for each direction (`to3`: 2D to 3D, `to2`: 3D to 2D) the sections `<dir>.weights`
//! (`dim_in x dim_out` f32), `<dir>.mean_in` and `<dir>.mean_out` (f32).

use anoflow_sdk::state::{StateError, StateReader, StateWriter};

use crate::ridge::LinearMap;

const STAGE: &str = "crossmodal-mapping";
/// The layout of the sections above.
const VERSION: u32 = 1;

pub fn encode(to3: &LinearMap, to2: &LinearMap) -> Result<Vec<u8>, StateError> {
    let mut w = StateWriter::new(STAGE, VERSION);
    for (dir, m) in [("to3", to3), ("to2", to2)] {
        w = w
            .f32(&format!("{dir}.weights"), &[m.dim_in, m.dim_out], &m.weights)
            .f32(&format!("{dir}.mean_in"), &[m.dim_in], &m.mean_in)
            .f32(&format!("{dir}.mean_out"), &[m.dim_out], &m.mean_out);
    }
    w.finish()
}

pub fn decode(bytes: &[u8]) -> Result<(LinearMap, LinearMap), StateError> {
    let r = StateReader::parse(bytes, STAGE, VERSION)?;
    let map = |dir: &str| -> Result<LinearMap, StateError> {
        let (dims, weights) = r.f32_rank(&format!("{dir}.weights"), 2)?;
        let (dim_in, dim_out) = (dims[0], dims[1]);
        let mean_in = r.array_shape(&format!("{dir}.mean_in"), &[dim_in])?;
        let mean_out = r.array_shape(&format!("{dir}.mean_out"), &[dim_out])?;
        Ok(LinearMap { dim_in, dim_out, weights, mean_in, mean_out })
    };
    let (to3, to2) = (map("to3")?, map("to2")?);
    if (to3.dim_in, to3.dim_out) != (to2.dim_out, to2.dim_in) {
        return Err(r.error(
            "to2.weights",
            format!("is {}x{}, the inverse of to3 ({}x{}) expected", to2.dim_in, to2.dim_out, to3.dim_in, to3.dim_out),
        ));
    }
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
        let bytes = encode(&to3, &to2).unwrap();
        assert_eq!(decode(&bytes).unwrap(), (to3.clone(), to2.clone()));
        let at = bytes.windows(4).position(|w| w == 7f32.to_le_bytes()).unwrap();
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        let err = decode(&bad).unwrap_err().to_string();
        assert!(err.contains("section `to2.mean_in`: checksum mismatch"), "{err}");
        assert!(decode(&bytes[..bytes.len() - 4]).is_err());
        assert_eq!(decode(b"ANOFLOWX-nonsense").unwrap_err(), StateError::BadMagic);
        let swapped = encode(&to3, &to3).unwrap();
        assert!(decode(&swapped).unwrap_err().to_string().contains("to2.weights"));
    }
}
