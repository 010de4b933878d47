//! Order statistics of score values.

/// The p-th percentile (0-100) with linear interpolation between order statistics (numpy's
/// default), computed in f64 from the two neighbouring f32 values. Reorders `values`
/// (a partial sort); `values` must be non-empty and free of NaN.
pub fn percentile(values: &mut [f32], p: f64) -> f64 {
    let rank = p.clamp(0.0, 100.0) / 100.0 * (values.len() - 1) as f64;
    let k = rank.floor() as usize;
    let (_, &mut lo, upper) = values.select_nth_unstable_by(k, f32::total_cmp);
    let frac = rank - k as f64;
    if frac == 0.0 || upper.is_empty() {
        return f64::from(lo);
    }
    let hi = upper.iter().copied().fold(f32::INFINITY, f32::min);
    f64::from(lo) + frac * (f64::from(hi) - f64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_numpy() {
        let mut v = [5.0f32, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(percentile(&mut v, 100.0), 5.0);
        assert!((percentile(&mut v, 90.0) - 4.6).abs() < 1e-12);
        // numpy.percentile([1, 2, 3, 4], 25) == 1.75; out-of-range p is clamped.
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 25.0), 1.75);
        assert_eq!(percentile(&mut [4.0, 1.0], 150.0), 4.0);
    }
}
