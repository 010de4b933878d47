//! The defect families. Each draws one defect of about `area` pixels onto a copy of the
//! image; [`render`] retries placements until enough of it is visible, because a patch
//! pasted onto a look-alike region or a warp of a flat region changes nothing one can see.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::canvas::Canvas;
use crate::shapes::{centre, fill_polygon, log_uniform, ragged_polygon, rotate, stroke, window, SmoothNoise};

/// The families a `families` param may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    CutPaste,
    Scar,
    NoiseBlend,
    Warp,
    Stain,
    Missing,
}

impl Family {
    pub const ALL: [Family; 6] =
        [Family::CutPaste, Family::Scar, Family::NoiseBlend, Family::Warp, Family::Stain, Family::Missing];

    pub fn name(self) -> &'static str {
        match self {
            Family::CutPaste => "cut-paste",
            Family::Scar => "scar",
            Family::NoiseBlend => "noise-blend",
            Family::Warp => "warp",
            Family::Stain => "stain",
            Family::Missing => "missing",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What a defect is drawn from.
pub struct Scene<'a> {
    /// The clean image.
    pub image: &'a Canvas,
    /// Another clean image of the same size (the image itself when the pool has no other).
    pub donor: &'a Canvas,
    pub donor_is_self: bool,
    /// Target size of the defect, in pixels.
    pub area: f32,
}

/// One drawn defect: the whole rendered image, and how many pixels it meant to change.
struct Drawn {
    px: Vec<f32>,
    region: usize,
}

/// Placements tried before settling for the most visible one.
const ATTEMPTS: usize = 8;
/// A placement is accepted when at least this fraction of its region changed visibly.
const ACCEPT: f32 = 0.3;
/// Source positions (or warp centres) compared for each placement.
const CANDIDATES: usize = 6;

/// The rendered pixels (0-255 units) of one defect of `family`. At least one pixel differs
/// visibly from the image: when no placement of the family shows, a flat hole does.
pub fn render(family: Family, scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut best: Option<(usize, Vec<f32>)> = None;
    for _ in 0..ATTEMPTS {
        let drawn = draw(family, scene, rng);
        let visible = scene.image.count_changed(&drawn.px);
        if visible > 0 && visible as f32 >= ACCEPT * drawn.region as f32 {
            return drawn.px;
        }
        if visible > best.as_ref().map_or(0, |b| b.0) {
            best = Some((visible, drawn.px));
        }
    }
    match best {
        Some((_, px)) => px,
        None => contrast_hole(scene, rng),
    }
}

fn draw(family: Family, scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    match family {
        Family::CutPaste => cut_paste(scene, rng),
        Family::Scar => scar(scene, rng),
        Family::NoiseBlend => noise_blend(scene, rng),
        Family::Warp => warp(scene, rng),
        Family::Stain => stain(scene, rng),
        Family::Missing => missing(scene, rng),
    }
}

/// Mean absolute difference (summed over channels) between the image at `pixels` and the
/// donor at `source(pixel)`, on at most 96 evenly spaced pixels.
fn contrast(scene: &Scene<'_>, pixels: &[usize], source: impl Fn(usize) -> (f32, f32)) -> f32 {
    if pixels.is_empty() {
        return 0.0;
    }
    let step = pixels.len().div_ceil(96);
    let mut buf = [0.0f32; 3];
    let (mut sum, mut n) = (0.0f32, 0usize);
    for &i in pixels.iter().step_by(step) {
        let (x, y) = source(i);
        scene.donor.sample(y, x, &mut buf);
        sum += scene.image.pixel(i).iter().zip(&buf).map(|(a, b)| (a - b).abs()).sum::<f32>();
        n += 1;
    }
    sum / n as f32
}

/// Of `CANDIDATES` random placements, the one whose pixels differ most from the image's:
/// returns `(dx, dy)`, the offset from a position to its source in the donor. On the image
/// itself, offsets shorter than `min_shift` are not considered.
fn most_contrasting_offset(
    scene: &Scene<'_>,
    rng: &mut ChaCha8Rng,
    pixels: &[usize],
    at: (f32, f32),
    reach: (f32, f32),
    min_shift: f32,
) -> (f32, f32) {
    let (h, w) = (scene.image.h, scene.image.w);
    let mut best: Option<(f32, (f32, f32))> = None;
    for _ in 0..CANDIDATES {
        let to = centre(rng, h, w, reach.0, reach.1);
        let d = (to.0 - at.0, to.1 - at.1);
        if scene.donor_is_self && d.0.hypot(d.1) < min_shift {
            continue;
        }
        let score = contrast(scene, pixels, |i| ((i % w) as f32 + d.0, (i / w) as f32 + d.1));
        if best.is_none_or(|b| score > b.0) {
            best = Some((score, d));
        }
    }
    // Every candidate too close to itself: the mirrored position.
    best.map_or(((w as f32 - 1.0) - 2.0 * at.0, (h as f32 - 1.0) - 2.0 * at.1), |b| b.1)
}

/// `cut-paste`: a rectangle (random aspect 1:3 to 3:1, often rotated) cut from another
/// position of the donor, possibly turned, pasted with a hard edge.
fn cut_paste(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    let img = scene.image;
    let (h, w) = (img.h, img.w);
    let aspect = log_uniform(rng, 1.0 / 3.0, 3.0);
    let half_w = ((scene.area * aspect).sqrt() / 2.0).clamp(0.5, 0.48 * w as f32);
    let half_h = ((scene.area / aspect).sqrt() / 2.0).clamp(0.5, 0.48 * h as f32);
    let theta = if rng.gen_bool(0.4) { 0.0 } else { rng.gen_range(0.0..PI) };
    let turn = if rng.gen_bool(0.5) { 0.0 } else { rng.gen_range(-PI..PI) };
    let extent = |t: f32| {
        let (s, c) = (t.sin().abs(), t.cos().abs());
        (c * half_w + s * half_h, s * half_w + c * half_h)
    };
    let (ex, ey) = extent(theta);
    let at = centre(rng, h, w, ex, ey);
    let (y0, y1, x0, x1) = window(h, w, at, ex, ey);
    let mut local = Vec::new();
    for py in y0..y1 {
        for px in x0..x1 {
            let (u, v) = rotate((px as f32 - at.0, py as f32 - at.1), -theta);
            if u.abs() <= half_w && v.abs() <= half_h {
                local.push((py * w + px, (u, v)));
            }
        }
    }
    // The source rectangle is the destination's, turned by `turn` about a new centre.
    let (sx, sy) = extent(theta + turn);
    let pixels: Vec<usize> = local.iter().map(|l| l.0).collect();
    let mut best: Option<(f32, (f32, f32))> = None;
    for _ in 0..CANDIDATES {
        let from = centre(rng, h, w, sx, sy);
        if scene.donor_is_self && (from.0 - at.0).hypot(from.1 - at.1) < half_w.min(half_h) * 2.0 {
            continue;
        }
        let source = |k: usize| {
            let (u, v) = rotate(local[k].1, theta + turn);
            (from.0 + u, from.1 + v)
        };
        let score = contrast(scene, &(0..local.len()).collect::<Vec<_>>(), source);
        if best.is_none_or(|b| score > b.0) {
            best = Some((score, from));
        }
    }
    let from = best.map_or(((w as f32 - 1.0) - at.0, (h as f32 - 1.0) - at.1), |b| b.1);
    let mut px = img.px.clone();
    let c = img.c;
    for &(i, uv) in &local {
        let (u, v) = rotate(uv, theta + turn);
        scene.donor.sample(from.1 + v, from.0 + u, &mut px[i * c..(i + 1) * c]);
    }
    Drawn { px, region: pixels.len() }
}

/// `scar`: a thin (1-4 px) long strip, straight or bent (a quadratic curve), at any angle,
/// cut from a parallel strip elsewhere on the donor.
fn scar(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    let img = scene.image;
    let (h, w) = (img.h, img.w);
    let width = rng.gen_range(1..=4) as f32;
    let chord = (scene.area / width).clamp(6.0, 0.9 * h.min(w) as f32);
    let phi = rng.gen_range(0.0..PI);
    let bend = if rng.gen_bool(0.6) { chord * rng.gen_range(-0.35..0.35f32) } else { 0.0 };
    let (dir, normal) = ((phi.cos(), phi.sin()), (-phi.sin(), phi.cos()));
    let ex = dir.0.abs() * chord / 2.0 + normal.0.abs() * bend.abs() / 2.0 + width;
    let ey = dir.1.abs() * chord / 2.0 + normal.1.abs() * bend.abs() / 2.0 + width;
    let at = centre(rng, h, w, ex, ey);
    let p0 = (at.0 - dir.0 * chord / 2.0, at.1 - dir.1 * chord / 2.0);
    let p2 = (at.0 + dir.0 * chord / 2.0, at.1 + dir.1 * chord / 2.0);
    let p1 = (at.0 + normal.0 * bend, at.1 + normal.1 * bend);
    let pixels = stroke(h, w, p0, p1, p2, width);
    let d = most_contrasting_offset(scene, rng, &pixels, at, (ex, ey), 3.0 * width + 4.0);
    let mut px = img.px.clone();
    let c = img.c;
    for &i in &pixels {
        let (x, y) = ((i % w) as f32 + d.0, (i / w) as f32 + d.1);
        scene.donor.sample(y, x, &mut px[i * c..(i + 1) * c]);
    }
    Drawn { px, region: pixels.len() }
}

/// `noise-blend`: a region shaped by thresholding smoothed value noise (two octaves under a
/// radial falloff; the threshold keeps `area` pixels), filled with a foreign texture blended
/// at opacity 0.5-1 with a soft rim: either a donor region with shifted colours, or a noise
/// texture of a random colour.
fn noise_blend(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    let img = scene.image;
    let (h, w, c) = (img.h, img.w, img.c);
    let radius = (scene.area / PI).sqrt() * 1.6 + 1.0;
    let at = centre(rng, h, w, radius * 0.8, radius * 0.8);
    let origin = (at.0 - radius, at.1 - radius);
    let coarse = SmoothNoise::new(rng, origin, 2.0 * radius, 2.0 * radius, radius / 1.5);
    let fine = SmoothNoise::new(rng, origin, 2.0 * radius, 2.0 * radius, radius / 4.0);
    let (y0, y1, x0, x1) = window(h, w, at, radius, radius);
    let mut field: Vec<(usize, f32)> = Vec::new();
    for py in y0..y1 {
        for px in x0..x1 {
            let p = (px as f32, py as f32);
            let rho2 = ((p.0 - at.0).powi(2) + (p.1 - at.1).powi(2)) / (radius * radius);
            if rho2 < 1.0 {
                field.push((py * w + px, (0.65 * coarse.at(p) + 0.35 * fine.at(p)) * (1.0 - rho2)));
            }
        }
    }
    field.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = (scene.area.round() as usize).clamp(1, field.len().max(1));
    field.truncate(keep);
    let floor = field.last().map_or(0.0, |f| f.1);
    let rim = ((field.first().map_or(0.0, |f| f.1) - floor) * 0.25).max(1e-6);
    let opacity = rng.gen_range(0.5..=1.0f32);

    let from_donor = rng.gen_bool(0.5);
    let shift: Vec<f32> =
        (0..c).map(|_| rng.gen_range(25.0..70.0f32) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let offset = if from_donor {
        let to = centre(rng, h, w, radius, radius);
        (to.0 - at.0, to.1 - at.1)
    } else {
        (0.0, 0.0)
    };
    let base: Vec<f32> = (0..c).map(|_| rng.gen_range(0.0..255.0f32)).collect();
    let amplitude = rng.gen_range(10.0..40.0f32);
    let grain_cell = rng.gen_range(2.0..6.0f32);
    let grain = SmoothNoise::new(rng, origin, 2.0 * radius, 2.0 * radius, grain_cell);

    let mut px = img.px.clone();
    let mut texture = [0.0f32; 3];
    for &(i, v) in &field {
        let p = ((i % w) as f32, (i / w) as f32);
        if from_donor {
            scene.donor.sample(p.1 + offset.1, p.0 + offset.0, &mut texture);
            for (t, s) in texture.iter_mut().zip(&shift) {
                *t += s;
            }
        } else {
            let g = amplitude * (2.0 * grain.at(p) - 1.0);
            for (t, b) in texture.iter_mut().zip(&base) {
                *t = b + g;
            }
        }
        let t = ((v - floor) / rim).clamp(0.0, 1.0);
        let alpha = opacity * (0.35 + 0.65 * t * t * (3.0 - 2.0 * t));
        for (v, t) in px[i * c..(i + 1) * c].iter_mut().zip(&texture) {
            *v += alpha * (t - *v);
        }
    }
    Drawn { px, region: field.len() }
}

/// `warp`: a smooth local displacement of the image's own pixels inside an elliptic blob,
/// a swirl (rotation fading to the rim) or a bulge (magnified or pinched centre). The
/// centre is the most textured of a few candidates: a warp of a flat region shows nothing.
fn warp(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    let img = scene.image;
    let (h, w, c) = (img.h, img.w, img.c);
    let ratio = log_uniform(rng, 0.5, 2.0);
    let limit = 0.45 * h.min(w) as f32;
    let a = (scene.area / PI * ratio).sqrt().clamp(1.0, limit);
    let b = (scene.area / PI / ratio).sqrt().clamp(1.0, limit);
    let theta = rng.gen_range(0.0..PI);
    let reach = a.max(b);
    let mut best: Option<(f32, (f32, f32))> = None;
    for _ in 0..CANDIDATES {
        let at = centre(rng, h, w, reach, reach);
        let energy = texture_energy(img, at, a.min(b));
        if best.is_none_or(|x| energy > x.0) {
            best = Some((energy, at));
        }
    }
    let at = best.map_or(((w / 2) as f32, (h / 2) as f32), |x| x.1);
    let swirl = rng.gen_bool(0.5);
    let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
    let strength = if swirl { rng.gen_range(1.2..3.0f32) } else { rng.gen_range(0.35..0.6f32) } * sign;
    let (y0, y1, x0, x1) = window(h, w, at, reach, reach);
    let mut px = img.px.clone();
    let mut region = 0;
    for py in y0..y1 {
        for pxl in x0..x1 {
            let (u, v) = rotate((pxl as f32 - at.0, py as f32 - at.1), -theta);
            let rho2 = (u / a).powi(2) + (v / b).powi(2);
            if rho2 >= 1.0 {
                continue;
            }
            region += 1;
            let fall = (1.0 - rho2).powi(2);
            let moved = if swirl {
                rotate((u, v), strength * fall)
            } else {
                (u * (1.0 - strength * fall), v * (1.0 - strength * fall))
            };
            let (sx, sy) = rotate(moved, theta);
            let i = py * w + pxl;
            img.sample(at.1 + sy, at.0 + sx, &mut px[i * c..(i + 1) * c]);
        }
    }
    Drawn { px, region }
}

/// Mean absolute difference between neighbouring pixels on a 9 x 9 lattice of a disc.
fn texture_energy(img: &Canvas, at: (f32, f32), radius: f32) -> f32 {
    let (mut sum, mut n) = (0.0f32, 0usize);
    let (mut p, mut q) = ([0.0f32; 3], [0.0f32; 3]);
    for gy in -4..=4 {
        for gx in -4..=4 {
            let (x, y) = (at.0 + gx as f32 * radius / 4.5, at.1 + gy as f32 * radius / 4.5);
            img.sample(y, x, &mut p);
            img.sample(y, x + 1.0, &mut q);
            sum += p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f32>();
            img.sample(y + 1.0, x, &mut q);
            sum += p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f32>();
            n += 1;
        }
    }
    sum / n as f32
}

/// A colour (one value per channel) whose grey level is at least 70 away from `level`.
fn contrasting_colour(rng: &mut ChaCha8Rng, c: usize, level: f32) -> Vec<f32> {
    let target = if level < 128.0 {
        rng.gen_range((level + 70.0).min(250.0)..=255.0f32)
    } else {
        rng.gen_range(0.0..=(level - 70.0).max(5.0))
    };
    let tint: Vec<f32> = (0..c).map(|_| if c == 1 { 0.0 } else { rng.gen_range(-40.0..40.0f32) }).collect();
    let mean = tint.iter().sum::<f32>() / c as f32;
    tint.iter().map(|t| (target + t - mean).clamp(0.0, 255.0)).collect()
}

/// `stain`: a soft-edged blob (the union of 1-3 anisotropic Gaussians) that darkens the
/// region or tints it towards a contrasting colour, strongest in the middle.
fn stain(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    const FLOOR: f32 = 0.15;
    let img = scene.image;
    let (h, w, c) = (img.h, img.w, img.c);
    let n = rng.gen_range(1..=3);
    // One Gaussian exceeds FLOOR on an ellipse of area 2 pi sx sy ln(1 / FLOOR).
    let sigma = (1.2 * scene.area / (2.0 * PI * (1.0 / FLOOR).ln()) / n as f32).sqrt().max(0.8);
    let blobs: Vec<((f32, f32), f32, f32, f32)> = (0..n)
        .map(|k| {
            let off = if k == 0 {
                (0.0, 0.0)
            } else {
                (rng.gen_range(-1.2..1.2f32) * sigma, rng.gen_range(-1.2..1.2f32) * sigma)
            };
            let ratio = rng.gen_range(1.0..2.0f32);
            (off, sigma * ratio.sqrt(), sigma / ratio.sqrt(), rng.gen_range(0.0..PI))
        })
        .collect();
    let reach = blobs.iter().map(|b| b.0 .0.hypot(b.0 .1) + 2.0 * b.1).fold(0.0f32, f32::max);
    let at = centre(rng, h, w, reach, reach);
    let (y0, y1, x0, x1) = window(h, w, at, reach, reach);
    let mut weights = Vec::new();
    for py in y0..y1 {
        for px in x0..x1 {
            let g = blobs
                .iter()
                .map(|&((ox, oy), sx, sy, t)| {
                    let (u, v) = rotate((px as f32 - at.0 - ox, py as f32 - at.1 - oy), -t);
                    (-0.5 * ((u / sx).powi(2) + (v / sy).powi(2))).exp()
                })
                .fold(0.0f32, f32::max);
            if g > FLOOR {
                weights.push((py * w + px, ((g - FLOOR) / (1.0 - FLOOR)).sqrt()));
            }
        }
    }
    let pixels: Vec<usize> = weights.iter().map(|x| x.0).collect();
    let level = img.mean_level(&pixels);
    let strength = rng.gen_range(0.3..0.65f32);
    let darken = level > 70.0 && rng.gen_bool(0.5);
    let colour = contrasting_colour(rng, c, level);
    let mut px = img.px.clone();
    for &(i, a) in &weights {
        for (v, target) in px[i * c..(i + 1) * c].iter_mut().zip(&colour) {
            *v = if darken { *v * (1.0 - strength * a) } else { *v + (target - *v) * strength * a };
        }
    }
    Drawn { px, region: pixels.len() }
}

/// The pixels of a ragged-edged hole of `area` pixels somewhere in the image (never empty).
fn hole(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let img = scene.image;
    let poly = ragged_polygon(rng, scene.area);
    let reach = poly.iter().map(|&(x, y)| x.hypot(y)).fold(0.0f32, f32::max);
    let at = centre(rng, img.h, img.w, reach, reach);
    let region = fill_polygon(img.h, img.w, at, &poly);
    if region.is_empty() {
        vec![at.1.round() as usize * img.w + at.0.round() as usize]
    } else {
        region
    }
}

/// `missing`: a hole with a ragged edge, filled flat dark or bright (mostly whichever
/// contrasts with its surroundings), slightly tinted, with a little per-pixel noise.
fn missing(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Drawn {
    let img = scene.image;
    let c = img.c;
    let region = hole(scene, rng);
    let level = img.mean_level(&region);
    let dark = if rng.gen_bool(0.8) { level >= 128.0 } else { rng.gen_bool(0.5) };
    let fill = if dark { rng.gen_range(5.0..40.0f32) } else { rng.gen_range(215.0..250.0f32) };
    let tint: Vec<f32> = (0..c).map(|_| if c == 1 { 0.0 } else { rng.gen_range(-6.0..6.0f32) }).collect();
    let noise = rng.gen_range(2.0..5.0f32);
    let mut px = img.px.clone();
    for &i in &region {
        for ch in 0..c {
            px[i * c + ch] = fill + tint[ch] + noise * rng.gen_range(-1.0..1.0f32);
        }
    }
    Drawn { px, region: region.len() }
}

/// The last resort: a hole filled with black or white, whichever is farther from its mean.
/// Some pixel of it always changes visibly (not all can lie within a few levels of the
/// extreme the mean is far from).
fn contrast_hole(scene: &Scene<'_>, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let img = scene.image;
    let region = hole(scene, rng);
    let fill = if img.mean_level(&region) >= 127.5 { 0.0 } else { 255.0 };
    let mut px = img.px.clone();
    for &i in &region {
        px[i * img.c..(i + 1) * img.c].fill(fill);
    }
    px
}
