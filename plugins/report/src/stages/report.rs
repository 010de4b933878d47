//! The `report` sink: the comparison to look at, as one directory of static files. It keeps
//! the metric accumulators and, as samples stream by, a few panels per list (see [`List`]):
//! the first samples in test order, and per category and mask the anomalous images with the
//! lowest F1 and the good images with the largest false-positive area. `report_html.rs`
//! writes the pages (SVG charts from `anoflow-charts`), `report_panels.rs` the panel PNGs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anoflow_sdk::prelude::*;
use anoflow_seg_metrics::accumulate::{self, Accumulators};
use anoflow_seg_metrics::confusion::Counts;
use anoflow_seg_metrics::{relative_files, sample_view, ExpectedSources};
use serde::{Deserialize, Serialize};

use crate::{report_html, report_state};

/// The `report` sink.
pub struct Report;

/// Params of `report`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Panels in test order: anomalous samples first, then good ones.
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
    /// Per mask and category: the anomalous images with the lowest F1 and the good images with
    /// the largest false-positive area, as panels.
    #[serde(default = "default_failures")]
    pub failures: usize,
    /// Largest side of one panel tile in pixels (nearest-neighbour resize).
    #[serde(default = "default_tile")]
    #[schemars(range(min = 1))]
    pub tile: usize,
}

fn default_max_samples() -> usize {
    24
}
fn default_failures() -> usize {
    3
}
fn default_tile() -> usize {
    224
}

impl StagePlugin for Report {
    type Config = ReportConfig;
    type Stage = Box<dyn Sink>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new(
            "report",
            "visual comparison: F1 by category and binarizer against the oracle, PR curves per category, \
             the worst failures of each binarizer as panels, a page per category (index.html)",
        )
        .input("gt", ValueKind::Mask, "ground-truth mask")
        .optional_multi_input("masks", ValueKind::Mask, "binary masks to compare")
        .optional_multi_input("scores", ValueKind::ScoreMap, "anomaly score maps")
        .optional_multi_input("image_scores", ValueKind::Scalar, "image-level scores")
        .optional_input("image", ValueKind::Image, "the input image (first tile of each panel)")
    }

    fn create(config: ReportConfig, ctx: &CreateContext) -> StageResult<Box<dyn Sink>> {
        Ok(Box::new(ReportSink {
            expected: ExpectedSources::from_context(ctx),
            acc: Mutex::new(Accumulators::new()),
            max_samples: config.max_samples,
            failures: config.failures,
            tile: config.tile,
            lists: BTreeMap::new(),
        }))
    }
}

/// A sample kept for a panel, already shrunk to the tile size.
pub(crate) struct Kept {
    pub(crate) id: String,
    /// Position in the test listing: merged shards keep the panels one run would keep.
    pub(crate) index: u64,
    pub(crate) category: String,
    pub(crate) defect: String,
    pub(crate) anomalous: bool,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) image: Option<Vec<u8>>,
    pub(crate) scores: Vec<(String, Vec<f32>)>,
    /// Each mask (shrunk) with its confusion counts at full size.
    pub(crate) masks: Vec<(String, Vec<u8>, Counts)>,
    pub(crate) gt: Vec<u8>,
}

impl Kept {
    pub(crate) fn counts(&self, mask: &str) -> Option<Counts> {
        self.masks.iter().find(|m| m.0 == mask).map(|m| m.2)
    }
}

/// The lists of panels the sink keeps, each a bounded selection in a total order, so that the
/// shards of a run, merged, keep exactly the panels one run keeps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "list", rename_all = "kebab-case")]
pub(crate) enum List {
    /// The first `max_samples` anomalous samples in test order.
    FirstAnomalous,
    /// The first `max_samples` good samples in test order.
    FirstGood,
    /// In one category, the `failures` anomalous samples with the lowest F1 of this mask.
    Worst { category: String, mask: String },
    /// In one category, the `failures` good samples with the largest false-positive area of
    /// this mask (only those with some).
    FalsePositive { category: String, mask: String },
}

