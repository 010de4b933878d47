//! What the metrics keep while samples stream by, per category: everything needed to compute
//! every figure EXACTLY at the end, in a form two runs (or two shards of one run) can merge.
//!
//! - Mask sources: the confusion counts of every image (integers; pooled and per-image
//!   figures both come from them).
//! - Score sources: every pixel's score as an order-preserving u32 key, split into GT
//!   positives (with the size of their GT component, for PRO), negatives on anomalous images
//!   and negatives on good images; the number of GT components; each image's maximum score.
//!   Memory: 4 bytes per negative pixel, 8 per positive pixel, per score source (1,000 images
//!   of 224x224: about 200 MB). Sorting is a linear-time radix sort at the end.
//! - Image-score sources: each image's score.
//!
//! [`Accumulators::write`] stores all of it in one compact binary file (a JSON header plus
//! delta-coded sorted key lists); [`merge`] combines two of them exactly.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anoflow_sdk::state::{StateError, StateReader, StateWriter};
use serde::{Deserialize, Serialize};

use crate::{confusion::Counts, ranking};
use anoflow_imaging::mask::component_sizes;

/// What can go wrong while accumulating, merging or storing metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `what` is `mask`, `score map` or `image score`; `edge` the input edge (`node.port`).
    #[error(
        "sample `{sample}`: {what} `{edge}` is {found_h}x{found_w} (h x w) but its ground truth mask is {gt_h}x{gt_w}"
    )]
    SizeMismatch {
        sample: String,
        what: &'static str,
        edge: String,
        found_h: usize,
        found_w: usize,
        gt_h: usize,
        gt_w: usize,
    },
    #[error(
        "sample `{sample}`: {what} `{edge}` holds a non-finite value ({value}) at pixel {pixel}; scores must be numbers"
    )]
    NotFinite { sample: String, what: &'static str, edge: String, value: f64, pixel: usize },
    #[error("sample `{sample}` (category `{category}`): its {port} inputs are [{found}], but earlier samples of the category had [{expected}]")]
    SourcesChanged { sample: String, category: String, port: &'static str, found: String, expected: String },
    #[error("cannot merge: category `{category}` has {port} sources [{a}] in one result and [{b}] in the other")]
    MergeSources { category: String, port: &'static str, a: String, b: String },
    #[error("cannot merge: sample `{0}` is in both results (merging a shard twice?)")]
    DuplicateSample(String),
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// One test sample as the metrics saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub id: String,
    pub index: u64,
    pub defect: String,
    /// Anomalous by its label, or by a non-empty ground truth (so every GT pixel lies on an
    /// anomalous image, whatever the label says).
    pub anomalous: bool,
    pub height: u32,
    pub width: u32,
    /// Ground-truth pixels.
    pub gt_pixels: u64,
}

/// The pixel scores of one score source in one category.
#[derive(Clone, Debug, Default)]
pub struct ScoreAcc {
    /// GT pixels: key << 32 | size of the pixel's GT component.
    pub positives: Vec<u64>,
    /// Non-GT pixels of anomalous images.
    pub neg_anomalous: Vec<u32>,
    /// Pixels of good images.
    pub neg_good: Vec<u32>,
    /// GT components (8-connected) over all images.
    pub components: u64,
    /// Each sample's maximum score (aligned with the category's samples; `None` where the
    /// sample arrived without this source).
    pub image_max: Vec<Option<f32>>,
    sorted: bool,
}

impl ScoreAcc {
    /// Sorts the key lists (idempotent). The two big lists sort on two threads: this is the
    /// run's final reduction, not per-sample work.
    pub fn ensure_sorted(&mut self) {
        if !self.sorted {
            let (pos, na, ng) = (&mut self.positives, &mut self.neg_anomalous, &mut self.neg_good);
            std::thread::scope(|scope| {
                scope.spawn(|| ranking::sort_keys(na));
                ranking::sort_keys(ng);
                ranking::sort_positives(pos);
            });
            self.sorted = true;
        }
    }

    pub fn is_sorted(&self) -> bool {
        self.sorted
    }
}

/// An insertion-ordered map from source name (`node.port`) to its data: the order sources
/// were first seen is the order of the report's columns.
#[derive(Clone, Debug)]
pub struct Sources<T>(pub Vec<(String, T)>);

impl<T> Default for Sources<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Sources<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
    fn same_names(&self, names: &[&str]) -> bool {
        self.0.len() == names.len() && self.0.iter().zip(names).all(|((a, _), b)| a == b)
    }
}

/// Everything accumulated for one category.
#[derive(Clone, Debug, Default)]
pub struct CategoryAcc {
    pub samples: Vec<SampleRecord>,
    /// Per mask source, the counts of each sample (aligned with `samples`; `None` where the
    /// sample arrived without this source: its producer failed on it under `--keep-going`).
    pub masks: Sources<Vec<Option<Counts>>>,
    pub scores: Sources<ScoreAcc>,
    /// Per image-score source, each sample's score (aligned with `samples`; `None`: missing).
    pub image_scores: Sources<Vec<Option<f64>>>,
}

impl CategoryAcc {
    /// Samples each source lacks (a producer failed on them), by source, where any.
    pub fn missing(&self) -> Vec<(&str, u64)> {
        let count = |present: &mut dyn Iterator<Item = bool>| present.filter(|p| !p).count() as u64;
        let masks = self.masks.iter().map(|(n, v)| (n, count(&mut v.iter().map(Option::is_some))));
        let scores = self.scores.iter().map(|(n, a)| (n, count(&mut a.image_max.iter().map(Option::is_some))));
        let images = self.image_scores.iter().map(|(n, v)| (n, count(&mut v.iter().map(Option::is_some))));
        masks.chain(scores).chain(images).filter(|(_, c)| *c > 0).collect()
    }
}

/// The inputs of one sample, as the sinks read them. Each source is listed, with `None`
/// when the sample arrived without its value.
pub struct SampleView<'a> {
    pub id: &'a str,
    pub index: u64,
    pub category: &'a str,
    pub defect: &'a str,
    /// The dataset label: Some(true) anomalous, Some(false) nominal, None unknown.
    pub label: Option<bool>,
    pub gt: (&'a [u8], usize, usize),
    pub masks: Vec<(&'a str, Option<Plane<'a, u8>>)>,
    pub scores: Vec<(&'a str, Option<Plane<'a, f32>>)>,
    pub image_scores: Vec<(&'a str, Option<f64>)>,
}

/// One value of a spatial source: pixels, height, width.
pub type Plane<'a, T> = (&'a [T], usize, usize);

/// Accumulated metrics state of a run (or of several merged runs), by category.
#[derive(Clone, Debug, Default)]
pub struct Accumulators {
    pub categories: BTreeMap<String, CategoryAcc>,
}

fn join(names: &[&str]) -> String {
    names.join(", ")
}

impl Accumulators {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one test sample.
    pub fn add(&mut self, s: &SampleView<'_>) -> Result<(), MetricsError> {
        // Every check comes before any change, so a refused sample leaves no trace (the host
        // may offer it again without the refused input).
        let (gt, gh, gw) = s.gt;
        let size_check = |what: &'static str, edge: &str, h: usize, w: usize| {
            if (h, w) != (gh, gw) {
                Err(MetricsError::SizeMismatch {
                    sample: s.id.to_string(),
                    what,
                    edge: edge.to_string(),
                    found_h: h,
                    found_w: w,
                    gt_h: gh,
                    gt_w: gw,
                })
            } else {
                Ok(())
            }
        };
        for &(name, plane) in &s.masks {
            if let Some((_, h, w)) = plane {
                size_check("mask", name, h, w)?;
            }
        }
        for &(name, plane) in &s.scores {
            let Some((data, h, w)) = plane else { continue };
            size_check("score map", name, h, w)?;
            if let Some((pixel, &v)) = data.iter().enumerate().find(|(_, v)| v.is_nan()) {
                return Err(MetricsError::NotFinite {
                    sample: s.id.to_string(),
                    what: "score map",
                    edge: name.to_string(),
                    value: f64::from(v),
                    pixel,
                });
            }
        }
        for &(name, v) in &s.image_scores {
            if let Some(v) = v.filter(|v| v.is_nan()) {
                return Err(MetricsError::NotFinite {
                    sample: s.id.to_string(),
                    what: "image score",
                    edge: name.to_string(),
                    value: v,
                    pixel: 0,
                });
            }
        }

        let mask_names: Vec<&str> = s.masks.iter().map(|m| m.0).collect();
        let score_names: Vec<&str> = s.scores.iter().map(|m| m.0).collect();
        let image_names: Vec<&str> = s.image_scores.iter().map(|m| m.0).collect();
        if let Some(cat) = self.categories.get(s.category).filter(|c| !c.samples.is_empty()) {
            let changed = |port: &'static str, have: Vec<&str>, found: &[&str]| MetricsError::SourcesChanged {
                sample: s.id.to_string(),
                category: s.category.to_string(),
                port,
                found: join(found),
                expected: join(&have),
            };
            if !cat.masks.same_names(&mask_names) {
                return Err(changed("masks", cat.masks.names(), &mask_names));
            }
            if !cat.scores.same_names(&score_names) {
                return Err(changed("scores", cat.scores.names(), &score_names));
            }
            if !cat.image_scores.same_names(&image_names) {
                return Err(changed("image_scores", cat.image_scores.names(), &image_names));
            }
        }
        let cat = self.categories.entry(s.category.to_string()).or_default();
        if cat.samples.is_empty() {
            cat.masks = Sources(mask_names.iter().map(|n| (n.to_string(), Vec::new())).collect());
            cat.scores = Sources(score_names.iter().map(|n| (n.to_string(), ScoreAcc::default())).collect());
            cat.image_scores = Sources(image_names.iter().map(|n| (n.to_string(), Vec::new())).collect());
        }

        let gt_pixels = gt.iter().filter(|&&v| v != 0).count() as u64;
        let anomalous = s.label == Some(true) || gt_pixels > 0;
        for (&(_, plane), (_, counts)) in s.masks.iter().zip(cat.masks.0.iter_mut()) {
            counts.push(plane.map(|(data, _, _)| Counts::of(data, gt)));
        }
        if s.scores.iter().any(|(_, plane)| plane.is_some()) {
            let (sizes, n_components) = component_sizes(gt, gh, gw);
            for (&(_, plane), (_, acc)) in s.scores.iter().zip(cat.scores.0.iter_mut()) {
                let Some((data, _, _)) = plane else {
                    acc.image_max.push(None);
                    continue;
                };
                acc.sorted = false;
                acc.components += u64::from(n_components);
                acc.positives.reserve(gt_pixels as usize);
                let negatives = if anomalous { &mut acc.neg_anomalous } else { &mut acc.neg_good };
                negatives.reserve(data.len() - gt_pixels as usize);
                let mut max = f32::NEG_INFINITY;
                for ((&v, &g), &size) in data.iter().zip(gt).zip(&sizes) {
                    max = max.max(v);
                    let k = ranking::key(v);
                    if g != 0 {
                        acc.positives.push(ranking::pos_entry(k, size));
                    } else {
                        negatives.push(k);
                    }
                }
                acc.image_max.push(Some(max));
            }
        } else {
            cat.scores.0.iter_mut().for_each(|(_, acc)| acc.image_max.push(None));
        }
        for (&(_, v), (_, list)) in s.image_scores.iter().zip(cat.image_scores.0.iter_mut()) {
            list.push(v);
        }
        cat.samples.push(SampleRecord {
            id: s.id.to_string(),
            index: s.index,
            defect: s.defect.to_string(),
            anomalous,
            height: gh as u32,
            width: gw as u32,
            gt_pixels,
        });
        Ok(())
    }

    /// Sorts every score list (needed before computing or writing).
    pub fn ensure_sorted(&mut self) {
        for cat in self.categories.values_mut() {
            for (_, acc) in cat.scores.0.iter_mut() {
                acc.ensure_sorted();
            }
        }
    }
}

