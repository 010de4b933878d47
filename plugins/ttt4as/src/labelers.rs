//! Anomalous pseudo-label finders, the swappable part of pseudo-labelling (issue 10):
//! each turns a finite `h x w` score map into seed pixels (maxima) and a set of anomalous
//! pixels. Nominal sampling is shared and lives in `pseudo_labels`.
//!
//! - `maxima` (the paper's): local maxima at or above the p-th percentile, plus a square of
//!   `radius` around each;
//! - `hysteresis`: the same maxima, grown (8-connected) through pixels at or above a lower
//!   percentile;
//! - `components`: connected components of the pixels at or above the p-th percentile,
//!   weighted by size x contrast; those within `keep` of the heaviest are kept;
//! - `persistence`: 0-dimensional persistent homology of the super-level sets; peaks whose
//!   persistence (birth - death) reaches `min_persistence` of the map's range above its
//!   median are kept, each with the pixels of its component above the mid-level between
//!   peak and death;
//! - `adaptive`: local maxima above `median + k * robust std` (MAD), not a fixed percentile,
//!   so a map without a salient peak gets no anomalous label at all;
//! - `level`: local maxima at or above an absolute score, for maps normalized on nominal
//!   validation data (`normalize-scores`: 1 = the validation maximum with min-max), so a
//!   map whose peaks stay in the nominal range gets no anomalous label.

use crate::pseudo_labels::percentile;

/// Which anomalous pixels to trust.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Labeler {
    Maxima,
    Hysteresis { low_percentile: f64 },
    Components { keep: f64 },
    Persistence { min_persistence: f64 },
    Adaptive { k: f64 },
    Level { level: f64 },
}

impl Labeler {
    pub fn name(&self) -> &'static str {
        match self {
            Labeler::Maxima => "maxima",
            Labeler::Hysteresis { .. } => "hysteresis",
            Labeler::Components { .. } => "components",
            Labeler::Persistence { .. } => "persistence",
            Labeler::Adaptive { .. } => "adaptive",
            Labeler::Level { .. } => "level",
        }
    }
}

/// Seeds (row-major pixel indices, ascending) and the anomalous region (0/1 per pixel).
#[derive(Debug, Clone)]
pub struct Found {
    pub seeds: Vec<usize>,
    pub region: Vec<u8>,
}

/// Finds anomalous pixels of `score` (`h x w`, finite) with `labeler`; `percentile` and
/// `radius` are the paper's parameters (used by every labeler that starts from maxima).
pub fn find(score: &[f32], h: usize, w: usize, labeler: Labeler, p: f64, radius: usize) -> Found {
    let n = h * w;
    let mut region = vec![0u8; n];
    let min = score.iter().copied().fold(f32::INFINITY, f32::min);
    let seeds = match labeler {
        Labeler::Maxima => {
            let seeds = local_maxima(score, h, w, percentile(score, p).max(next_up(min)));
            paint(&mut region, h, w, &seeds, radius);
            seeds
        }
        Labeler::Adaptive { k } => {
            let (median, sigma) = robust_stats(score);
            let level = (median + k as f32 * sigma).max(next_up(min));
            let seeds = if sigma > 0.0 { local_maxima(score, h, w, level) } else { Vec::new() };
            paint(&mut region, h, w, &seeds, radius);
            seeds
        }
        Labeler::Level { level } => {
            let seeds = local_maxima(score, h, w, (level as f32).max(next_up(min)));
            paint(&mut region, h, w, &seeds, radius);
            seeds
        }
        Labeler::Hysteresis { low_percentile } => {
            let seeds = local_maxima(score, h, w, percentile(score, p).max(next_up(min)));
            let low = percentile(score, low_percentile.min(p)).max(next_up(min));
            for &s in &seeds {
                grow(score, h, w, s, low, &mut region);
            }
            paint(&mut region, h, w, &seeds, radius);
            seeds
        }
        Labeler::Components { keep } => {
            components(score, h, w, percentile(score, p).max(next_up(min)), keep, &mut region)
        }
        Labeler::Persistence { min_persistence } => persistence(score, h, w, min_persistence, &mut region),
    };
    Found { seeds, region }
}

