//! `mebin`: MEBin (Main Element Binarization, AnomalyNCD, CVPR 2025), per image.
//!
//! Facts taken from anomalib's implementation (`metrics/threshold/mebin.py` and its later
//! kornia rewrite `post_processing/mebin.py`, `MEBinPostProcessor`):
//! - the map is scaled linearly to 0-255; thresholds are swept from 255 down in steps of
//!   `sample_rate` (`range(255, -1, -sample_rate)`: 255, 251, ..., 3 with the default 4);
//! - at each threshold the map is binarized with `>` and, with `erode`, eroded by a 6 x 6
//!   square (anchor at (3, 3): rows and columns -3..+2; pixels outside the image do not
//!   erode), then its 8-connected components are counted;
//! - a stable interval is a run of consecutive thresholds with the same non-zero count, at
//!   least `min_interval_len` long; the count whose longest run is longest wins (ties: the
//!   count met first in the sweep), and its longest run (ties: the first);
//! - the threshold is the last (lowest) one of that run, mapped back to score units; the
//!   mask is `score > threshold`, not eroded in the current release (AnomalyNCD's reference
//!   and anomalib's first release eroded it too: `erode_mask`); no stable interval: an empty
//!   mask;
//! - defaults: `sample_rate` 4, `min_interval_len` 4, `erode` true, kernel size 6.
//!
//! Ours differs on purpose in one point: anomalib scales from the smallest to the largest
//! per-image peak of the whole batch (scores below the smallest peak count as 0), so an
//! image's mask depends on the images it is batched with. Here the stage is fitted on the
//! nominal validation maps instead: with `range: nominal` (the default) the floor is the
//! smallest peak among them, as a batch holding nominal images gives anomalib, and the top
//! is the map's own peak; a map whose peak does not clear the floor gets an empty mask.
//! `range: own` scales each map from its own minimum: on blurred memory-bank maps that
//! sweeps the whole background, whose single component is then the longest stable count
//! (docs/results/calibration.md).
//!
//! Cost: a binarize-erode-label pass per threshold would be O(steps x pixels). Erosion of a
//! thresholded map is the threshold of its minimum filter, and lowering the threshold only
//! adds pixels, so one minimum filter, one bucketing of pixels by the step at which they
//! switch on, and one incremental union-find give every step's count in about O(pixels).

use anoflow_sdk::prelude::*;
use anoflow_sdk::state::{StateReader, StateWriter};

use crate::common::{bad_state, finite_scores, not_fitted, STATE_VERSION};

/// The `mebin` stage type.
pub struct Mebin;

/// Params of `mebin`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MebinConfig {
    /// Scale each map from the smallest per-image peak of the fit split (anomalib's floor,
    /// fitted on nominal maps) to its own peak, or from its own minimum to its own peak (the
    /// fit is then unused).
    #[serde(default)]
    pub range: Range,
    /// Step of the threshold sweep on the map scaled to 0-255.
    #[serde(default = "four")]
    #[schemars(range(min = 1, max = 255))]
    pub sample_rate: usize,
    /// A stable interval holds at least this many consecutive thresholds with the same
    /// non-zero count.
    #[serde(default = "four")]
    #[schemars(range(min = 1))]
    pub min_interval_len: usize,
    /// Erode each binarized map before counting its components.
    #[serde(default = "yes")]
    pub erode: bool,
    /// Side of the square erosion kernel (px).
    #[serde(default = "six")]
    #[schemars(range(min = 1))]
    pub kernel_size: usize,
    /// Erode the output mask too, as AnomalyNCD's reference did (anomalib's current release
    /// does not).
    #[serde(default)]
    pub erode_mask: bool,
}

fn four() -> usize {
    4
}

fn six() -> usize {
    6
}

fn yes() -> bool {
    true
}

/// Where the sweep starts: see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Range {
    // Variants carry no doc comments: those would turn the schema's `enum` into a `oneOf`.
    // From the smallest per-image peak of the fit split.
    #[default]
    Nominal,
    // From the map's own minimum.
    Own,
}