impl CategoryAcc {
    /// Puts the per-sample lists in sample order (index, then id): the order one unsharded
    /// run consumes them in, so sums over images (per-image means) add in the same order and
    /// merged shards give the unsharded figures bit for bit.
    fn sort_samples(&mut self) {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.sort_by(|&i, &j| {
            let (a, b) = (&self.samples[i], &self.samples[j]);
            (a.index, &a.id).cmp(&(b.index, &b.id))
        });
        if order.iter().enumerate().all(|(k, &i)| k == i) {
            return;
        }
        fn permute<T: Clone>(v: &mut Vec<T>, order: &[usize]) {
            *v = order.iter().map(|&i| v[i].clone()).collect();
        }
        permute(&mut self.samples, &order);
        for (_, counts) in self.masks.0.iter_mut() {
            permute(counts, &order);
        }
        for (_, values) in self.image_scores.0.iter_mut() {
            permute(values, &order);
        }
        for (_, acc) in self.scores.0.iter_mut() {
            permute(&mut acc.image_max, &order);
        }
    }
}

/// Merges two accumulators exactly: categories are united; within a category, the samples
/// of both are put in sample order (as one run over all of them would have seen them). Both
/// must have the same sources per category, and no sample may be in both.
pub fn merge(mut a: Accumulators, b: Accumulators) -> Result<Accumulators, MetricsError> {
    for (name, mut cb) in b.categories {
        let Some(ca) = a.categories.get_mut(&name) else {
            a.categories.insert(name, cb);
            continue;
        };
        let check = |port: &'static str, x: Vec<&str>, y: Vec<&str>| {
            if x == y {
                Ok(())
            } else {
                Err(MetricsError::MergeSources { category: name.clone(), port, a: join(&x), b: join(&y) })
            }
        };
        check("masks", ca.masks.names(), cb.masks.names())?;
        check("scores", ca.scores.names(), cb.scores.names())?;
        check("image_scores", ca.image_scores.names(), cb.image_scores.names())?;
        let ids: std::collections::HashSet<&str> = ca.samples.iter().map(|s| s.id.as_str()).collect();
        if let Some(dup) = cb.samples.iter().find(|s| ids.contains(s.id.as_str())) {
            return Err(MetricsError::DuplicateSample(dup.id.clone()));
        }
        ca.samples.append(&mut cb.samples);
        for ((_, x), (_, y)) in ca.masks.0.iter_mut().zip(cb.masks.0.iter_mut()) {
            x.append(y);
        }
        for ((_, x), (_, y)) in ca.image_scores.0.iter_mut().zip(cb.image_scores.0.iter_mut()) {
            x.append(y);
        }
        for ((_, x), (_, mut y)) in ca.scores.0.iter_mut().zip(cb.scores.0) {
            x.components += y.components;
            x.image_max.append(&mut y.image_max);
            if x.sorted && y.sorted {
                x.positives = ranking::merge_sorted(&x.positives, &y.positives);
                x.neg_anomalous = ranking::merge_sorted(&x.neg_anomalous, &y.neg_anomalous);
                x.neg_good = ranking::merge_sorted(&x.neg_good, &y.neg_good);
            } else {
                x.positives.append(&mut y.positives);
                x.neg_anomalous.append(&mut y.neg_anomalous);
                x.neg_good.append(&mut y.neg_good);
                x.sorted = false;
            }
        }
        ca.sort_samples();
    }
    Ok(a)
}

