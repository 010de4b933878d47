//! The `synthetic-defects` stage: fitted on a category's clean validation images (its donor
//! pool), it pastes one synthetic defect into each sample and returns the image and the
//! exact mask of the pixels that changed visibly.
//!
//! Every random choice comes from a ChaCha8 generator seeded with SHA-256 of the `seed`
//! param and the sample id, so a sample's defect does not depend on the order, the threads
//! or the batch it is processed in. The host names the k-th variant of validation sample
//! `v` as `v#defect<k>`, possibly followed by a cache tag (`v#defect<k>~<tag>`); the tag is
//! left out of the seed, so a defect stays the same when only the tag changes. The variants
//! of one image cycle through the families from an offset drawn per image, and their donor
//! is another image than `v` whenever the pool holds one.

use anoflow_sdk::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::canvas::Canvas;
use crate::families::{render, Family, Scene};
use crate::pool::{shape, Pool};

/// The `synthetic-defects` stage type.
pub struct SyntheticDefects;

/// Smallest defect drawn, in pixels, whatever `min_area` says on a small image.
const MIN_PIXELS: f32 = 3.0;

/// Params of `synthetic-defects`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticDefectsConfig {
    /// Mixed with each sample id (SHA-256) to seed every random choice.
    #[serde(default)]
    pub seed: i64,
    /// Defect families to draw from (each variant of an image takes the next one of the list):
    /// cut-paste (a rectangle, aspect 1:3 to 3:1, often rotated, cut from another position of
    /// another clean image of the category and pasted, possibly turned) | scar (a thin 1-4 px
    /// strip, straight or bent, at any angle, cut from a parallel strip of another image) |
    /// noise-blend (a region shaped by thresholded smoothed value noise, filled at opacity 0.5-1
    /// with a donor region in shifted colours or a random-colour noise texture) | warp (the
    /// image's own pixels displaced inside an elliptic blob: a swirl, or a magnified or pinched
    /// centre) | stain (a soft-edged blob of 1-3 Gaussians darkening the region or tinting it
    /// towards a contrasting colour) | missing (a ragged-edged hole filled flat dark or bright
    /// with slight noise).
    #[serde(default = "all_families")]
    pub families: Vec<FamilyName>,
    /// Smallest defect, as a fraction of the image area (sizes are drawn log-uniformly; 0 <
    /// min_area <= max_area).
    #[serde(default = "default_min_area")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 0.5))]
    pub min_area: f64,
    /// Largest defect, as a fraction of the image area (at most 0.5; thin scars stay below it).
    #[serde(default = "default_max_area")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 0.5))]
    pub max_area: f64,
    /// Faintest defect: each rendered defect's change to the image is scaled by a factor drawn
    /// uniformly in [min_contrast, 1] (1, the default: every defect at full strength, which
    /// transferred best to real photographs; fainter defects suit data whose real defects are
    /// faint, docs/results/calibration.md).
    #[serde(default = "default_min_contrast")]
    #[schemars(range(min = 0.05, max = 1.0))]
    pub min_contrast: f64,
}

/// A defect family, as the `families` param names it ([`Family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FamilyName {
    CutPaste,
    Scar,
    NoiseBlend,
    Warp,
    Stain,
    Missing,
}

impl FamilyName {
    fn family(self) -> Family {
        match self {
            FamilyName::CutPaste => Family::CutPaste,
            FamilyName::Scar => Family::Scar,
            FamilyName::NoiseBlend => Family::NoiseBlend,
            FamilyName::Warp => Family::Warp,
            FamilyName::Stain => Family::Stain,
            FamilyName::Missing => Family::Missing,
        }
    }
}

fn all_families() -> Vec<FamilyName> {
    use FamilyName::*;
    vec![CutPaste, Scar, NoiseBlend, Warp, Stain, Missing]
}

fn default_min_area() -> f64 {
    0.001
}

fn default_max_area() -> f64 {
    0.10
}

fn default_min_contrast() -> f64 {
    1.0
}

impl StagePlugin for SyntheticDefects {
    type Config = SyntheticDefectsConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "synthetic-defects",
            "pastes one synthetic defect into a clean image and returns its exact mask (the pixels that changed by \
             more than 8 grey levels); fitted on a category's clean validation images, its donor pool; refuses \
             test-split samples; deterministic per (seed, sample id)",
        )
        .input("image", ValueKind::Image, "a clean image (u8 or f32, 1 or 3 channels; f32 in [0, 1] or 0-255)")
        .output("image", ValueKind::Image, "the image with one synthetic defect, same size and pixel type")
        .output("mask", ValueKind::Mask, "exactly the pixels the defect changed visibly; never empty")
    }

    fn create(config: SyntheticDefectsConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(DefectStage::new(&ctx.node_id, config)?))
    }
}

