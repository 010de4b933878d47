//! `write-png`: the stage type, its config, the sink and its tests.

use std::path::{Path, PathBuf};

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

/// The `write-png` stage.
pub struct WritePng;

/// Params of `write-png`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WritePngConfig {
    /// Score to 8-bit: per-map maps each map's min..max to 0..255 (a flat map gives 0);
    /// fixed maps score_min..score_max to 0..255, clamping outside.
    #[serde(default)]
    pub score_range: ScoreRange,
}

/// How `write-png` maps scores to 8-bit grey.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScoreRange {
    /// Each map's own min..max to 0..255 (a flat map gives 0).
    #[default]
    PerMap,
    /// score_min..score_max to 0..255, clamping outside.
    Fixed {
        /// Score written as 0.
        #[serde(default)]
        score_min: f64,
        /// Score written as 255.
        #[serde(default = "one")]
        score_max: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl StagePlugin for WritePng {
    type Config = WritePngConfig;
    type Stage = Box<dyn Sink>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "write-png",
            "Writes each test sample's connected images, masks and score maps as PNG files (atomically) under <run>/<node>/<sample id>/",
        )
        .optional_input("image", ValueKind::Image, "the input image, written as image.png")
        .optional_input("gt", ValueKind::Mask, "ground truth, written as gt.png (0/255)")
        .optional_multi_input("masks", ValueKind::Mask, "binary masks, written as mask_<node.port>.png (0/255)")
        .optional_multi_input("scores", ValueKind::ScoreMap, "score maps, written as score_<node.port>.png (8-bit, see `score_range`)")
    }

    fn create(config: WritePngConfig, ctx: &CreateContext) -> StageResult<Box<dyn Sink>> {
        // Files go to this node's directory inside the run directory, never elsewhere: a
        // pipeline file cannot direct writes outside the run.
        let out_dir = PathBuf::from(ctx.work_dir.as_str());
        let range = match config.score_range {
            ScoreRange::Fixed { score_min, score_max } => {
                let (lo, hi) = (score_min as f32, score_max as f32);
                if hi <= lo {
                    return Err(StageError::invalid_param(format!(
                        "node `{}`: param `score_range.score_max` ({hi}) must be above `score_range.score_min` ({lo})",
                        ctx.node_id
                    )));
                }
                Some((lo, hi))
            }
            ScoreRange::PerMap => None,
        };
        Ok(Box::new(WritePngStage { out_dir, range, files: Vec::new() }))
    }
}

pub struct WritePngStage {
    out_dir: PathBuf,
    /// `None`: per-map min-max; `Some((lo, hi))`: fixed range.
    range: Option<(f32, f32)>,
    files: Vec<PathBuf>,
}

/// A score map as 8-bit grey: `round(255 * (v - lo) / (hi - lo))`, clamped; `lo..hi` is the
/// map's own min..max unless a fixed range is given; a flat map (or NaN) gives 0.
pub fn score_to_u8(data: &[f32], range: Option<(f32, f32)>) -> Vec<u8> {
    let (lo, hi) = range.unwrap_or_else(|| {
        data.iter().filter(|v| v.is_finite()).fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)))
    });
    let span = hi - lo;
    data.iter()
        .map(|&v| {
            if span.is_nan() || span <= 0.0 || !v.is_finite() {
                0
            } else {
                (255.0 * (v - lo) / span).round().clamp(0.0, 255.0) as u8
            }
        })
        .collect()
}

/// A file-name-safe form of an edge name (`node.port[label]`) or sample id component.
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

impl WritePngStage {
    fn sample_dir(&self, id: &str) -> PathBuf {
        // Keep the id's hierarchy (`cat/test/defect/000`) but nothing that climbs out.
        let mut dir = self.out_dir.clone();
        for part in id.split('/').filter(|p| !p.is_empty() && *p != "." && *p != "..") {
            dir.push(safe_name(part));
        }
        dir
    }

    fn write(&mut self, path: PathBuf, h: usize, w: usize, c: usize, data: &[u8]) -> StageResult<()> {
        anoflow_imaging::write_png_u8(&path, h, w, c, data)?;
        self.files.push(path);
        Ok(())
    }
}

