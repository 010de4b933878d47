//! Region shapes on an `h x w` pixel grid. Points are `(x, y)` in pixel-centre coordinates
//! (pixel `i` is at `x = i % w`, `y = i / w`); regions are lists of pixel indices.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A draw from `[lo, hi]` uniform in log scale (`lo`, `hi` > 0).
pub fn log_uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    if hi <= lo {
        return lo;
    }
    (lo.ln() + rng.gen::<f32>() * (hi.ln() - lo.ln())).exp()
}

/// `(u, v)` rotated by `theta` radians.
pub fn rotate((u, v): (f32, f32), theta: f32) -> (f32, f32) {
    let (s, c) = theta.sin_cos();
    (c * u - s * v, s * u + c * v)
}

/// A random centre at which a shape reaching `rx` and `ry` from it stays inside the image;
/// the middle of the image along an axis that is too short for it.
pub fn centre(rng: &mut ChaCha8Rng, h: usize, w: usize, rx: f32, ry: f32) -> (f32, f32) {
    let mut pick = |n: usize, r: f32| {
        let last = n as f32 - 1.0;
        if last > 2.0 * r {
            rng.gen_range(r..=last - r)
        } else {
            last / 2.0
        }
    };
    let x = pick(w, rx);
    let y = pick(h, ry);
    (x, y)
}

/// The pixel rows and columns `(y0..y1, x0..x1)` within `rx`, `ry` of `(cx, cy)`, clipped.
pub fn window(h: usize, w: usize, (cx, cy): (f32, f32), rx: f32, ry: f32) -> (usize, usize, usize, usize) {
    let lo = |c: f32, r: f32| (c - r).floor().max(0.0) as usize;
    let hi = |c: f32, r: f32, n: usize| ((c + r).ceil() as usize + 1).min(n);
    (lo(cy, ry), hi(cy, ry, h), lo(cx, rx), hi(cx, rx, w))
}

/// Smooth random values in `[0, 1]`: random nodes on a grid of `cell`-pixel spacing,
/// interpolated with smoothstep weights (value noise with a C1 profile).
pub struct SmoothNoise {
    origin: (f32, f32),
    cell: f32,
    cols: usize,
    nodes: Vec<f32>,
}

impl SmoothNoise {
    /// Noise covering the box `origin .. origin + (width, height)`.
    pub fn new(rng: &mut ChaCha8Rng, origin: (f32, f32), width: f32, height: f32, cell: f32) -> Self {
        let cell = cell.max(1.0);
        let cols = (width / cell).ceil() as usize + 2;
        let rows = (height / cell).ceil() as usize + 2;
        let nodes = (0..cols * rows).map(|_| rng.gen::<f32>()).collect();
        Self { origin, cell, cols, nodes }
    }

