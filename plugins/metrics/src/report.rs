//! The `report` sink: pictures to look at the comparison. Per sample (anomalous first, capped)
//! a PNG panel image | score maps | masks | ground truth; precision-recall curves of the score
//! maps with each mask as a point; per-category F1 bars of the masks; and an index.html that
//! shows it all through relative links.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anoflow_sdk::prelude::*;

use crate::accumulate::{self, Accumulators, MetricsError};
use crate::confusion::Counts;
use crate::draw::{self, Canvas, Rgb};
use crate::ranking::{self, Negatives};
use crate::report_state;
use crate::results::{self, Results, MEAN};
use crate::{relative_files, sample_view, ExpectedSources};

/// The `report` sink.
pub struct Report;

impl StagePlugin for Report {
    fn descriptor() -> StageDescriptor {
        StageDescriptor::sink(
            "report",
            "visual comparison: per-sample panels, PR curves, per-category F1 bars, index.html",
        )
        .input("gt", ValueKind::Mask, "ground-truth mask")
        .optional_multi_input("masks", ValueKind::Mask, "binary masks to compare")
        .optional_multi_input("scores", ValueKind::ScoreMap, "anomaly score maps")
        .optional_multi_input("image_scores", ValueKind::Scalar, "image-level scores")
        .optional_input("image", ValueKind::Image, "the input image (first tile of each panel)")
        .param(ParamSpec::int("max_samples", 24, "panels to draw: anomalous samples first, then good ones").min(0.0))
        .param(
            ParamSpec::int("tile", 224, "largest side of one panel tile in pixels (nearest-neighbour resize)").min(1.0),
        )
    }

    fn create(params: &Params, ctx: &CreateContext) -> StageResult<StageImpl> {
        Ok(StageImpl::Sink(Box::new(ReportSink {
            expected: ExpectedSources::from_context(ctx),
            acc: Mutex::new(Accumulators::new()),
            max_samples: params.usize("max_samples")?,
            tile: params.positive("tile")?,
            anomalous: Vec::new(),
            good: Vec::new(),
        })))
    }
}

/// A sample kept for a panel, already shrunk to the tile size.
pub(crate) struct Kept {
    pub(crate) id: String,
    /// Position in the test listing: merged shards keep the panels one run would keep.
    pub(crate) index: u64,
    pub(crate) category: String,
    pub(crate) defect: String,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) image: Option<Vec<u8>>,
    pub(crate) scores: Vec<(String, Vec<f32>)>,
    pub(crate) masks: Vec<(String, Vec<u8>, Counts)>,
    pub(crate) gt: Vec<u8>,
}