// ---- Binary storage -------------------------------------------------------------------

// In the SDK's state format: a JSON section `header` (categories, samples, per-sample
// lists, list lengths) and a byte section `keys` (the delta- and varint-coded ranking keys).
const STATE_NAME: &str = "metric-accumulators";
/// The layout of the two sections.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    categories: Vec<HeaderCategory>,
}

#[derive(Serialize, Deserialize)]
struct HeaderCategory {
    name: String,
    samples: Vec<SampleRecord>,
    masks: Vec<(String, Vec<Option<Counts>>)>,
    scores: Vec<HeaderScore>,
    /// f64 bit patterns, so the values round-trip exactly.
    image_scores: Vec<(String, Vec<Option<u64>>)>,
}

#[derive(Serialize, Deserialize)]
struct HeaderScore {
    source: String,
    components: u64,
    positives: u64,
    neg_anomalous: u64,
    neg_good: u64,
    /// f32 bit patterns of each sample's maximum score.
    image_max_bits: Vec<Option<u32>>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl Reader<'_> {
    fn err(&self, reason: impl Into<String>) -> MetricsError {
        MetricsError::Format { path: self.path.to_string(), reason: reason.into() }
    }
    fn take(&mut self, n: usize) -> Result<&[u8], MetricsError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.err(format!("truncated at byte {}", self.pos)))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn varint(&mut self) -> Result<u64, MetricsError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(format!("bad varint at byte {}", self.pos)))
    }
    fn keys(&mut self, n: u64) -> Result<Vec<u32>, MetricsError> {
        let mut out = Vec::with_capacity(n as usize);
        let mut prev = 0u64;
        for _ in 0..n {
            prev += self.varint()?;
            out.push(u32::try_from(prev).map_err(|_| self.err("key out of range"))?);
        }
        Ok(out)
    }
}

