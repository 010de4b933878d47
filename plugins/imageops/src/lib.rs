//! Image operations for anoflow pipelines.
//!
//! - `resize-crop` (map): PatchCore's preprocessing, shorter side to `resize` then a centre
//!   crop of `crop x crop`, applied consistently to the image (bilinear), the mask (nearest)
//!   and the point cloud (bilinear over valid points only);
//! - `write-png` (sink): writes every connected image, mask and score map of each test sample
//!   as PNG, atomically.

use std::path::{Path, PathBuf};

use anoflow_imaging::{Interp, PointInterp};
use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateError, StateReader, StateWriter};

// ---------------------------------------------------------------------------------------
// resize-crop

/// The `resize-crop` stage.
pub struct ResizeCrop;

/// Params of `resize-crop`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeCropConfig {
    /// Target length of the shorter side (0: no resize).
    #[serde(default = "default_resize")]
    pub resize: usize,
    /// Side of the centre crop (0: no crop).
    #[serde(default = "default_crop")]
    pub crop: usize,
    /// Image filter: bilinear-antialias averages the footprint when shrinking (PIL,
    /// torchvision on PIL images); bilinear samples 4 pixels (torch F.interpolate).
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Point-cloud filter: valid-bilinear averages valid points only (invalid when under half
    /// the weight is valid).
    #[serde(default)]
    pub xyz_interpolation: XyzInterpolation,
}

fn default_resize() -> usize {
    256
}
fn default_crop() -> usize {
    224
}

/// The image filter of `resize-crop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    #[default]
    BilinearAntialias,
    Bilinear,
}

/// The point-cloud filter of `resize-crop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum XyzInterpolation {
    #[default]
    ValidBilinear,
    Nearest,
}

impl StagePlugin for ResizeCrop {
    type Config = ResizeCropConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "resize-crop",
            "Shorter side to `resize`, then a centre crop of `crop` x `crop`: image bilinear, mask nearest, xyz over valid points",
        )
        .input("image", ValueKind::Image, "image (u8 stays u8, rounded; f32 stays f32)")
        .optional_input("mask", ValueKind::Mask, "mask of the same size as the image (nearest neighbour)")
        .optional_input("xyz", ValueKind::PointCloud, "point cloud of the same size as the image")
        .output("image", ValueKind::Image, "resized and cropped image")
        .output("mask", ValueKind::Mask, "resized and cropped mask (when `mask` is connected)")
        .output("xyz", ValueKind::PointCloud, "resized and cropped point cloud (when `xyz` is connected)")
    }

    fn create(config: ResizeCropConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let interp = match config.interpolation {
            Interpolation::Bilinear => Interp::Bilinear,
            Interpolation::BilinearAntialias => Interp::BilinearAntialias,
        };
        let xyz_interp = match config.xyz_interpolation {
            XyzInterpolation::Nearest => PointInterp::Nearest,
            XyzInterpolation::ValidBilinear => {
                PointInterp::ValidBilinear { antialias: interp == Interp::BilinearAntialias }
            }
        };
        let (resize, crop) = ((config.resize > 0).then_some(config.resize), (config.crop > 0).then_some(config.crop));
        if let (Some(r), Some(c)) = (resize, crop) {
            if c > r {
                return Err(StageError::invalid_param(format!(
                    "node `{}`: param `crop`: {c} is larger than `resize` {r}; the crop must fit in the resized image",
                    ctx.node_id
                )));
            }
        }
        Ok(Box::new(ResizeCropStage { resize, crop, interp, xyz_interp }))
    }
}

/// The geometry of one resize-crop: from `h x w` to `out_h x out_w`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    h: usize,
    w: usize,
    resized: (usize, usize),
    out: (usize, usize),
}

pub struct ResizeCropStage {
    resize: Option<usize>,
    crop: Option<usize>,
    interp: Interp,
    xyz_interp: PointInterp,
}

impl ResizeCropStage {
    fn plan(&self, h: usize, w: usize, id: &str) -> StageResult<Plan> {
        let resized = self.resize.map_or((h, w), |s| anoflow_imaging::shorter_side_size(h, w, s));
        let out = match self.crop {
            Some(c) if c > resized.0 || c > resized.1 => {
                return Err(StageError::invalid_input(format!(
                    "sample `{id}`: cannot crop {c}x{c} out of the {}x{} resized image",
                    resized.0, resized.1
                )))
            }
            Some(c) => (c, c),
            None => resized,
        };
        Ok(Plan { h, w, resized, out })
    }

    /// The image resized and cropped in one pass from its own pixels (no whole-image f32 copy).
    fn image(&self, img: &Image, p: &Plan) -> StageResult<Image> {
        if p.resized == (p.h, p.w) && p.out == p.resized {
            return Ok(img.clone());
        }
        let c = img.channels();
        let (rh, rw) = p.resized;
        let region = anoflow_imaging::Region::center(rh, rw, p.out.0, p.out.1).map_err(StageError::from)?;
        let (oh, ow) = (p.out.0 as u32, p.out.1 as u32);
        match img.pixels() {
            Pixels::U8(d) => {
                let out = anoflow_imaging::resize_region(d, p.h, p.w, c, rh, rw, region, self.interp)
                    .map_err(StageError::from)?;
                Image::from_u8(oh, ow, c as u32, out.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect())
            }
            Pixels::F32(d) => Image::from_f32(
                oh,
                ow,
                c as u32,
                anoflow_imaging::resize_region(d, p.h, p.w, c, rh, rw, region, self.interp)
                    .map_err(StageError::from)?,
            ),
        }
    }