struct ReportSink {
    /// Behind a lock only so that `save_state` (which takes `&self`) can sort the score
    /// lists in place, as the metrics sink does.
    acc: Mutex<Accumulators>,
    max_samples: usize,
    tile: usize,
    anomalous: Vec<Kept>,
    good: Vec<Kept>,
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

impl Sink for ReportSink {
    fn consume(&mut self, sample: &Sample<'_>) -> StageResult<()> {
        let view = sample_view(sample, &self.expected)?;
        self.acc.get_mut().unwrap_or_else(PoisonError::into_inner).add(&view)?;
        let anomalous = view.label == Some(true) || view.gt.0.contains(&1);
        let list_len = if anomalous { self.anomalous.len() } else { self.good.len() };
        // Panels compare every source side by side: a sample lacking one gets none.
        let complete = view.masks.iter().all(|m| m.1.is_some()) && view.scores.iter().all(|s| s.1.is_some());
        if list_len >= self.max_samples || !complete {
            return Ok(());
        }
        let (gt, h, w) = view.gt;
        let (gt_small, th, tw) = shrink(gt, h, w, 1, self.tile);
        let image = match sample.maybe("image") {
            Some(Value::Image(img)) => Some(shrink(&image_rgb(img, h, w), h, w, 3, self.tile).0),
            _ => None,
        };
        let kept = Kept {
            id: view.id.to_string(),
            index: view.index,
            category: view.category.to_string(),
            defect: view.defect.to_string(),
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
                    plane.map(|(d, _, _)| (s.to_string(), shrink(d, h, w, 1, self.tile).0, Counts::of(d, gt)))
                })
                .collect(),
            gt: gt_small,
        };
        if anomalous {
            self.anomalous.push(kept);
        } else {
            self.good.push(kept);
        }
        Ok(())
    }

    fn save_state(&self) -> StageResult<Vec<u8>> {
        let acc = self.acc.lock().unwrap_or_else(PoisonError::into_inner).to_bytes();
        let panels: Vec<(&Kept, bool)> =
            self.anomalous.iter().map(|k| (k, true)).chain(self.good.iter().map(|k| (k, false))).collect();
        Ok(report_state::encode(&acc, &panels))
    }

    /// Adds another shard's state. Each shard kept its first `max_samples` panels of each
    /// kind in sample order, so the first `max_samples` of their union in sample order are
    /// the ones one unsharded run keeps.
    fn merge_state(&mut self, state: &[u8]) -> StageResult<()> {
        let (other, panels) = report_state::decode(state)?;
        let acc = self.acc();
        *acc = accumulate::merge(std::mem::take(acc), other)?;
        for (kept, anomalous) in panels {
            if anomalous {
                self.anomalous.push(kept);
            } else {
                self.good.push(kept);
            }
        }
        for list in [&mut self.anomalous, &mut self.good] {
            list.sort_by(|a, b| (a.index, &a.id).cmp(&(b.index, &b.id)));
            list.truncate(self.max_samples);
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &FinishContext) -> StageResult<SinkReport> {
        let dir = Path::new(ctx.out_dir.as_str());
        let node = ctx.node_id.to_string();
        let files = self.write_all(dir).map_err(|e| StageError::from(e).context(format!("node `{node}`")))?;
        let markdown = format!("report: {}/index.html ({} sample panels)\n", dir.display(), files.len() - 3);
        Ok(SinkReport { markdown: markdown.into(), json: "null".into(), files: relative_files(dir, files) })
    }
}