struct DefectStage {
    node: String,
    seed: i64,
    families: Vec<Family>,
    min_area: f64,
    max_area: f64,
    min_contrast: f32,
    pool: Pool,
    fitted: bool,
}

impl DefectStage {
    fn new(node: &str, config: SyntheticDefectsConfig) -> StageResult<Self> {
        let node = node.to_string();
        let bad = |name: &str, msg: String| StageError::invalid_param(format!("node `{node}`: param `{name}`: {msg}"));
        if config.families.is_empty() {
            return Err(bad("families", "the list is empty; name at least one family".into()));
        }
        let families = config.families.iter().map(|f| f.family()).collect();
        let (min_area, max_area) = (config.min_area, config.max_area);
        if !(min_area > 0.0 && min_area <= max_area && max_area <= 0.5) {
            let name = if min_area > 0.0 && min_area <= max_area { "max_area" } else { "min_area" };
            return Err(bad(
                name,
                format!("expected 0 < min_area <= max_area <= 0.5, found min_area {min_area}, max_area {max_area}"),
            ));
        }
        Ok(Self {
            node,
            seed: config.seed,
            families,
            min_area,
            max_area,
            min_contrast: config.min_contrast as f32,
            pool: Pool::default(),
            fitted: false,
        })
    }

    fn sample_error(&self, sample: &Sample<'_>, msg: impl std::fmt::Display) -> StageError {
        StageError::invalid_input(format!("node `{}`, sample `{}`: {msg}", self.node, sample.meta.id))
    }

    fn refuse_test(&self, sample: &Sample<'_>) -> StageResult<()> {
        if sample.meta.split == "test" {
            return Err(self.sample_error(
                sample,
                "refuses a test-split sample: calibration must never see test data (fit and run this stage on \
                 validation samples)",
            ));
        }
        Ok(())
    }

    /// A generator seeded by SHA-256 of (seed, purpose, id): independent of everything else.
    fn rng(&self, purpose: &str, id: &str) -> ChaCha8Rng {
        let mut h = Sha256::new();
        h.update(b"anoflow synthetic-defects v1\0");
        h.update(self.seed.to_le_bytes());
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(id.as_bytes());
        ChaCha8Rng::from_seed(h.finalize().into())
    }

    /// The family of sample `id`: variant k of an image takes the family k places after an
    /// offset drawn for that image, so the variants of one image cover the list evenly.
    fn family(&self, id: &str, rng: &mut ChaCha8Rng) -> Family {
        let n = self.families.len();
        let index = match split_variant(id) {
            (base, Some(k)) => (self.rng("family", base).gen_range(0..n as u64) + k % n as u64) as usize % n,
            (_, None) => rng.gen_range(0..n),
        };
        self.families[index]
    }
}

/// `rendered` with its change to `canvas` scaled by `factor`; raised towards full strength
/// until some pixel still changes visibly, so a defect never vanishes.
fn fade(canvas: &Canvas, rendered: &[f32], mut factor: f32) -> Vec<f32> {
    loop {
        let faded: Vec<f32> = canvas.px.iter().zip(rendered).map(|(&o, &r)| o + factor * (r - o)).collect();
        if factor >= 1.0 || canvas.count_changed(&faded) > 0 {
            return faded;
        }
        factor = (factor * 1.5).min(1.0);
    }
}

/// What seeds a sample's defect: `v#defect<k>` without any tag after it, else the whole id.
fn seed_key(id: &str) -> String {
    match split_variant(id) {
        (base, Some(k)) => format!("{base}{VARIANT_MARK}{k}"),
        _ => id.to_string(),
    }
}