    fn mask(&self, m: &Mask, p: &Plan) -> StageResult<Mask> {
        let resized = anoflow_imaging::resize_nearest(m.data(), p.h, p.w, 1, p.resized.0, p.resized.1)
            .map_err(StageError::from)?;
        let cropped = anoflow_imaging::center_crop(&resized, p.resized.0, p.resized.1, 1, p.out.0, p.out.1)
            .map_err(StageError::from)?;
        Mask::new(p.out.0 as u32, p.out.1 as u32, cropped)
    }

    fn xyz(&self, pc: &PointCloud, p: &Plan) -> StageResult<PointCloud> {
        let resized = anoflow_imaging::resize_points(pc.data(), p.h, p.w, p.resized.0, p.resized.1, self.xyz_interp)
            .map_err(StageError::from)?;
        let cropped = anoflow_imaging::center_crop(&resized, p.resized.0, p.resized.1, 3, p.out.0, p.out.1)
            .map_err(StageError::from)?;
        PointCloud::new(p.out.0 as u32, p.out.1 as u32, cropped)
    }
}

fn same_size(id: &str, port: &str, found: (usize, usize), image: (usize, usize)) -> StageResult<()> {
    if found != image {
        return Err(StageError::invalid_input(format!(
            "sample `{id}`: `{port}` is {}x{} but `image` is {}x{}; they must be aligned",
            found.0, found.1, image.0, image.1
        )));
    }
    Ok(())
}