    pub fn at(&self, (x, y): (f32, f32)) -> f32 {
        let rows = self.nodes.len() / self.cols;
        let gx = ((x - self.origin.0) / self.cell).clamp(0.0, (self.cols - 1) as f32 - 1e-3);
        let gy = ((y - self.origin.1) / self.cell).clamp(0.0, (rows - 1) as f32 - 1e-3);
        let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (tx, ty) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
        let n = |cx: usize, cy: usize| self.nodes[cy * self.cols + cx];
        let top = n(ix, iy) * (1.0 - tx) + n(ix + 1, iy) * tx;
        let bottom = n(ix, iy + 1) * (1.0 - tx) + n(ix + 1, iy + 1) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

/// The pixels covered by a quadratic Bezier stroke `p0 -> p2` (control point `p1`) of
/// `width` pixels: every pixel holding a curve point, and those whose centre lies within
/// `width / 2` of one.
pub fn stroke(h: usize, w: usize, p0: (f32, f32), p1: (f32, f32), p2: (f32, f32), width: f32) -> Vec<usize> {
    let length = (p1.0 - p0.0).hypot(p1.1 - p0.1) + (p2.0 - p1.0).hypot(p2.1 - p1.1);
    let steps = (length * 3.0).ceil().max(2.0) as usize;
    let r = width / 2.0;
    let mut hit = vec![false; h * w];
    let mut out = Vec::new();
    let mut mark = |x: usize, y: usize, out: &mut Vec<usize>| {
        let i = y * w + x;
        if !hit[i] {
            hit[i] = true;
            out.push(i);
        }
    };
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
        let (x, y) = (a * p0.0 + b * p1.0 + c * p2.0, a * p0.1 + b * p1.1 + c * p2.1);
        if x < -0.5 || y < -0.5 || x > w as f32 - 0.5 || y > h as f32 - 0.5 {
            continue;
        }
        mark((x.round() as usize).min(w - 1), (y.round() as usize).min(h - 1), &mut out);
        let (y0, y1, x0, x1) = window(h, w, (x, y), r, r);
        for py in y0..y1 {
            for px in x0..x1 {
                if (px as f32 - x).hypot(py as f32 - y) <= r {
                    mark(px, py, &mut out);
                }
            }
        }
    }
    out
}

/// A star-shaped polygon around the origin with a ragged edge (a few low harmonics plus
/// per-vertex jitter), scaled so that its area is `area` pixels.
pub fn ragged_polygon(rng: &mut ChaCha8Rng, area: f32) -> Vec<(f32, f32)> {
    let n = rng.gen_range(28..=48);
    let harmonics: Vec<(f32, f32, f32)> =
        (2..=4).map(|k| (k as f32, rng.gen_range(0.0..0.22f32), rng.gen_range(0.0..std::f32::consts::TAU))).collect();
    let verts: Vec<(f32, f32)> = (0..n)
        .map(|i| {
            let theta = i as f32 / n as f32 * std::f32::consts::TAU;
            let wave: f32 = harmonics.iter().map(|&(k, a, phase)| a * (k * theta + phase).sin()).sum();
            let r = (1.0 + wave) * (1.0 + rng.gen_range(-0.2..0.2f32));
            (r.max(0.2) * theta.cos(), r.max(0.2) * theta.sin())
        })
        .collect();
    let scale = (area / polygon_area(&verts)).sqrt();
    verts.iter().map(|&(x, y)| (x * scale, y * scale)).collect()
}

/// Area of a simple polygon (shoelace).
pub fn polygon_area(verts: &[(f32, f32)]) -> f32 {
    let n = verts.len();
    let twice: f32 = (0..n).map(|i| verts[i].0 * verts[(i + 1) % n].1 - verts[(i + 1) % n].0 * verts[i].1).sum();
    (twice / 2.0).abs().max(f32::MIN_POSITIVE)
}

/// The pixels whose centre lies inside the polygon `verts` placed at `centre` (even-odd rule).
pub fn fill_polygon(h: usize, w: usize, centre: (f32, f32), verts: &[(f32, f32)]) -> Vec<usize> {
    let reach = verts.iter().map(|&(x, y)| x.hypot(y)).fold(0.0f32, f32::max);
    let (y0, y1, x0, x1) = window(h, w, centre, reach, reach);
    let mut out = Vec::new();
    for py in y0..y1 {
        for px in x0..x1 {
            let (x, y) = (px as f32 - centre.0, py as f32 - centre.1);
            let mut inside = false;
            let mut j = verts.len() - 1;
            for (i, &(xi, yi)) in verts.iter().enumerate() {
                let (xj, yj) = verts[j];
                if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
                j = i;
            }
            if inside {
                out.push(py * w + px);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn polygons_have_the_requested_area() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for area in [60.0f32, 900.0, 4000.0] {
            let poly = ragged_polygon(&mut rng, area);
            assert!((polygon_area(&poly) - area).abs() < area * 1e-3);
            let px = fill_polygon(224, 224, (112.0, 112.0), &poly).len() as f32;
            assert!((px - area).abs() < 0.15 * area + 10.0, "{px} pixels for area {area}");
        }
    }

    #[test]
    fn strokes_are_thin_and_connected() {
        let px = stroke(224, 224, (20.0, 20.0), (100.0, 40.0), (200.0, 30.0), 1.0);
        let (xs, ys): (Vec<usize>, Vec<usize>) = px.iter().map(|&i| (i % 224, i / 224)).unzip();
        assert!(*xs.iter().min().unwrap() == 20 && *xs.iter().max().unwrap() == 200);
        // About one pixel per column over the 180 columns it crosses.
        assert!((180..400).contains(&px.len()), "{}", px.len());
        assert!(ys.iter().all(|&y| (20..=40).contains(&y)));
        let wide = stroke(224, 224, (20.0, 20.0), (100.0, 40.0), (200.0, 30.0), 4.0);
        assert!(wide.len() > 3 * px.len(), "{} vs {}", wide.len(), px.len());
    }

    #[test]
    fn smooth_noise_stays_in_range_and_is_continuous() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise = SmoothNoise::new(&mut rng, (0.0, 0.0), 100.0, 100.0, 10.0);
        let mut prev = noise.at((0.0, 50.0));
        for i in 1..1000 {
            let v = noise.at((i as f32 * 0.1, 50.0));
            assert!((0.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.05, "jump at {i}");
            prev = v;
        }
    }
}