/// A sample's place in a list: by value, then a tie-break value, then test position, then id
/// (a total order).
#[derive(Clone, Debug)]
pub(crate) struct Rank {
    value: f64,
    then: f64,
    index: u64,
    id: String,
}

impl Ord for Rank {
    fn cmp(&self, o: &Self) -> Ordering {
        self.value
            .total_cmp(&o.value)
            .then(self.then.total_cmp(&o.then))
            .then(self.index.cmp(&o.index))
            .then_with(|| self.id.cmp(&o.id))
    }
}
impl PartialOrd for Rank {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Rank {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Rank {}

impl List {
    /// The sample's rank in this list (lower comes first), `None` if it does not belong.
    fn rank(&self, index: u64, id: &str, anomalous: bool, counts: &dyn Fn(&str) -> Option<Counts>) -> Option<Rank> {
        let (value, then) = match self {
            List::FirstAnomalous => (anomalous.then_some(0.0)?, 0.0),
            List::FirstGood => ((!anomalous).then_some(0.0)?, 0.0),
            // Among equal F1 (often 0), the larger missed defect first.
            List::Worst { mask, .. } => {
                let c = anomalous.then(|| counts(mask))??;
                (c.f1(), -(c.fn_ as f64))
            }
            List::FalsePositive { mask, .. } => {
                let c = (!anomalous).then(|| counts(mask))??;
                ((c.fp > 0).then(|| -c.fp_area())?, 0.0)
            }
        };
        Some(Rank { value, then, index, id: id.to_string() })
    }

