//! Hand-made masks for the refine stages' tests.

use anoflow_sdk::prelude::Mask;

/// A 30x30 square with a 6x6 hole and a 2-pixel speckle, 224x224.
pub fn blob_mask() -> Mask {
    let data = (0..224 * 224)
        .map(|p| {
            let (y, x) = (p / 224, p % 224);
            let square = (40..70).contains(&y) && (40..70).contains(&x);
            let hole = (52..58).contains(&y) && (52..58).contains(&x);
            u8::from((square && !hole) || (y == 200 && (200..202).contains(&x)))
        })
        .collect();
    Mask::new(224, 224, data).unwrap()
}