struct MebinStage {
    node: String,
    range: Range,
    /// Smallest per-image peak observed while fitting.
    smallest_peak: f64,
    /// The fitted floor: `Some` once fitted or loaded.
    floor: Option<f64>,
    sample_rate: usize,
    min_interval_len: usize,
    erode: bool,
    kernel_size: usize,
    erode_mask: bool,
}

impl StagePlugin for Mebin {
    type Config = MebinConfig;
    type Stage = Box<dyn Fitted>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "mebin",
            "MEBin (AnomalyNCD): per image, the threshold at the end of the longest run of thresholds over which \
             the count of connected components stays the same; the sweep starts at the smallest peak of the \
             nominal fit maps, so a mask never depends on the other images of a batch",
        )
        .input("score", ValueKind::ScoreMap, "anomaly score map")
        .output_same_size(
            "mask",
            ValueKind::Mask,
            "score",
            "score > the stable threshold; empty when no stable interval exists",
        )
    }

    fn create(config: MebinConfig, ctx: &CreateContext) -> StageResult<Box<dyn Fitted>> {
        Ok(Box::new(MebinStage {
            node: ctx.node_id.to_string(),
            range: config.range,
            smallest_peak: f64::INFINITY,
            floor: None,
            sample_rate: config.sample_rate,
            min_interval_len: config.min_interval_len,
            erode: config.erode,
            kernel_size: config.kernel_size,
            erode_mask: config.erode_mask,
        }))
    }
}

impl Fitted for MebinStage {
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let score = finite_scores(sample, &self.node)?;
        let peak = score.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.smallest_peak = self.smallest_peak.min(f64::from(peak));
        Ok(())
    }

    fn finish_fit(&mut self) -> StageResult<()> {
        if !self.smallest_peak.is_finite() {
            return Err(StageError::invalid_input(format!("node `{}`: the fit split held no score map", self.node)));
        }
        self.floor = Some(self.smallest_peak);
        Ok(())
    }

    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let floor = self.floor.ok_or_else(|| not_fitted(&self.node))?;
        let score = finite_scores(sample, &self.node)?;
        let (h, w) = (score.height(), score.width());
        let mask = match self.threshold(score, floor) {
            Some((t, _)) => {
                let mut m: Vec<u8> = score.data().iter().map(|&v| u8::from(f64::from(v) > t)).collect();
                if self.erode_mask {
                    m = erode_binary(&m, h, w, self.kernel_size);
                }
                m
            }
            None => vec![0; h * w],
        };
        Ok(Outputs::new().with("mask", Mask::new(h as u32, w as u32, mask)?))
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let floor = self.floor.ok_or_else(|| not_fitted(&self.node))?;
        // The smallest per-image peak of the fit split.
        StateWriter::new("mebin", STATE_VERSION)
            .f64("floor", &[], &[floor])
            .finish()
            .map_err(|e| bad_state(&self.node, e))
    }

    fn load_state(&mut self, state: &[u8]) -> StageResult<()> {
        let r = StateReader::parse(state, "mebin", STATE_VERSION).map_err(|e| bad_state(&self.node, e))?;
        let floor = r.scalar::<f64>("floor").map_err(|e| bad_state(&self.node, e))?;
        if !floor.is_finite() {
            return Err(bad_state(&self.node, format!("floor {floor}")));
        }
        self.floor = Some(floor);
        Ok(())
    }
}

impl MebinStage {
    /// The stable threshold in score units and the component count of its interval (the
    /// estimated number of anomalies), or `None` (flat map, or no stable interval). `floor` is
    /// the fitted nominal floor, used with `range: nominal`.
    fn threshold(&self, score: &ScoreMap, floor: f64) -> Option<(f64, usize)> {
        let (own_lo, hi) =
            score.data().iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let lo = match self.range {
            Range::Own => own_lo,
            // anomalib's clipping: what lies below the floor is 0, never part of a component.
            Range::Nominal => floor as f32,
        };
        if hi <= lo {
            return None;
        }
        let range = hi - lo;
        let scaled: Vec<f32> = score.data().iter().map(|&v| ((v - lo) / range).max(0.0) * 255.0).collect();
        let (h, w) = (score.height(), score.width());
        let swept = if self.erode { min_filter(&scaled, h, w, self.kernel_size) } else { scaled };
        let thresholds: Vec<f32> = (0..=255 / self.sample_rate).map(|j| (255 - j * self.sample_rate) as f32).collect();
        let counts = component_counts(&swept, h, w, &thresholds);
        let (end, count) = stable_interval_end(&counts, self.min_interval_len)?;
        Some((f64::from(thresholds[end]) / 255.0 * f64::from(range) + f64::from(lo), count))
    }
}

