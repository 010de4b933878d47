//! `patch-aggregate`: the stage type, its config and the stage; the recipe is in [`crate::aggregate`].

use anoflow_sdk::prelude::*;

use crate::aggregate::{aggregate, AggregateConfig, Reduction};

/// Stage type `patch-aggregate`.
pub struct PatchAggregate;

/// Params of `patch-aggregate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAggregateConfig {
    /// side of the local averaging window (odd; 1 = none)
    #[serde(default = "default_patch_size")]
    #[schemars(range(min = 1))]
    pub patch_size: usize,
    /// at the border, divide by the full window (zero padding counts, as AvgPool2d) or by the cells inside
    #[serde(default = "yes")]
    pub count_include_pad: bool,
    /// per-location reduction of the concatenated channels: `{ kind: adaptive-avg, dim, layer_dim }`
    /// (PatchCore's adaptive average pooling), `{ kind: random-projection, dim, seed }` (a seeded random
    /// projection), or `{ kind: none }`
    #[serde(default)]
    pub reduction: ReductionConfig,
}

/// The `reduction` param, with the settings of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReductionConfig {
    /// PatchCore's adaptive average pooling over channels.
    AdaptiveAvg {
        /// output channels
        #[serde(default = "default_dim")]
        #[schemars(range(min = 1))]
        dim: usize,
        /// each layer is first pooled to this many channels (PatchCore's pretrain_embed_dimension; 0 = skip)
        #[serde(default = "default_dim")]
        layer_dim: usize,
    },
    /// A seeded random projection.
    RandomProjection {
        /// output channels
        #[serde(default = "default_dim")]
        #[schemars(range(min = 1))]
        dim: usize,
        /// seed of the projection matrix
        #[serde(default)]
        seed: u64,
    },
    /// The concatenation as is.
    None,
}

impl Default for ReductionConfig {
    fn default() -> Self {
        ReductionConfig::AdaptiveAvg { dim: default_dim(), layer_dim: default_dim() }
    }
}

fn default_patch_size() -> usize {
    3
}
fn default_dim() -> usize {
    1024
}
fn yes() -> bool {
    true
}

impl StagePlugin for PatchAggregate {
    type Config = PatchAggregateConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "patch-aggregate",
            "PatchCore patch features: local average per layer, layers upsampled to the finest grid, concatenated, \
             reduced per location",
        )
        .multi_input("features", ValueKind::FeatureMap, "backbone feature maps of one image (several layers)")
        .output("features", ValueKind::FeatureMap, "one map on the finest layer's grid, with its stride")
    }

    fn create(config: PatchAggregateConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let patch_size = config.patch_size;
        if patch_size.is_multiple_of(2) {
            return Err(StageError::invalid_param(format!(
                "node `{}`: param `patch_size`: must be odd (the window is centred), found {patch_size}",
                ctx.node_id
            )));
        }
        let reduction = match config.reduction {
            ReductionConfig::None => Reduction::None,
            ReductionConfig::RandomProjection { dim, seed } => Reduction::RandomProjection { dim, seed },
            ReductionConfig::AdaptiveAvg { dim, layer_dim } => Reduction::AdaptiveAvg { layer_dim, dim },
        };
        let cfg = AggregateConfig { patch_size, count_include_pad: config.count_include_pad, reduction };
        Ok(Box::new(PatchAggregateStage { cfg }))
    }
}

struct PatchAggregateStage {
    cfg: AggregateConfig,
}

impl Map for PatchAggregateStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let maps = sample.feature_maps("features")?;
        let fm = aggregate(&maps, &self.cfg)
            .map_err(|e| StageError::invalid_input(format!("sample `{}`: {e}", sample.meta.id)))?;
        Ok(Outputs::new().with("features", fm))
    }
}

#[cfg(test)]
mod tests {
    use anoflow_sdk::harness::{meta, StageHarness};
    use serde_json::json;

    use super::*;
    use crate::tests::{constant_map, layer_inputs, random_map};

    #[test]
    fn patch_aggregate_on_backbone_sized_layers() {
        // MobileNetV2's default pair at 224x224: 192 channels at stride 8, 576 at stride 16.
        // Constant layers 1.0 and 3.0: each is pooled to 1024 channels, the 2048 concatenated ones
        // pooled in pairs to 1024 -> the first half is 1.0, the second 3.0 (border cells are lower
        // since the padded zeros count).
        let h = StageHarness::new::<PatchAggregate>(json!({})).unwrap();
        let inputs = layer_inputs(vec![
            ("features.7.expand", constant_map(192, 28, 28, 8.0, 1.0)),
            ("features.14.expand", constant_map(576, 14, 14, 16.0, 3.0)),
        ]);
        let out = h.process(&meta("s"), inputs).unwrap();
        let fm = out.feature_map("features");
        assert_eq!((fm.channels(), fm.height(), fm.width(), fm.stride()), (1024, 28, 28, 8.0));
        let inner = fm.at(10, 12);
        assert!(inner[..512].iter().all(|v| (v - 1.0).abs() < 1e-5), "{}", inner[0]);
        assert!(inner[512..].iter().all(|v| (v - 3.0).abs() < 1e-5), "{}", inner[600]);
        assert!((fm.at(0, 0)[0] - 4.0 / 9.0).abs() < 1e-5);
    }

    #[test]
    fn bad_inputs_are_reported() {
        let h = StageHarness::new::<PatchAggregate>(json!({})).unwrap();
        let inputs = layer_inputs(vec![("a", random_map(8, 28, 28, 8.0, 1)), ("b", random_map(8, 14, 14, 8.0, 1))]);
        let err = h.process(&meta("s-3"), inputs).unwrap_err().to_string();
        assert!(err.contains("sample `s-3`") && err.contains("different image sizes"), "{err}");
        let err = h.process(&meta("s-4"), vec![]).unwrap_err().to_string();
        assert!(err.contains("no feature map"), "{err}");
        let err = StageHarness::new::<PatchAggregate>(json!({"patch_size": 4})).err().unwrap().to_string();
        assert!(err.contains("must be odd"), "{err}");
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        let err =
            StageHarness::new::<PatchAggregate>(json!({"reduction": {"kind": "mean"}})).err().unwrap().to_string();
        assert!(
            err.contains("param `reduction.kind`: `mean` is not one of adaptive-avg, random-projection, none"),
            "{err}"
        );
        // A setting of another kind is refused, not ignored.
        let err = StageHarness::new::<PatchAggregate>(json!({"reduction": {"kind": "adaptive-avg", "seed": 3}}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown param `reduction.seed`"), "{err}");
        let err = StageHarness::new::<PatchAggregate>(json!({"reduction": {"kind": "random-projection", "dim": 0}}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("param `reduction.dim`: 0 is out of range"), "{err}");
        let err = StageHarness::new::<PatchAggregate>(json!({"dim": 512})).err().unwrap().to_string();
        assert!(err.contains("unknown param `dim`"), "{err}");
    }
}