    fn rank_of(&self, k: &Kept) -> Option<Rank> {
        self.rank(k.index, &k.id, k.anomalous, &|m| k.counts(m))
    }
}

/// Kept panels per list, each list in rank order.
pub(crate) type Lists = BTreeMap<List, Vec<(Rank, Arc<Kept>)>>;

struct ReportSink {
    /// Behind a lock only so that `save_state` (which takes `&self`) can sort the score
    /// lists in place, as the metrics sink does.
    acc: Mutex<Accumulators>,
    max_samples: usize,
    failures: usize,
    tile: usize,
    lists: Lists,
    expected: ExpectedSources,
}

/// Nearest-neighbour resampling of an `h x w x c` buffer to fit in `max x max`.
fn shrink<T: Copy>(data: &[T], h: usize, w: usize, c: usize, max: usize) -> (Vec<T>, usize, usize) {
    if h <= max && w <= max {
        return (data.to_vec(), h, w);
    }
    let scale = max as f64 / h.max(w) as f64;
    let (nh, nw) = (((h as f64 * scale).round() as usize).max(1), ((w as f64 * scale).round() as usize).max(1));
    let mut out = Vec::with_capacity(nh * nw * c);
    for y in 0..nh {
        let sy = ((y as f64 + 0.5) / scale) as usize;
        for x in 0..nw {
            let sx = ((x as f64 + 0.5) / scale) as usize;
            let i = (sy.min(h - 1) * w + sx.min(w - 1)) * c;
            out.extend_from_slice(&data[i..i + c]);
        }
    }
    (out, nh, nw)
}

/// The image as RGB8 at the ground truth's size (grey and RGBA converted; other sizes resampled).
fn image_rgb(img: &Image, h: usize, w: usize) -> Vec<u8> {
    let px = img.to_u8();
    let c = img.channels();
    let (ih, iw) = (img.height(), img.width());
    let mut out = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        let sy = y * ih / h;
        for x in 0..w {
            let i = (sy * iw + x * iw / w) * c;
            match c {
                1 | 2 => out.extend_from_slice(&[px[i]; 3]),
                _ => out.extend_from_slice(&px[i..i + 3]),
            }
        }
    }
    out
}

impl ReportSink {
    fn acc(&mut self) -> &mut Accumulators {
        self.acc.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn cap(&self, list: &List) -> usize {
        match list {
            List::FirstAnomalous | List::FirstGood => self.max_samples,
            List::Worst { .. } | List::FalsePositive { .. } => self.failures,
        }
    }

    /// Whether a sample of this rank would enter the list now.
    fn wants(&self, list: &List, rank: &Rank) -> bool {
        let cap = self.cap(list);
        match self.lists.get(list) {
            None => cap > 0,
            Some(v) => v.len() < cap || v.last().is_some_and(|(r, _)| rank < r),
        }
    }

    /// Inserts in rank order and drops what falls past the cap: inserting the union of two
    /// selections keeps the same panels as one selection over every sample.
    fn insert(&mut self, list: List, rank: Rank, kept: Arc<Kept>) {
        let cap = self.cap(&list);
        let v = self.lists.entry(list).or_default();
        let at = v.partition_point(|(r, _)| r < &rank);
        v.insert(at, (rank, kept));
        v.truncate(cap);
    }
}

impl Sink for ReportSink {
    fn consume(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let view = sample_view(sample, &self.expected)?;
        self.acc.get_mut().unwrap_or_else(PoisonError::into_inner).add(&view)?;
        let anomalous = view.label == Some(true) || view.gt.0.contains(&1);
        // Panels compare every source side by side: a sample lacking one gets none.
        let complete = view.masks.iter().all(|m| m.1.is_some()) && view.scores.iter().all(|s| s.1.is_some());
        if !complete {
            return Ok(());
        }
        let (gt, h, w) = view.gt;
        let counts: Vec<(&str, Counts)> =
            view.masks.iter().filter_map(|&(s, plane)| plane.map(|(d, _, _)| (s, Counts::of(d, gt)))).collect();
        let lookup = |name: &str| counts.iter().find(|c| c.0 == name).map(|c| c.1);
        let mut lists = vec![if anomalous { List::FirstAnomalous } else { List::FirstGood }];
        for &(mask, _) in &counts {
            let (category, mask) = (view.category.to_string(), mask.to_string());
            lists.push(if anomalous { List::Worst { category, mask } } else { List::FalsePositive { category, mask } });
        }
        let wanted: Vec<(List, Rank)> = lists
            .into_iter()
            .filter_map(|l| {
                let r = l.rank(view.index, view.id, anomalous, &lookup)?;
                self.wants(&l, &r).then_some((l, r))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let (gt_small, th, tw) = shrink(gt, h, w, 1, self.tile);
        let image = match sample.maybe("image") {
            Some(Value::Image(img)) => Some(shrink(&image_rgb(img, h, w), h, w, 3, self.tile).0),
            _ => None,
        };
        let kept = Arc::new(Kept {
            id: view.id.to_string(),
            index: view.index,
            category: view.category.to_string(),
            defect: view.defect.to_string(),
            anomalous,
            h: th,
            w: tw,
            image,
            scores: view
                .scores
                .iter()
                .filter_map(|&(s, plane)| plane.map(|(d, _, _)| (s.to_string(), shrink(d, h, w, 1, self.tile).0)))
                .collect(),
            masks: view
                .masks
                .iter()
                .filter_map(|&(s, plane)| {
                    let c = lookup(s)?;
                    plane.map(|(d, _, _)| (s.to_string(), shrink(d, h, w, 1, self.tile).0, c))
                })
                .collect(),
            gt: gt_small,
        });
        for (list, rank) in wanted {
            self.insert(list, rank, Arc::clone(&kept));
        }
        Ok(())
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let acc = self.acc.lock().unwrap_or_else(PoisonError::into_inner).to_bytes()?;
        // Each kept sample once, with every list it is in.
        let mut panels: BTreeMap<(u64, &str), (&Kept, Vec<List>)> = BTreeMap::new();
        for (list, v) in &self.lists {
            for (_, k) in v {
                panels.entry((k.index, k.id.as_str())).or_insert_with(|| (k, Vec::new())).1.push(list.clone());
            }
        }
        let panels: Vec<(&Kept, Vec<List>)> = panels.into_values().collect();
        Ok(report_state::encode(&acc, &panels)?)
    }

    /// Adds another shard's state: its panels enter each list they were in, in rank order,
    /// so the lists hold what one unsharded run keeps.
    fn merge_state(&mut self, state: &[u8]) -> StageResult<()> {
        let (other, panels) = report_state::decode(state)?;
        let acc = self.acc();
        *acc = accumulate::merge(std::mem::take(acc), other)?;
        for (kept, lists) in panels {
            let kept = Arc::new(kept);
            for list in lists {
                if let Some(rank) = list.rank_of(&kept) {
                    self.insert(list, rank, Arc::clone(&kept));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &FinishContext) -> StageResult<SinkReport> {
        let dir = Path::new(ctx.out_dir.as_str());
        let node = ctx.node_id.to_string();
        let (max_samples, failures) = (self.max_samples, self.failures);
        let lists = std::mem::take(&mut self.lists);
        let written = report_html::write_all(dir, self.acc(), &lists, max_samples, failures)
            .map_err(|e| StageError::from(e).context(format!("node `{node}`")))?;
        let markdown = format!(
            "report: {}/index.html ({} sample panels, {} category pages)\n",
            dir.display(),
            written.panels,
            written.category_pages
        );
        Ok(SinkReport {
            markdown: markdown.into(),
            json: "null".into(),
            files: relative_files(dir, written.files),
            headline: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{scratch_dir, StageHarness};
    use anoflow_sdk::value::PortValue;
    use anoflow_seg_metrics::testing::realistic;

    /// Every `src="..."` and `href="..."` of a page, resolved from the page's directory.
    fn links(page: &Path) -> Vec<std::path::PathBuf> {
        let html = std::fs::read_to_string(page).unwrap();
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                out.push(page.parent().unwrap().join(target));
            }
        }
        out
    }

    fn with_image(i: usize, mut inputs: Vec<PortValue>) -> Vec<PortValue> {
        let img: Vec<u8> = (0..224 * 224 * 3).map(|p| ((p / 3 + i * 7) % 251) as u8).collect();
        inputs.push(anoflow_seg_metrics::testing::port(
            "image",
            "data.image",
            Image::from_u8(224, 224, 3, img).unwrap().into(),
        ));
        inputs
    }

    /// The F1 of `mask` on each anomalous sample of `category`, computed from the inputs, in
    /// the order the report ranks them.
    fn f1s(samples: &[(SampleMeta, Vec<PortValue>)], category: &str, mask: &str) -> Vec<(f64, String)> {
        let plane = |inputs: &[PortValue], source: &str| match &inputs
            .iter()
            .find(|p| p.source.as_str() == source)
            .unwrap()
            .value
        {
            Value::Mask(m) => m.data().to_vec(),
            _ => unreachable!(),
        };
        let mut out: Vec<(Counts, String)> = samples
            .iter()
            .filter(|(m, _)| m.category.as_str() == category && m.label == LABEL_ANOMALOUS)
            .map(|(m, inputs)| (Counts::of(&plane(inputs, mask), &plane(inputs, "data.mask")), m.id.to_string()))
            .collect();
        // Lowest F1 first; among equal F1 the larger missed area; then test order (stable).
        out.sort_by(|a, b| a.0.f1().total_cmp(&b.0.f1()).then(b.0.fn_.cmp(&a.0.fn_)));
        out.into_iter().map(|(c, id)| (c.f1(), id)).collect()
    }

    #[test]
    fn report_writes_linked_pages_named_charts_and_the_worst_failures() {
        let mut h = StageHarness::new::<Report>(serde_json::json!({"max_samples": 5, "failures": 2})).unwrap();
        let samples = realistic(12, &["bottle", "cable"], 3);
        for (i, (m, inputs)) in samples.iter().enumerate() {
            h.consume(m, with_image(i, inputs.clone())).unwrap();
        }
        let dir = scratch_dir("report");
        let rep = h.finish(&dir).unwrap();
        for page in ["index.html", "categories/bottle.html", "categories/cable.html"] {
            assert!(dir.join(page).is_file(), "{page}");
            assert!(rep.files.iter().any(|f| f.ends_with(page)), "{page} listed");
            for target in links(&dir.join(page)) {
                assert!(target.is_file(), "{page} links {} which is missing", target.display());
            }
        }
        let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
        for chart in ["charts/f1.svg", "charts/fp_area.svg", "charts/pr_all.svg"] {
            assert!(index.contains(&format!("src=\"{chart}\"")), "index shows {chart}");
        }
        // Charts name their series: masks, score maps and the oracle reference.
        let f1 = std::fs::read_to_string(dir.join("charts/f1.svg")).unwrap();
        for name in ["thr", "ttt", "oracle F1-max: scorer", "bottle", "cable", "mean"] {
            assert!(f1.contains(&format!(">\n{name}\n</text>")), "f1.svg names {name}");
        }
        let pr = std::fs::read_to_string(dir.join("charts/pr_bottle.svg")).unwrap();
        assert!(pr.contains(">\nthr (mask)\n</text>") && pr.contains(">\nscorer (score map)\n</text>"));
        assert!(index.contains("class=\"win\"") && index.contains("oracle F1-max (scorer)"));
        // The worst thr failure of bottle: its lowest-F1 anomalous sample, first on its page.
        let bottle = std::fs::read_to_string(dir.join("categories/bottle.html")).unwrap();
        let worst = f1s(&samples, "bottle", "thr.mask");
        let thr = &bottle[bottle.find("<h3>thr</h3>").unwrap()..bottle.find("<h3>ttt</h3>").unwrap()];
        let first_panel = &thr[thr.find("<b>").unwrap() + 3..];
        assert!(first_panel.starts_with(&format!("{}</b>", worst[0].1)), "{:?} vs {}", worst, &first_panel[..40]);
        assert!(first_panel.contains(&format!("thr: F1 {:.3}", worst[0].0)));
        assert_eq!(thr.split("Good images").next().unwrap().matches("class=\"panel\"").count(), 2);
        // Panels in test order: 5, anomalous first; no text in the raster, captions are HTML.
        assert!(index.contains("<span style=\"width:224px\">mask: thr</span>"));
        let panels: Vec<&str> = rep.files.iter().map(|f| f.as_str()).filter(|f| f.ends_with("_all.png")).collect();
        assert_eq!(panels.len(), 5, "{panels:?}");
        let bytes = std::fs::read(dir.join("panels/00001_cable_001_all.png")).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        // image, 1 score map, 2 masks, GT = 5 tiles of 224 with 6 px gaps.
        assert_eq!((reader.info().width, reader.info().height), (5 * 224 + 4 * 6, 224));
    }

    #[test]
    fn two_masks_of_one_node_get_their_own_panels() {
        let mut h = StageHarness::new::<Report>(serde_json::json!({"max_samples": 0, "failures": 1})).unwrap();
        for (m, mut inputs) in realistic(3, &["bottle"], 2) {
            for p in inputs.iter_mut().filter(|p| p.source.as_str() == "ttt.mask") {
                p.source = "thr.coarse".into();
            }
            h.consume(&m, inputs).unwrap();
        }
        let dir = scratch_dir("report-one-node");
        let rep = h.finish(&dir).unwrap();
        let worst = |tag: &str| {
            let f = rep.files.iter().find(|f| f.ends_with(&format!("_{tag}.png"))).unwrap_or_else(|| panic!("{tag}"));
            std::fs::read(dir.join(f.split_once('/').unwrap().1)).unwrap()
        };
        assert_ne!(worst("thr_mask"), worst("thr_coarse"), "each mask's own overlay");
    }

    #[test]
    fn good_images_rank_by_false_positive_area_and_clean_ones_are_left_out() {
        let mut h = StageHarness::new::<Report>(serde_json::json!({"max_samples": 0, "failures": 5})).unwrap();
        let samples = realistic(12, &["bottle"], 4);
        for (m, inputs) in &samples {
            h.consume(m, inputs.clone()).unwrap();
        }
        let dir = scratch_dir("report-fp");
        h.finish(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("categories/bottle.html")).unwrap();
        // realistic(): thr (> 0.55) marks nothing on good images, ttt (> 0.4) does.
        let thr = &page[page.find("<h3>thr</h3>").unwrap()..page.find("<h3>ttt</h3>").unwrap()];
        assert!(thr.contains("no false positive on any good image"));
        let ttt = &page[page.find("<h3>ttt</h3>").unwrap()..];
        let good = &ttt[ttt.find("Good images").unwrap()..];
        let areas: Vec<f64> =
            good.split("ttt: FP area ").skip(1).map(|s| s[..s.find('%').unwrap()].parse().unwrap()).collect();
        assert!(!areas.is_empty(), "{good}");
        assert!(areas.windows(2).all(|w| w[0] >= w[1]), "largest first: {areas:?}");
        assert!(areas.len() <= 4 && areas.iter().all(|&a| a > 0.0), "4 good images at most: {areas:?}");
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use anoflow_sdk::harness::{scratch_dir, StageHarness};
    use anoflow_seg_metrics::testing::realistic;

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["", "charts", "panels", "categories"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
                if e.path().is_file() {
                    out.push((format!("{sub}/{}", e.file_name().to_string_lossy()), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// Three interleaved shards of a report merged through their states write the same
    /// panels, charts and index.html as one run over every sample.
    #[test]
    fn shards_of_a_report_merge_into_the_report_of_one_run() {
        let samples = realistic(20, &["bottle", "cable"], 5);
        // 20 samples, 13 anomalous: 16 panels take every anomalous one and the first 3 good;
        // per category and mask, the 2 worst anomalous and the 2 good with most false positives.
        let params = serde_json::json!({"max_samples": 16, "failures": 2, "tile": 64});
        let mut whole = StageHarness::new::<Report>(params.clone()).unwrap();
        for (m, inputs) in &samples {
            whole.consume(m, inputs.clone()).unwrap();
        }
        let whole_dir = scratch_dir("report-whole");
        whole.finish(&whole_dir).unwrap();

        let mut merged = StageHarness::new::<Report>(params.clone()).unwrap();
        for shard in 0..3 {
            let mut h = StageHarness::new::<Report>(params.clone()).unwrap();
            for (m, inputs) in samples.iter().filter(|(m, _)| m.index % 3 == shard) {
                h.consume(m, inputs.clone()).unwrap();
            }
            merged.load_state(h.save_state().unwrap()).unwrap();
        }
        let merged_dir = scratch_dir("report-merged");
        merged.finish(&merged_dir).unwrap();
        let (a, b) = (files(&whole_dir), files(&merged_dir));
        assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), b.iter().map(|f| &f.0).collect::<Vec<_>>());
        let count = |dir: &str| a.iter().filter(|f| f.0.starts_with(dir)).count();
        assert_eq!(count("charts/"), 5, "f1, fp area, pooled and 2 per-category PR charts");
        assert_eq!(count("categories/"), 2);
        assert!(count("panels/") > 16, "16 panels in test order and the failures: {}", count("panels/"));
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "{name} differs between the merged shards and one run");
        }
    }

    #[test]
    fn a_corrupt_report_state_is_refused() {
        let mut h = StageHarness::new::<Report>(serde_json::json!({"max_samples": 2})).unwrap();
        for (m, inputs) in realistic(3, &["c"], 1) {
            h.consume(&m, inputs).unwrap();
        }
        let state = h.save_state().unwrap();
        let mut other = StageHarness::new::<Report>(serde_json::json!({})).unwrap();
        assert!(other.load_state(state[..state.len() - 5].to_vec()).is_err());
        assert!(other.load_state(b"ANOFLACC junk".to_vec()).is_err());
    }
}
