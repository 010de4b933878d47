//! A deterministic synthetic anomaly-detection dataset, MVTec-like.
//!
//! Each sample is rendered from its own seed (derived from the dataset seed, category,
//! split, defect and index), so any sample can be loaded alone and in any order.
//!
//! A scene is an albedo map, a height map (mm) and, for objects, a foreground mask. The RGB
//! image is the albedo under a per-image illumination (gain, gradient, colour temperature),
//! Lambert shading from the height map, and sensor noise; the optional point cloud is the
//! height map as organized x/y/z, with invalid (zero) points on steep edges and at random.
//!
//! A defect edits albedo and/or height inside a region. Its mask is that region plus every
//! pixel whose RGB or xyz value differs from the same sample rendered without the defect
//! (shading changes one pixel around a height edit), so the mask is exactly what changed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The object and texture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Woven,
    Grain,
    Tiles,
    Carpet,
    Washer,
    Pill,
    Screw,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Woven,
        Category::Grain,
        Category::Tiles,
        Category::Carpet,
        Category::Washer,
        Category::Pill,
        Category::Screw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Woven => "woven",
            Category::Grain => "grain",
            Category::Tiles => "tiles",
            Category::Carpet => "carpet",
            Category::Washer => "washer",
            Category::Pill => "pill",
            Category::Screw => "screw",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn is_object(self) -> bool {
        matches!(self, Category::Washer | Category::Pill | Category::Screw)
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }
}

/// The defect kinds (the `test/<defect>` directory names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefectKind {
    Scratch,
    Crack,
    Hole,
    Stain,
    Color,
    Contamination,
    Missing,
    /// Geometry only (xyz datasets): a depression, visible in RGB through shading alone.
    Dent,
    /// Geometry only (xyz datasets): a raised bump.
    Bump,
}

impl DefectKind {
    pub fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Crack => "crack",
            DefectKind::Hole => "hole",
            DefectKind::Stain => "stain",
            DefectKind::Color => "color",
            DefectKind::Contamination => "contamination",
            DefectKind::Missing => "missing",
            DefectKind::Dent => "dent",
            DefectKind::Bump => "bump",
        }
    }

    /// The kinds used by a dataset; dents and bumps only when it has an xyz channel.
    pub fn kinds(xyz: bool) -> Vec<DefectKind> {
        use DefectKind::*;
        let mut k = vec![Scratch, Crack, Hole, Stain, Color, Contamination, Missing];
        if xyz {
            k.extend([Dent, Bump]);
        }
        k
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::kinds(true).into_iter().find(|k| k.name() == name)
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub categories: Vec<Category>,
    /// Nominal training images per category (the validation split is held out of these).
    pub train: usize,
    pub validation_fraction: f64,
    pub test_good: usize,
    pub test_defective: usize,
    /// Height and width of every image.
    pub size: usize,
    pub xyz: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            categories: Category::ALL.to_vec(),
            train: 50,
            validation_fraction: 0.2,
            test_good: 10,
            test_defective: 20,
            size: 256,
            xyz: false,
        }
    }
}

/// Which directory of the dataset a sample lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Train,
    Test,
}

/// One sample of the dataset: enough to render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleSpec {
    pub category: Category,
    pub part: Part,
    /// `None` for nominal samples.
    pub defect: Option<DefectKind>,
    /// Index within (category, part, defect): the file stem `NNN`.
    pub index: usize,
}

impl SampleSpec {
    pub fn defect_name(&self) -> &'static str {
        self.defect.map_or("good", DefectKind::name)
    }
    pub fn stem(&self) -> String {
        format!("{:03}", self.index)
    }
    fn seed(&self, base: u64) -> u64 {
        let part = match self.part {
            Part::Train => "train",
            Part::Test => "test",
        };
        let key = format!("{}/{part}/{}/{}", self.category.name(), self.defect_name(), self.index);
        mix(base ^ fnv1a(key.as_bytes()))
    }
}

/// The training images of one category, in listing order.
pub fn train_specs(cfg: &SynthConfig, category: Category) -> Vec<SampleSpec> {
    (0..cfg.train).map(|index| SampleSpec { category, part: Part::Train, defect: None, index }).collect()
}

/// The test images of one category, sorted by (defect directory, index) as a directory
/// listing would be. Defective image `j` gets kind `kinds[j % n]`, so every kind appears.
pub fn test_specs(cfg: &SynthConfig, category: Category) -> Vec<SampleSpec> {
    let kinds = DefectKind::kinds(cfg.xyz);
    let mut specs: Vec<SampleSpec> =
        (0..cfg.test_good).map(|index| SampleSpec { category, part: Part::Test, defect: None, index }).collect();
    for j in 0..cfg.test_defective {
        let kind = kinds[j % kinds.len()];
        specs.push(SampleSpec { category, part: Part::Test, defect: Some(kind), index: j / kinds.len() });
    }
    specs.sort_by(|a, b| (a.defect_name(), a.index).cmp(&(b.defect_name(), b.index)));
    specs
}