impl Map for ResizeCropStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let id = sample.meta.id.as_str();
        let img = sample.image("image")?;
        let (h, w) = (img.height(), img.width());
        let plan = self.plan(h, w, id)?;
        let mut out = Outputs::new().with("image", self.image(img, &plan)?);
        if sample.maybe("mask").is_some() {
            let m = sample.mask("mask")?;
            same_size(id, "mask", (m.height(), m.width()), (h, w))?;
            out.push("mask", self.mask(m, &plan)?);
        }
        if sample.maybe("xyz").is_some() {
            let pc = sample.point_cloud("xyz")?;
            same_size(id, "xyz", (pc.height(), pc.width()), (h, w))?;
            out.push("xyz", self.xyz(pc, &plan)?);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// write-png

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

anoflow_sdk::export_plugin! { stages: [ResizeCrop, WritePng] }

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, scratch_dir, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    fn image(out: &anoflow_sdk::harness::HarnessOutputs) -> Image {
        match out.get("image") {
            Some(Value::Image(i)) => i.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resize_crop_aligns_image_mask_and_xyz() {
        let h = StageHarness::new::<ResizeCrop>(json!({})).unwrap();
        // 300 x 400: a vertical stripe (x in 180..220) in image, mask and a z bump.
        let (ih, iw) = (300usize, 400usize);
        let mut px = vec![40u8; ih * iw * 3];
        let mut mask = vec![0u8; ih * iw];
        let mut xyz = vec![0.0f32; ih * iw * 3];
        for y in 0..ih {
            for x in 0..iw {
                let i = y * iw + x;
                let stripe = (180..220).contains(&x);
                if stripe {
                    px[i * 3..i * 3 + 3].copy_from_slice(&[200, 200, 200]);
                    mask[i] = 1;
                }
                // The left quarter has no points.
                if x >= 100 {
                    xyz[i * 3..i * 3 + 3].copy_from_slice(&[x as f32, y as f32, if stripe { 12.0 } else { 10.0 }]);
                }
            }
        }
        let ins = inputs(vec![
            ("image", Image::from_u8(ih as u32, iw as u32, 3, px).unwrap().into()),
            ("mask", Mask::new(ih as u32, iw as u32, mask).unwrap().into()),
            ("xyz", PointCloud::new(ih as u32, iw as u32, xyz).unwrap().into()),
        ]);
        let out = h.process(&meta("s"), ins).unwrap();
        let img = image(&out);
        assert_eq!((img.height(), img.width(), img.channels()), (224, 224, 3));
        let m = out.mask("mask");
        assert_eq!((m.height(), m.width()), (224, 224));
        // 400 -> 341 wide (256 * 400 / 300), crop offset round(117 / 2) = 58: the stripe lands
        // at x = 180 * 341/400 - 58 ~ 95.5 .. 129.5.
        let row: Vec<u8> = (0..224).map(|x| m.data()[100 * 224 + x]).collect();
        let first = row.iter().position(|&v| v == 1).unwrap();
        let last = row.iter().rposition(|&v| v == 1).unwrap();
        assert!((95..=97).contains(&first) && (128..=130).contains(&last), "{first}..{last}");
        // The bright stripe sits where the mask is.
        let pix = img.to_u8();
        assert!(pix[(100 * 224 + 112) * 3] > 190 && pix[(100 * 224 + 20) * 3] < 50);
        let Some(Value::PointCloud(pc)) = out.get("xyz") else { panic!("xyz") };
        // Left of x = 100 * 341/400 - 58 ~ 27 there are no points; z never mixes with zeros.
        assert!(!pc.is_valid(100, 10) && pc.is_valid(100, 60));
        for y in 0..224 {
            for x in 0..224 {
                let z = pc.point(y, x)[2];
                assert!(z == 0.0 || (10.0..=12.0).contains(&z), "({y},{x}) z={z}");
            }
        }
    }

    /// What `resize-crop` computed before it resampled in place: a whole f32 copy, the whole
    /// resized image, then the crop.
    fn resize_then_crop(img: &Image, resize: usize, crop: usize, interp: Interp) -> Vec<f32> {
        let (h, w, c) = (img.height(), img.width(), img.channels());
        let (nh, nw) = anoflow_imaging::shorter_side_size(h, w, resize);
        let resized = anoflow_imaging::resize(&img.to_f32(), h, w, c, nh, nw, interp).unwrap();
        anoflow_imaging::center_crop(&resized, nh, nw, c, crop, crop).unwrap()
    }

    #[test]
    fn resize_crop_gives_what_the_whole_image_path_gave() {
        for (ih, iw, resize, crop) in [(768usize, 1024usize, 256, 224), (256, 256, 256, 224), (224, 224, 256, 224)] {
            let px: Vec<u8> = (0..ih * iw * 3).map(|i| ((i * 7919) % 251 + (i / (iw * 3)) % 5) as u8).collect();
            let as_u8 = Image::from_u8(ih as u32, iw as u32, 3, px).unwrap();
            let as_f32 =
                Image::from_f32(ih as u32, iw as u32, 3, as_u8.to_f32().iter().map(|v| v / 3.0).collect()).unwrap();
            for (name, interp) in [("bilinear-antialias", Interp::BilinearAntialias), ("bilinear", Interp::Bilinear)] {
                let h = StageHarness::new::<ResizeCrop>(json!({"resize": resize, "crop": crop, "interpolation": name}))
                    .unwrap();
                let what = format!("{ih}x{iw} -> {resize}, crop {crop}, {name}");
                let out = image(&h.process(&meta("s"), inputs(vec![("image", as_u8.clone().into())])).unwrap());
                let expected: Vec<u8> = resize_then_crop(&as_u8, resize, crop, interp)
                    .iter()
                    .map(|v| v.round().clamp(0.0, 255.0) as u8)
                    .collect();
                assert!(matches!(out.pixels(), Pixels::U8(_)), "{what}");
                assert!(out.to_u8() == expected, "{what}: u8 differs");
                let out = image(&h.process(&meta("s"), inputs(vec![("image", as_f32.clone().into())])).unwrap());
                let expected = resize_then_crop(&as_f32, resize, crop, interp);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(&out.to_f32()) == bits(&expected), "{what}: f32 differs");
            }
        }
    }

    #[test]
    fn resize_crop_checks_sizes_and_params() {
        let h = StageHarness::new::<ResizeCrop>(json!({"resize": 64, "crop": 48})).unwrap();
        let ins = inputs(vec![
            ("image", Image::from_u8(80, 80, 3, vec![0; 80 * 80 * 3]).unwrap().into()),
            ("mask", Mask::zeros(80, 60).unwrap().into()),
        ]);
        let err = h.process(&meta("bad"), ins).unwrap_err();
        assert!(err.message.contains("sample `bad`: `mask` is 80x60 but `image` is 80x80"), "{err}");
        let err = StageHarness::new::<ResizeCrop>(json!({"resize": 100, "crop": 224})).err().unwrap();
        assert!(err.message.contains("param `crop`"), "{err}");
        // No resize, no crop: unchanged; f32 stays f32.
        let h = StageHarness::new::<ResizeCrop>(json!({"resize": 0, "crop": 0})).unwrap();
        let src = Image::from_f32(5, 7, 1, (0..35).map(|v| v as f32 * 0.5).collect()).unwrap();
        let out = h.process(&meta("id"), inputs(vec![("image", src.clone().into())])).unwrap();
        assert_eq!(image(&out).to_f32(), src.to_f32());
        assert!(matches!(image(&out).pixels(), Pixels::F32(_)));
        assert!(out.get("mask").is_none());
    }

    #[test]
    fn bad_params_are_refused_by_name() {
        let err = StageHarness::new::<ResizeCrop>(json!({"interpolation": "bicubic"})).err().unwrap();
        assert!(
            err.message.contains("param `interpolation`: `bicubic` is not one of bilinear-antialias, bilinear"),
            "{err}"
        );
        let err = StageHarness::new::<ResizeCrop>(json!({"resize": -1})).err().unwrap();
        assert!(err.message.contains("param `resize`: -1 is out of range"), "{err}");
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
