//! Figures computed from [`Accumulators`]: a flat list of labelled records (one number each),
//! written as results.json, results.csv and a Markdown comparison table.
//!
//! Every record says whether it is `deployable` (a figure of a mask the pipeline produced
//! without ground truth: what a user would get on a production line) or `oracle` (anything
//! that depends on the ground truth beyond scoring a fixed output: F1-max picks its threshold
//! with the ground truth; AUROC and AUPRO summarize all thresholds, none of which a deployed
//! system could pick without labels).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulators, CategoryAcc, MetricsError, ScoreAcc};
use crate::confusion::Counts;
use crate::ranking;

pub const SCHEMA: &str = "anoflow.segmentation-metrics/1";
/// The category name of the rows averaged over categories.
pub const MEAN: &str = "mean";

pub const DEPLOYABLE: &str = "deployable";
pub const ORACLE: &str = "oracle";

/// One figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A category, or `mean` (the unweighted mean over the categories where it is defined).
    pub category: String,
    /// The input edge, `node.port`.
    pub source: String,
    /// `mask`, `score` or `image_score`.
    pub source_kind: String,
    /// precision, recall, f1, iou, fp_area, good_images_with_fp, pixel_auroc, aupro, image_auroc,
    /// f1_max, f1_max_precision, f1_max_recall, f1_max_threshold.
    pub metric: String,
    /// Test images the figure is over: `anomalous`, `all` or `good`.
    pub subset: String,
    /// `pixels` (pooled over every pixel of the subset), `image-mean` (computed per image,
    /// then averaged) or `images` (one value per image, e.g. image AUROC).
    pub pooling: String,
    /// `deployable` or `oracle` (see the module docs).
    pub regime: String,
    /// `null` when undefined (e.g. AUROC with no anomalous image).
    pub value: Option<f64>,
    /// Images behind the figure (for `mean` rows: categories averaged).
    pub n: u64,
}

/// All figures of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub fpr_limit: f64,
    pub categories: Vec<String>,
    pub mask_sources: Vec<String>,
    pub score_sources: Vec<String>,
    pub image_score_sources: Vec<String>,
    /// For each score source, where its image AUROC comes from: a paired `image_scores`
    /// source of the same node, or `max` (the maximum of the score map).
    pub image_score_origin: BTreeMap<String, String>,
    pub records: Vec<Record>,
    /// Per source and category, the test samples that arrived without the source's value (a
    /// stage failed on them under `--keep-going`); the source's figures leave them out.
    /// Absent when every source has every sample.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Results {
    /// The value of one figure, if present and defined.
    pub fn get(&self, category: &str, source: &str, metric: &str, subset: &str, pooling: &str) -> Option<f64> {
        self.records
            .iter()
            .find(|r| {
                r.category == category
                    && r.source == source
                    && r.metric == metric
                    && r.subset == subset
                    && r.pooling == pooling
            })
            .and_then(|r| r.value)
    }
}

fn node_of(source: &str) -> &str {
    source.split('.').next().unwrap_or(source)
}

struct Out<'a> {
    records: &'a mut Vec<Record>,
    category: &'a str,
    source: &'a str,
    kind: &'a str,
}

impl Out<'_> {
    fn push(&mut self, metric: &str, subset: &str, pooling: &str, regime: &str, value: Option<f64>, n: u64) {
        self.records.push(Record {
            category: self.category.to_string(),
            source: self.source.to_string(),
            source_kind: self.kind.to_string(),
            metric: metric.to_string(),
            subset: subset.to_string(),
            pooling: pooling.to_string(),
            regime: regime.to_string(),
            value,
            n,
        });
    }
}