/// A rendered sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub size: usize,
    /// `size x size x 3`, u8.
    pub rgb: Vec<u8>,
    /// `size x size`, 0 or 1.
    pub mask: Vec<u8>,
    /// `size x size x 3` organized point cloud (mm), zeros where there is no point.
    pub xyz: Option<Vec<f32>>,
}

/// Renders a sample, with its defect if it has one.
pub fn render(cfg: &SynthConfig, spec: &SampleSpec) -> Rendered {
    let clean = render_scene(cfg, spec, false);
    if spec.defect.is_none() {
        return clean.into_rendered(cfg.size, vec![0; cfg.size * cfg.size]);
    }
    let defective = render_scene(cfg, spec, true);
    let n = cfg.size * cfg.size;
    let mut mask = vec![0u8; n];
    for (i, m) in mask.iter_mut().enumerate() {
        let rgb_changed = defective.rgb[i * 3..i * 3 + 3] != clean.rgb[i * 3..i * 3 + 3];
        let xyz_changed = match (&defective.xyz, &clean.xyz) {
            (Some(a), Some(b)) => a[i * 3..i * 3 + 3] != b[i * 3..i * 3 + 3],
            _ => false,
        };
        *m = u8::from(defective.region[i] || rgb_changed || xyz_changed);
    }
    defective.into_rendered(cfg.size, mask)
}

/// Renders a defective sample without its defect (same scene, lighting and noise).
pub fn render_clean(cfg: &SynthConfig, spec: &SampleSpec) -> Rendered {
    render_scene(cfg, spec, false).into_rendered(cfg.size, vec![0; cfg.size * cfg.size])
}

/// The defect region alone (before shading effects), for tests.
pub fn defect_region(cfg: &SynthConfig, spec: &SampleSpec) -> Vec<bool> {
    render_scene(cfg, spec, true).region
}

struct SceneOut {
    rgb: Vec<u8>,
    xyz: Option<Vec<f32>>,
    region: Vec<bool>,
}

impl SceneOut {
    fn into_rendered(self, size: usize, mask: Vec<u8>) -> Rendered {
        Rendered { size, rgb: self.rgb, mask, xyz: self.xyz }
    }
}

// ---------------------------------------------------------------------------------------
// Noise

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of a lattice point in `[0, 1)`.
fn hash2(ix: i64, iy: i64, seed: u64) -> f32 {
    let h = mix(seed ^ mix((ix as u64).wrapping_mul(0x9e37_79b9) ^ (iy as u64).wrapping_mul(0x85eb_ca6b) << 1));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Value noise in `[0, 1)`.
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (smooth(x - fx), smooth(y - fy));
    let a = hash2(ix, iy, seed);
    let b = hash2(ix + 1, iy, seed);
    let c = hash2(ix, iy + 1, seed);
    let d = hash2(ix + 1, iy + 1, seed);
    let top = a + (b - a) * tx;
    let bottom = c + (d - c) * tx;
    top + (bottom - top) * ty
}

/// Fractal noise in about `[0, 1)`.
fn fbm(x: f32, y: f32, seed: u64, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
    for o in 0..octaves {
        sum += amp * value_noise(x * freq, y * freq, seed.wrapping_add(u64::from(o) * 7919));
        norm += amp;
        amp *= 0.5;
        freq *= 2.0;
    }
    sum / norm
}

/// Roughly Gaussian per-pixel noise (sum of three uniforms), mean 0, std 1.
fn pixel_noise(i: usize, channel: usize, seed: u64) -> f32 {
    let base = mix(seed ^ ((i as u64) << 2 | channel as u64));
    let u = |k: u32| ((base >> (k * 21)) & 0x1f_ffff) as f32 / 0x1f_ffff as f32;
    (u(0) + u(1) + u(2) - 1.5) * 2.0
}

// ---------------------------------------------------------------------------------------
// Scenes

struct Scene {
    n: usize,
    albedo: Vec<[f32; 3]>,
    height: Vec<f32>,
    /// Objects: pixels on the object. Textures: everything.
    fg: Vec<bool>,
    background: [f32; 3],
}

