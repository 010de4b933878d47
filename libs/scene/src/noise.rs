//! Hashes and noise: every random value of a render derives from the sample's seed.

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of a lattice point in `[0, 1)`.
pub(crate) fn hash2(ix: i64, iy: i64, seed: u64) -> f32 {
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
pub(crate) fn fbm(x: f32, y: f32, seed: u64, octaves: u32) -> f32 {
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
pub(crate) fn pixel_noise(i: usize, channel: usize, seed: u64) -> f32 {
    let base = mix(seed ^ ((i as u64) << 2 | channel as u64));
    let u = |k: u32| ((base >> (k * 21)) & 0x1f_ffff) as f32 / 0x1f_ffff as f32;
    (u(0) + u(1) + u(2) - 1.5) * 2.0
}