impl Fitted for DefectStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        self.refuse_test(sample)?;
        let image = sample.image("image")?;
        Canvas::from_image(image).map_err(|e| self.sample_error(sample, e))?;
        let id = split_variant(&sample.meta.id).0.to_string();
        self.pool.add(&id, image.clone()).map_err(|e| self.sample_error(sample, e))
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        if self.pool.is_empty() {
            return Err(StageError::invalid_input(format!(
                "node `{}`: the fit split held no clean image for the donor pool",
                self.node
            )));
        }
        self.fitted = true;
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        self.refuse_test(sample)?;
        let expected = match (self.fitted, self.pool.shape()) {
            (true, Some(s)) => s,
            _ => {
                return Err(StageError::internal(format!(
                    "node `{}`: used before it was fitted (no clean validation image observed?)",
                    self.node
                )))
            }
        };
        let image = sample.image("image")?;
        if shape(image) != expected {
            let (h, w, c) = shape(image);
            return Err(self.sample_error(
                sample,
                format!(
                    "image is {h}x{w}x{c} but the donor pool's images are {}x{}x{}: defects are pasted from \
                     images of the same size",
                    expected.0, expected.1, expected.2
                ),
            ));
        }
        let canvas = Canvas::from_image(image).map_err(|e| self.sample_error(sample, e))?;
        let key = seed_key(&sample.meta.id);
        let mut rng = self.rng("defect", &key);
        let family = self.family(&key, &mut rng);
        let donor = match self.pool.pick_other(split_variant(&key).0, &mut rng) {
            Some(d) => Some(Canvas::from_image(&d.image).map_err(|e| self.sample_error(sample, e))?),
            None => None,
        };
        let fraction = crate::shapes::log_uniform(&mut rng, self.min_area as f32, self.max_area as f32);
        let scene = Scene {
            image: &canvas,
            donor: donor.as_ref().unwrap_or(&canvas),
            donor_is_self: donor.is_none(),
            area: (fraction * (canvas.h * canvas.w) as f32).max(MIN_PIXELS),
        };
        let mut rendered = render(family, &scene, &mut rng);
        if self.min_contrast < 1.0 {
            let factor = rng.gen_range(self.min_contrast..=1.0f32);
            rendered = fade(&canvas, &rendered, factor);
        }
        let (out, mask) = canvas.finish(image, &rendered)?;
        Ok(Outputs::new().with("image", out).with("mask", mask))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        if !self.fitted {
            return Err(StageError::internal(format!("node `{}`: not fitted, no donor pool to save", self.node)));
        }
        self.pool.encode().map_err(|e| StageError::from(e).context(format!("node `{}`", self.node)))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let pool = Pool::decode(state).map_err(|e| {
            StageError::invalid_input(format!("node `{}`: saved donor pool is unreadable: {e}", self.node))
        })?;
        if pool.is_empty() {
            return Err(StageError::invalid_input(format!("node `{}`: saved donor pool is empty", self.node)));
        }
        self.pool = pool;
        self.fitted = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{inputs, StageHarness};
    use serde_json::json;

    const N: usize = 224;

    fn validation(id: &str) -> SampleMeta {
        SampleMeta::new(id, "texture", "validation")
    }

    /// A 224x224 RGB texture: woven stripes, a gradient and pixel noise, tinted by `tone`.
    fn texture(tone: u32) -> Image {
        let data = (0..N * N)
            .flat_map(|i| {
                let (x, y) = ((i % N) as f32, (i / N) as f32);
                let weave = ((x * 0.45).sin() * (y * 0.3).cos()) * 40.0;
                let noise = ((i as u32 ^ tone.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761) >> 26) as f32;
                let base = 90.0 + tone as f32 * 25.0 + weave + noise + y * 0.15;
                [base, base * 0.8 + 20.0, 255.0 - base * 0.7].map(|v| v.clamp(0.0, 255.0) as u8)
            })
            .collect();
        Image::from_u8(N as u32, N as u32, 3, data).unwrap()
    }

    fn fitted(params: serde_json::Value, pool: &[(&str, Image)]) -> StageHarness {
        let mut h = StageHarness::new::<SyntheticDefects>(params).unwrap();
        let samples =
            pool.iter().map(|(id, img)| (validation(id), inputs(vec![("image", img.clone().into())]))).collect();
        h.fit(samples).unwrap();
        h
    }

    fn pool3() -> Vec<(&'static str, Image)> {
        vec![
            ("tex/validation/good/000", texture(0)),
            ("tex/validation/good/001", texture(1)),
            ("tex/validation/good/002", texture(2)),
        ]
    }

    fn run(h: &StageHarness, id: &str, image: &Image) -> (Image, Mask) {
        let out = h.process(&validation(id), inputs(vec![("image", image.clone().into())])).unwrap();
        let Some(Value::Image(img)) = out.get("image") else { panic!("no image output") };
        (img.clone(), out.mask("mask").clone())
    }

    /// Checks the mask is exactly the set of pixels that moved by more than 8 levels.
    fn check_exact(before: &Image, after: &Image, mask: &Mask) {
        let c = before.channels();
        let (a, b) = (before.to_f32(), after.to_f32());
        for i in 0..mask.height() * mask.width() {
            let diff = (0..c).map(|k| (a[i * c + k] - b[i * c + k]).abs()).fold(0.0f32, f32::max);
            if mask.data()[i] == 1 {
                assert!(diff > 8.0, "pixel {i} is in the mask but moved by {diff}");
            } else {
                assert_eq!(diff, 0.0, "pixel {i} is outside the mask but changed");
            }
        }
    }

    #[test]
    fn every_family_draws_an_exact_mask_within_the_size_bounds() {
        let area = (N * N) as f64;
        for family in Family::ALL {
            let h = fitted(json!({"families": [family.name()], "seed": 5}), &pool3());
            let img = texture(1);
            let mut sizes = Vec::new();
            for k in 0..12 {
                let started = std::time::Instant::now();
                let (out, mask) = run(&h, &format!("tex/validation/good/001#defect{k}"), &img);
                let spent = started.elapsed();
                check_exact(&img, &out, &mask);
                let n = mask.count_ones();
                // Loose: shapes only approximate their area, and invisible pixels are dropped.
                assert!(n >= 1 && n as f64 <= 0.10 * area * 1.6, "{}: {n} pixels", family.name());
                sizes.push(n);
                if k == 0 {
                    println!("{}: {n} px in {:.2} ms", family.name(), spent.as_secs_f64() * 1e3);
                }
            }
            sizes.sort_unstable();
            let median = sizes[sizes.len() / 2] as f64;
            // The log-uniform median of 0.1%-10% is 1%: 502 pixels.
            assert!((0.0005 * area..0.05 * area).contains(&median), "{}: sizes {sizes:?}", family.name());
            if family != Family::Scar {
                assert!(sizes.iter().filter(|&&n| n as f64 >= 0.0003 * area).count() >= 10, "{sizes:?}");
            }
        }
    }

    #[test]
    fn min_contrast_makes_defects_fainter_but_never_invisible() {
        let pool = pool3();
        let full = fitted(json!({"min_contrast": 1.0}), &pool);
        let faint = fitted(json!({"min_contrast": 0.1}), &pool);
        let mean_change = |h: &StageHarness| {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for k in 0..24 {
                let id = format!("tex/validation/good/001#defect{k}");
                let (after, mask) = run(h, &id, &pool[1].1);
                check_exact(&pool[1].1, &after, &mask);
                assert!(mask.data().contains(&1), "{id}: empty mask");
                let (Pixels::U8(a), Pixels::U8(b)) = (after.pixels(), pool[1].1.pixels()) else { panic!("u8") };
                for (i, &m) in mask.data().iter().enumerate() {
                    if m == 1 {
                        sum += (0..3).map(|c| (f64::from(a[i * 3 + c]) - f64::from(b[i * 3 + c])).abs()).sum::<f64>();
                        n += 1;
                    }
                }
            }
            sum / n as f64
        };
        let (strong, weak) = (mean_change(&full), mean_change(&faint));
        assert!(weak < 0.8 * strong, "faint defects change less: {weak} vs {strong}");
    }

    #[test]
    fn outputs_are_deterministic_and_differ_between_ids_and_seeds() {
        let a = fitted(json!({"seed": 3}), &pool3());
        let b = fitted(json!({"seed": 3}), &pool3());
        let other_seed = fitted(json!({"seed": 4}), &pool3());
        let img = texture(0);
        let id = "tex/validation/good/000#defect1";
        let (i1, m1) = run(&a, id, &img);
        let (i2, m2) = run(&b, id, &img);
        assert_eq!((i1.to_u8(), m1.data()), (i2.to_u8(), m2.data()));
        let (i3, m3) = run(&a, "tex/validation/good/000#defect2", &img);
        assert!(i3.to_u8() != i1.to_u8() && m3.data() != m1.data());
        let (i4, _) = run(&other_seed, id, &img);
        assert_ne!(i4.to_u8(), i1.to_u8());
        // The host's cache tag after the variant number does not change the defect.
        for tagged in [format!("{id}~0badcafe"), format!("{id}~12345678")] {
            let (i5, m5) = run(&a, &tagged, &img);
            assert_eq!((i5.to_u8(), m5.data()), (i1.to_u8(), m1.data()), "{tagged}");
        }
        // A batch in another order gives each sample the same defect.
        let ids = ["tex/validation/good/000#defect0", "tex/validation/good/000#defect5", id];
        let batch = |order: &[usize]| {
            let samples = order.iter().map(|&k| (validation(ids[k]), inputs(vec![("image", img.clone().into())])));
            let out = a.process_batch(samples.collect());
            let masks: Vec<Vec<u8>> = out.into_iter().map(|r| r.unwrap().mask("mask").data().to_vec()).collect();
            order.iter().copied().zip(masks).collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(batch(&[0, 1, 2]), batch(&[2, 0, 1]));
    }

    #[test]
    fn test_split_is_refused_when_fitting_and_processing() {
        let h = fitted(json!({}), &pool3());
        let meta = SampleMeta::new("tex/test/good/000", "texture", "test");
        let err = h.process(&meta, inputs(vec![("image", texture(0).into())])).unwrap_err();
        assert!(err.message.contains("sample `tex/test/good/000`") && err.message.contains("never see test data"));
        let mut fresh = StageHarness::new::<SyntheticDefects>(json!({})).unwrap();
        let err = fresh.fit(vec![(meta, inputs(vec![("image", texture(0).into())]))]).unwrap_err();
        assert!(err.message.contains("test-split"), "{err}");
    }

    #[test]
    fn the_donor_is_another_image_when_the_pool_has_one() {
        // Two flat images far apart in level: what a cut-paste shows comes from the other.
        let flat = |v: u8| Image::from_u8(N as u32, N as u32, 1, vec![v; N * N]).unwrap();
        let pool = [("dark", flat(40)), ("bright", flat(200))];
        // Full strength, so pasted pixels keep the donor's exact level.
        let h = fitted(json!({"families": ["cut-paste", "scar"], "min_contrast": 1.0}), &pool);
        for k in 0..8 {
            let (out, mask) = run(&h, &format!("dark#defect{k}"), &flat(40));
            let px = out.to_u8();
            assert!(mask.count_ones() > 0);
            assert!(mask.data().iter().zip(&px).all(|(&m, &v)| m == 0 || v == 200), "variant {k}");
        }
        // A pool of one: the image is its own donor; a flat image then shows nothing of a
        // cut-paste, so the last resort (a contrasting hole) keeps the mask non-empty.
        let alone = fitted(json!({"families": ["cut-paste"]}), &pool[..1]);
        let (out, mask) = run(&alone, "dark#defect0", &flat(40));
        assert!(mask.count_ones() > 0);
        check_exact(&flat(40), &out, &mask);
    }

    #[test]
    fn grey_and_float_images_keep_their_type() {
        let grey: Vec<u8> = texture(0).to_u8().chunks(3).map(|p| p[1]).collect();
        let grey = Image::from_u8(N as u32, N as u32, 1, grey).unwrap();
        let h = fitted(json!({"seed": 1}), &[("g0", grey.clone()), ("g1", grey.clone())]);
        let (out, mask) = run(&h, "g0#defect3", &grey);
        assert_eq!(out.channels(), 1);
        check_exact(&grey, &out, &mask);

        let unit: Vec<f32> = texture(2).to_f32().iter().map(|v| v / 255.0).collect();
        let unit = Image::from_f32(N as u32, N as u32, 3, unit).unwrap();
        let h = fitted(json!({"seed": 1}), &[("f0", unit.clone()), ("f1", unit.clone())]);
        for k in 0..6 {
            let (out, mask) = run(&h, &format!("f0#defect{k}"), &unit);
            assert!(matches!(out.pixels(), Pixels::F32(_)));
            assert!(out.to_f32().iter().all(|v| (0.0..=1.0).contains(v)), "stays in [0, 1]");
            let scaled = |im: &Image| {
                Image::from_f32(N as u32, N as u32, 3, im.to_f32().iter().map(|v| v * 255.0).collect()).unwrap()
            };
            let (a, b) = (scaled(&unit), scaled(&out));
            let (a, b) = (a.to_f32(), b.to_f32());
            for i in 0..N * N {
                let diff = (0..3).map(|c| (a[i * 3 + c] - b[i * 3 + c]).abs()).fold(0.0f32, f32::max);
                assert_eq!(mask.data()[i] == 1, diff > 8.0 - 1e-3, "pixel {i}: diff {diff}");
            }
        }
    }

    #[test]
    fn saved_pool_reproduces_the_same_defects() {
        let h = fitted(json!({"seed": 2}), &pool3());
        let mut fresh = StageHarness::new::<SyntheticDefects>(json!({"seed": 2})).unwrap();
        fresh.load_state(h.save_state().unwrap()).unwrap();
        let img = texture(2);
        for k in 0..6 {
            let id = format!("tex/validation/good/002#defect{k}");
            let (a, ma) = run(&h, &id, &img);
            let (b, mb) = run(&fresh, &id, &img);
            assert_eq!((a.to_u8(), ma.data()), (b.to_u8(), mb.data()));
        }
        let mut bad = StageHarness::new::<SyntheticDefects>(json!({})).unwrap();
        let err = bad.load_state(b"not a pool".to_vec()).unwrap_err();
        assert!(err.message.contains("unreadable"), "{err}");
        let unfitted = StageHarness::new::<SyntheticDefects>(json!({})).unwrap();
        assert!(unfitted.save_state().is_err());
        let err = unfitted.process(&validation("x"), inputs(vec![("image", img.into())])).unwrap_err();
        assert!(err.message.contains("before it was fitted"), "{err}");
    }

    #[test]
    fn bad_params_and_sizes_are_named() {
        let err = |p: serde_json::Value| StageHarness::new::<SyntheticDefects>(p).err().unwrap().message.to_string();
        let e = err(json!({"min_area": 0.2, "max_area": 0.1}));
        assert!(e.contains("node `test-synthetic-defects`: param `min_area`") && e.contains("0.2"), "{e}");
        let e = err(json!({"max_area": 0.6}));
        assert!(e.contains("param `max_area`") && e.contains("in (0, 0.5]"), "{e}");
        assert!(err(json!({"min_area": 0.0})).contains("param `min_area`"));
        let e = err(json!({"families": ["scar", "blob"]}));
        assert!(e.contains("param `families`: `blob` is not one of cut-paste, scar"), "{e}");
        assert!(err(json!({"families": []})).contains("empty"));
        let e = err(json!({"families": "scar"}));
        assert!(e.contains("param `families`: expected list of strings"), "{e}");
        let e = err(json!({"min_contrast": 0.01}));
        assert!(e.contains("param `min_contrast`: 0.01 is out of range"), "{e}");
        let e = err(json!({"familes": ["scar"]}));
        assert!(e.contains("unknown param `familes` (did you mean `families`?)"), "{e}");

        let h = fitted(json!({}), &pool3());
        let small = Image::from_u8(100, 100, 3, vec![0; 30000]).unwrap();
        let err = h.process(&validation("s#defect0"), inputs(vec![("image", small.clone().into())])).unwrap_err();
        assert!(err.message.contains("sample `s#defect0`") && err.message.contains("100x100x3"), "{err}");
        let mut h = StageHarness::new::<SyntheticDefects>(json!({})).unwrap();
        let err = h
            .fit(vec![
                (validation("a"), inputs(vec![("image", texture(0).into())])),
                (validation("b"), inputs(vec![("image", small.into())])),
            ])
            .unwrap_err();
        assert!(err.message.contains("sample `b`") && err.message.contains("224x224x3"), "{err}");
    }

    #[test]
    fn variant_ids_split_at_the_mark() {
        assert_eq!(split_variant("cat/validation/good/003#defect12"), ("cat/validation/good/003", Some(12)));
        assert_eq!(split_variant("cat/validation/good/003"), ("cat/validation/good/003", None));
        assert_eq!(split_variant("cat/validation/good/003#defect7~1f2e3d4c"), ("cat/validation/good/003", Some(7)));
        assert_eq!(seed_key("v#defect7~1f2e3d4c"), "v#defect7");
        assert_eq!(seed_key("v#defectx"), "v#defectx");
        // The variants of one image cover every family once per cycle.
        let h = DefectStage::new("n", serde_json::from_value(json!({})).unwrap()).unwrap();
        let mut rng = h.rng("x", "y");
        let seen: std::collections::BTreeSet<&str> =
            (0..6).map(|k| h.family(&format!("img#defect{k}"), &mut rng).name()).collect();
        assert_eq!(seen.len(), 6);
    }
}