impl Scene {
    fn new(n: usize, background: [f32; 3]) -> Self {
        Self { n, albedo: vec![background; n * n], height: vec![0.0; n * n], fg: vec![false; n * n], background }
    }
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Per-image placement: rotation, offset and texture phase.
struct Pose {
    cos: f32,
    sin: f32,
    cx: f32,
    cy: f32,
    phase_u: f32,
    phase_v: f32,
}

impl Pose {
    /// Rotated, shifted coordinates of pixel `(x, y)` relative to the pose centre.
    fn uv(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (self.cos * dx + self.sin * dy + self.phase_u, -self.sin * dx + self.cos * dy + self.phase_v)
    }
}

fn draw_scene(cat: Category, n: usize, rng: &mut ChaCha8Rng, seed: u64) -> Scene {
    let s = n as f32 / 256.0;
    let max_angle: f32 = match cat {
        Category::Screw => std::f32::consts::PI,
        Category::Grain => 0.06,
        _ => 0.12,
    };
    let angle = rng.gen_range(-max_angle..=max_angle);
    let jitter = if cat.is_object() { 0.06 * n as f32 } else { 0.0 };
    let pose = Pose {
        cos: angle.cos(),
        sin: angle.sin(),
        cx: n as f32 / 2.0 + rng.gen_range(-jitter..=jitter),
        cy: n as f32 / 2.0 + rng.gen_range(-jitter..=jitter),
        phase_u: rng.gen_range(0.0..200.0),
        phase_v: rng.gen_range(0.0..200.0),
    };
    let size_jitter = rng.gen_range(0.96..1.04f32);
    let mut sc = Scene::new(n, [0.11, 0.11, 0.12]);
    for y in 0..n {
        for x in 0..n {
            let i = y * n + x;
            let (u, v) = pose.uv(x as f32 + 0.5, y as f32 + 0.5);
            let fine = fbm(x as f32 / 2.0, y as f32 / 2.0, seed ^ 0xf1, 2) - 0.5;
            match cat {
                Category::Woven => {
                    let half = 8.0 * s;
                    let (i_u, i_v) = ((u / half).floor() as i64, (v / half).floor() as i64);
                    let warp_on_top = (i_u + i_v).rem_euclid(2) == 0;
                    let (f, along, colour) = if warp_on_top {
                        (u / half - i_u as f32, v, [0.74, 0.67, 0.54])
                    } else {
                        (v / half - i_v as f32, u, [0.69, 0.63, 0.52])
                    };
                    let profile = (std::f32::consts::PI * f).sin();
                    let fibre = fbm(along / (6.0 * s), f * 4.0, seed ^ 0x77, 3) - 0.5;
                    sc.albedo[i] = scale3(colour, 0.55 + 0.45 * profile + 0.12 * fibre + 0.05 * fine);
                    sc.height[i] = 0.25 * profile + if warp_on_top { 0.08 } else { 0.0 };
                    sc.fg[i] = true;
                }
                Category::Grain => {
                    let warp = 14.0 * s * fbm(u / (110.0 * s), v / (40.0 * s), seed ^ 0x31, 3);
                    let t = (v + warp) / (9.0 * s);
                    let ring = t - t.floor();
                    let streak = fbm(u / (30.0 * s), v / (1.5 * s), seed ^ 0x32, 3) - 0.5;
                    let base = lerp3([0.80, 0.60, 0.40], [0.52, 0.34, 0.19], ring.powf(2.5));
                    sc.albedo[i] = scale3(base, 1.0 + 0.18 * streak + 0.05 * fine);
                    sc.height[i] = 0.04 * ring;
                    sc.fg[i] = true;
                }
                Category::Tiles => {
                    let tile = 48.0 * s;
                    let grout = 3.0 * s;
                    let (tu, tv) = ((u / tile).floor(), (v / tile).floor());
                    let (fu, fv) = (u - tu * tile, v - tv * tile);
                    let edge = fu.min(fv).min(tile - fu).min(tile - fv);
                    let tint = hash2(tu as i64, tv as i64, seed ^ 0x51) - 0.5;
                    let speck = fbm(u / (2.5 * s), v / (2.5 * s), seed ^ 0x52, 2) - 0.5;
                    if edge < grout {
                        sc.albedo[i] = scale3([0.46, 0.44, 0.41], 1.0 + 0.25 * speck);
                        sc.height[i] = 0.0;
                    } else {
                        let c = [0.72 + 0.07 * tint, 0.74 + 0.05 * tint, 0.77];
                        sc.albedo[i] = scale3(c, 1.0 + 0.22 * speck + 0.04 * fine);
                        sc.height[i] = 0.5 * ((edge - grout) / (2.0 * s)).min(1.0);
                    }
                    sc.fg[i] = true;
                }
                Category::Carpet => {
                    let lo = fbm(u / (18.0 * s), v / (18.0 * s), seed ^ 0x61, 3) - 0.5;
                    let hi = fbm(u / (1.7 * s), v / (1.7 * s), seed ^ 0x62, 2) - 0.5;
                    let hue = fbm(u / (40.0 * s), v / (40.0 * s), seed ^ 0x63, 2) - 0.5;
                    let base = [0.36 + 0.1 * hue, 0.39, 0.55 - 0.1 * hue];
                    let val = 0.75 + 0.9 * hi + 0.35 * lo;
                    sc.albedo[i] = scale3(base, val);
                    sc.height[i] = 0.3 * val;
                    sc.fg[i] = true;
                }
                Category::Washer => {
                    let (du, dv) = (u - pose.phase_u, v - pose.phase_v);
                    let r = (du * du + dv * dv).sqrt();
                    let (r_in, r_out) = (32.0 * s * size_jitter, 82.0 * s * size_jitter);
                    sc.albedo[i] = scale3(sc.background, 1.0 + 0.3 * fine);
                    if r >= r_in && r <= r_out {
                        let theta = dv.atan2(du);
                        let brushed = fbm(theta * 40.0, r / (8.0 * s), seed ^ 0x71, 3) - 0.5;
                        let rings = (r / (2.2 * s)).sin();
                        let g = 0.60 + 0.10 * brushed + 0.03 * rings + 0.04 * fine;
                        sc.albedo[i] = [g, g * 0.99, g * 0.96];
                        let bevel = ((r - r_in).min(r_out - r) / (3.0 * s)).min(1.0);
                        sc.height[i] = 2.0 * bevel;
                        sc.fg[i] = true;
                    }
                }
                Category::Pill => {
                    let (du, dv) = (u - pose.phase_u, v - pose.phase_v);
                    let (half_len, radius) = (66.0 * s * size_jitter, 36.0 * s * size_jitter);
                    let axial = du.abs() - half_len;
                    let d = if axial > 0.0 { (axial * axial + dv * dv).sqrt() } else { dv.abs() };
                    sc.albedo[i] = scale3(sc.background, 1.0 + 0.3 * fine);
                    if d <= radius {
                        // Red speckles, different on every pill.
                        let cell = 3.0 * s;
                        let (cu, cv) = ((du / cell).floor() as i64, (dv / cell).floor() as i64);
                        let speck = hash2(cu, cv, seed ^ 0x81) < 0.035;
                        let base = if speck { [0.78, 0.33, 0.26] } else { [0.93, 0.90, 0.84] };
                        sc.albedo[i] = scale3(base, 1.0 + 0.03 * fine);
                        sc.height[i] = 4.0 * (1.0 - (d / radius).powi(2)).max(0.0).sqrt();
                        sc.fg[i] = true;
                    }
                }
                Category::Screw => {
                    let (du, dv) = (u - pose.phase_u, v - pose.phase_v);
                    let (shaft_len, shaft_half_w, head_r) = (120.0 * s, 8.0 * s, 21.0 * s);
                    let head_u = -shaft_len / 2.0;
                    let dh = ((du - head_u).powi(2) + dv * dv).sqrt();
                    sc.albedo[i] = scale3(sc.background, 1.0 + 0.3 * fine);
                    if dh <= head_r {
                        let slot = (dv.abs() < 2.0 * s) && dh < head_r * 0.75;
                        let g = if slot { 0.22 } else { 0.58 + 0.06 * fine };
                        sc.albedo[i] = [g, g, g * 0.97];
                        sc.height[i] = if slot { 1.0 } else { 4.0 * (1.0 - (dh / head_r).powi(4)).max(0.0).sqrt() };
                        sc.fg[i] = true;
                    } else if du > head_u && du < shaft_len / 2.0 && dv.abs() <= shaft_half_w {
                        // Thread: stripes across the shaft; the tip narrows.
                        let tip = ((shaft_len / 2.0 - du) / (10.0 * s)).min(1.0);
                        if dv.abs() <= shaft_half_w * tip.max(0.2) {
                            let thread = (2.0 * std::f32::consts::PI * (du + 0.4 * dv) / (5.0 * s)).sin();
                            let g = 0.50 + 0.12 * thread + 0.04 * fine;
                            sc.albedo[i] = [g, g, g * 0.97];
                            let prof = (1.0 - (dv / shaft_half_w).powi(2)).max(0.0).sqrt();
                            sc.height[i] = 3.0 * prof + 0.2 * thread;
                            sc.fg[i] = true;
                        }
                    }
                }
            }
        }
    }
    sc
}

// ---------------------------------------------------------------------------------------
// Defects

/// A region being painted.
struct Region {
    n: usize,
    px: Vec<bool>,
}

impl Region {
    fn new(n: usize) -> Self {
        Self { n, px: vec![false; n * n] }
    }
    fn disc(&mut self, cx: f32, cy: f32, r: f32) {
        let n = self.n as i64;
        let r = r.max(0.5);
        let (x0, x1) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
        let (y0, y1) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
        for y in y0.max(0)..=y1.min(n - 1) {
            for x in x0.max(0)..=x1.min(n - 1) {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.px[(y * n + x) as usize] = true;
                }
            }
        }
    }
    /// A thick polyline.
    fn stroke(&mut self, pts: &[(f32, f32)], width: f32) {
        for w in pts.windows(2) {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
            let steps = (len * 2.0).ceil().max(1.0) as usize;
            for k in 0..=steps {
                let t = k as f32 / steps as f32;
                self.disc(ax + (bx - ax) * t, ay + (by - ay) * t, width / 2.0);
            }
        }
    }
    /// An irregular blob of mean radius `r`.
    fn blob(&mut self, cx: f32, cy: f32, r: f32, seed: u64) {
        let n = self.n as i64;
        let reach = r * 1.5;
        for y in ((cy - reach).floor() as i64).max(0)..=((cy + reach).ceil() as i64).min(n - 1) {
            for x in ((cx - reach).floor() as i64).max(0)..=((cx + reach).ceil() as i64).min(n - 1) {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let theta = dy.atan2(dx);
                let wobble = fbm(theta.cos() * 1.5 + 5.0, theta.sin() * 1.5 + 5.0, seed, 3) - 0.5;
                let rr = r * (1.0 + 0.7 * wobble);
                if dx * dx + dy * dy <= rr * rr {
                    self.px[(y * n + x) as usize] = true;
                }
            }
        }
    }
    fn intersect(&mut self, other: &[bool]) {
        self.px.iter_mut().zip(other).for_each(|(p, &o)| *p = *p && o);
    }
    fn count(&self) -> usize {
        self.px.iter().filter(|&&p| p).count()
    }
}