/// The end index of anomalib's stable interval in a sequence of component counts and the
/// count over it, if there is one.
pub fn stable_interval_end(counts: &[usize], min_len: usize) -> Option<(usize, usize)> {
    // (count, longest run of it, that run's end), in the order counts first qualify.
    let mut best_per_count: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0;
    while start < counts.len() {
        let value = counts[start];
        let mut end = start;
        while end + 1 < counts.len() && counts[end + 1] == value {
            end += 1;
        }
        let len = end - start + 1;
        if value != 0 && len >= min_len {
            match best_per_count.iter_mut().find(|b| b.0 == value) {
                Some(b) if len > b.1 => *b = (value, len, end),
                Some(_) => {}
                None => best_per_count.push((value, len, end)),
            }
        }
        start = end + 1;
    }
    let longest = best_per_count.iter().map(|b| b.1).max()?;
    best_per_count.iter().find(|b| b.1 == longest).map(|b| (b.2, b.0))
}

/// Minimum over a `k x k` window, rows and columns `-(k/2) ..= k - 1 - k/2` around each
/// pixel (OpenCV's and kornia's anchor), ignoring what lies outside the image.
pub fn min_filter(data: &[f32], h: usize, w: usize, k: usize) -> Vec<f32> {
    let (before, after) = (k / 2, k - 1 - k / 2);
    let mut rows = vec![0.0f32; h * w];
    for y in 0..h {
        let line = &data[y * w..(y + 1) * w];
        for x in 0..w {
            let window = &line[x.saturating_sub(before)..(x + after + 1).min(w)];
            rows[y * w + x] = window.iter().copied().fold(f32::INFINITY, f32::min);
        }
    }
    let mut out = vec![0.0f32; h * w];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(before), (y + after + 1).min(h));
        for x in 0..w {
            out[y * w + x] = (y0..y1).map(|yy| rows[yy * w + x]).fold(f32::INFINITY, f32::min);
        }
    }
    out
}

fn erode_binary(mask: &[u8], h: usize, w: usize, k: usize) -> Vec<u8> {
    let as_f: Vec<f32> = mask.iter().map(|&m| f32::from(m)).collect();
    min_filter(&as_f, h, w, k).iter().map(|&v| u8::from(v > 0.5)).collect()
}

/// The number of 8-connected components of `values > t` for each of the decreasing
/// `thresholds`. Pixels are bucketed by the first threshold they exceed and switched on in
/// that order, merging with lit neighbours in a union-find.
pub fn component_counts(values: &[f32], h: usize, w: usize, thresholds: &[f32]) -> Vec<usize> {
    let steps = thresholds.len();
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); steps];
    for (i, &v) in values.iter().enumerate() {
        // `thresholds` decreases: binary search for the first one below `v`.
        let step = thresholds.partition_point(|&t| v <= t);
        if step < steps {
            buckets[step].push(i as u32);
        }
    }
    let mut parent: Vec<u32> = vec![u32::MAX; h * w];
    let mut count = 0usize;
    let mut counts = Vec::with_capacity(steps);
    for bucket in &buckets {
        for &p in bucket {
            parent[p as usize] = p;
            count += 1;
            let (y, x) = (p as usize / w, p as usize % w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let q = (ny * w + nx) as u32;
                    if q != p && parent[q as usize] != u32::MAX {
                        let (a, b) = (find(&mut parent, p), find(&mut parent, q));
                        if a != b {
                            parent[a as usize] = b;
                            count -= 1;
                        }
                    }
                }
            }
        }
        counts.push(count);
    }
    counts
}