/// Figures of one mask source over the samples it has (a sample it lacks is not counted).
fn mask_records(out: &mut Out<'_>, cat: &CategoryAcc, counts: &[Option<Counts>]) {
    type Ratio = fn(&Counts) -> f64;
    let ratios: [(&str, Ratio); 4] =
        [("precision", Counts::precision), ("recall", Counts::recall), ("f1", Counts::f1), ("iou", Counts::iou)];
    let present = || counts.iter().zip(&cat.samples).filter_map(|(c, s)| c.as_ref().map(|c| (c, s)));
    for subset in ["anomalous", "all"] {
        let chosen: Vec<&Counts> = present().filter(|(_, s)| subset == "all" || s.anomalous).map(|(c, _)| c).collect();
        let n = chosen.len() as u64;
        let mut pooled = Counts::default();
        chosen.iter().for_each(|c| pooled.add(c));
        for (name, f) in ratios {
            let pixel = (n > 0).then(|| f(&pooled));
            out.push(name, subset, "pixels", DEPLOYABLE, pixel, n);
            let mean = (n > 0).then(|| chosen.iter().map(|c| f(c)).sum::<f64>() / n as f64);
            out.push(name, subset, "image-mean", DEPLOYABLE, mean, n);
        }
    }
    let good: Vec<&Counts> = present().filter(|(_, s)| !s.anomalous).map(|(c, _)| c).collect();
    let n = good.len() as u64;
    let mut pooled = Counts::default();
    good.iter().for_each(|c| pooled.add(c));
    out.push("fp_area", "good", "pixels", DEPLOYABLE, (n > 0).then(|| pooled.fp_area()), n);
    let mean = (n > 0).then(|| good.iter().map(|c| c.fp_area()).sum::<f64>() / n as f64);
    out.push("fp_area", "good", "image-mean", DEPLOYABLE, mean, n);
    let with_fp = (n > 0).then(|| good.iter().filter(|c| c.fp > 0).count() as f64 / n as f64);
    out.push("good_images_with_fp", "good", "images", DEPLOYABLE, with_fp, n);
}

/// Figures of one score source over the samples it has; `image_scores` per sample (`None`
/// where missing) give its image AUROC.
fn score_records(out: &mut Out<'_>, cat: &CategoryAcc, acc: &ScoreAcc, image_scores: &[Option<f64>], fpr_limit: f64) {
    let present = || acc.image_max.iter().zip(&cat.samples).filter(|(m, _)| m.is_some()).map(|(_, s)| s);
    let n_all = present().count() as u64;
    let n_anom = present().filter(|s| s.anomalous).count() as u64;
    let neg = ranking::Negatives { anomalous: &acc.neg_anomalous, good: &acc.neg_good };
    let sum = ranking::summarize(&acc.positives, neg, acc.components, fpr_limit);
    out.push("pixel_auroc", "all", "pixels", ORACLE, sum.auroc, n_all);
    out.push("aupro", "all", "pixels", ORACLE, sum.aupro, n_all);
    for (subset, best, n) in [("all", sum.f1_max, n_all), ("anomalous", sum.f1_max_anomalous, n_anom)] {
        out.push("f1_max", subset, "pixels", ORACLE, best.map(|b| b.f1), n);
        out.push("f1_max_precision", subset, "pixels", ORACLE, best.map(|b| b.precision), n);
        out.push("f1_max_recall", subset, "pixels", ORACLE, best.map(|b| b.recall), n);
        out.push("f1_max_threshold", subset, "pixels", ORACLE, best.map(|b| f64::from(b.threshold)), n);
    }
    let (scores, labels) = scored(image_scores, cat);
    out.push("image_auroc", "all", "images", ORACLE, ranking::auroc_f64(&scores, &labels), scores.len() as u64);
}

/// The image scores a source has, with the labels of their samples.
fn scored(image_scores: &[Option<f64>], cat: &CategoryAcc) -> (Vec<f64>, Vec<bool>) {
    image_scores.iter().zip(&cat.samples).filter_map(|(v, s)| v.map(|v| (v, s.anomalous))).unzip()
}