/// A smooth random curve starting at `(x, y)` of about `len` pixels.
fn curve(rng: &mut ChaCha8Rng, x: f32, y: f32, len: f32, wiggle: f32) -> Vec<(f32, f32)> {
    let mut dir: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
    let turn = rng.gen_range(-0.04..0.04f32);
    let steps = (len / 2.0).ceil().max(2.0) as usize;
    let mut pts = vec![(x, y)];
    let (mut px, mut py) = (x, y);
    for _ in 0..steps {
        dir += turn + rng.gen_range(-wiggle..=wiggle);
        px += 2.0 * dir.cos();
        py += 2.0 * dir.sin();
        pts.push((px, py));
    }
    pts
}

/// Log-uniform defect scale in pixels: from tiny (3 px) to large (48 px) at 256x256.
fn defect_scale(rng: &mut ChaCha8Rng, s: f32) -> f32 {
    let (lo, hi) = (3.0f32 * s, 48.0f32 * s);
    (lo.ln() + rng.gen::<f32>() * (hi.ln() - lo.ln())).exp()
}

/// Paints one defect into the scene; returns its region (never empty).
fn paint_defect(sc: &mut Scene, cat: Category, kind: DefectKind, rng: &mut ChaCha8Rng, seed: u64) -> Vec<bool> {
    let n = sc.n;
    let s = n as f32 / 256.0;
    let fg_px: Vec<usize> = (0..n * n).filter(|&i| sc.fg[i]).collect();
    let margin = 8.0 * s;
    for attempt in 0..50u64 {
        let seed = seed.wrapping_add(attempt);
        let scale = defect_scale(rng, s);
        // Anchor on the object (objects) or away from the border (textures).
        let (cx, cy) = loop {
            let i = fg_px[rng.gen_range(0..fg_px.len())];
            let (x, y) = ((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            if x > margin && y > margin && x < n as f32 - margin && y < n as f32 - margin {
                break (x, y);
            }
        };
        let mut region = Region::new(n);
        match kind {
            DefectKind::Scratch => {
                let width = if scale < 10.0 * s { 1.0 } else { rng.gen_range(1.0..2.6f32) * s.max(1.0) };
                let len = scale * rng.gen_range(1.5..3.5f32);
                region.stroke(&curve(rng, cx, cy, len, 0.05), width);
            }
            DefectKind::Crack => {
                let main = curve(rng, cx, cy, scale * 2.5, 0.6);
                region.stroke(&main, rng.gen_range(1.0..2.2f32) * s.max(1.0));
                let (bx, by) = main[main.len() / 2];
                region.stroke(&curve(rng, bx, by, scale, 0.6), 1.0);
            }
            DefectKind::Hole => region.blob(cx, cy, (0.35 * scale).max(1.5), seed),
            DefectKind::Stain | DefectKind::Color => region.blob(cx, cy, (0.6 * scale).max(2.0), seed),
            DefectKind::Contamination => {
                if rng.gen_bool(0.5) {
                    // A fibre.
                    region.stroke(&curve(rng, cx, cy, scale * 3.0, 0.25), 1.0);
                } else {
                    for _ in 0..rng.gen_range(1..=4) {
                        let (ox, oy) = (rng.gen_range(-1.0..1.0) * scale, rng.gen_range(-1.0..1.0) * scale);
                        region.disc(cx + ox * 0.5, cy + oy * 0.5, rng.gen_range(1.0..4.0f32) * s.max(1.0));
                    }
                }
            }
            DefectKind::Missing => {
                if cat.is_object() {
                    // A chunk bitten out of the object's outline.
                    let edge: Vec<usize> = fg_px
                        .iter()
                        .copied()
                        .filter(|&i| {
                            let (x, y) = (i % n, i / n);
                            x > 0
                                && y > 0
                                && x + 1 < n
                                && y + 1 < n
                                && (!sc.fg[i - 1] || !sc.fg[i + 1] || !sc.fg[i - n])
                        })
                        .collect();
                    let i = edge[rng.gen_range(0..edge.len())];
                    region.blob((i % n) as f32 + 0.5, (i / n) as f32 + 0.5, (0.7 * scale).max(3.0), seed);
                } else {
                    let pts = curve(rng, cx, cy, scale * 2.5, 0.02);
                    region.stroke(&pts, (0.3 * scale).clamp(2.0, 9.0 * s.max(1.0)));
                }
            }
            DefectKind::Dent | DefectKind::Bump => region.disc(cx, cy, (0.6 * scale).max(3.0)),
        }
        region.intersect(&sc.fg);
        if region.count() < 2 {
            continue;
        }
        apply_defect(sc, cat, kind, &region, rng);
        return region.px;
    }
    // Unreachable in practice (an object always has room for a defect); a one-pixel stain
    // keeps the mask non-empty.
    let i = fg_px[fg_px.len() / 2];
    sc.albedo[i] = scale3(sc.albedo[i], 0.5);
    let mut px = vec![false; n * n];
    px[i] = true;
    px
}

fn apply_defect(sc: &mut Scene, cat: Category, kind: DefectKind, region: &Region, rng: &mut ChaCha8Rng) {
    let idx: Vec<usize> = (0..sc.n * sc.n).filter(|&i| region.px[i]).collect();
    let mean = {
        let mut m = [0.0f32; 3];
        for &i in &idx {
            (0..3).for_each(|c| m[c] += sc.albedo[i][c]);
        }
        scale3(m, 1.0 / idx.len() as f32)
    };
    match kind {
        DefectKind::Scratch => {
            // Metal scratches shine; on textures they are abraded (lighter or darker).
            let lighter = cat.is_object() || rng.gen_bool(0.6);
            let amount = rng.gen_range(0.12..0.35f32);
            for &i in &idx {
                sc.albedo[i] = if lighter {
                    lerp3(sc.albedo[i], [0.95, 0.95, 0.95], amount)
                } else {
                    scale3(sc.albedo[i], 1.0 - amount)
                };
                sc.height[i] -= 0.1;
            }
        }
        DefectKind::Crack => {
            let k = rng.gen_range(0.35..0.6f32);
            for &i in &idx {
                sc.albedo[i] = scale3(sc.albedo[i], k);
                sc.height[i] -= 0.4;
            }
        }
        DefectKind::Hole => {
            let dark = rng.gen_range(0.05..0.14f32);
            for &i in &idx {
                sc.albedo[i] = [dark, dark * 0.95, dark * 0.9];
                sc.height[i] -= 2.5;
            }
        }
        DefectKind::Stain => {
            let colours = [[0.35, 0.25, 0.12], [0.2, 0.2, 0.18], [0.6, 0.55, 0.2], [0.45, 0.3, 0.35]];
            let colour = colours[rng.gen_range(0..colours.len())];
            let alpha = rng.gen_range(0.22..0.45f32);
            for &i in &idx {
                sc.albedo[i] = lerp3(sc.albedo[i], colour, alpha);
            }
        }
        DefectKind::Color => {
            // A hue shift at about constant brightness.
            let ch = rng.gen_range(0..3);
            let d = rng.gen_range(0.12..0.25f32) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            for &i in &idx {
                let a = &mut sc.albedo[i];
                a[ch] *= 1.0 + d;
                a[(ch + 1) % 3] *= 1.0 - d / 2.0;
                a[(ch + 2) % 3] *= 1.0 - d / 2.0;
                // Guarantee a visible change even on dark pixels.
                a[ch] += 0.02 * d.signum();
            }
        }
        DefectKind::Contamination => {
            let colours = [[0.1, 0.1, 0.1], [0.15, 0.25, 0.6], [0.2, 0.5, 0.25], [0.85, 0.85, 0.8], [0.55, 0.4, 0.3]];
            let colour = colours[rng.gen_range(0..colours.len())];
            for &i in &idx {
                sc.albedo[i] = lerp3(sc.albedo[i], colour, 0.85);
                sc.height[i] += 0.3;
            }
        }
        DefectKind::Missing => {
            if cat.is_object() {
                for &i in &idx {
                    sc.albedo[i] = lerp3(sc.background, mean, 0.05);
                    sc.height[i] = 0.0;
                    sc.fg[i] = false;
                }
            } else {
                // The top layer is gone: a darker, flatter substrate shows.
                let k = rng.gen_range(0.45..0.7f32);
                for &i in &idx {
                    sc.albedo[i] = scale3(lerp3(sc.albedo[i], mean, 0.7), k);
                    sc.height[i] -= 0.5;
                }
            }
        }
        DefectKind::Dent | DefectKind::Bump => {
            let sign = if kind == DefectKind::Dent { -1.0 } else { 1.0 };
            let depth = rng.gen_range(0.5..1.4f32);
            // A smooth profile over the region's bounding disc, non-zero everywhere inside.
            let n = sc.n;
            let (mut cx, mut cy) = (0.0f32, 0.0f32);
            for &i in &idx {
                cx += (i % n) as f32;
                cy += (i / n) as f32;
            }
            let (cx, cy) = (cx / idx.len() as f32, cy / idx.len() as f32);
            let r = idx.iter().map(|&i| ((i % n) as f32 - cx).hypot((i / n) as f32 - cy)).fold(0.0f32, f32::max) + 1.0;
            for &i in &idx {
                let d = ((i % n) as f32 - cx).hypot((i / n) as f32 - cy) / r;
                sc.height[i] += sign * depth * (1.0 - d * d).max(0.05).powi(2);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rendering

fn render_scene(cfg: &SynthConfig, spec: &SampleSpec, with_defect: bool) -> SceneOut {
    let n = cfg.size;
    let seed = spec.seed(cfg.seed);
    let mut scene_rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sc = draw_scene(spec.category, n, &mut scene_rng, seed);
    // Illumination, drawn after the scene so clean and defective renders agree.
    let gain = scene_rng.gen_range(0.85..1.15f32);
    let (gx, gy) = (scene_rng.gen_range(-0.12..0.12f32), scene_rng.gen_range(-0.12..0.12f32));
    let temp = [scene_rng.gen_range(0.96..1.04f32), 1.0, scene_rng.gen_range(0.96..1.04f32)];
    let noise_std = scene_rng.gen_range(1.0..2.5f32) / 255.0;

    let mut region = vec![false; n * n];
    if let (true, Some(kind)) = (with_defect, spec.defect) {
        let mut defect_rng = ChaCha8Rng::seed_from_u64(mix(seed ^ 0xdefec7));
        region = paint_defect(&mut sc, spec.category, kind, &mut defect_rng, mix(seed ^ 0xb10b));
    }

    let px_mm = 0.1 * 256.0 / n as f32;
    let light = {
        let l = [-0.4f32, -0.5, 0.77];
        let norm = (l[0] * l[0] + l[1] * l[1] + l[2] * l[2]).sqrt();
        [l[0] / norm, l[1] / norm, l[2] / norm]
    };
    let h = |x: usize, y: usize| sc.height[y * n + x];
    let mut rgb = vec![0u8; n * n * 3];
    let mut slope = vec![0.0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let i = y * n + x;
            let dzdx = (h((x + 1).min(n - 1), y) - h(x.saturating_sub(1), y)) / (2.0 * px_mm);
            let dzdy = (h(x, (y + 1).min(n - 1)) - h(x, y.saturating_sub(1))) / (2.0 * px_mm);
            slope[i] = dzdx.hypot(dzdy);
            let norm = (dzdx * dzdx + dzdy * dzdy + 1.0).sqrt();
            let ndotl = (-dzdx * light[0] - dzdy * light[1] + light[2]) / norm;
            let shade = (ndotl.max(0.0) / light[2]).clamp(0.2, 1.5);
            let illum = gain * (1.0 + gx * (x as f32 / n as f32 - 0.5) * 2.0 + gy * (y as f32 / n as f32 - 0.5) * 2.0);
            for c in 0..3 {
                let v = sc.albedo[i][c] * illum * temp[c] * (0.6 + 0.4 * shade) + noise_std * pixel_noise(i, c, seed);
                rgb[i * 3 + c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let xyz = cfg.xyz.then(|| {
        let z0 = 400.0;
        let mut out = vec![0.0f32; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                // No point on steep walls (the sensor sees them edge-on) and a few dropouts.
                let dropout = mix(seed ^ 0xd80 ^ (i as u64).wrapping_mul(0x9e37_79b9)) % 1000 < 2;
                if slope[i] > 6.0 || dropout {
                    continue;
                }
                out[i * 3] = (x as f32 + 0.5 - n as f32 / 2.0) * px_mm;
                out[i * 3 + 1] = (y as f32 + 0.5 - n as f32 / 2.0) * px_mm;
                out[i * 3 + 2] = z0 - sc.height[i];
            }
        }
        out
    });
    SceneOut { rgb, xyz, region }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(xyz: bool) -> SynthConfig {
        SynthConfig { seed: 7, train: 6, test_good: 2, test_defective: 9, xyz, ..SynthConfig::default() }
    }

    #[test]
    fn deterministic_and_distinct() {
        let c = cfg(false);
        let spec = test_specs(&c, Category::Pill)[5];
        assert_eq!(render(&c, &spec), render(&c, &spec));
        let other = SynthConfig { seed: 8, ..c.clone() };
        assert_ne!(render(&c, &spec).rgb, render(&other, &spec).rgb);
        let t = train_specs(&c, Category::Woven);
        assert_ne!(render(&c, &t[0]).rgb, render(&c, &t[1]).rgb);
    }

    #[test]
    fn listing_covers_every_kind_sorted() {
        let c = cfg(true);
        let specs = test_specs(&c, Category::Tiles);
        assert_eq!(specs.len(), 11);
        let names: Vec<&str> = specs.iter().map(|s| s.defect_name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for k in DefectKind::kinds(true) {
            assert!(names.contains(&k.name()), "{k:?} missing");
        }
        assert!(!DefectKind::kinds(false).contains(&DefectKind::Dent));
    }

    /// The mask is exactly the defect region plus what changed, and the region itself
    /// visibly changed: for every category and kind, with xyz.
    #[test]
    fn masks_match_defects() {
        let c = SynthConfig { size: 128, test_defective: 9, ..cfg(true) };
        for cat in Category::ALL {
            for spec in test_specs(&c, cat).iter().filter(|s| s.defect.is_some()) {
                let r = render(&c, spec);
                let clean = render_clean(&c, spec);
                let region = defect_region(&c, spec);
                let (cx, dx) = (clean.xyz.as_ref().unwrap(), r.xyz.as_ref().unwrap());
                let mut changed_in_region = 0;
                let mut region_px = 0;
                for i in 0..c.size * c.size {
                    let changed = r.rgb[i * 3..i * 3 + 3] != clean.rgb[i * 3..i * 3 + 3]
                        || dx[i * 3..i * 3 + 3] != cx[i * 3..i * 3 + 3];
                    if changed {
                        assert_eq!(r.mask[i], 1, "{cat:?} {spec:?}: pixel {i} changed outside the mask");
                    }
                    if region[i] {
                        region_px += 1;
                        assert_eq!(r.mask[i], 1);
                        changed_in_region += usize::from(changed);
                    }
                    if r.mask[i] == 1 {
                        assert!(changed || region[i]);
                    }
                }
                assert!(region_px >= 2, "{spec:?}: empty region");
                // Almost every region pixel really changed (u8 rounding may hide a few).
                assert!(
                    changed_in_region as f32 >= 0.9 * region_px as f32,
                    "{spec:?}: only {changed_in_region} of {region_px} region pixels changed"
                );
                // Nominal renders have empty masks.
                assert_eq!(clean.mask.iter().map(|&v| v as usize).sum::<usize>(), 0);
            }
        }
    }

    #[test]
    fn defect_sizes_vary_down_to_tiny() {
        let c = SynthConfig { test_defective: 70, ..cfg(false) };
        let areas: Vec<usize> = test_specs(&c, Category::Grain)
            .iter()
            .filter(|s| s.defect.is_some())
            .map(|s| render(&c, s).mask.iter().map(|&v| v as usize).sum())
            .collect();
        let min = *areas.iter().min().unwrap();
        let max = *areas.iter().max().unwrap();
        assert!(min <= 30, "smallest defect {min} px");
        assert!(max >= 800, "largest defect {max} px");
    }

    #[test]
    fn point_cloud_has_invalid_points_and_height() {
        let c = cfg(true);
        let r = render(&c, &train_specs(&c, Category::Washer)[0]);
        let xyz = r.xyz.unwrap();
        let invalid = xyz.chunks_exact(3).filter(|p| *p == [0.0, 0.0, 0.0]).count();
        assert!(invalid > 0 && invalid < c.size * c.size / 10, "{invalid}");
        let zs: Vec<f32> = xyz.chunks_exact(3).filter(|p| p[2] != 0.0).map(|p| p[2]).collect();
        let (lo, hi) = zs.iter().fold((f32::MAX, f32::MIN), |(a, b), &z| (a.min(z), b.max(z)));
        assert!(hi - lo > 1.5, "washer should stand out of the plane: {lo}..{hi}");
    }
}

/// The dataset must not be trivially easy: a per-pixel colour threshold, even with the best
/// threshold chosen on the test set itself, segments it poorly.
#[cfg(test)]
mod difficulty {
    use super::*;

    /// Best pixel F1 over all thresholds of `scores` against `labels`.
    fn best_f1(scores: &[f32], labels: &[bool]) -> f64 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let positives = labels.iter().filter(|&&l| l).count() as f64;
        let (mut tp, mut best) = (0.0f64, 0.0f64);
        for (k, &i) in order.iter().enumerate() {
            tp += f64::from(u8::from(labels[i]));
            let predicted = (k + 1) as f64;
            // Only at a change of score is this a reachable threshold.
            if k + 1 == order.len() || scores[order[k + 1]] != scores[i] {
                best = best.max(2.0 * tp / (predicted + positives));
            }
        }
        best
    }

    #[test]
    fn best_f1_on_hand_values() {
        assert_eq!(best_f1(&[0.9, 0.8, 0.1, 0.05], &[true, true, false, false]), 1.0);
        // Threshold 0.8: TP 1, FP 1, FN 1 -> 0.5; threshold 0.1: TP 2, FP 1 -> 0.8.
        assert!((best_f1(&[0.8, 0.9, 0.1, 0.0], &[true, false, true, false]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn colour_threshold_does_not_segment_it() {
        let cfg = SynthConfig { seed: 3, train: 8, test_good: 0, test_defective: 14, ..SynthConfig::default() };
        let n = cfg.size * cfg.size;
        let mut per_category = Vec::new();
        for cat in Category::ALL {
            let train: Vec<Rendered> = train_specs(&cfg, cat).iter().map(|s| render(&cfg, s)).collect();
            // Global mean colour, and the per-pixel mean image, of the nominal images.
            let mut mean = [0.0f64; 3];
            let mut mean_img = vec![0.0f32; n * 3];
            for r in &train {
                for (i, &v) in r.rgb.iter().enumerate() {
                    mean[i % 3] += f64::from(v);
                    mean_img[i] += f32::from(v) / train.len() as f32;
                }
            }
            let mean = mean.map(|m| (m / (n * train.len()) as f64) as f32);
            let (mut global, mut pixelwise, mut labels) = (Vec::new(), Vec::new(), Vec::new());
            for spec in test_specs(&cfg, cat) {
                let r = render(&cfg, &spec);
                for i in 0..n {
                    let px = &r.rgb[i * 3..i * 3 + 3];
                    let d = |m: [f32; 3]| (0..3).map(|c| (f32::from(px[c]) - m[c]).powi(2)).sum::<f32>().sqrt();
                    global.push(d(mean));
                    pixelwise.push(d([mean_img[i * 3], mean_img[i * 3 + 1], mean_img[i * 3 + 2]]));
                    labels.push(r.mask[i] == 1);
                }
            }
            let (g, p) = (best_f1(&global, &labels), best_f1(&pixelwise, &labels));
            eprintln!("{:8} best F1: distance to mean colour {g:.3}, to mean image {p:.3}", cat.name());
            per_category.push(g.max(p));
        }
        let mean_f1 = per_category.iter().sum::<f64>() / per_category.len() as f64;
        eprintln!("mean of the better baseline per category: {mean_f1:.3}");
        assert!(per_category.iter().all(|&f| f < 0.5), "{per_category:?}");
        assert!(mean_f1 < 0.35, "{mean_f1}");
    }
}
