//! Defects: a region painted on the object or texture, then an edit of albedo and/or height
//! inside it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::noise::fbm;
use crate::scene::{lerp3, scale3, Scene};
use crate::spec::{Category, DefectKind};

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
pub(crate) fn paint_defect(
    sc: &mut Scene,
    cat: Category,
    kind: DefectKind,
    rng: &mut ChaCha8Rng,
    seed: u64,
) -> Vec<bool> {
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