/// Computes every figure (sorting the score lists first).
pub fn compute(acc: &mut Accumulators, fpr_limit: f64) -> Results {
    acc.ensure_sorted();
    let mut records = Vec::new();
    let mut mask_sources: Vec<String> = Vec::new();
    let mut score_sources: Vec<String> = Vec::new();
    let mut image_score_sources: Vec<String> = Vec::new();
    let mut origin = BTreeMap::new();
    let mut missing: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let add_unique = |list: &mut Vec<String>, names: Vec<&str>| {
        for n in names {
            if !list.iter().any(|x| x == n) {
                list.push(n.to_string());
            }
        }
    };
    for (category, cat) in &acc.categories {
        add_unique(&mut mask_sources, cat.masks.names());
        add_unique(&mut score_sources, cat.scores.names());
        add_unique(&mut image_score_sources, cat.image_scores.names());
        for (source, counts) in cat.masks.iter() {
            mask_records(&mut Out { records: &mut records, category, source, kind: "mask" }, cat, counts);
        }
        let mut paired: Vec<&str> = Vec::new();
        for (source, sacc) in cat.scores.iter() {
            let pair = cat.image_scores.iter().find(|(name, _)| node_of(name) == node_of(source));
            let image_scores: Vec<Option<f64>> = match pair {
                Some((name, v)) => {
                    paired.push(name);
                    origin.insert(source.to_string(), name.to_string());
                    v.clone()
                }
                None => {
                    origin.insert(source.to_string(), "max".to_string());
                    sacc.image_max.iter().map(|v| v.map(f64::from)).collect()
                }
            };
            let mut out = Out { records: &mut records, category, source, kind: "score" };
            score_records(&mut out, cat, sacc, &image_scores, fpr_limit);
        }
        for (source, v) in cat.image_scores.iter().filter(|(n, _)| !paired.contains(n)) {
            let (scores, labels) = scored(v, cat);
            let mut out = Out { records: &mut records, category, source, kind: "image_score" };
            out.push("image_auroc", "all", "images", ORACLE, ranking::auroc_f64(&scores, &labels), scores.len() as u64);
        }
        for (source, n) in cat.missing() {
            missing.entry(source.to_string()).or_default().insert(category.clone(), n);
        }
    }
    // Means over categories, keyed by everything but the category, in first-seen order.
    let mut means: Vec<(Record, f64, u64)> = Vec::new();
    for r in &records {
        let pos = means.iter().position(|(m, _, _)| {
            m.source == r.source && m.metric == r.metric && m.subset == r.subset && m.pooling == r.pooling
        });
        let i = pos.unwrap_or_else(|| {
            means.push((Record { category: MEAN.to_string(), value: None, n: 0, ..r.clone() }, 0.0, 0));
            means.len() - 1
        });
        if let Some(v) = r.value {
            means[i].1 += v;
            means[i].2 += 1;
        }
    }
    records.extend(means.into_iter().map(|(mut m, sum, n)| {
        m.value = (n > 0).then(|| sum / n as f64);
        m.n = n;
        m
    }));
    Results {
        schema: SCHEMA.to_string(),
        fpr_limit,
        categories: acc.categories.keys().cloned().collect(),
        mask_sources,
        score_sources,
        image_score_sources,
        image_score_origin: origin,
        records,
        missing,
    }
}

// ---- Writers ----------------------------------------------------------------------------

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