/// The smallest f32 above `v`: a level strictly above the map's floor, so flat maps (or
/// maps whose top percentile is their floor) give nothing.
fn next_up(v: f32) -> f32 {
    v.next_up()
}

/// Median and MAD-based standard deviation (1.4826 MAD).
pub fn robust_stats(score: &[f32]) -> (f32, f32) {
    let median = percentile(score, 50.0);
    let dev: Vec<f32> = score.iter().map(|&v| (v - median).abs()).collect();
    (median, 1.4826 * percentile(&dev, 50.0))
}

/// Pixels not smaller than any 8-neighbour, at or above `level`, ascending.
pub fn local_maxima(score: &[f32], h: usize, w: usize, level: f32) -> Vec<usize> {
    let mut maxima = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = score[y * w + x];
            if v < level {
                continue;
            }
            let is_max = (y.saturating_sub(1)..(y + 2).min(h))
                .all(|ny| (x.saturating_sub(1)..(x + 2).min(w)).all(|nx| score[ny * w + nx] <= v));
            if is_max {
                maxima.push(y * w + x);
            }
        }
    }
    maxima
}

/// Marks the square of Chebyshev radius `r` around each centre.
pub fn paint(region: &mut [u8], h: usize, w: usize, centres: &[usize], r: usize) {
    for &c in centres {
        let (cy, cx) = (c / w, c % w);
        for y in cy.saturating_sub(r)..(cy + r + 1).min(h) {
            region[y * w + cx.saturating_sub(r)..y * w + (cx + r + 1).min(w)].fill(1);
        }
    }
}

/// 8-neighbours of `p` in an `h x w` grid.
fn neighbours(p: usize, h: usize, w: usize) -> impl Iterator<Item = usize> {
    let (y, x) = (p / w, p % w);
    (y.saturating_sub(1)..(y + 2).min(h))
        .flat_map(move |ny| (x.saturating_sub(1)..(x + 2).min(w)).map(move |nx| ny * w + nx))
        .filter(move |&q| q != p)
}

/// Marks the 8-connected set of pixels at or above `level` that contains `seed`.
fn grow(score: &[f32], h: usize, w: usize, seed: usize, level: f32, region: &mut [u8]) {
    if score[seed] < level || region[seed] == 1 {
        return;
    }
    let mut stack = vec![seed];
    region[seed] = 1;
    while let Some(p) = stack.pop() {
        for q in neighbours(p, h, w) {
            if region[q] == 0 && score[q] >= level {
                region[q] = 1;
                stack.push(q);
            }
        }
    }
}

/// Components of `score >= level`, weighted by size x contrast (peak above the median);
/// those whose weight is at least `keep` times the heaviest one's are marked. Seeds are the
/// kept components' peaks.
fn components(score: &[f32], h: usize, w: usize, level: f32, keep: f64, region: &mut [u8]) -> Vec<usize> {
    let median = percentile(score, 50.0);
    let mut label = vec![u32::MAX; h * w];
    // (peak pixel, size, pixels)
    let mut comps: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for start in 0..h * w {
        if label[start] != u32::MAX || score[start] < level {
            continue;
        }
        let id = comps.len() as u32;
        let mut pixels = vec![start];
        label[start] = id;
        let mut i = 0;
        while i < pixels.len() {
            let p = pixels[i];
            i += 1;
            for q in neighbours(p, h, w) {
                if label[q] == u32::MAX && score[q] >= level {
                    label[q] = id;
                    pixels.push(q);
                }
            }
        }
        let peak = pixels.iter().copied().max_by(|&a, &b| score[a].total_cmp(&score[b])).unwrap_or(start);
        comps.push((peak, pixels.len(), pixels));
    }
    let weight = |c: &(usize, usize, Vec<usize>)| c.1 as f64 * f64::from(score[c.0] - median).max(0.0);
    let heaviest = comps.iter().map(weight).fold(0.0f64, f64::max);
    let mut seeds = Vec::new();
    if heaviest <= 0.0 {
        return seeds;
    }
    for c in &comps {
        if weight(c) >= keep * heaviest {
            seeds.push(c.0);
            for &p in &c.2 {
                region[p] = 1;
            }
        }
    }
    seeds.sort_unstable();
    seeds
}

