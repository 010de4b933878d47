//! `score-maps`: the stage type, its config, the stage and its tests (matching rule: the crate doc).

use std::path::{Component, Path, PathBuf};

use anoflow_sdk::prelude::*;

use crate::formats::{decode_npy, decode_png, decode_tiff, RawMap};

pub struct ScoreMaps;

/// Params of `score-maps`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreMapsConfig {
    /// directory holding the map files
    pub root: File,
    /// file extension, which also gives the format: npy, tif, tiff or png
    #[serde(default)]
    pub extension: Extension,
    /// how a sample names its file: `{ kind: id }` = <root>/<sample id>.<ext>; `{ kind: path, path_root: DIR }`
    /// = <root>/<source path relative to DIR, extension replaced>
    #[serde(default)]
    pub key: KeyConfig,
    /// PNG maps: score = stored integer x scale
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// resize a map whose size differs from `like` bilinearly instead of refusing it
    #[serde(default)]
    pub resize: bool,
}

/// The `extension` param (the files' extension, as written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Extension {
    #[default]
    Npy,
    Tif,
    Tiff,
    Png,
}

impl Extension {
    fn as_str(self) -> &'static str {
        match self {
            Extension::Npy => "npy",
            Extension::Tif => "tif",
            Extension::Tiff => "tiff",
            Extension::Png => "png",
        }
    }
}

/// The `key` param: how a sample names its map file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyConfig {
    /// The sample id.
    #[default]
    Id,
    /// The sample's source path relative to `path_root`, extension replaced.
    Path {
        /// the directory sample paths are relative to
        path_root: File,
    },
}

fn default_scale() -> f64 {
    1.0 / 65535.0
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Npy,
    Tiff,
    Png,
}

impl StagePlugin for ScoreMaps {
    type Config = ScoreMapsConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("score-maps", "anomaly maps computed by another tool, one file per sample")
            .optional_input(
                "like",
                ValueKind::Any,
                "any spatial value of the sample's image size (e.g. the image); the map must match it",
            )
            .output("score", ValueKind::ScoreMap, "the map read from the sample's file")
            .output("image_score", ValueKind::Scalar, "maximum of the map")
    }

    fn create(config: ScoreMapsConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let format = match config.extension {
            Extension::Npy => Format::Npy,
            Extension::Tif | Extension::Tiff => Format::Tiff,
            Extension::Png => Format::Png,
        };
        let path_root = match &config.key {
            KeyConfig::Id => None,
            KeyConfig::Path { path_root } => Some(path_root.resolve(ctx)),
        };
        Ok(Box::new(ScoreMapsStage {
            node: ctx.node_id.to_string(),
            root: config.root.resolve(ctx),
            extension: config.extension.as_str().to_string(),
            format,
            path_root,
            scale: config.scale as f32,
            resize: config.resize,
        }))
    }
}

struct ScoreMapsStage {
    node: String,
    root: PathBuf,
    extension: String,
    format: Format,
    /// Set with `key: { kind: path }`.
    path_root: Option<PathBuf>,
    scale: f32,
    resize: bool,
}

impl ScoreMapsStage {
    fn err(&self, sample: &SampleMeta, msg: impl std::fmt::Display) -> StageError {
        StageError::invalid_input(format!("node `{}`, sample `{}`: {msg}", self.node, sample.id))
    }

    /// The file that holds `sample`'s map, by the documented rule.
    fn file_for(&self, sample: &SampleMeta) -> StageResult<PathBuf> {
        let rel: PathBuf = match &self.path_root {
            Some(base) => {
                let p = Path::new(sample.path.as_str());
                if sample.path.is_empty() {
                    return Err(self.err(sample, "`key: path` but the sample has no source path"));
                }
                p.strip_prefix(base)
                    .map_err(|_| {
                        self.err(
                            sample,
                            format!("source path {} is not under path_root {}", p.display(), base.display()),
                        )
                    })?
                    .with_extension("")
            }
            None => PathBuf::from(sample.id.as_str()),
        };
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) || rel.as_os_str().is_empty() {
            return Err(self.err(sample, format!("key `{}` is not a plain relative path", rel.display())));
        }
        let mut name = rel.into_os_string();
        name.push(".");
        name.push(&self.extension);
        Ok(self.root.join(name))
    }

    fn decode(&self, path: &Path, bytes: &[u8]) -> StageResult<RawMap> {
        let decoded = match self.format {
            Format::Npy => decode_npy(bytes),
            Format::Tiff => decode_tiff(bytes),
            Format::Png => decode_png(bytes, self.scale),
        };
        decoded.map_err(|e| StageError::invalid_input(format!("node `{}`: {}: {e}", self.node, path.display())))
    }
}

