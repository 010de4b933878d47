//! Exact threshold sweeps over score/label lists: ROC area, PRO area, F1-max, PR curves.
//!
//! Scores are f32. Each score becomes an order-preserving `u32` key, so sorting is a radix
//! sort (linear time: 50M keys in well under a second) and two runs' sorted lists merge
//! exactly. No binning: every distinct score is its own threshold, and ties are handled as
//! scikit-learn does (all samples with an equal score switch together).
//!
//! Positives (ground-truth pixels) are `u64` entries: the key in the high 32 bits and the size
//! of the pixel's connected ground-truth component in the low 32 bits (for PRO).

/// Order-preserving map from f32 to u32: `a < b` iff `key(a) < key(b)`; `-0.0` and `0.0` share
/// a key. NaN must be rejected before (it has no place in an order).
pub fn key(v: f32) -> u32 {
    let bits = (v + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Inverse of [`key`].
pub fn value(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// A positive entry: score key (high bits) and GT component size (low bits).
pub fn pos_entry(k: u32, component_size: u32) -> u64 {
    (u64::from(k) << 32) | u64::from(component_size)
}

pub fn pos_key(e: u64) -> u32 {
    (e >> 32) as u32
}

pub fn pos_size(e: u64) -> u32 {
    e as u32
}

const RADIX_BITS: u32 = 11;
const BUCKETS: usize = 1 << RADIX_BITS;

/// Stable LSD radix sort of `v` by the 32-bit key `k(x)` (three 11-bit passes; a pass whose
/// digit is the same for every element is skipped).
fn radix_sort_by<T: Copy + Default>(v: &mut Vec<T>, k: impl Fn(T) -> u32) {
    if v.len() < 256 {
        v.sort_by_key(|&x| k(x));
        return;
    }
    let mut counts = vec![[0usize; BUCKETS]; 3];
    for &x in v.iter() {
        let key = k(x);
        for (pass, c) in counts.iter_mut().enumerate() {
            c[((key >> (pass as u32 * RADIX_BITS)) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    let mut buf = vec![T::default(); v.len()];
    for (pass, c) in counts.iter().enumerate() {
        if c.contains(&v.len()) {
            continue;
        }
        let mut offsets = [0usize; BUCKETS];
        let mut acc = 0;
        for (o, &n) in offsets.iter_mut().zip(c.iter()) {
            *o = acc;
            acc += n;
        }
        let shift = pass as u32 * RADIX_BITS;
        for &x in v.iter() {
            let d = ((k(x) >> shift) as usize) & (BUCKETS - 1);
            buf[offsets[d]] = x;
            offsets[d] += 1;
        }
        std::mem::swap(v, &mut buf);
    }
}

/// Sorts negative keys ascending.
pub fn sort_keys(v: &mut Vec<u32>) {
    radix_sort_by(v, |x| x);
}

/// Sorts positive entries by key ascending (component sizes ride along).
pub fn sort_positives(v: &mut Vec<u64>) {
    radix_sort_by(v, pos_key);
}

/// Merges two ascending lists into one ascending list.
pub fn merge_sorted<T: Copy + Ord>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The negative (non-GT) pixels, sorted ascending: those of anomalous images and those of
/// good images. Figures "over all images" use both; "over anomalous images" only the first.
#[derive(Clone, Copy, Debug)]
pub struct Negatives<'a> {
    pub anomalous: &'a [u32],
    pub good: &'a [u32],
}

impl<'a> Negatives<'a> {
    /// A single list (as if every negative were on an anomalous image).
    pub fn one(list: &'a [u32]) -> Self {
        Self { anomalous: list, good: &[] }
    }
    pub fn len(&self) -> u64 {
        (self.anomalous.len() + self.good.len()) as u64
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cumulative counts after lowering the threshold to one distinct score: every sample with
/// score >= `threshold` is predicted positive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepStep {
    pub threshold: f32,
    /// Positives at or above the threshold.
    pub tp: u64,
    /// Negatives of anomalous images at or above the threshold.
    pub fp_anomalous: u64,
    /// Negatives of good images at or above the threshold.
    pub fp_good: u64,
    /// Sum over positives at or above the threshold of 1 / (size of their GT component),
    /// in 64.64 fixed point: the sum does not depend on the order of tied entries (merged
    /// shards give bit-identical figures); the error is below 2^-64 per pixel.
    pub pro_fixed: u128,
}

impl SweepStep {
    pub fn fp(&self) -> u64 {
        self.fp_anomalous + self.fp_good
    }
    pub fn pro_sum(&self) -> f64 {
        self.pro_fixed as f64 / 18_446_744_073_709_551_616.0
    }
}

/// Walks the distinct scores from the highest down, calling `f` once per distinct score with
/// the cumulative counts. Every list must be sorted ascending.
pub fn sweep(positives: &[u64], neg: Negatives<'_>, mut f: impl FnMut(&SweepStep)) {
    let (pos, na, ng) = (positives, neg.anomalous, neg.good);
    let (mut pi, mut ai, mut gi) = (pos.len(), na.len(), neg.good.len());
    let mut s = SweepStep { threshold: 0.0, tp: 0, fp_anomalous: 0, fp_good: 0, pro_fixed: 0 };
    loop {
        // The highest remaining score over the three lists; keys are >= 1 for every real
        // score (key 0 would be NaN's place), so 0 means "exhausted".
        let tp_key = if pi > 0 { pos_key(pos[pi - 1]) } else { 0 };
        let ta = if ai > 0 { na[ai - 1] } else { 0 };
        let tg = if gi > 0 { ng[gi - 1] } else { 0 };
        let t = tp_key.max(ta).max(tg);
        if pi == 0 && ai == 0 && gi == 0 {
            break;
        }
        while pi > 0 && pos_key(pos[pi - 1]) == t {
            s.tp += 1;
            s.pro_fixed += (1u128 << 64) / u128::from(pos_size(pos[pi - 1]).max(1));
            pi -= 1;
        }
        let a0 = ai;
        while ai > 0 && na[ai - 1] == t {
            ai -= 1;
        }
        s.fp_anomalous += (a0 - ai) as u64;
        let g0 = gi;
        while gi > 0 && ng[gi - 1] == t {
            gi -= 1;
        }
        s.fp_good += (g0 - gi) as u64;
        s.threshold = value(t);
        f(&s);
    }
}

/// The best F1 over all thresholds (an ORACLE figure: the threshold is chosen with the
/// ground truth), with the threshold, precision and recall where it is reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F1Max {
    pub f1: f64,
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
}

/// Pixel AUROC, AUPRO (over all images), and F1-max over all images and over anomalous
/// images only, in ONE pass over the thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreSummary {
    pub auroc: Option<f64>,
    pub aupro: Option<f64>,
    pub f1_max: Option<F1Max>,
    pub f1_max_anomalous: Option<F1Max>,
}

pub fn summarize(positives: &[u64], neg: Negatives<'_>, components: u64, fpr_limit: f64) -> ScoreSummary {
    let p = positives.len() as u64;
    let n = neg.len();
    // ROC: twice the area in integer units of (1/p)(1/n), exact up to the final division.
    let (mut twice_area, mut prev_tp, mut prev_fp) = (0u128, 0u64, 0u64);
    // PRO curve up to the FPR limit.
    let pro_valid = components > 0 && n > 0 && fpr_limit > 0.0 && fpr_limit <= 1.0;
    let (mut pro_area, mut prev_fpr, mut prev_pro, mut pro_done) = (0.0f64, 0.0f64, 0.0f64, !pro_valid);
    // F1 = 2tp / (2tp + fp + fn) = 2tp / (tp + fp + P); the best kept as an exact fraction.
    let mut best_all: Option<(u64, u64, SweepStep)> = None;
    let mut best_anom: Option<(u64, u64, SweepStep)> = None;
    let better = |best: &Option<(u64, u64, SweepStep)>, num: u64, den: u64| {
        best.is_none_or(|(bn, bd, _)| u128::from(num) * u128::from(bd) > u128::from(bn) * u128::from(den))
    };
    sweep(positives, neg, |s| {
        let fp = s.fp();
        twice_area += u128::from(fp - prev_fp) * u128::from(s.tp + prev_tp);
        prev_tp = s.tp;
        prev_fp = fp;
        if !pro_done {
            let fpr = (fp as f64 / n as f64).min(1.0);
            let pro = (s.pro_sum() / components as f64).min(1.0);
            if fpr <= fpr_limit {
                pro_area += 0.5 * (pro + prev_pro) * (fpr - prev_fpr);
                prev_fpr = fpr;
                prev_pro = pro;
            } else {
                let at_limit = prev_pro + (pro - prev_pro) * (fpr_limit - prev_fpr) / (fpr - prev_fpr);
                pro_area += 0.5 * (at_limit + prev_pro) * (fpr_limit - prev_fpr);
                pro_done = true;
            }
        }
        if p > 0 {
            if better(&best_all, 2 * s.tp, s.tp + fp + p) {
                best_all = Some((2 * s.tp, s.tp + fp + p, *s));
            }
            if better(&best_anom, 2 * s.tp, s.tp + s.fp_anomalous + p) {
                best_anom = Some((2 * s.tp, s.tp + s.fp_anomalous + p, *s));
            }
        }
    });
    let f1 = |best: Option<(u64, u64, SweepStep)>, anomalous_only: bool| {
        best.map(|(num, den, s)| {
            let fp = if anomalous_only { s.fp_anomalous } else { s.fp() };
            F1Max {
                f1: num as f64 / den as f64,
                threshold: s.threshold,
                precision: s.tp as f64 / (s.tp + fp) as f64,
                recall: s.tp as f64 / p as f64,
            }
        })
    };
    ScoreSummary {
        auroc: (p > 0 && n > 0).then(|| twice_area as f64 / (2.0 * p as f64 * n as f64)),
        aupro: pro_valid.then(|| pro_area / fpr_limit),
        f1_max: f1(best_all, false),
        f1_max_anomalous: f1(best_anom, true),
    }
}

/// Area under the ROC curve, exact: the trapezoid rule over distinct thresholds equals the
/// Mann-Whitney statistic with ties counted one half (as scikit-learn's `roc_auc_score`).
/// `None` when either class is empty.
pub fn auroc(positives: &[u64], neg: Negatives<'_>) -> Option<f64> {
    summarize(positives, neg, 0, 0.3).auroc
}

/// The best F1 over all thresholds, over all the negatives given.
pub fn f1_max(positives: &[u64], neg: Negatives<'_>) -> Option<F1Max> {
    summarize(positives, neg, 0, 0.3).f1_max
}

/// Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (so a perfect map
/// scores 1), as the MVTec AD evaluation code computes it: the curve runs through
/// (0, 0) and every distinct threshold; at the limit the PRO value is interpolated linearly.
/// PRO = mean over GT components of the fraction of the component above the threshold.
/// `None` when there is no GT component or no negative pixel.
pub fn aupro(positives: &[u64], neg: Negatives<'_>, components: u64, fpr_limit: f64) -> Option<f64> {
    summarize(positives, neg, components, fpr_limit).aupro
}

/// Points (recall, precision) of the PR curve, at most `max_points` of them (evenly spaced
/// over the distinct thresholds, always keeping the last). For pictures only.
pub fn pr_curve(positives: &[u64], neg: Negatives<'_>, max_points: usize) -> Vec<(f64, f64)> {
    let p = positives.len() as u64;
    if p == 0 {
        return Vec::new();
    }
    let mut all = Vec::new();
    sweep(positives, neg, |s| all.push((s.tp as f64 / p as f64, s.tp as f64 / (s.tp + s.fp()) as f64)));
    if all.len() <= max_points || max_points < 2 {
        return all;
    }
    let step = all.len() as f64 / (max_points - 1) as f64;
    let mut out: Vec<(f64, f64)> = (0..max_points - 1).map(|i| all[(i as f64 * step) as usize]).collect();
    out.extend(all.last().copied());
    out
}

/// Exact ROC area over f64 scores (image level): the Mann-Whitney statistic, ties one half.
pub fn auroc_f64(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    let p = pairs.iter().filter(|x| x.1).count() as u64;
    let n = pairs.len() as u64 - p;
    if p == 0 || n == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut twice_u = 0u128;
    let mut neg_below = 0u64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        let (mut pos_tied, mut neg_tied) = (0u64, 0u64);
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            if pairs[j].1 {
                pos_tied += 1;
            } else {
                neg_tied += 1;
            }
            j += 1;
        }
        twice_u += u128::from(pos_tied) * u128::from(2 * neg_below + neg_tied);
        neg_below += neg_tied;
        i = j;
    }
    Some(twice_u as f64 / (2.0 * p as f64 * n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(scores: &[f32]) -> Vec<u64> {
        let mut v: Vec<u64> = scores.iter().map(|&s| pos_entry(key(s), 1)).collect();
        sort_positives(&mut v);
        v
    }

    fn neg(scores: &[f32]) -> Vec<u32> {
        let mut v: Vec<u32> = scores.iter().map(|&s| key(s)).collect();
        sort_keys(&mut v);
        v
    }

    #[test]
    fn keys_preserve_order_and_round_trip() {
        let vals = [f32::NEG_INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 7.0, f32::INFINITY];
        for w in vals.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{} {}", w[0], w[1]);
        }
        assert_eq!(key(-0.0), key(0.0));
        for &v in &vals {
            assert_eq!(value(key(v)), v + 0.0);
        }
    }

    #[test]
    fn radix_sort_matches_std_sort_on_large_input() {
        let mut state = 12345u64;
        let vals: Vec<f32> = (0..100_000)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / 1e6) - 1000.0
            })
            .collect();
        let mut keys: Vec<u32> = vals.iter().map(|&v| key(v)).collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        sort_keys(&mut keys);
        assert_eq!(keys, expected);
        let mut p: Vec<u64> = vals.iter().enumerate().map(|(i, &v)| pos_entry(key(v), i as u32)).collect();
        sort_positives(&mut p);
        assert!(p.windows(2).all(|w| pos_key(w[0]) <= pos_key(w[1])));
        // Stable: equal keys keep insertion order of their payload.
        assert!(p.windows(2).all(|w| pos_key(w[0]) < pos_key(w[1]) || pos_size(w[0]) < pos_size(w[1])));
    }

    #[test]
    fn auroc_hand_computed_with_ties() {
        // Positives 0.8, 0.4, 0.35; negatives 0.1, 0.4, 0.35, 0.9.
        // Pairs (p > n: 1, tie: 1/2): 0.8 beats 0.1, 0.4, 0.35 -> 3; 0.4 beats 0.1, 0.35, ties 0.4 -> 2.5;
        // 0.35 beats 0.1, ties 0.35 -> 1.5. U = 7 of 12.
        let a = auroc(&pos(&[0.8, 0.4, 0.35]), Negatives::one(&neg(&[0.1, 0.4, 0.35, 0.9]))).unwrap();
        assert!((a - 7.0 / 12.0).abs() < 1e-15, "{a}");
        // Split negatives give the same answer.
        let b = auroc(&pos(&[0.8, 0.4, 0.35]), Negatives { anomalous: &neg(&[0.1, 0.9]), good: &neg(&[0.4, 0.35]) })
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(auroc(&pos(&[1.0]), Negatives::one(&neg(&[0.0]))), Some(1.0));
        assert_eq!(auroc(&pos(&[0.0]), Negatives::one(&neg(&[1.0]))), Some(0.0));
        assert_eq!(auroc(&pos(&[0.5]), Negatives::one(&neg(&[0.5]))), Some(0.5));
        assert_eq!(auroc(&pos(&[]), Negatives::one(&neg(&[0.5]))), None);
        let f = auroc_f64(&[0.8, 0.4, 0.35, 0.1, 0.4, 0.35, 0.9], &[true, true, true, false, false, false, false]);
        assert!((f.unwrap() - 7.0 / 12.0).abs() < 1e-15);
    }

    #[test]
    fn f1_max_hand_computed() {
        // Positives 0.9, 0.6, 0.2; negatives 0.7, 0.3, 0.1. P = 3.
        // t=0.9: tp1 fp0 -> 2/4 = .5; t=0.7: tp1 fp1 -> 2/5; t=0.6: tp2 fp1 -> 4/6 = .667;
        // t=0.3: tp2 fp2 -> 4/7; t=0.2: tp3 fp2 -> 6/8 = .75; t=0.1: tp3 fp3 -> 6/9.
        let m = f1_max(&pos(&[0.9, 0.6, 0.2]), Negatives::one(&neg(&[0.7, 0.3, 0.1]))).unwrap();
        assert!((m.f1 - 0.75).abs() < 1e-15);
        assert_eq!(m.threshold, 0.2);
        assert!((m.precision - 0.6).abs() < 1e-15);
        assert_eq!(m.recall, 1.0);
    }

    #[test]
    fn aupro_hand_computed() {
        // Two components: A of 2 pixels (scores 0.9, 0.5), B of 1 pixel (0.7). Negatives: 0.8, 0.6, 0.4, 0.3, 0.2
        // (5 pixels). Curve (fpr, pro): start (0,0); t=.9: (0, .25); t=.8: (.2, .25); t=.7: (.2, .75);
        // t=.6: (.4, .75) -> crosses 0.3 at pro .75. Area to 0.3: 0.2*.25 + 0.1*.75 = .125; / .3.
        let mut p = vec![pos_entry(key(0.9), 2), pos_entry(key(0.5), 2), pos_entry(key(0.7), 1)];
        sort_positives(&mut p);
        let n = neg(&[0.8, 0.6, 0.4, 0.3, 0.2]);
        let a = aupro(&p, Negatives::one(&n), 2, 0.3).unwrap();
        assert!((a - 0.125 / 0.3).abs() < 1e-12, "{a}");
        // Full range: ... t=.5: (.4, 1); t=.4: (.6,1); .3: (.8,1); .2: (1,1).
        // Area = .2*.25 + .2*.75 + .6*1 = .8.
        let full = aupro(&p, Negatives::one(&n), 2, 1.0).unwrap();
        assert!((full - 0.8).abs() < 1e-12, "{full}");
        // Interpolation inside a rising segment: limit 0.1 lies in (0,.25)->(.2,.25): flat, area .025.
        assert!((aupro(&p, Negatives::one(&n), 2, 0.1).unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(aupro(&p, Negatives::one(&n), 0, 0.3), None);
    }

    #[test]
    fn pr_curve_is_capped_and_keeps_the_end() {
        let scores: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let c = pr_curve(&pos(&scores[500..]), Negatives::one(&neg(&scores[..500])), 50);
        assert_eq!(c.len(), 50);
        assert_eq!(*c.last().unwrap(), (1.0, 0.5));
        assert_eq!(c[0], (1.0 / 500.0, 1.0));
    }
}
