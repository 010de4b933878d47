//! Trained hyperplanes shared between runs of TTT4AS on the same image.
//!
//! Calibration maps every calibration image once per candidate setting, and candidates that
//! differ only in how anomalous pixels are found often agree on the pseudo-labels: levels 1.2
//! and 1.4 of a map whose peaks are 0.9 and 2.5 keep the same maximum (on photo set 1, 274 of
//! the level search's 684 trained runs repeated an earlier one's labels). A linear classifier is
//! a pure function of its training rows, balancing, solver settings and seed, and the rows are
//! the features at the labelled pixels; so the key is a 128-bit XXH3 digest of the labels, the
//! whole feature maps with their shapes, the score map's size, those settings and the seed. A hit
//! skips sampling, standardization and the fit; the decision is always recomputed from the
//! features at hand, so the output is the one a fresh fit gives, bit for bit.
//!
//! Process-wide (candidates are separate stage instances), bounded by the bytes of the stored
//! hyperplanes (oldest out first); kernel classifiers are never stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use xxhash_rust::xxh3::Xxh3;

use crate::{
    classifier::{FitInfo, LinearModel},
    pseudo_labels::PseudoLabels,
    ttt::{NamedFeatures, TttConfig},
};

/// What a fit left: the hyperplane on raw features and how the solver went.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub hyperplane: LinearModel,
    pub info: FitInfo,
}

/// Identifies one fit: see the module docs for what goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FitKey(u128);

