//! Mask post-processing for any binarizer (THR, TTT4AS, ...):
//!
//! - `mask-refine` (map): removes 8-connected components smaller than `min_area`, fills holes,
//!   and optionally smooths the mask edge guided by the image (a joint-bilateral vote);
//! - `gate-mask` (fitted, on nominal validation data): an empty mask when the image score lies
//!   within the nominal range learned on validation, the mask unchanged otherwise. The
//!   paper's protocol scores anomalous test images only; users also see good ones;
//! - `select-mask` (map, [`select`]): one of several masks, picked by the edge it arrives on;
//! - `grow-mask` (map, [`grow`]): seeded growth of a precise mask within a wider one.

pub mod grow;
pub mod morphology;
pub mod select;

pub use grow::GrowMask;
pub use select::SelectMask;

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

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

/// The `gate-mask` stage type.
pub struct GateMask;

/// Params of `gate-mask`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateMaskConfig {
    /// The nominal range: up to `factor` x the largest fit-split image score (`{ kind: max,
    /// factor }`), or up to mean + `k` std (`{ kind: mean-std, k }`).
    #[serde(default)]
    pub rule: GateRule,
}

/// How `gate-mask` learns the nominal range of image scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum GateRule {
    /// Up to `factor` x the largest fit-split image score.
    Max {
        /// Multiplier of the largest fit-split image score.
        #[serde(default = "one")]
        factor: f64,
    },
    /// Up to mean + `k` std of the fit-split image scores.
    MeanStd {
        /// Number of standard deviations.
        #[serde(default = "three")]
        #[schemars(range(min = 0.0))]
        k: f64,
    },
}

impl Default for GateRule {
    fn default() -> Self {
        GateRule::Max { factor: one() }
    }
}

fn one() -> f64 {
    1.0
}

fn three() -> f64 {
    3.0
}

/// The saved state of `gate-mask` (SDK state format) and the layout of its sections.
const GATE_STATE: &str = "gate-mask";
const GATE_STATE_VERSION: u32 = 1;

struct GateMaskStage {
    node: String,
    rule: GateRule,
    seen: Vec<f64>,
    threshold: Option<f64>,
}

impl GateMaskStage {
    fn rule_name(&self) -> &'static str {
        match self.rule {
            GateRule::Max { .. } => "max",
            GateRule::MeanStd { .. } => "mean-std",
        }
    }
}

impl StagePlugin for GateMask {
    type Config = GateMaskConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "gate-mask",
            "image-level gate: an empty mask when the image score is within the nominal range learned on the fit \
             split (nominal validation images), the mask unchanged otherwise",
        )
        .input("mask", ValueKind::Mask, "binary mask from any binarizer")
        .input("image_score", ValueKind::Scalar, "the scorer's image-level score")
        .output("mask", ValueKind::Mask, "the mask, or an empty one when the image looks nominal")
    }

    fn create(config: GateMaskConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(GateMaskStage {
            node: ctx.node_id.to_string(),
            rule: config.rule,
            seen: Vec::new(),
            threshold: None,
        }))
    }
}

fn finite_scalar(sample: &Sample<'_>, node: &str) -> StageResult<f64> {
    let v = sample.scalar("image_score")?;
    if !v.is_finite() {
        return Err(StageError::invalid_input(format!(
            "node `{node}`, sample `{}`: image_score is {v}, expected a finite number",
            sample.meta.id
        )));
    }
    Ok(v)
}

