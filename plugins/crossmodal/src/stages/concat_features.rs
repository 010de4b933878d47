//! `concat-features`: several feature maps of one image on the first map's grid, concatenated
//! per location (optionally each L2-normalized first).

use anoflow_sdk::prelude::*;

use crate::grid::{check_finite, check_same_image, on_grid};

/// Stage type `concat-features`.
pub struct ConcatFeatures;

/// Params of `concat-features`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcatConfig {
    /// Per map and location before concatenating: nothing, or divide the vector by its L2 norm
    /// (zero vectors stay zero).
    #[serde(default)]
    pub normalize: Normalize,
}

/// `concat-features`' per-location normalization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    #[default]
    None,
    L2,
}

impl StagePlugin for ConcatFeatures {
    type Config = ConcatConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "concat-features",
            "Feature maps of one image (e.g. RGB and 3D) resized bilinearly to the first map's grid and concatenated \
             per location",
        )
        .multi_input("features", ValueKind::FeatureMap, "feature maps of the same image, in pipeline order")
        .output("features", ValueKind::FeatureMap, "the first map's grid and stride, the sum of the channels")
    }

    fn create(config: ConcatConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let l2 = match config.normalize {
            Normalize::None => false,
            Normalize::L2 => true,
        };
        Ok(Box::new(ConcatStage { node: ctx.node_id.to_string(), l2 }))
    }
}

struct ConcatStage {
    node: String,
    l2: bool,
}

impl Map for ConcatStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let maps = sample.feature_maps("features")?;
        let sources: Vec<&str> = sample.all("features").map(|(s, _)| s).collect();
        let Some(first) = maps.first() else {
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: input `features` received no map",
                self.node, sample.meta.id
            )));
        };
        let (h, w) = (first.height(), first.width());
        let total: usize = maps.iter().map(|m| m.channels()).sum();
        let mut out = vec![0.0f32; h * w * total];
        let mut offset = 0;
        for (fm, src) in maps.iter().zip(&sources) {
            check_finite(&self.node, sample, &format!("`features` (edge `{src}`)"), fm)?;
            check_same_image(|| format!("node `{}`, sample `{}`, edge `{src}`", self.node, sample.meta.id), first, fm)?;
            let c = fm.channels();
            let data = on_grid(fm, h, w)?;
            for (cell, row) in data.chunks_exact(c).enumerate() {
                let dst = &mut out[cell * total + offset..cell * total + offset + c];
                dst.copy_from_slice(row);
                if self.l2 {
                    let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    if n > 0.0 {
                        dst.iter_mut().for_each(|v| *v /= n);
                    }
                }
            }
            offset += c;
        }
        let fm = FeatureMap::new(total as u32, h as u32, w as u32, first.stride(), out)?;
        Ok(Outputs::new().with("features", fm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    #[test]
    fn concat_resizes_to_the_first_grid_and_normalizes() {
        let rgb = FeatureMap::new(4, 28, 28, 8.0, (0..28 * 28 * 4).map(|i| (i % 7) as f32 + 1.0).collect()).unwrap();
        let geo = FeatureMap::new(33, 14, 14, 16.0, vec![2.0; 14 * 14 * 33]).unwrap();
        let ins = inputs(vec![("features", rgb.clone().into()), ("features", geo.clone().into())]);
        let h = StageHarness::new::<ConcatFeatures>(json!({})).unwrap();
        let out = h.process(&meta("c"), ins.clone()).unwrap();
        let fm = out.feature_map("features");
        assert_eq!((fm.height(), fm.width(), fm.channels(), fm.stride()), (28, 28, 37, 8.0));
        assert_eq!(&fm.at(3, 5)[..4], rgb.at(3, 5));
        assert!(fm.at(3, 5)[4..].iter().all(|&v| (v - 2.0).abs() < 1e-6));
        let h = StageHarness::new::<ConcatFeatures>(json!({"normalize": "l2"})).unwrap();
        let fm = h.process(&meta("c"), ins).unwrap().feature_map("features").clone();
        let n1: f32 = fm.at(9, 9)[..4].iter().map(|v| v * v).sum();
        let n2: f32 = fm.at(9, 9)[4..].iter().map(|v| v * v).sum();
        assert!((n1 - 1.0).abs() < 1e-5 && (n2 - 1.0).abs() < 1e-5);
        // Another image size is refused, NaN too.
        let other = FeatureMap::new(33, 32, 32, 8.0, vec![2.0; 32 * 32 * 33]).unwrap();
        let err = h
            .process(&meta("s"), inputs(vec![("features", rgb.clone().into()), ("features", other.into())]))
            .unwrap_err();
        assert!(err.message.contains("different sizes") && err.message.contains("sample `s`"), "{err}");
        let mut d = geo.data().to_vec();
        d[0] = f32::INFINITY;
        let inf = FeatureMap::new(33, 14, 14, 16.0, d).unwrap();
        let err = h.process(&meta("s"), inputs(vec![("features", rgb.into()), ("features", inf.into())])).unwrap_err();
        assert!(err.message.contains("holds inf"), "{err}");
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        let err = StageHarness::new::<ConcatFeatures>(json!({"normalize": "l1"})).err().expect("refused");
        assert!(err.message.contains("param `normalize`: `l1` is not one of none, l2"), "{err}");
    }
}
