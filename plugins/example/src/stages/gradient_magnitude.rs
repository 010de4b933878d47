//! `gradient-magnitude`: the stage type, its config, the stage and its tests.

use anoflow_sdk::prelude::*;

/// The stage type: declares itself and creates instances.
pub struct GradientMagnitude;

/// The stage's params (`with:` in a pipeline). Field docs, defaults and ranges are what
/// `anoflow plugins inspect` shows and what the host checks before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GradientMagnitudeConfig {
    /// Factor applied to every magnitude.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0))]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

impl StagePlugin for GradientMagnitude {
    type Config = GradientMagnitudeConfig;
    // A map stage: the kind comes from this type.
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("gradient-magnitude", "Sobel gradient magnitude of the image's luminance as a score map")
            .input("image", ValueKind::Image, "image (any channel count; colour is converted to luminance)")
            .output_same_size(
                "score",
                ValueKind::ScoreMap,
                "image",
                "gradient magnitude per pixel, same size as the image",
            )
    }

    fn create(config: GradientMagnitudeConfig, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Ok(Box::new(GradientMagnitudeStage { scale: config.scale }))
    }
}

struct GradientMagnitudeStage {
    scale: f32,
}

/// Luminance (ITU-R BT.601 weights) of an interleaved image; grey images pass through.
fn luminance(image: &Image) -> Vec<f32> {
    let px = image.to_f32();
    match image.channels() {
        1 => px,
        c => px.chunks_exact(c).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2.min(c - 1)]).collect(),
    }
}

impl Map for GradientMagnitudeStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let image = sample.image("image")?;
        let (h, w) = (image.height(), image.width());
        let lum = luminance(image);
        // Borders replicate the edge pixel, so a flat image gives an all-zero map.
        let at = |y: isize, x: isize| {
            let y = y.clamp(0, h as isize - 1) as usize;
            let x = x.clamp(0, w as isize - 1) as usize;
            lum[y * w + x]
        };
        let mut out = Vec::with_capacity(h * w);
        for y in 0..h as isize {
            for x in 0..w as isize {
                // Differences first, so equal neighbours give exactly zero.
                let gx = (at(y - 1, x + 1) - at(y - 1, x - 1))
                    + 2.0 * (at(y, x + 1) - at(y, x - 1))
                    + (at(y + 1, x + 1) - at(y + 1, x - 1));
                let gy = (at(y + 1, x - 1) - at(y - 1, x - 1))
                    + 2.0 * (at(y + 1, x) - at(y - 1, x))
                    + (at(y + 1, x + 1) - at(y - 1, x + 1));
                out.push(self.scale * (gx * gx + gy * gy).sqrt());
            }
        }
        Ok(Outputs::new().with("score", ScoreMap::new(h as u32, w as u32, out)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};

    #[test]
    fn flat_image_has_no_gradient_and_a_step_has_one() {
        let h = StageHarness::new::<GradientMagnitude>(serde_json::json!({})).unwrap();
        let flat = Image::from_u8(224, 224, 3, vec![90; 224 * 224 * 3]).unwrap();
        let out = h.process(&meta("flat"), inputs(vec![("image", flat.into())])).unwrap();
        assert!(out.score_map("score").data().iter().all(|&v| v == 0.0));

        // Left half 0, right half 100: the magnitude at the step is 4 * 100.
        let step: Vec<u8> = (0..224 * 224).map(|i| if i % 224 >= 112 { 100 } else { 0 }).collect();
        let img = Image::from_u8(224, 224, 1, step).unwrap();
        let out = h.process(&meta("step"), inputs(vec![("image", img.into())])).unwrap();
        let s = out.score_map("score");
        assert_eq!(s.get(50, 111), 400.0);
        assert_eq!(s.get(50, 10), 0.0);
    }
}
