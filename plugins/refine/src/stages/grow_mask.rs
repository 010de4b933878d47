//! `grow-mask` (map): seeded growth, the two-threshold idea of hysteresis applied to two
//! masks. A precise mask gives the seeds; a second, wider mask (a lower threshold) gives
//! the extent: every 8-connected component of the extent that holds a seed pixel is kept,
//! with the seeds themselves. A region of the wider mask that no seed touches is dropped,
//! so an image without seeds stays empty.

use anoflow_sdk::prelude::*;

use crate::morphology::components;

/// The `grow-mask` stage type.
pub struct GrowMask;

struct GrowMaskStage {
    node: String,
}

impl StagePlugin for GrowMask {
    type Config = NoParams;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "grow-mask",
            "seeded growth: the seeds, plus every 8-connected component of a wider mask that holds a seed pixel",
        )
        .input("seeds", ValueKind::Mask, "the precise mask (e.g. a TTT4AS mask)")
        .input("extent", ValueKind::Mask, "the wider mask, same size (e.g. a lower threshold)")
        .output_same_size(
            "mask",
            ValueKind::Mask,
            "seeds",
            "seeds, and the extent's components that touch them",
        )
    }

    fn create(_config: NoParams, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Ok(Box::new(GrowMaskStage { node: ctx.node_id.to_string() }))
    }
}

impl Map for GrowMaskStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let seeds = sample.mask("seeds")?;
        let extent = sample.mask("extent")?;
        let (h, w) = (seeds.height(), seeds.width());
        if (extent.height(), extent.width()) != (h, w) {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: `extent` is {}x{}, but `seeds` is {h}x{w}: both masks must have the same size",
                self.node,
                sample.meta.id,
                extent.height(),
                extent.width()
            )));
        }
        Ok(Outputs::new().with("mask", Mask::new(h as u32, w as u32, grow(seeds.data(), extent.data(), h, w))?))
    }
}

/// `seeds`, plus the 8-connected components of `extent` that hold a seed pixel.
pub fn grow(seeds: &[u8], extent: &[u8], h: usize, w: usize) -> Vec<u8> {
    let (label, sizes) = components(extent, h, w);
    let mut touched = vec![false; sizes.len()];
    for (&s, &l) in seeds.iter().zip(&label) {
        if s != 0 && l != u32::MAX {
            touched[l as usize] = true;
        }
    }
    seeds.iter().zip(&label).map(|(&s, &l)| u8::from(s != 0 || (l != u32::MAX && touched[l as usize]))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    const N: usize = 224;

    fn square(mask: &mut [u8], y0: usize, x0: usize, side: usize) {
        for y in y0..y0 + side {
            mask[y * N + x0..y * N + x0 + side].fill(1);
        }
    }

    fn run(seeds: &[u8], extent: &[u8]) -> StageResult<Vec<u8>> {
        let h = StageHarness::new::<GrowMask>(json!({})).unwrap();
        let m = |d: &[u8]| Mask::new(N as u32, N as u32, d.to_vec()).unwrap().into();
        h.process(&meta("s"), inputs(vec![("seeds", m(seeds)), ("extent", m(extent))]))
            .map(|o| o.mask("mask").data().to_vec())
    }

    #[test]
    fn keeps_the_extent_components_a_seed_touches_and_nothing_else() {
        let mut extent = vec![0u8; N * N];
        square(&mut extent, 10, 10, 40); // touched by a seed
        square(&mut extent, 100, 100, 30); // untouched
        square(&mut extent, 50, 50, 5); // diagonal neighbour of the first: one component with it
        let mut seeds = vec![0u8; N * N];
        square(&mut seeds, 20, 20, 3);
        square(&mut seeds, 200, 200, 4); // outside the extent: kept as it is
        let out = run(&seeds, &extent).unwrap();
        let mut expected = vec![0u8; N * N];
        square(&mut expected, 10, 10, 40);
        square(&mut expected, 50, 50, 5);
        square(&mut expected, 200, 200, 4);
        let differ = out.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} pixels differ from the expected mask");
        // No seeds: empty, however wide the extent.
        assert!(!run(&vec![0; N * N], &extent).unwrap().contains(&1));
    }

    #[test]
    fn masks_of_different_sizes_are_an_error_naming_the_node_and_sample() {
        let h = StageHarness::new::<GrowMask>(json!({})).unwrap();
        let seeds = Mask::new(N as u32, N as u32, vec![0; N * N]).unwrap();
        let extent = Mask::new(N as u32, 100, vec![0; N * 100]).unwrap();
        let err = h.process(&meta("s7"), inputs(vec![("seeds", seeds.into()), ("extent", extent.into())])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("s7") && text.contains("224x100"), "{text}");
    }
}
