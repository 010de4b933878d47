//! `resize-crop`: the stage type, its config, the stage and its tests.

use anoflow_imaging::{Interp, PointInterp};
use anoflow_sdk::prelude::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
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
    }
}
