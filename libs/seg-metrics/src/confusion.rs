//! Pixel confusion counts of a binary mask against the ground truth, and the ratios built
//! from them. Counts are integers, so sums over images (and over shards) are exact.
//!
//! Zero denominators: a ratio `0/0` is 1 when prediction and ground truth are both empty
//! (nothing to find, nothing claimed: perfect agreement) and 0 otherwise. So an empty mask
//! on a good image scores 1 everywhere; an empty mask on an anomalous image has precision 0.

use serde::{Deserialize, Serialize};

/// Confusion counts over some set of pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

impl Counts {
    /// Counts of `pred` against `gt` (both 0/1 bytes of the same length).
    pub fn of(pred: &[u8], gt: &[u8]) -> Self {
        // Indexing a 4-bin histogram by 2*gt + pred keeps the loop branch-free.
        let mut bins = [0u64; 4];
        for (&p, &g) in pred.iter().zip(gt) {
            bins[usize::from(g != 0) * 2 + usize::from(p != 0)] += 1;
        }
        Self { tn: bins[0], fp: bins[1], fn_: bins[2], tp: bins[3] }
    }

    pub fn add(&mut self, o: &Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }

    pub fn pixels(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    fn both_empty(&self) -> bool {
        self.tp + self.fp + self.fn_ == 0
    }

    fn ratio(&self, num: u64, den: u64) -> f64 {
        if den == 0 {
            if self.both_empty() {
                1.0
            } else {
                0.0
            }
        } else {
            num as f64 / den as f64
        }
    }

    pub fn precision(&self) -> f64 {
        self.ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        self.ratio(self.tp, self.tp + self.fn_)
    }
    pub fn f1(&self) -> f64 {
        self.ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
    pub fn iou(&self) -> f64 {
        self.ratio(self.tp, self.tp + self.fp + self.fn_)
    }
    /// Fraction of the pixels predicted positive while the ground truth is negative.
    pub fn fp_area(&self) -> f64 {
        if self.pixels() == 0 {
            0.0
        } else {
            self.fp as f64 / self.pixels() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios_hand_computed() {
        let gt = [1, 1, 1, 0, 0, 0, 0, 1];
        let pr = [1, 1, 0, 1, 0, 0, 0, 0];
        let c = Counts::of(&pr, &gt);
        assert_eq!(c, Counts { tp: 2, fp: 1, fn_: 2, tn: 3 });
        assert_eq!(c.precision(), 2.0 / 3.0);
        assert_eq!(c.recall(), 0.5);
        assert_eq!(c.f1(), 4.0 / 7.0);
        assert_eq!(c.iou(), 0.4);
        assert_eq!(c.fp_area(), 1.0 / 8.0);
    }

    #[test]
    fn zero_denominators_follow_the_documented_convention() {
        let empty_good = Counts::of(&[0, 0], &[0, 0]);
        assert_eq!(
            (empty_good.precision(), empty_good.recall(), empty_good.f1(), empty_good.iou()),
            (1.0, 1.0, 1.0, 1.0)
        );
        let missed = Counts::of(&[0, 0], &[1, 0]);
        assert_eq!((missed.precision(), missed.recall(), missed.f1(), missed.iou()), (0.0, 0.0, 0.0, 0.0));
        let false_alarm = Counts::of(&[1, 0], &[0, 0]);
        assert_eq!((false_alarm.precision(), false_alarm.recall(), false_alarm.f1()), (0.0, 0.0, 0.0));
        assert_eq!(false_alarm.fp_area(), 0.5);
    }
}