impl FitKey {
    pub fn new(
        labels: &PseudoLabels,
        features: &[NamedFeatures<'_>],
        (h, w): (usize, usize),
        cfg: &TttConfig,
        seed: u64,
    ) -> Self {
        let mut hasher = Xxh3::new();
        // The settings that reach the training rows or the solver; `Debug` prints every field,
        // floats in their shortest round-trip form.
        let settings = format!("{:?}|{:?}|{:?}|{seed}|{h}x{w}", cfg.balance, cfg.standardize, cfg.classifier);
        hasher.update(&(settings.len() as u64).to_le_bytes());
        hasher.update(settings.as_bytes());
        // In-process keys: the indices' native bytes will do.
        for list in [&labels.anomalous, &labels.nominal] {
            hasher.update(&(list.len() as u64).to_le_bytes());
            hasher.update(bytemuck::cast_slice(list));
        }
        hasher.update(&(features.len() as u64).to_le_bytes());
        for f in features {
            let m = f.map;
            for v in [m.height(), m.width(), m.channels()] {
                hasher.update(&(v as u64).to_le_bytes());
            }
            hasher.update(&m.stride().to_le_bytes());
            hasher.update(bytemuck::cast_slice(m.data()));
        }
        FitKey(hasher.digest128())
    }
}

/// A bounded map from fits to their results, oldest out first.
#[derive(Debug)]
pub struct FitMemo {
    budget_bytes: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<FitKey, Arc<Trained>>,
    order: VecDeque<FitKey>,
    bytes: usize,
}

/// Room for about 8,000 hyperplanes of 1,024 features.
const PROCESS_BUDGET_BYTES: usize = 32 << 20;

impl FitMemo {
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget_bytes, inner: Mutex::new(Entries::default()) }
    }

    /// The memo every stage instance of this library shares.
    pub fn process() -> &'static FitMemo {
        static MEMO: OnceLock<FitMemo> = OnceLock::new();
        MEMO.get_or_init(|| FitMemo::new(PROCESS_BUDGET_BYTES))
    }

    pub fn get(&self, key: FitKey) -> Option<Arc<Trained>> {
        self.lock().map.get(&key).cloned()
    }

    pub fn insert(&self, key: FitKey, trained: Trained) {
        let size = entry_bytes(&trained);
        if size > self.budget_bytes {
            return;
        }
        let mut e = self.lock();
        if e.map.insert(key, Arc::new(trained)).is_some() {
            return;
        }
        e.order.push_back(key);
        e.bytes += size;
        while e.bytes > self.budget_bytes {
            let Some(old) = e.order.pop_front() else { break };
            if let Some(gone) = e.map.remove(&old) {
                e.bytes -= entry_bytes(&gone);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A poisoned lock only means another thread panicked mid-insert; the map is still whole
    /// (every insert updates it before the bookkeeping), so it stays usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn entry_bytes(t: &Trained) -> usize {
    std::mem::size_of::<Trained>() + std::mem::size_of::<FitKey>() * 2 + t.hyperplane.w.len() * 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::prelude::FeatureMap;

    fn trained(d: usize, b: f32) -> Trained {
        Trained {
            hyperplane: LinearModel { w: vec![0.5; d], b },
            info: FitInfo { iterations: 3, converged: true, support_vectors: 7 },
        }
    }

    fn labels(anomalous: Vec<usize>, nominal: Vec<usize>) -> PseudoLabels {
        PseudoLabels { anomalous, nominal, maxima: Vec::new() }
    }

    #[test]
    fn key_changes_with_every_input_of_a_fit() {
        let map = FeatureMap::new(4, 4, 3, 8.0, (0..48).map(|v| v as f32).collect()).unwrap();
        let mut other = map.data().to_vec();
        other[47] = f32::from_bits(other[47].to_bits() + 1);
        let other = FeatureMap::new(4, 4, 3, 8.0, other).unwrap();
        let f = [NamedFeatures { name: "a", map: &map }];
        let cfg = TttConfig::default();
        let l = labels(vec![1, 2], vec![9, 10]);
        let base = FitKey::new(&l, &f, (32, 32), &cfg, 1);
        // The same inputs, and another name for the same edge, give the same key.
        assert_eq!(base, FitKey::new(&l, &[NamedFeatures { name: "b", map: &map }], (32, 32), &cfg, 1));
        let mut unbalanced = cfg.clone();
        unbalanced.balance = crate::ttt::Balance::None;
        let mut raw = cfg.clone();
        raw.standardize = false;
        // The labeler is not part of the key: only the labels it gave are.
        let mut other_labeler = cfg.clone();
        other_labeler.labels.margin += 3;
        assert_eq!(base, FitKey::new(&l, &f, (32, 32), &other_labeler, 1));
        let differing = [
            FitKey::new(&labels(vec![1, 3], vec![9, 10]), &f, (32, 32), &cfg, 1),
            FitKey::new(&labels(vec![1], vec![2, 9, 10]), &f, (32, 32), &cfg, 1),
            FitKey::new(&labels(vec![1, 2], vec![9, 11]), &f, (32, 32), &cfg, 1),
            FitKey::new(&l, &[NamedFeatures { name: "a", map: &other }], (32, 32), &cfg, 1),
            FitKey::new(&l, &[f[0], f[0]], (32, 32), &cfg, 1),
            FitKey::new(&l, &f, (32, 31), &cfg, 1),
            FitKey::new(&l, &f, (32, 32), &unbalanced, 1),
            FitKey::new(&l, &f, (32, 32), &raw, 1),
            FitKey::new(&l, &f, (32, 32), &cfg, 2),
        ];
        for (i, k) in differing.iter().enumerate() {
            assert_ne!(*k, base, "variant {i}");
        }
    }

    #[test]
    fn memo_returns_what_was_stored_and_drops_the_oldest_past_its_budget() {
        let one = entry_bytes(&trained(256, 0.0));
        let memo = FitMemo::new(3 * one);
        for i in 0..3u128 {
            memo.insert(FitKey(i), trained(256, i as f32));
        }
        assert_eq!(memo.len(), 3);
        assert_eq!(memo.get(FitKey(1)).map(|t| t.hyperplane.b), Some(1.0));
        memo.insert(FitKey(3), trained(256, 3.0));
        assert_eq!(memo.len(), 3);
        assert!(memo.get(FitKey(0)).is_none(), "the oldest entry leaves first");
        assert_eq!(memo.get(FitKey(3)).map(|t| t.hyperplane.b), Some(3.0));
        // An entry larger than the whole budget is not kept.
        memo.insert(FitKey(9), trained(4 * 256, 9.0));
        assert!(memo.get(FitKey(9)).is_none());
        assert!(!memo.is_empty());
    }
}