impl Fitted for GateMaskStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        self.seen.push(finite_scalar(sample, &self.node)?);
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        if self.seen.is_empty() {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split held no image score to learn the nominal range from",
                self.node
            )));
        }
        let n = self.seen.len() as f64;
        self.threshold = Some(match self.rule {
            GateRule::Max { factor } => factor * self.seen.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            GateRule::MeanStd { k } => {
                let mean = self.seen.iter().sum::<f64>() / n;
                let var = self.seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                mean + k * var.sqrt()
            }
        });
        self.seen = Vec::new();
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let t = self.threshold.ok_or_else(|| {
            StageError::internal(format!("node `{}`: used before it was fitted (no fit split observed?)", self.node))
        })?;
        let mask = sample.mask("mask")?;
        let out = if finite_scalar(sample, &self.node)? > t {
            mask.clone()
        } else {
            Mask::zeros(mask.height() as u32, mask.width() as u32)?
        };
        Ok(Outputs::new().with("mask", out))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let threshold =
            self.threshold.ok_or_else(|| StageError::internal(format!("node `{}`: not fitted", self.node)))?;
        StateWriter::new(GATE_STATE, GATE_STATE_VERSION)
            .text("rule", self.rule_name())
            .f64("threshold", &[], &[threshold])
            .finish()
            .map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let unreadable = |e: StateError| StageError::from(e).context(format!("node `{}`", self.node));
        let r = StateReader::parse(state, GATE_STATE, GATE_STATE_VERSION).map_err(unreadable)?;
        let rule = r.text("rule").map_err(unreadable)?;
        let threshold = r.scalar::<f64>("threshold").map_err(unreadable)?;
        if rule != self.rule_name() || !threshold.is_finite() {
            return Err(StageError::invalid_input(format!(
                "node `{}`: saved gate state is for rule `{rule}` (threshold {threshold}), expected rule `{}`",
                self.node,
                self.rule_name()
            )));
        }
        self.threshold = Some(threshold);
        Ok(())
    }
}

anoflow_sdk::export_plugin! { stages: [MaskRefine, GateMask, SelectMask, GrowMask] }

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    fn blob_mask() -> Mask {
        // A 30x30 square with a 6x6 hole and a 2-pixel speckle, 224x224.
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
    fn gate_empties_masks_of_images_in_the_nominal_range() {
        let mut h = StageHarness::new::<GateMask>(json!({"rule": {"kind": "max", "factor": 1.1}})).unwrap();
        let fit: Vec<_> = [1.0, 2.0, 1.5]
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                (meta(&format!("v{i}")), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(s))]))
            })
            .collect();
        h.fit(fit).unwrap();
        let run = |h: &StageHarness, s: f64| {
            h.process(&meta("t"), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(s))]))
                .unwrap()
                .mask("mask")
                .count_ones()
        };
        assert_eq!(run(&h, 2.1), 0, "within 1.1 x the validation maximum");
        assert_eq!(run(&h, 2.3), blob_mask().count_ones());
        let mut fresh = StageHarness::new::<GateMask>(json!({"rule": {"kind": "max", "factor": 1.1}})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(run(&fresh, 2.3), blob_mask().count_ones());
        let mut other = StageHarness::new::<GateMask>(json!({"rule": {"kind": "mean-std"}})).unwrap();
        assert!(other.load_state(h.save_state().unwrap()).is_err());
        let bad = h
            .process(&meta("t9"), inputs(vec![("mask", blob_mask().into()), ("image_score", Value::Scalar(f64::NAN))]));
        assert!(bad.unwrap_err().message.contains("sample `t9`"));
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
        for (params, want) in [
            (json!({"rule": {"kind": "max", "k": 2}}), "unknown param `rule.k`"),
            (json!({"rule": {"kind": "mean-std", "k": -1}}), "param `rule.k`: -1 is out of range"),
            (json!({"rule": {"kind": "median"}}), "param `rule.kind`: `median` is not one of max, mean-std"),
        ] {
            let err = StageHarness::new::<GateMask>(params).err().expect("refused");
            assert!(err.message.contains(want), "{err}");
        }
    }

    #[test]
    fn guided_smoothing_defaults_are_radius_3_sigma_20() {
        let c: MaskRefineConfig = serde_json::from_value(json!({"smooth": {"kind": "image-guided"}})).unwrap();
        assert_eq!(c.smooth, Smooth::ImageGuided { radius: 3, sigma: 20.0 });
        let g: GateMaskConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(g.rule, GateRule::Max { factor: 1.0 });
    }
}
