//! Rendering a sample: the scene under per-image illumination, Lambert shading and sensor
//! noise, the optional point cloud, and the defect's mask (the region plus every pixel that
//! differs from the same sample rendered without it).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::defects::paint_defect;
use crate::noise::{mix, pixel_noise};
use crate::scene::draw_scene;
use crate::spec::{SampleSpec, SynthConfig};

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
    use crate::spec::{test_specs, train_specs, Category};

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