impl Map for ScoreMapsStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let path = self.file_for(sample.meta)?;
        let bytes = std::fs::read(&path).map_err(|e| {
            StageError::io(&path, e)
                .context(format!("node `{}`, sample `{}`: score map file", self.node, sample.meta.id))
        })?;
        let mut map = self.decode(&path, &bytes)?;
        if let Some(&bad) = map.data.iter().find(|v| !v.is_finite()) {
            return Err(self.err(sample.meta, format!("{} holds {bad}", path.display())));
        }
        if let Some(like) = sample.maybe("like") {
            let (h, w) = like.spatial_size().ok_or_else(|| {
                self.err(sample.meta, format!("input `like` is a {}, which has no height and width", like.kind()))
            })?;
            if (map.height, map.width) != (h, w) {
                if !self.resize {
                    return Err(self.err(
                        sample.meta,
                        format!(
                            "{} is {}x{} but the sample's image is {h}x{w} (set `resize: true` to resample it)",
                            path.display(),
                            map.height,
                            map.width
                        ),
                    ));
                }
                map.data = anoflow_imaging::upsample_bilinear(&map.data, map.height, map.width, h, w)?;
                (map.height, map.width) = (h, w);
            }
        }
        let image_score = map.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Ok(Outputs::new()
            .with("score", ScoreMap::new(map.height as u32, map.width as u32, map.data)?)
            .with("image_score", f64::from(image_score)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tests::npy_bytes;
    use anoflow_sdk::harness::{inputs, meta, scratch_dir, StageHarness};
    use serde_json::json;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..h * w).map(|i| (i % 997) as f32 / 997.0).collect()
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_npy_by_sample_id_and_checks_the_size() {
        let dir = scratch_dir("scoreio-npy");
        let vals = ramp(224, 224);
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        write(&dir.join("bottle/test/crack/000.npy"), &npy_bytes("<f4", false, "(224, 224)", &body));
        let h = StageHarness::new::<ScoreMaps>(json!({"root": dir.to_str().unwrap()})).unwrap();
        let like = Mask::zeros(224, 224).unwrap();
        let out = h.process(&meta("bottle/test/crack/000"), inputs(vec![("like", like.into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &vals[..]);
        assert_eq!(out.scalar("image_score"), f64::from(996.0f32 / 997.0));

        let err = h.process(&meta("bottle/test/crack/001"), inputs(vec![])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.contains("sample `bottle/test/crack/001`: score map file"), "{err}");
        assert!(err.message.contains("bottle/test/crack/001.npy"), "{err}");

        let wrong = Mask::zeros(256, 256).unwrap();
        let err = h.process(&meta("bottle/test/crack/000"), inputs(vec![("like", wrong.clone().into())])).unwrap_err();
        assert!(err.message.contains("000.npy is 224x224 but the sample's image is 256x256"), "{err}");
        let h = StageHarness::new::<ScoreMaps>(json!({"root": dir.to_str().unwrap(), "resize": true})).unwrap();
        let out = h.process(&meta("bottle/test/crack/000"), inputs(vec![("like", wrong.into())])).unwrap();
        assert_eq!(out.score_map("score").height(), 256);
        let err = h.process(&meta("../etc/passwd"), inputs(vec![])).unwrap_err();
        assert!(err.message.contains("not a plain relative path"), "{err}");
    }

    #[test]
    fn reads_float_tiff_and_scaled_16_bit_png_by_source_path() {
        let dir = scratch_dir("scoreio-img");
        let (hh, ww) = (240, 320);
        let vals = ramp(hh, ww);
        let mut tiff_bytes = std::io::Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut tiff_bytes)
            .unwrap()
            .write_image::<tiff::encoder::colortype::Gray32Float>(ww as u32, hh as u32, &vals)
            .unwrap();
        write(&dir.join("maps/cable/test/cut/007.tiff"), tiff_bytes.get_ref());

        let raw: Vec<u16> = (0..hh * ww).map(|i| (i * 7 % 65536) as u16).collect();
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, ww as u32, hh as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Sixteen);
            let mut wr = enc.write_header().unwrap();
            let be: Vec<u8> = raw.iter().flat_map(|v| v.to_be_bytes()).collect();
            wr.write_image_data(&be).unwrap();
        }
        write(&dir.join("maps/cable/test/cut/007.png"), &png_bytes);

        let mut m = meta("whatever-id");
        m.path = dir.join("data/cable/test/cut/007.png").to_string_lossy().as_ref().into();
        let base = json!({"root": dir.join("maps").to_str().unwrap(), "key": {"kind": "path", "path_root": dir.join("data").to_str().unwrap()}});
        let mut p = base.clone();
        p["extension"] = json!("tiff");
        let out = StageHarness::new::<ScoreMaps>(p).unwrap().process(&m, inputs(vec![])).unwrap();
        assert_eq!(out.score_map("score").data(), &vals[..]);
        assert_eq!((out.score_map("score").height(), out.score_map("score").width()), (hh, ww));

        let mut p = base.clone();
        p["extension"] = json!("png");
        p["scale"] = json!(0.001);
        let out = StageHarness::new::<ScoreMaps>(p).unwrap().process(&m, inputs(vec![])).unwrap();
        let got = out.score_map("score").data();
        for i in [0, 1, 12345, hh * ww - 1] {
            assert!((got[i] - f32::from(raw[i]) * 0.001).abs() < 1e-6, "{i}");
        }

        let mut p = base;
        p["key"]["path_root"] = json!("/elsewhere");
        let err = StageHarness::new::<ScoreMaps>(p).unwrap().process(&m, inputs(vec![])).unwrap_err();
        assert!(err.message.contains("is not under path_root /elsewhere"), "{err}");
        let err = StageHarness::new::<ScoreMaps>(json!({"root": "x", "key": {"kind": "path"}})).err().unwrap();
        assert!(err.message.contains("missing required param `key.path_root`"), "{err}");
        let err = StageHarness::new::<ScoreMaps>(json!({"root": "x", "extension": "jpg"})).err().unwrap();
        assert!(err.message.contains("param `extension`: `jpg` is not one of npy, tif, tiff, png"), "{err}");
        let err = StageHarness::new::<ScoreMaps>(json!({"root": "x", "key": {"kind": "id", "path_root": "d"}}))
            .err()
            .unwrap();
        assert!(err.message.contains("unknown param `key.path_root`"), "{err}");
        let err = StageHarness::new::<ScoreMaps>(json!({"extension": "npy"})).err().unwrap();
        assert!(err.message.contains("missing required param `root`"), "{err}");
    }
}