/// Root of `p`, halving the path on the way.
fn find(parent: &mut [u32], mut p: u32) -> u32 {
    while parent[p as usize] != p {
        let grand = parent[parent[p as usize] as usize];
        parent[p as usize] = grand;
        p = grand;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::refused;
    use anoflow_sdk::harness::{inputs, meta, StageHarness};
    use serde_json::json;

    const N: usize = 224;

    /// Two Gaussian bumps on a blobby floor (smooth random values up to 0.12, as the nominal
    /// texture of a real map): below the floor's level the component count breaks up.
    fn two_bumps(scale: f32, offset: f32) -> ScoreMap {
        scene(scale, offset, 1.0)
    }

    /// The same floor alone, as a nominal map.
    fn nominal(scale: f32, offset: f32) -> ScoreMap {
        scene(scale, offset, 0.0)
    }

    fn scene(scale: f32, offset: f32, bumps: f32) -> ScoreMap {
        let node = |gx: usize, gy: usize| ((gx * 31 + gy * 977) as u32).wrapping_mul(2_654_435_761) >> 8;
        let floor = |x: f32, y: f32| {
            let (gx, gy) = (x / 24.0, y / 24.0);
            let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
            let (fx, fy) = (gx - ix as f32, gy - iy as f32);
            let v = |a: usize, b: usize| node(a, b) as f32 / (1u32 << 24) as f32;
            let top = v(ix, iy) * (1.0 - fx) + v(ix + 1, iy) * fx;
            let bottom = v(ix, iy + 1) * (1.0 - fx) + v(ix + 1, iy + 1) * fx;
            0.12 * (top * (1.0 - fy) + bottom * fy)
        };
        let data = (0..N * N)
            .map(|i| {
                let (x, y) = ((i % N) as f32, (i / N) as f32);
                let bump = |cx: f32, cy: f32, s: f32, a: f32| {
                    a * (-((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * s * s)).exp()
                };
                offset + scale * (bumps * (bump(60.0, 70.0, 9.0, 1.0) + bump(160.0, 150.0, 12.0, 0.8)) + floor(x, y))
            })
            .collect();
        ScoreMap::new(N as u32, N as u32, data).unwrap()
    }

    /// A stage fitted on nominal maps of the given scale and offset.
    fn fitted(params: serde_json::Value, scale: f32, offset: f32) -> StageHarness {
        let mut h = StageHarness::new::<Mebin>(params).unwrap();
        // Two nominal maps; the second one's peak is the lower (the floor).
        let fit = [nominal(scale, offset), nominal(scale * 0.95, offset)];
        h.fit(
            fit.iter()
                .enumerate()
                .map(|(i, m)| (meta(&format!("v{i}")), inputs(vec![("score", m.clone().into())])))
                .collect(),
        )
        .unwrap();
        h
    }

    fn mask_of(h: &StageHarness, score: &ScoreMap) -> Vec<u8> {
        h.process(&meta("m"), inputs(vec![("score", score.clone().into())])).unwrap().mask("mask").data().to_vec()
    }

    #[test]
    fn own_range_gives_two_components_around_the_peaks() {
        let h = fitted(json!({"range": "own"}), 1.0, 0.0);
        let score = two_bumps(1.0, 0.0);
        let mask = mask_of(&h, &score);
        let stage = MebinStage {
            node: "n".into(),
            range: Range::Own,
            smallest_peak: f64::INFINITY,
            floor: None,
            sample_rate: 4,
            min_interval_len: 4,
            erode: true,
            kernel_size: 6,
            erode_mask: false,
        };
        assert_eq!(stage.threshold(&score, 0.0).map(|t| t.1), Some(2), "the stable count is the two bumps");
        let (label, sizes) = labels(&mask, N, N);
        let peaks = [label[70 * N + 60], label[150 * N + 160]];
        assert!(peaks[0] != usize::MAX && peaks[1] != usize::MAX && peaks[0] != peaks[1], "both peaks, apart");
        // Nothing far from the bumps; besides them only a few floor pixels at the level where
        // the count breaks up (the mask is not eroded, the counted maps were).
        for (i, &m) in mask.iter().enumerate() {
            let (x, y) = ((i % N) as f32, (i / N) as f32);
            let near = (x - 60.0).hypot(y - 70.0) < 30.0 || (x - 160.0).hypot(y - 150.0) < 40.0;
            assert!(m == 0 || near || sizes[label[i]] < 20, "pixel ({x}, {y}) is far from both bumps");
        }
        let rest: usize = sizes.iter().enumerate().filter(|(k, _)| !peaks.contains(k)).map(|(_, s)| s).sum();
        assert!(sizes[peaks[0]] > 300 && sizes[peaks[1]] > 300 && rest * 100 < mask.len(), "{sizes:?}");
        // Eroding the output as well (the reference's choice) leaves exactly the two bumps.
        let eroded = fitted(json!({"range": "own", "erode_mask": true}), 1.0, 0.0);
        assert_eq!(labels(&mask_of(&eroded, &score), N, N).1.len(), 2);
    }

    #[test]
    fn the_nominal_floor_keeps_the_background_out() {
        let h = fitted(json!({}), 1.0, 0.0);
        let mask = mask_of(&h, &two_bumps(1.0, 0.0));
        let (label, sizes) = labels(&mask, N, N);
        assert_eq!(sizes.len(), 2, "exactly the two bumps: {sizes:?}");
        assert!(label[70 * N + 60] != usize::MAX && label[150 * N + 160] != usize::MAX);
        // A nominal map whose peak stays under the floor: nothing.
        assert!(!mask_of(&h, &nominal(0.9, 0.0)).contains(&1));
        // Scaled from its own minimum, the same nominal map is all floor texture, and a
        // stable count of it is found and marked: what the floor prevents.
        let own = fitted(json!({"range": "own"}), 1.0, 0.0);
        let marked = mask_of(&own, &nominal(0.9, 0.0)).iter().filter(|&&m| m == 1).count();
        assert!(marked * 100 > N * N, "own range marked {marked} nominal pixels");
    }

    #[test]
    fn flat_maps_and_affine_rescaling() {
        let flat = |v: f32| ScoreMap::new(N as u32, N as u32, vec![v; N * N]).unwrap();
        // A flat map under the nominal floor is nominal; one above it is anomalous everywhere
        // (one component at every threshold). Scaled by its own range, it has no threshold.
        let h = fitted(json!({}), 1.0, 0.0);
        assert!(!mask_of(&h, &flat(0.01)).contains(&1));
        assert!(!mask_of(&h, &flat(0.7)).contains(&0));
        assert!(!mask_of(&fitted(json!({"range": "own"}), 1.0, 0.0), &flat(0.7)).contains(&1));
        for range in ["nominal", "own"] {
            let h = fitted(json!({ "range": range }), 1.0, 0.0);
            // Scaling and shifting the fit maps and the map alike gives the same mask.
            let moved = fitted(json!({ "range": range }), 4.0, 10.0);
            let mask = mask_of(&h, &two_bumps(1.0, 0.0));
            assert!(mask.contains(&1), "{range}");
            assert_eq!(mask, mask_of(&moved, &two_bumps(4.0, 10.0)), "{range}");
        }
        // The map alone moves under `own` only.
        let own = fitted(json!({"range": "own"}), 1.0, 0.0);
        assert_eq!(mask_of(&own, &two_bumps(1.0, 0.0)), mask_of(&own, &two_bumps(4.0, 10.0)));
    }

    #[test]
    fn masks_do_not_depend_on_the_other_samples_of_a_batch() {
        let h = fitted(json!({}), 1.0, 0.0);
        let a = two_bumps(1.0, 0.0);
        let hot = two_bumps(50.0, 3.0);
        let alone = mask_of(&h, &a);
        let batch = h.process_batch(vec![
            (meta("hot"), inputs(vec![("score", hot.into())])),
            (meta("a"), inputs(vec![("score", a.into())])),
        ]);
        assert_eq!(batch[1].as_ref().unwrap().mask("mask").data(), &alone[..]);
    }

    #[test]
    fn the_floor_round_trips_and_an_unfitted_stage_says_so() {
        let h = fitted(json!({}), 1.0, 0.0);
        let score = two_bumps(1.0, 0.0);
        let mut fresh = StageHarness::new::<Mebin>(json!({})).unwrap();
        let err = fresh.process(&meta("t"), inputs(vec![("score", score.clone().into())])).unwrap_err();
        assert!(err.to_string().contains("before it was fitted"), "{err}");
        fresh.load_state(h.save_state().unwrap()).unwrap();
        assert_eq!(mask_of(&fresh, &score), mask_of(&h, &score));
        let bad = StageHarness::new::<Mebin>(json!({})).unwrap().load_state(b"{\"floor\": null}".to_vec());
        assert!(bad.is_err());
    }

    #[test]
    fn incremental_counts_match_thresholding_each_level() {
        // A rough random map: many components that merge as the threshold falls.
        let (h, w) = (60, 80);
        let values: Vec<f32> = (0..h * w)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let r = ((i as u32).wrapping_mul(2_654_435_761) >> 16) as f32 / 65536.0;
                127.0 + 80.0 * (x * 0.3).sin() * (y * 0.25).cos() + 48.0 * r
            })
            .collect();
        let eroded = min_filter(&values, h, w, 6);
        let thresholds: Vec<f32> = (0..64).map(|j| (255 - 4 * j) as f32).collect();
        let fast = component_counts(&eroded, h, w, &thresholds);
        for (j, &t) in thresholds.iter().enumerate() {
            let binary: Vec<u8> = values.iter().map(|&v| u8::from(v > t)).collect();
            let eroded_binary = naive_erode(&binary, h, w);
            assert_eq!(fast[j], labels(&eroded_binary, h, w).1.len(), "threshold {t}");
        }
        assert!(fast.iter().any(|&c| c > 3), "{fast:?}");
    }

    #[test]
    fn stable_interval_follows_anomalib() {
        // Runs: 1 x3 (too short), 2 x5, 0 x6 (ignored), 3 x5 (tie with 2: 2 came first).
        let counts = [1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3];
        assert_eq!(stable_interval_end(&counts, 4), Some((7, 2)));
        assert_eq!(stable_interval_end(&counts, 6), None);
        // The count's longest run is used, even when the count first qualified earlier.
        let counts = [2, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        assert_eq!(stable_interval_end(&counts, 4), Some((14, 2)));
        assert!(StageHarness::new::<Mebin>(json!({"sample_rate": 0})).is_err());
    }

    #[test]
    fn erode_mask_shrinks_the_output() {
        let plain = fitted(json!({}), 1.0, 0.0);
        let eroded = fitted(json!({"erode_mask": true}), 1.0, 0.0);
        let score = two_bumps(1.0, 0.0);
        let (a, b) = (mask_of(&plain, &score), mask_of(&eroded, &score));
        assert_eq!(b, naive_erode(&a, N, N));
        assert!(b.contains(&1));
    }

    /// Erosion by a 6 x 6 square, anchor (3, 3), outside pixels ignored, the direct way.
    fn naive_erode(m: &[u8], h: usize, w: usize) -> Vec<u8> {
        let mut out = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                let all = (y.saturating_sub(3)..(y + 3).min(h))
                    .all(|yy| (x.saturating_sub(3)..(x + 3).min(w)).all(|xx| m[yy * w + xx] == 1));
                out[y * w + x] = u8::from(all);
            }
        }
        out
    }

    /// 8-connected components (the library's flood fill): each pixel's label (`usize::MAX`
    /// for background) and the component sizes.
    fn labels(m: &[u8], h: usize, w: usize) -> (Vec<usize>, Vec<usize>) {
        let (label, sizes) = anoflow_imaging::mask::components(m, h, w);
        (label.into_iter().map(|l| if l == u32::MAX { usize::MAX } else { l as usize }).collect(), sizes)
    }

    #[test]
    fn bad_params_are_refused_naming_them() {
        refused::<Mebin>(json!({"range": "batch"}), "param `range`: `batch` is not one of nominal, own");
        refused::<Mebin>(json!({"sample_rate": 256}), "param `sample_rate`: 256 is out of range");
    }
}