impl Accumulators {
    /// Serializes to the compact binary format (sorting first).
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, MetricsError> {
        self.ensure_sorted();
        let header = Header {
            format: format!("anoflow metric accumulators v{FORMAT_VERSION}"),
            categories: self
                .categories
                .iter()
                .map(|(name, c)| HeaderCategory {
                    name: name.clone(),
                    samples: c.samples.clone(),
                    masks: c.masks.0.clone(),
                    scores: c
                        .scores
                        .iter()
                        .map(|(s, a)| HeaderScore {
                            source: s.to_string(),
                            components: a.components,
                            positives: a.positives.len() as u64,
                            neg_anomalous: a.neg_anomalous.len() as u64,
                            neg_good: a.neg_good.len() as u64,
                            image_max_bits: a.image_max.iter().map(|v| v.map(f32::to_bits)).collect(),
                        })
                        .collect(),
                    image_scores: c
                        .image_scores
                        .iter()
                        .map(|(s, v)| (s.to_string(), v.iter().map(|x| x.map(f64::to_bits)).collect()))
                        .collect(),
                })
                .collect(),
        };
        // Serializing plain structs of strings and numbers cannot fail.
        let mut out = Vec::new();
        for c in self.categories.values() {
            for (_, a) in c.scores.iter() {
                let mut prev = 0u64;
                for &e in &a.positives {
                    let k = u64::from(ranking::pos_key(e));
                    put_varint(&mut out, k - prev);
                    put_varint(&mut out, u64::from(ranking::pos_size(e)));
                    prev = k;
                }
                for list in [&a.neg_anomalous, &a.neg_good] {
                    let mut prev = 0u64;
                    for &k in list.iter() {
                        put_varint(&mut out, u64::from(k) - prev);
                        prev = u64::from(k);
                    }
                }
            }
        }
        StateWriter::new(STATE_NAME, FORMAT_VERSION)
            .json("header", &header)
            .bytes("keys", &out)
            .finish()
            .map_err(|e| MetricsError::Format { path: "accumulators".into(), reason: e.to_string() })
    }