/// Short column titles: the node name when it is unique among the sources, else `node.port`.
pub fn short_names(sources: &[String]) -> Vec<String> {
    sources
        .iter()
        .map(|s| {
            let node = node_of(s);
            let unique = sources.iter().filter(|o| node_of(o) == node).count() == 1;
            if unique {
                node.to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

fn table(
    out: &mut String,
    res: &Results,
    sources: &[String],
    metric: &str,
    subset: &str,
    pooling: &str,
) -> std::fmt::Result {
    let titles = short_names(sources);
    writeln!(out, "| category | {} |", titles.join(" | "))?;
    writeln!(out, "|---|{}", "---:|".repeat(sources.len()))?;
    for cat in res.categories.iter().map(String::as_str).chain([MEAN]) {
        let cells: Vec<String> = sources.iter().map(|s| fmt(res.get(cat, s, metric, subset, pooling))).collect();
        let name = if cat == MEAN { "**mean**".to_string() } else { cat.to_string() };
        writeln!(out, "| {name} | {} |", cells.join(" | "))?;
    }
    writeln!(out)
}

/// The Markdown summary: masks side by side (F1 first), then the score maps.
pub fn markdown(res: &Results) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_markdown(&mut out, res);
    out
}

fn write_markdown(out: &mut String, res: &Results) -> std::fmt::Result {
    if !res.mask_sources.is_empty() {
        writeln!(out, "### Pixel F1 of the masks (deployable), anomalous test images, pooled over pixels\n")?;
        table(out, res, &res.mask_sources, "f1", "anomalous", "pixels")?;
        writeln!(out, "### Pixel IoU of the masks (deployable), anomalous test images, pooled over pixels\n")?;
        table(out, res, &res.mask_sources, "iou", "anomalous", "pixels")?;
        writeln!(out, "### Masks, mean over categories (deployable)\n")?;
        let titles = short_names(&res.mask_sources);
        writeln!(out, "| figure | {} |", titles.join(" | "))?;
        writeln!(out, "|---|{}", "---:|".repeat(titles.len()))?;
        let rows: [(&str, &str, &str, &str); 11] = [
            ("precision, anomalous, pixels", "precision", "anomalous", "pixels"),
            ("recall, anomalous, pixels", "recall", "anomalous", "pixels"),
            ("F1, anomalous, pixels", "f1", "anomalous", "pixels"),
            ("F1, anomalous, per-image mean", "f1", "anomalous", "image-mean"),
            ("IoU, anomalous, pixels", "iou", "anomalous", "pixels"),
            ("IoU, anomalous, per-image mean", "iou", "anomalous", "image-mean"),
            ("F1, all images, pixels", "f1", "all", "pixels"),
            ("F1, all images, per-image mean", "f1", "all", "image-mean"),
            ("IoU, all images, pixels", "iou", "all", "pixels"),
            ("false-positive area on good images", "fp_area", "good", "pixels"),
            ("good images with any false positive", "good_images_with_fp", "good", "images"),
        ];
        for (label, metric, subset, pooling) in rows {
            let cells: Vec<String> =
                res.mask_sources.iter().map(|s| fmt(res.get(MEAN, s, metric, subset, pooling))).collect();
            writeln!(out, "| {label} | {} |", cells.join(" | "))?;
        }
        writeln!(out)?;
    }
    if !res.score_sources.is_empty() {
        writeln!(
            out,
            "### Score maps (oracle: threshold-free or threshold chosen with the ground truth)\n\n\
             AUPRO integrated up to FPR {}, normalized; PRO over 8-connected GT components. \
             F1-max over all test images' pixels.\n",
            res.fpr_limit
        )?;
        writeln!(out, "| category | source | pixel AUROC | AUPRO | image AUROC | F1-max | F1-max (anomalous) |")?;
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
        let titles = short_names(&res.score_sources);
        for cat in res.categories.iter().map(String::as_str).chain([MEAN]) {
            for (s, title) in res.score_sources.iter().zip(&titles) {
                let g = |m: &str, sub: &str, p: &str| fmt(res.get(cat, s, m, sub, p));
                let name = if cat == MEAN { "**mean**".to_string() } else { cat.to_string() };
                writeln!(
                    out,
                    "| {name} | {title} | {} | {} | {} | {} | {} |",
                    g("pixel_auroc", "all", "pixels"),
                    g("aupro", "all", "pixels"),
                    g("image_auroc", "all", "images"),
                    g("f1_max", "all", "pixels"),
                    g("f1_max", "anomalous", "pixels"),
                )?;
            }
        }
        writeln!(out)?;
    }
    let lone: Vec<&String> =
        res.image_score_sources.iter().filter(|s| !res.image_score_origin.values().any(|o| o == *s)).collect();
    if !lone.is_empty() {
        writeln!(out, "### Image scores (oracle)\n\n| source | image AUROC (mean over categories) |\n|---|---:|")?;
        for s in lone {
            writeln!(out, "| {s} | {} |", fmt(res.get(MEAN, s, "image_auroc", "all", "images")))?;
        }
        writeln!(out)?;
    }
    if !res.missing.is_empty() {
        writeln!(
            out,
            "### Samples missing per source

A stage failed on these test samples (`--keep-going`); the \
             source's figures above leave them out, every other source's include them.\n"
        )?;
        writeln!(out, "| source | category | samples missing |\n|---|---|---:|")?;
        for (source, per_category) in &res.missing {
            for (category, n) in per_category {
                writeln!(out, "| {source} | {category} | {n} |")?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One line per record.
pub fn csv(res: &Results) -> String {
    let mut out = String::from("category,source,source_kind,metric,subset,pooling,regime,value,n\n");
    for r in &res.records {
        let value = r.value.map_or_else(String::new, |v| format!("{v}"));
        let fields = [&r.category, &r.source, &r.source_kind, &r.metric, &r.subset, &r.pooling, &r.regime];
        let text: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&format!("{},{value},{}\n", text.join(","), r.n));
    }
    out
}

/// One line per test sample and figure: each image-score source's score, each score map's
/// maximum and each mask's confusion counts, beside the sample's label, defect type and
/// ground-truth area. Says which images a scorer missed, which a whole-run AUROC cannot.
pub fn samples_csv(acc: &Accumulators) -> String {
    let mut out = String::from("category,sample,defect,anomalous,gt_pixels,source,figure,value\n");
    for (category, cat) in &acc.categories {
        let mut order: Vec<usize> = (0..cat.samples.len()).collect();
        order.sort_by(|&a, &b| cat.samples[a].id.cmp(&cat.samples[b].id));
        for i in order {
            let s = &cat.samples[i];
            let head = format!(
                "{},{},{},{},{}",
                csv_field(category),
                csv_field(&s.id),
                csv_field(&s.defect),
                s.anomalous,
                s.gt_pixels
            );
            let mut line = |source: &str, figure: &str, value: String| {
                let _ = writeln!(out, "{head},{},{figure},{value}", csv_field(source));
            };
            // A source the sample arrived without: one `missing` line.
            for (source, scores) in cat.image_scores.iter() {
                match scores[i] {
                    Some(v) => line(source, "image_score", format!("{v}")),
                    None => line(source, "missing", "1".into()),
                }
            }
            for (source, acc) in cat.scores.iter() {
                match acc.image_max[i] {
                    Some(v) => line(source, "map_max", format!("{v}")),
                    None => line(source, "missing", "1".into()),
                }
            }
            for (source, counts) in cat.masks.iter() {
                let Some(c) = counts[i] else {
                    line(source, "missing", "1".into());
                    continue;
                };
                line(source, "tp", c.tp.to_string());
                line(source, "fp", c.fp.to_string());
                line(source, "fn", c.fn_.to_string());
            }
        }
    }
    out
}

pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<String, MetricsError> {
    let path = dir.join(name);
    anoflow_imaging::write_atomic(&path, bytes)
        .map_err(|e| MetricsError::Format { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(name.to_string())
}

/// Writes results.json, results.csv and results.md into `dir`; returns the file names.
pub fn write_results(dir: &Path, res: &Results) -> Result<Vec<String>, MetricsError> {
    let json = serde_json::to_vec_pretty(res).map_err(|e| MetricsError::Format {
        path: dir.join("results.json").display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(vec![
        write(dir, "results.json", &json)?,
        write(dir, "results.csv", csv(res).as_bytes())?,
        write(dir, "results.md", markdown(res).as_bytes())?,
    ])
}
