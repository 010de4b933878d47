//! The clean scene of each category: albedo, height (mm) and foreground, under a random pose.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::noise::{fbm, hash2};
use crate::spec::Category;

pub(crate) struct Scene {
    pub(crate) n: usize,
    pub(crate) albedo: Vec<[f32; 3]>,
    pub(crate) height: Vec<f32>,
    /// Objects: pixels on the object. Textures: everything.
    pub(crate) fg: Vec<bool>,
    pub(crate) background: [f32; 3],
}

impl Scene {
    fn new(n: usize, background: [f32; 3]) -> Self {
        Self { n, albedo: vec![background; n * n], height: vec![0.0; n * n], fg: vec![false; n * n], background }
    }
}

pub(crate) fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

pub(crate) fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
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

pub(crate) fn draw_scene(cat: Category, n: usize, rng: &mut ChaCha8Rng, seed: u64) -> Scene {
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