    /// Parses bytes written by [`Accumulators::to_bytes`]; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self, MetricsError> {
        let format = |e: StateError| MetricsError::Format { path: path.to_string(), reason: e.to_string() };
        let state = StateReader::parse(bytes, STATE_NAME, FORMAT_VERSION).map_err(format)?;
        let header: Header = state.json("header").map_err(format)?;
        let keys = state.bytes("keys").map_err(format)?;
        let mut r = Reader { bytes: keys, pos: 0, path };
        let mut acc = Accumulators::new();
        for hc in header.categories {
            let n = hc.samples.len();
            let aligned = hc.masks.iter().all(|(_, v)| v.len() == n)
                && hc.image_scores.iter().all(|(_, v)| v.len() == n)
                && hc.scores.iter().all(|s| s.image_max_bits.len() == n);
            if !aligned {
                return Err(r.err(format!("category `{}`: per-sample lists do not match {n} samples", hc.name)));
            }
            let mut cat = CategoryAcc {
                samples: hc.samples,
                masks: Sources(hc.masks),
                scores: Sources::default(),
                image_scores: Sources(
                    hc.image_scores
                        .into_iter()
                        .map(|(s, bits)| (s, bits.into_iter().map(|b| b.map(f64::from_bits)).collect()))
                        .collect(),
                ),
            };
            for hs in hc.scores {
                let mut positives = Vec::with_capacity(hs.positives as usize);
                let mut prev = 0u64;
                for _ in 0..hs.positives {
                    prev += r.varint()?;
                    let k = u32::try_from(prev).map_err(|_| r.err("key out of range"))?;
                    let size = u32::try_from(r.varint()?).map_err(|_| r.err("component size out of range"))?;
                    positives.push(ranking::pos_entry(k, size));
                }
                let neg_anomalous = r.keys(hs.neg_anomalous)?;
                let neg_good = r.keys(hs.neg_good)?;
                cat.scores.0.push((
                    hs.source,
                    ScoreAcc {
                        positives,
                        neg_anomalous,
                        neg_good,
                        components: hs.components,
                        image_max: hs.image_max_bits.into_iter().map(|b| b.map(f32::from_bits)).collect(),
                        sorted: true, // delta coding of non-negative steps: sorted by construction
                    },
                ));
            }
            acc.categories.insert(hc.name, cat);
        }
        if r.pos != keys.len() {
            return Err(r.err(format!("{} unexpected trailing bytes in the keys", keys.len() - r.pos)));
        }
        Ok(acc)
    }

    /// Writes the binary form atomically.
    pub fn write(&mut self, path: &Path) -> Result<(), MetricsError> {
        let bytes = self.to_bytes()?;
        anoflow_imaging::write_atomic(path, &bytes)
            .map_err(|e| MetricsError::Format { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Reads a file written by [`Accumulators::write`].
    pub fn read(path: &Path) -> Result<Self, MetricsError> {
        let name = path.display().to_string();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| MetricsError::Io { path: name.clone(), source })?;
        Self::from_bytes(&bytes, &name)
    }
}