fn png(dir: &Path, name: &str, c: &Canvas) -> Result<String, MetricsError> {
    let path = dir.join(name);
    anoflow_imaging::write_png_u8(&path, c.height, c.width, 3, &c.data)
        .map_err(|e| MetricsError::Format { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(name.to_string())
}

/// Mask tile colours: true positive, false positive, false negative, true negative.
const TP: Rgb = [255, 255, 255];
const FP: Rgb = [230, 50, 50];
const FN: Rgb = [60, 110, 255];
const TN: Rgb = [0, 0, 0];

fn safe_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl ReportSink {
    fn acc(&mut self) -> &mut Accumulators {
        self.acc.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_all(&mut self, dir: &Path) -> Result<Vec<String>, MetricsError> {
        let res = results::compute(self.acc(), 0.3);
        let mut files =
            vec![png(dir, "pr_curves.png", &self.pr_chart(&res))?, png(dir, "f1_bars.png", &f1_chart(&res))?];
        let n_anom = self.anomalous.len().min(self.max_samples);
        let n_good = self.max_samples.saturating_sub(n_anom).min(self.good.len());
        let chosen: Vec<&Kept> = self.anomalous.iter().take(n_anom).chain(self.good.iter().take(n_good)).collect();
        // One colour scale per score source, over the samples shown, so panels compare.
        let mut ranges: Vec<(f32, f32)> = Vec::new();
        for (i, _) in chosen.first().map(|k| k.scores.as_slice()).unwrap_or(&[]).iter().enumerate() {
            let vals = chosen.iter().flat_map(|k| k.scores.get(i).map(|s| s.1.as_slice()).unwrap_or(&[]));
            let (lo, hi) = vals.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            ranges.push((lo, hi));
        }
        let mut panels = Vec::new();
        for (n, k) in chosen.iter().enumerate() {
            let name = format!("samples/{n:03}_{}.png", safe_name(&k.id));
            png(dir, &name, &panel(k, &ranges))?;
            panels.push((name.clone(), *k));
            files.push(name);
        }
        let html = index_html(&res, &panels, &ranges);
        anoflow_imaging::write_atomic(dir.join("index.html"), html.as_bytes()).map_err(|e| MetricsError::Format {
            path: dir.join("index.html").display().to_string(),
            reason: e.to_string(),
        })?;
        files.push("index.html".to_string());
        Ok(files)
    }

    /// PR curves of every score source (pixels of all categories pooled), masks as points.
    fn pr_chart(&mut self, res: &Results) -> Canvas {
        let mut curves = Vec::new();
        for source in &res.score_sources {
            let (mut pos, mut na, mut ng) = (Vec::new(), Vec::new(), Vec::new());
            for cat in self.acc().categories.values() {
                if let Some(s) = cat.scores.get(source) {
                    pos = ranking::merge_sorted(&pos, &s.positives);
                    na = ranking::merge_sorted(&na, &s.neg_anomalous);
                    ng = ranking::merge_sorted(&ng, &s.neg_good);
                }
            }
            curves.push(ranking::pr_curve(&pos, Negatives { anomalous: &na, good: &ng }, 2000));
        }
        let mut points = Vec::new();
        for source in &res.mask_sources {
            let mut c = Counts::default();
            for cat in self.acc().categories.values() {
                c.add(
                    &cat.masks
                        .get(source)
                        .map(|v| {
                            v.iter().flatten().fold(Counts::default(), |mut a, x| {
                                a.add(x);
                                a
                            })
                        })
                        .unwrap_or_default(),
                );
            }
            points.push((c.recall(), c.precision()));
        }
        pr_canvas(&curves, &points)
    }
}

const CHART_W: usize = 560;
const CHART_H: usize = 440;
const LEFT: i64 = 56;
const TOP: i64 = 20;
const PLOT: i64 = 360;

fn axes(c: &mut Canvas, x_label: &str, y_label: &str) {
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let x = LEFT + (v * PLOT as f64) as i64;
        let y = TOP + PLOT - (v * PLOT as f64) as i64;
        c.line(x, TOP, x, TOP + PLOT, draw::GREY, 1);
        c.line(LEFT, y, LEFT + PLOT, y, draw::GREY, 1);
        let label = format!("{v:.1}");
        c.text(x - draw::text_width(&label, 1) / 2, TOP + PLOT + 6, &label, draw::DARK, 1);
        c.text(LEFT - draw::text_width(&label, 1) - 6, y - 3, &label, draw::DARK, 1);
    }
    c.rect_outline(LEFT, TOP, PLOT + 1, PLOT + 1, draw::DARK);
    c.text(LEFT + PLOT / 2 - draw::text_width(x_label, 2) / 2, TOP + PLOT + 22, x_label, draw::BLACK, 2);
    c.text(4, 4, y_label, draw::BLACK, 1);
}

fn to_px(x: f64, y: f64) -> (i64, i64) {
    (LEFT + (x.clamp(0.0, 1.0) * PLOT as f64) as i64, TOP + PLOT - (y.clamp(0.0, 1.0) * PLOT as f64) as i64)
}

fn pr_canvas(curves: &[Vec<(f64, f64)>], points: &[(f64, f64)]) -> Canvas {
    let mut c = Canvas::new(CHART_W, CHART_H, draw::WHITE);
    axes(&mut c, "RECALL", "PRECISION");
    for (i, curve) in curves.iter().enumerate() {
        let colour = draw::series_colour(i);
        for w in curve.windows(2) {
            let (a, b) = (to_px(w[0].0, w[0].1), to_px(w[1].0, w[1].1));
            c.line(a.0, a.1, b.0, b.1, colour, 2);
        }
    }
    for (i, &(r, p)) in points.iter().enumerate() {
        let colour = draw::series_colour(curves.len() + i);
        let (x, y) = to_px(r, p);
        c.fill_rect(x - 5, y - 5, 11, 11, draw::BLACK);
        c.fill_rect(x - 4, y - 4, 9, 9, colour);
    }
    // Legend keys: numbered swatches, named in index.html.
    for i in 0..curves.len() + points.len() {
        let y = TOP + 10 + i as i64 * 16;
        c.fill_rect(LEFT + PLOT + 14, y, 12, 10, draw::series_colour(i));
        c.text(LEFT + PLOT + 32, y + 2, &format!("{}", i + 1), draw::BLACK, 1);
    }
    c
}

/// Per-category bars of each mask's pixel F1 on anomalous images, plus the mean.
fn f1_chart(res: &Results) -> Canvas {
    let cats: Vec<&str> = res.categories.iter().map(String::as_str).chain([MEAN]).collect();
    let n = res.mask_sources.len().max(1);
    let bar = 12i64;
    let group = (n as i64 * bar + 10).max(draw::text_width("transistor", 1) + 8);
    let width = (LEFT + group * cats.len() as i64 + 20) as usize;
    let mut c = Canvas::new(width.max(240), CHART_H, draw::WHITE);
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let y = TOP + PLOT - (v * PLOT as f64) as i64;
        c.line(LEFT, y, width as i64 - 10, y, draw::GREY, 1);
        let label = format!("{v:.1}");
        c.text(LEFT - draw::text_width(&label, 1) - 6, y - 3, &label, draw::DARK, 1);
    }
    c.text(4, 4, "PIXEL F1, ANOMALOUS IMAGES", draw::BLACK, 1);
    for (g, cat) in cats.iter().enumerate() {
        let x0 = LEFT + g as i64 * group + 6;
        for (i, source) in res.mask_sources.iter().enumerate() {
            let v = res.get(cat, source, "f1", "anomalous", "pixels").unwrap_or(0.0);
            let hpx = (v.clamp(0.0, 1.0) * PLOT as f64) as i64;
            c.fill_rect(x0 + i as i64 * bar, TOP + PLOT - hpx, bar - 2, hpx, draw::series_colour(i));
        }
        let label: String = cat.chars().take(10).collect();
        c.text(x0, TOP + PLOT + 8 + (g as i64 % 2) * 10, &label, draw::BLACK, 1);
    }
    c.line(LEFT, TOP + PLOT, width as i64 - 10, TOP + PLOT, draw::DARK, 1);
    c
}

/// One sample: image | each score map | each mask (TP white, FP red, FN blue) | GT.
fn panel(k: &Kept, ranges: &[(f32, f32)]) -> Canvas {
    let mut tiles: Vec<(String, Canvas)> = Vec::new();
    let tile = |f: &dyn Fn(usize) -> Rgb| {
        let mut t = Canvas::new(k.w, k.h, draw::BLACK);
        for i in 0..k.h * k.w {
            t.data[i * 3..i * 3 + 3].copy_from_slice(&f(i));
        }
        t
    };
    if let Some(img) = &k.image {
        tiles.push(("IMAGE".into(), tile(&|i| [img[i * 3], img[i * 3 + 1], img[i * 3 + 2]])));
    }
    let names: Vec<String> = k.scores.iter().map(|s| s.0.clone()).collect();
    let short = results::short_names(&names);
    for ((_, s), (name, &(lo, hi))) in k.scores.iter().zip(short.iter().zip(ranges)) {
        let span = if hi > lo { hi - lo } else { 1.0 };
        tiles.push((name.clone(), tile(&|i| draw::viridis((s[i] - lo) / span))));
    }
    let names: Vec<String> = k.masks.iter().map(|m| m.0.clone()).collect();
    for ((_, m, _), name) in k.masks.iter().zip(results::short_names(&names)) {
        tiles.push((
            name,
            tile(&|i| match (m[i] != 0, k.gt[i] != 0) {
                (true, true) => TP,
                (true, false) => FP,
                (false, true) => FN,
                (false, false) => TN,
            }),
        ));
    }
    tiles.push(("GT".into(), tile(&|i| if k.gt[i] != 0 { draw::WHITE } else { draw::BLACK })));
    let (gap, caption) = (6usize, 14usize);
    let width = tiles.len() * (k.w + gap) + gap;
    let mut c = Canvas::new(width, k.h + caption + gap, draw::WHITE);
    for (i, (name, t)) in tiles.iter().enumerate() {
        let x = gap + i * (k.w + gap);
        let label: String = name.chars().take(k.w / 6).collect();
        c.text(x as i64, 3, &label, draw::BLACK, 1);
        c.blit(t, x, caption);
    }
    c
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

fn index_html(res: &Results, panels: &[(String, &Kept)], ranges: &[(f32, f32)]) -> String {
    let mut h = String::new();
    let _ = write_html(&mut h, res, panels, ranges);
    h
}

fn write_html(h: &mut String, res: &Results, panels: &[(String, &Kept)], ranges: &[(f32, f32)]) -> std::fmt::Result {
    writeln!(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>anoflow report</title>")?;
    writeln!(
        h,
        "<style>body{{font-family:sans-serif;margin:24px;background:#fff;color:#222}}table{{border-collapse:collapse;\
         margin:8px 0 20px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th:first-child,td:first-child\
         {{text-align:left}}.sw{{display:inline-block;width:12px;height:10px;margin-right:4px}}figure{{display:inline-block;\
         margin:6px}}figcaption{{font-size:13px}}.tag{{font-size:11px;color:#666}}</style></head><body>"
    )?;
    writeln!(h, "<h1>anoflow report</h1>")?;
    let titles = results::short_names(&res.mask_sources);
    if !res.mask_sources.is_empty() {
        writeln!(h, "<h2>Pixel F1 of the masks <span class=\"tag\">deployable</span></h2>")?;
        writeln!(h, "<p>Anomalous test images, pooled over pixels.</p><table><tr><th>category</th>")?;
        for t in &titles {
            write!(h, "<th>{}</th>", esc(t))?;
        }
        writeln!(h, "</tr>")?;
        for cat in res.categories.iter().map(String::as_str).chain([MEAN]) {
            write!(h, "<tr><td>{}</td>", if cat == MEAN { "<b>mean</b>".to_string() } else { esc(cat) })?;
            for s in &res.mask_sources {
                write!(h, "<td>{}</td>", fmt(res.get(cat, s, "f1", "anomalous", "pixels")))?;
            }
            writeln!(h, "</tr>")?;
        }
        writeln!(h, "</table>")?;
    }
    if !res.score_sources.is_empty() {
        writeln!(
            h,
            "<h2>Score maps <span class=\"tag\">oracle</span></h2><table><tr><th>source</th><th>pixel AUROC</th>\
                     <th>AUPRO@{}</th><th>image AUROC</th><th>F1-max</th></tr>",
            res.fpr_limit
        )?;
        for (s, t) in res.score_sources.iter().zip(results::short_names(&res.score_sources)) {
            let g = |m: &str, sub: &str, p: &str| fmt(res.get(MEAN, s, m, sub, p));
            writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t),
                g("pixel_auroc", "all", "pixels"),
                g("aupro", "all", "pixels"),
                g("image_auroc", "all", "images"),
                g("f1_max", "all", "pixels")
            )?;
        }
        writeln!(
            h,
            "</table><p class=\"tag\">Means over categories. Full figures: results.json of the \
                     segmentation-metrics node.</p>"
        )?;
    }
    writeln!(h, "<h2>Curves</h2><figure><img src=\"pr_curves.png\" alt=\"precision-recall curves\"><figcaption>")?;
    writeln!(
        h,
        "Precision (vertical) against recall, pixels of all categories pooled. Lines: score maps; squares: masks.<br>"
    )?;
    let mut legend: Vec<String> = results::short_names(&res.score_sources);
    legend.extend(titles.iter().cloned());
    for (i, name) in legend.iter().enumerate() {
        write!(
            h,
            "<span class=\"sw\" style=\"background:{}\"></span>{} {} &nbsp; ",
            draw::hex(draw::series_colour(i)),
            i + 1,
            esc(name)
        )?;
    }
    writeln!(h, "</figcaption></figure>")?;
    writeln!(
        h,
        "<figure><img src=\"f1_bars.png\" alt=\"per-category F1 bars\"><figcaption>Pixel F1 per category \
                 (anomalous images, pooled).<br>"
    )?;
    for (i, name) in titles.iter().enumerate() {
        write!(
            h,
            "<span class=\"sw\" style=\"background:{}\"></span>{} &nbsp; ",
            draw::hex(draw::series_colour(i)),
            esc(name)
        )?;
    }
    writeln!(h, "</figcaption></figure>")?;
    writeln!(h, "<h2>Samples</h2><p>Tiles: image, score maps (viridis; one scale per map over the samples shown: ")?;
    let names: Vec<String> =
        panels.first().map(|p| p.1.scores.iter().map(|s| s.0.clone()).collect()).unwrap_or_default();
    for (n, (lo, hi)) in names.iter().zip(ranges) {
        write!(h, "{} {lo:.4} to {hi:.4}; ", esc(n))?;
    }
    writeln!(
        h,
        "), masks (<span class=\"sw\" style=\"background:#fff;border:1px solid #999\"></span>true positive \
         <span class=\"sw\" style=\"background:{}\"></span>false positive <span class=\"sw\" style=\"background:{}\"></span>\
         missed), ground truth.</p>",
        draw::hex(FP),
        draw::hex(FN)
    )?;
    for (file, k) in panels {
        let f1s: Vec<String> = k
            .masks
            .iter()
            .map(|(s, _, c)| format!("{} F1 {:.3}", esc(s.split('.').next().unwrap_or(s)), c.f1()))
            .collect();
        writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{} <span class=\"tag\">{} / {}</span><br>{}</figcaption></figure>",
            esc(file),
            esc(&k.id),
            esc(&k.id),
            esc(&k.category),
            esc(&k.defect),
            f1s.join(", ")
        )?;
    }
    writeln!(h, "</body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{realistic, sample_meta};
    use anoflow_sdk::harness::{scratch_dir, StageHarness};

    #[test]
    fn report_writes_panels_charts_and_a_linked_index() {
        let mut h = StageHarness::new::<Report>(serde_json::json!({"max_samples": 5})).unwrap();
        for (i, (m, mut inputs)) in realistic(9, &["bottle", "cable"], 3).into_iter().enumerate() {
            let img: Vec<u8> = (0..224 * 224 * 3).map(|p| ((p / 3 + i * 7) % 251) as u8).collect();
            inputs.push(crate::tests::port("image", "data.image", Image::from_u8(224, 224, 3, img).unwrap().into()));
            h.consume(&m, inputs).unwrap();
        }
        let dir = scratch_dir("report");
        let rep = h.finish(&dir).unwrap();
        let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
        // 5 panels, anomalous first: realistic() makes samples 1, 2, 4, 5, 7, 8 anomalous.
        let panels: Vec<&str> = rep.files.iter().map(|f| f.as_str()).filter(|f| f.contains("/samples/")).collect();
        assert_eq!(panels.len(), 5, "{panels:?}");
        assert!(panels[0].ends_with("samples/000_cable_001.png"), "{panels:?}");
        for f in ["pr_curves.png", "f1_bars.png", "samples/000_cable_001.png"] {
            assert!(dir.join(f).is_file(), "{f}");
            assert!(html.contains(&format!("src=\"{f}\"")), "index.html links {f}");
        }
        // A panel: image, 1 score map, 2 masks, GT = 5 tiles of 224 with 6 px gaps.
        let bytes = std::fs::read(dir.join("samples/000_cable_001.png")).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (5 * 230 + 6, 224 + 20));
        assert!(html.contains("thr") && html.contains("ttt") && html.contains("deployable"));
    }

    #[test]
    fn charts_are_not_blank() {
        let curve: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64 / 100.0, 1.0 - i as f64 / 200.0)).collect();
        let c = pr_canvas(&[curve], &[(0.5, 0.5)]);
        let coloured = c.data.chunks(3).filter(|p| p == &draw::series_colour(0)).count();
        assert!(coloured > 300, "{coloured}");
        // The mask point is drawn where recall 0.5, precision 0.5 fall.
        let (x, y) = to_px(0.5, 0.5);
        assert_eq!(c.get(x as usize, y as usize), draw::series_colour(1));
        let _ = sample_meta("x", "y", true, 0);
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use crate::tests::realistic;
    use anoflow_sdk::harness::{scratch_dir, StageHarness};

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["", "samples"] {
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
        // 20 samples, 13 anomalous: 16 panels take every anomalous one and the first 3 good.
        let params = serde_json::json!({"max_samples": 16, "tile": 64});
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
        assert_eq!(a.len(), 3 + 16, "charts, index.html and 16 panels");
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