impl Sink for WritePngStage {
    fn consume(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let dir = self.sample_dir(&sample.meta.id);
        if let Some(Value::Image(img)) = sample.maybe("image") {
            let c = img.channels();
            if !matches!(c, 1 | 3 | 4) {
                return Err(StageError::invalid_input(format!(
                    "sample `{}`: cannot write an image with {c} channels as PNG",
                    sample.meta.id
                )));
            }
            self.write(dir.join("image.png"), img.height(), img.width(), c, &img.to_u8())?;
        }
        if sample.maybe("gt").is_some() {
            let m = sample.mask("gt")?;
            let data: Vec<u8> = m.data().iter().map(|&v| v * 255).collect();
            self.write(dir.join("gt.png"), m.height(), m.width(), 1, &data)?;
        }
        let masks: Vec<(String, Mask)> = sample
            .all("masks")
            .map(|(src, v)| match v {
                Value::Mask(m) => Ok((src.to_string(), m.clone())),
                other => Err(StageError::invalid_input(format!("`masks` from `{src}` is a {}", other.kind()))),
            })
            .collect::<StageResult<_>>()?;
        for (src, m) in masks {
            let data: Vec<u8> = m.data().iter().map(|&v| v * 255).collect();
            self.write(dir.join(format!("mask_{}.png", safe_name(&src))), m.height(), m.width(), 1, &data)?;
        }
        let scores: Vec<(String, ScoreMap)> = sample
            .all("scores")
            .map(|(src, v)| match v {
                Value::ScoreMap(m) => Ok((src.to_string(), m.clone())),
                other => Err(StageError::invalid_input(format!("`scores` from `{src}` is a {}", other.kind()))),
            })
            .collect::<StageResult<_>>()?;
        for (src, s) in scores {
            let data = score_to_u8(s.data(), self.range);
            self.write(dir.join(format!("score_{}.png", safe_name(&src))), s.height(), s.width(), 1, &data)?;
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &FinishContext) -> StageResult<SinkReport> {
        // Paths relative to the run directory when they are inside it.
        let run_dir = Path::new(ctx.out_dir.as_str()).parent().map(Path::to_path_buf).unwrap_or_default();
        let files: Vec<String> =
            self.files.iter().map(|f| f.strip_prefix(&run_dir).unwrap_or(f).to_string_lossy().into_owned()).collect();
        let markdown = format!("write-png: {} PNG files under `{}`", files.len(), self.out_dir.display());
        let json = serde_json::json!({ "files_written": files.len(), "out_dir": self.out_dir.display().to_string() });
        Ok(SinkReport {
            markdown: markdown.into(),
            json: json.to_string().into(),
            files: files.into_iter().map(Into::into).collect(),
            headline: Default::default(),
        })
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let files: Vec<String> = self.files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
        let state = StateWriter::new("write-png", 1).json("files", &files).finish();
        state.map_err(|e| StageError::from(e).context("write-png"))
    }

    fn merge_state(&mut self, state: &[u8]) -> StageResult<()> {
        let read = |e: StateError| StageError::from(e).context("write-png");
        let files: Vec<String> =
            StateReader::parse(state, "write-png", 1).and_then(|r| r.json("files")).map_err(read)?;
        self.files.extend(files.into_iter().map(PathBuf::from));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{scratch_dir, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    #[test]
    fn bad_params_are_refused_by_name() {
        let err =
            StageHarness::new::<WritePng>(json!({"score_range": {"kind": "fixed", "score_mx": 2}})).err().unwrap();
        assert!(err.message.contains("unknown param `score_range.score_mx` (did you mean `score_max`?)"), "{err}");
        let err =
            StageHarness::new::<WritePng>(json!({"score_range": {"kind": "fixed", "score_min": 2}})).err().unwrap();
        assert!(err.message.contains("`score_range.score_max` (1) must be above `score_range.score_min` (2)"), "{err}");
        let err = StageHarness::new::<WritePng>(json!({"score_range": "fixed"})).err().unwrap();
        assert!(err.message.contains("param `score_range`: expected mapping with a `kind` (per-map, fixed)"), "{err}");
    }

    #[test]
    fn write_png_fixed_range_maps_its_bounds() {
        let dir = scratch_dir("write-png-fixed");
        let params = json!({"score_range": {"kind": "fixed", "score_min": 0.0, "score_max": 10.0}});
        let mut h = StageHarness::with_dirs::<WritePng>(params, Path::new("."), &dir.join("w")).unwrap();
        let ins = vec![PortValue {
            port: "scores".into(),
            source: "s.score".into(),
            value: ScoreMap::new(1, 3, vec![-1.0, 5.0, 20.0]).unwrap().into(),
        }];
        h.consume(&SampleMeta::new("a", "c", "test"), ins).unwrap();
        let score = anoflow_imaging::read_image(dir.join("w/a/score_s.score.png")).unwrap().to_u8();
        assert_eq!(score, vec![0, 128, 255]);
    }

    #[test]
    fn score_normalization_rule() {
        assert_eq!(score_to_u8(&[1.0, 2.0, 3.0], None), vec![0, 128, 255]);
        assert_eq!(score_to_u8(&[5.0, 5.0], None), vec![0, 0]);
        assert_eq!(score_to_u8(&[-1.0, 0.5, 2.0, f32::NAN], Some((0.0, 1.0))), vec![0, 128, 255, 0]);
    }

    #[test]
    fn write_png_writes_every_connected_value() {
        let dir = scratch_dir("write-png");
        let mut h = StageHarness::with_dirs::<WritePng>(json!({}), Path::new("."), &dir.join("writer")).unwrap();
        let m = SampleMeta::new("cat/test/crack/000", "cat", "test");
        let ins = vec![
            PortValue {
                port: "image".into(),
                source: "data.image".into(),
                value: Image::from_u8(4, 6, 3, vec![9; 72]).unwrap().into(),
            },
            PortValue { port: "gt".into(), source: "data.mask".into(), value: Mask::zeros(4, 6).unwrap().into() },
            PortValue {
                port: "masks".into(),
                source: "ttt.mask".into(),
                value: Mask::new(4, 6, vec![1; 24]).unwrap().into(),
            },
            PortValue {
                port: "scores".into(),
                source: "scorer.score".into(),
                value: ScoreMap::new(4, 6, (0..24).map(|v| v as f32).collect()).unwrap().into(),
            },
        ];
        h.consume(&m, ins).unwrap();
        let report = h.finish(&dir.join("writer")).unwrap();
        let sample_dir = dir.join("writer/cat/test/crack/000");
        let names = ["image.png", "gt.png", "mask_ttt.mask.png", "score_scorer.score.png"];
        for n in names {
            assert!(sample_dir.join(n).is_file(), "{n}");
        }
        assert_eq!(report.files.len(), 4);
        assert!(report.files.iter().all(|f| f.starts_with("writer/cat/test/crack/000/")), "{:?}", report.files);
        let mask = anoflow_imaging::read_mask(sample_dir.join("mask_ttt.mask.png"), Some((4, 6))).unwrap();
        assert_eq!(mask.count_ones(), 24);
        let score = anoflow_imaging::read_image(sample_dir.join("score_scorer.score.png")).unwrap().to_u8();
        assert_eq!((score[0], score[23]), (0, 255));
        // No temporary files left.
        assert_eq!(std::fs::read_dir(&sample_dir).unwrap().count(), 4);
    }

    #[test]
    fn write_png_ids_cannot_escape_the_out_dir() {
        let dir = scratch_dir("write-png-escape");
        let mut h = StageHarness::with_dirs::<WritePng>(json!({}), Path::new("."), &dir.join("w")).unwrap();
        let m = SampleMeta::new("../../etc/x y", "c", "test");
        let ins =
            vec![PortValue { port: "gt".into(), source: "d.mask".into(), value: Mask::zeros(2, 2).unwrap().into() }];
        h.consume(&m, ins).unwrap();
        assert!(dir.join("w/etc/x_y/gt.png").is_file());
    }
}
