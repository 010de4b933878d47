//! `mask-refine` (map): removes 8-connected components smaller than `min_area`, fills holes,
//! and optionally smooths the mask edge guided by the image (a joint-bilateral vote).

use anoflow_sdk::prelude::*;

use crate::morphology;

/// The `mask-refine` stage type.
pub struct MaskRefine;

/// Params of `mask-refine`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskRefineConfig {
    /// 8-connected components with fewer pixels are removed (0: keep all).
    #[serde(default)]
    pub min_area: usize,
    /// Set background regions enclosed by the mask.
    #[serde(default)]
    pub fill_holes: bool,
    /// Edge smoothing: none, or `{ kind: image-guided, radius, sigma }`.
    #[serde(default)]
    pub smooth: Smooth,
}

/// How the mask edge is smoothed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Smooth {
    /// No smoothing.
    #[default]
    None,
    /// Each pixel near a mask edge takes the weighted majority of its window, weighted by
    /// distance and colour similarity to it (needs the `image` input).
    ImageGuided {
        /// Window radius (px).
        #[serde(default = "default_radius")]
        #[schemars(range(min = 1))]
        radius: usize,
        /// Colour scale (0-255 units).
        #[serde(default = "default_guided_sigma")]
        #[schemars(extend("exclusiveMinimum" = 0))]
        sigma: f64,
    },
}

fn default_radius() -> usize {
    3
}

fn default_guided_sigma() -> f64 {
    20.0
}

struct MaskRefineStage {
    node: String,
    min_area: usize,
    fill_holes: bool,
    /// `Some((radius, sigma))` for image-guided smoothing.
    guided: Option<(usize, f32)>,
}

impl StagePlugin for MaskRefine {
    type Config = MaskRefineConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "mask-refine",
            "cleans a binary mask: drops small components, fills holes, optional image-guided edge smoothing",
        )
        .input("mask", ValueKind::Mask, "binary mask")
        .optional_input("image", ValueKind::Image, "the image, same size; needed by `smooth: { kind: image-guided }`")
        .output("mask", ValueKind::Mask, "refined mask")
    }

    fn create(config: MaskRefineConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let guided = match config.smooth {
            Smooth::None => None,
            Smooth::ImageGuided { radius, sigma } => {
                // In range as f64 can still overflow f32.
                let sigma = sigma as f32;
                if !(sigma > 0.0 && sigma.is_finite()) {
                    return Err(StageError::invalid_param(format!(
                        "node `{}`: param `smooth.sigma` must be > 0",
                        ctx.node_id
                    )));
                }
                Some((radius, sigma))
            }
        };
        Ok(Box::new(MaskRefineStage {
            node: ctx.node_id.to_string(),
            min_area: config.min_area,
            fill_holes: config.fill_holes,
            guided,
        }))
    }
}

impl Map for MaskRefineStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let mask = sample.mask("mask")?;
        let (h, w) = (mask.height(), mask.width());
        let mut m = mask.data().to_vec();
        if let Some((radius, sigma)) = self.guided {
            let image = sample.image("image").map_err(|e| {
                e.context(format!("node `{}`: `smooth: {{ kind: image-guided }}` needs the `image` input", self.node))
            })?;
            if (image.height(), image.width()) != (h, w) {
                return Err(StageError::invalid_input(format!(
                    "node `{}`, sample `{}`: image is {}x{} but the mask is {h}x{w}",
                    self.node,
                    sample.meta.id,
                    image.height(),
                    image.width()
                )));
            }
            let px = image.to_f32();
            // u8 images give 0-255 values; f32 images are taken as 0-1.
            let scale = if matches!(image.pixels(), Pixels::U8(_)) { 1.0 } else { 255.0 };
            let px: Vec<f32> = px.iter().map(|v| v * scale).collect();
            m = morphology::guided_vote(&m, &px, h, w, image.channels(), radius, sigma);
        }
        morphology::remove_small(&mut m, h, w, self.min_area);
        if self.fill_holes {
            morphology::fill_holes(&mut m, h, w);
        }
        Ok(Outputs::new().with("mask", Mask::new(h as u32, w as u32, m)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::blob_mask;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn refine_removes_speckles_and_fills_holes() {
        let h = StageHarness::new::<MaskRefine>(json!({"min_area": 10, "fill_holes": true})).unwrap();
        let out = h.process(&meta("s/test/x/0"), inputs(vec![("mask", blob_mask().into())])).unwrap();
        assert_eq!(out.mask("mask").count_ones(), 900);
        let keep = StageHarness::new::<MaskRefine>(json!({})).unwrap();
        let out = keep.process(&meta("s/test/x/0"), inputs(vec![("mask", blob_mask().into())])).unwrap();
        assert_eq!(out.mask("mask").data(), blob_mask().data(), "defaults change nothing");
        let guided = StageHarness::new::<MaskRefine>(json!({"smooth": {"kind": "image-guided"}})).unwrap();
        let err = guided.process(&meta("s/test/x/1"), inputs(vec![("mask", blob_mask().into())])).unwrap_err();
        assert!(err.message.contains("needs the `image` input"), "{err}");
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        for (params, want) in [
            (json!({"smooth": "image-guided"}), "param `smooth`: expected mapping with a `kind`"),
            (json!({"smooth": {"kind": "guided"}}), "param `smooth.kind`: `guided` is not one of none, image-guided"),
            (json!({"smooth": {"kind": "image-guided", "radius": 0}}), "param `smooth.radius`: 0 is out of range"),
            (json!({"smooth": {"kind": "image-guided", "sigma": 0}}), "param `smooth.sigma`: 0 is out of range"),
            (json!({"smooth": {"kind": "none", "radius": 3}}), "unknown param `smooth.radius`"),
            (json!({"radius": 3}), "unknown param `radius`"),
        ] {
            let err = StageHarness::new::<MaskRefine>(params).err().expect("refused");
            assert!(err.message.contains("node `test-mask-refine`") && err.message.contains(want), "{err}");
        }
    }

    #[test]
    fn guided_smoothing_defaults_are_radius_3_sigma_20() {
        let c: MaskRefineConfig = serde_json::from_value(json!({"smooth": {"kind": "image-guided"}})).unwrap();
        assert_eq!(c.smooth, Smooth::ImageGuided { radius: 3, sigma: 20.0 });
    }
}