/// Union-find root with path halving.
fn root(parent: &mut [u32], mut i: usize) -> usize {
    while parent[i] as usize != i {
        parent[i] = parent[parent[i] as usize];
        i = parent[i] as usize;
    }
    i
}

/// 0-dim persistence of the super-level sets: pixels enter from the highest score down;
/// when two components meet, the one with the lower peak dies at the current level. Peaks
/// with `birth - death >= min_persistence * (max - median)` are kept (the global maximum
/// dies at the median); each marks its component above `(birth + max(death, median)) / 2`.
fn persistence(score: &[f32], h: usize, w: usize, min_persistence: f64, region: &mut [u8]) -> Vec<usize> {
    let n = h * w;
    let median = percentile(score, 50.0);
    let max = score.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max <= median {
        return Vec::new();
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| score[b as usize].total_cmp(&score[a as usize]));
    let mut parent: Vec<u32> = (0..n as u32).collect();
    // The peak pixel of each root; u32::MAX until the pixel has entered.
    let mut peak = vec![u32::MAX; n];
    let mut deaths: Vec<(usize, f32)> = Vec::new();
    for &pu in &order {
        let p = pu as usize;
        peak[p] = pu;
        for q in neighbours(p, h, w) {
            if peak[q] == u32::MAX {
                continue;
            }
            let (rp, rq) = (root(&mut parent, p), root(&mut parent, q));
            if rp == rq {
                continue;
            }
            let (pp, pq) = (peak[rp] as usize, peak[rq] as usize);
            // The younger (lower peak) component dies at this pixel's level.
            let (young, old) =
                if score[pp] < score[pq] || (score[pp] == score[pq] && pp > pq) { (rp, rq) } else { (rq, rp) };
            let young_peak = peak[young] as usize;
            if young_peak != p {
                deaths.push((young_peak, score[p]));
            }
            parent[young] = old as u32;
        }
    }
    let global = order[0] as usize;
    deaths.push((global, median));
    let range = max - median;
    let mut seeds = Vec::new();
    for &(pk, death) in &deaths {
        let pers = score[pk] - death;
        if f64::from(pers) >= min_persistence * f64::from(range) && score[pk] > median {
            seeds.push(pk);
            let level = (score[pk] + death.max(median)) / 2.0;
            grow(score, h, w, pk, level, region);
        }
    }
    seeds.sort_unstable();
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smooth background plus Gaussian bumps of given (y, x, height, sigma).
    fn bumps(h: usize, w: usize, spec: &[(f32, f32, f32, f32)]) -> Vec<f32> {
        (0..h * w)
            .map(|i| {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                let mut v = 0.02 * ((x * 0.31).sin() * (y * 0.17).cos());
                for &(cy, cx, a, s) in spec {
                    v += a * (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * s * s)).exp();
                }
                v
            })
            .collect()
    }

    fn count(r: &[u8]) -> usize {
        r.iter().filter(|&&v| v == 1).count()
    }

    #[test]
    fn every_labeler_finds_a_strong_bump_and_keeps_away_from_noise() {
        let (h, w) = (224, 224);
        // A strong defect bump at (60, 60) and a weak one at (160, 150).
        let m = bumps(h, w, &[(60.0, 60.0, 1.0, 6.0), (160.0, 150.0, 0.15, 6.0)]);
        for labeler in [
            Labeler::Maxima,
            Labeler::Hysteresis { low_percentile: 97.0 },
            Labeler::Components { keep: 0.5 },
            Labeler::Persistence { min_persistence: 0.5 },
            Labeler::Adaptive { k: 8.0 },
        ] {
            let f = find(&m, h, w, labeler, 99.0, 1);
            assert!(f.seeds.contains(&(60 * w + 60)), "{labeler:?}: seeds {:?}", f.seeds);
            assert_eq!(f.region[60 * w + 60], 1, "{labeler:?}");
            // Everything marked lies within the strong bump (radius 20 px) for the selective labelers.
            // (adaptive also takes the weak bump: 0.15 is ~10 robust std above this background.)
            if !matches!(labeler, Labeler::Maxima | Labeler::Hysteresis { .. } | Labeler::Adaptive { .. }) {
                let far = (0..h * w)
                    .filter(|&p| f.region[p] == 1 && ((p / w).abs_diff(60) > 20 || (p % w).abs_diff(60) > 20));
                assert_eq!(far.count(), 0, "{labeler:?} marks pixels away from the strong bump");
            }
        }
        // Hysteresis grows beyond the 3x3 square; the paper's labels stay 3x3 per maximum.
        let paper = find(&m, h, w, Labeler::Maxima, 99.0, 1);
        let grown = find(&m, h, w, Labeler::Hysteresis { low_percentile: 97.0 }, 99.0, 1);
        assert!(count(&grown.region) > count(&paper.region));
        assert!(count(&grown.region) <= (h * w) / 25, "97th percentile region: at most 3% plus squares");
    }

    #[test]
    fn persistence_keeps_both_peaks_when_both_stand_out_and_merges_a_shoulder() {
        let (h, w) = (128, 128);
        let m = bumps(h, w, &[(30.0, 30.0, 1.0, 5.0), (90.0, 100.0, 0.9, 5.0)]);
        let f = find(&m, h, w, Labeler::Persistence { min_persistence: 0.5 }, 99.0, 1);
        assert_eq!(f.seeds, vec![30 * w + 30, 90 * w + 100]);
        // Half-maximum regions: roughly a disc of radius sigma * sqrt(2 ln 2) = 5.9 px each.
        let n = count(&f.region);
        assert!((150..=300).contains(&n), "{n} pixels");
        // A tiny ripple on the flank of one bump is not persistent.
        let mut rippled = m.clone();
        rippled[33 * w + 36] += 0.01;
        let f = find(&rippled, h, w, Labeler::Persistence { min_persistence: 0.5 }, 99.0, 1);
        assert_eq!(f.seeds.len(), 2, "{:?}", f.seeds);
    }

    #[test]
    fn adaptive_gives_nothing_on_a_map_without_a_salient_peak() {
        let (h, w) = (224, 224);
        let flat_noise = bumps(h, w, &[]);
        assert!(find(&flat_noise, h, w, Labeler::Adaptive { k: 8.0 }, 99.0, 1).seeds.is_empty());
        // An absolute level above the map gives nothing; below its peak, the peak.
        assert!(find(&flat_noise, h, w, Labeler::Level { level: 0.5 }, 99.0, 1).seeds.is_empty());
        let m = bumps(h, w, &[(100.0, 40.0, 1.0, 6.0)]);
        assert_eq!(find(&m, h, w, Labeler::Level { level: 0.5 }, 99.0, 1).seeds, vec![100 * w + 40]);
        // The paper's rule always finds its top percentile's maxima.
        assert!(!find(&flat_noise, h, w, Labeler::Maxima, 99.0, 1).seeds.is_empty());
        // Flat maps give nothing to every labeler.
        for labeler in [
            Labeler::Maxima,
            Labeler::Hysteresis { low_percentile: 95.0 },
            Labeler::Components { keep: 0.5 },
            Labeler::Persistence { min_persistence: 0.5 },
            Labeler::Adaptive { k: 8.0 },
            Labeler::Level { level: 0.1 },
        ] {
            let f = find(&vec![0.25; h * w], h, w, labeler, 99.0, 1);
            assert!(f.seeds.is_empty() && count(&f.region) == 0, "{labeler:?}");
        }
    }
}
