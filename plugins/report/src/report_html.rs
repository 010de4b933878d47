//! The report's pages and the files they link, all relative, so the directory is viewable
//! offline: `index.html` (which binarizer is best per category, how far from the oracle, the
//! charts, the worst failures of each binarizer), `categories/<category>.html` (the same for
//! one category, with its own PR curves), `charts/*.svg` and `panels/*.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anoflow_charts::{self as charts, Bars, ChartError, Line, Marker};
use anoflow_seg_metrics::accumulate::{Accumulators, MetricsError};
use anoflow_seg_metrics::confusion::Counts;
use anoflow_seg_metrics::ranking::{self, Negatives};
use anoflow_seg_metrics::results::{self, Results, MEAN};

use crate::draw::{self, Canvas};
use crate::report::{Kept, List, Lists};
use crate::report_panels::{self, Tile, FN, FP, GAP, TP};

/// What [`write_all`] wrote.
pub(crate) struct Written {
    /// Relative to the report directory.
    pub(crate) files: Vec<String>,
    pub(crate) panels: usize,
    pub(crate) category_pages: usize,
}

/// A chart that cannot be drawn, as the metrics' error (a `From` impl would break the orphan
/// rule: both types live in other crates).
fn chart_err(e: ChartError) -> MetricsError {
    MetricsError::Format { path: format!("chart `{}`", e.chart), reason: e.reason }
}

/// Points per PR curve: plenty for a 600-pixel-wide chart.
const PR_POINTS: usize = 600;

pub(crate) fn safe_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.2}%", v * 100.0))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> MetricsError {
    MetricsError::Format { path: path.display().to_string(), reason: e.to_string() }
}

/// Writes files under the report directory and remembers the panels already drawn.
struct Out<'a> {
    dir: &'a Path,
    files: Vec<String>,
    panels: BTreeMap<String, Vec<Tile>>,
}

impl Out<'_> {
    fn text(&mut self, name: &str, text: &str) -> Result<(), MetricsError> {
        let path = self.dir.join(name);
        anoflow_imaging::write_atomic(&path, text.as_bytes()).map_err(|e| io_err(&path, e))?;
        self.files.push(name.to_string());
        Ok(())
    }

    fn png(&mut self, name: &str, c: &Canvas) -> Result<(), MetricsError> {
        let path = self.dir.join(name);
        anoflow_imaging::write_png_u8(&path, c.height, c.width, 3, &c.data).map_err(|e| io_err(&path, e))?;
        self.files.push(name.to_string());
        Ok(())
    }

    /// The panel of `k` (only `focus`'s mask, or all), drawn once; its file and tiles.
    fn panel(
        &mut self,
        k: &Kept,
        focus: Option<&str>,
        ranges: &[(String, (f32, f32))],
    ) -> Result<(String, Vec<Tile>), MetricsError> {
        // The whole source names the file: two masks of one node must not share a panel.
        let tag = focus.map_or_else(|| "all".to_string(), safe_name);
        let name = format!("panels/{:05}_{}_{tag}.png", k.index, safe_name(&k.id));
        if let Some(tiles) = self.panels.get(&name) {
            return Ok((name, tiles.clone()));
        }
        let p = report_panels::draw(k, ranges, focus);
        self.png(&name, &p.canvas)?;
        self.panels.insert(name.clone(), p.tiles.clone());
        Ok((name, p.tiles))
    }
}

/// Everything the pages draw from.
struct Ctx<'a> {
    res: &'a Results,
    lists: &'a Lists,
    masks: Vec<(String, String)>,
    scores: Vec<(String, String)>,
    ranges: Ranges,
    failures: usize,
}

/// Writes every page, chart and panel into `dir`.
pub(crate) fn write_all(
    dir: &Path,
    acc: &mut Accumulators,
    lists: &Lists,
    max_samples: usize,
    failures: usize,
) -> Result<Written, MetricsError> {
    let res = results::compute(acc, 0.3);
    let pair = |sources: &[String]| -> Vec<(String, String)> {
        sources.iter().cloned().zip(results::short_names(sources)).collect()
    };
    let ctx = Ctx {
        res: &res,
        lists,
        masks: pair(&res.mask_sources),
        scores: pair(&res.score_sources),
        ranges: score_ranges(lists),
        failures,
    };
    let mut out = Out { dir, files: Vec::new(), panels: BTreeMap::new() };
    for sub in ["charts", "panels", "categories"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?;
    }
    out.text("charts/f1.svg", &charts::bar_chart(&f1_bars(&ctx)).map_err(chart_err)?)?;
    out.text("charts/fp_area.svg", &charts::bar_chart(&fp_bars(&ctx)).map_err(chart_err)?)?;
    let (curves, markers) = pr_data(&ctx, acc, None);
    out.text(
        "charts/pr_all.svg",
        &charts::pr_chart("all categories (pixels pooled)", &curves, &markers).map_err(chart_err)?,
    )?;
    for cat in &res.categories {
        let (curves, markers) = pr_data(&ctx, acc, Some(cat));
        out.text(
            &format!("charts/pr_{}.svg", safe_name(cat)),
            &charts::pr_chart(cat, &curves, &markers).map_err(chart_err)?,
        )?;
    }
    let first = first_samples(lists, max_samples);
    let mut html = String::new();
    index_page(&mut html, &ctx, &mut out, &first).map_err(|e| io_err(&dir.join("index.html"), e))?;
    for cat in &res.categories {
        let mut page = String::new();
        let name = format!("categories/{}.html", safe_name(cat));
        category_page(&mut page, &ctx, &mut out, cat, &first).map_err(|e| io_err(&dir.join(&name), e))?;
        out.text(&name, &page)?;
    }
    out.text("index.html", &html)?;
    let panels = out.panels.len();
    Ok(Written { files: out.files, panels, category_pages: res.categories.len() })
}

/// Colour scales: per category, one per score source over every kept panel of the category,
/// so the panels of a category compare across pages.
type Ranges = BTreeMap<String, Vec<(String, (f32, f32))>>;

fn score_ranges(lists: &Lists) -> Ranges {
    let mut all: Ranges = BTreeMap::new();
    for (_, k) in lists.values().flatten() {
        let ranges = all.entry(k.category.clone()).or_default();
        for (source, values) in &k.scores {
            let (lo, hi) =
                values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            match ranges.iter_mut().find(|r| &r.0 == source) {
                Some(r) => r.1 = (r.1 .0.min(lo), r.1 .1.max(hi)),
                None => ranges.push((source.clone(), (lo, hi))),
            }
        }
    }
    all
}

/// The panels in test order: anomalous first, then good ones, `max_samples` in all.
fn first_samples(lists: &Lists, max_samples: usize) -> Vec<&Kept> {
    let of = |l: &List| lists.get(l).map(|v| v.iter().map(|(_, k)| k.as_ref()).collect::<Vec<_>>()).unwrap_or_default();
    let (anomalous, good) = (of(&List::FirstAnomalous), of(&List::FirstGood));
    let n_anom = anomalous.len().min(max_samples);
    let n_good = max_samples.saturating_sub(n_anom).min(good.len());
    anomalous.into_iter().take(n_anom).chain(good.into_iter().take(n_good)).collect()
}

fn rows(ctx: &Ctx<'_>, category: Option<&str>) -> Vec<String> {
    match category {
        Some(c) => vec![c.to_string()],
        None => ctx.res.categories.iter().cloned().chain([MEAN.to_string()]).collect(),
    }
}

fn f1(res: &Results, cat: &str, mask: &str) -> Option<f64> {
    res.get(cat, mask, "f1", "anomalous", "pixels")
}

fn oracle(res: &Results, cat: &str, score: &str) -> Option<f64> {
    res.get(cat, score, "f1_max", "anomalous", "pixels")
}

fn f1_bars(ctx: &Ctx<'_>) -> Bars {
    let groups = rows(ctx, None);
    Bars {
        title: "Pixel F1 on anomalous images".into(),
        y_label: "pixel F1 (pooled)".into(),
        series: ctx
            .masks
            .iter()
            .map(|(s, n)| (n.clone(), groups.iter().map(|c| f1(ctx.res, c, s)).collect()))
            .collect(),
        references: ctx
            .scores
            .iter()
            .map(|(s, n)| (format!("oracle F1-max: {n}"), groups.iter().map(|c| oracle(ctx.res, c, s)).collect()))
            .collect(),
        groups,
    }
}

fn fp_bars(ctx: &Ctx<'_>) -> Bars {
    let groups = rows(ctx, None);
    Bars {
        title: "False-positive area on good images".into(),
        y_label: "share of good-image pixels marked".into(),
        series: ctx
            .masks
            .iter()
            .map(|(s, n)| (n.clone(), groups.iter().map(|c| ctx.res.get(c, s, "fp_area", "good", "pixels")).collect()))
            .collect(),
        references: Vec::new(),
        groups,
    }
}

/// PR curves of the score maps and the masks' operating points, over all pixels of one
/// category or of every category pooled.
fn pr_data(ctx: &Ctx<'_>, acc: &Accumulators, category: Option<&str>) -> (Vec<Line>, Vec<Marker>) {
    let cats: Vec<_> = acc.categories.iter().filter(|(c, _)| category.is_none_or(|x| x == c.as_str())).collect();
    let mut curves = Vec::new();
    for (source, name) in &ctx.scores {
        let points = if let [(_, cat)] = cats.as_slice() {
            cat.scores.get(source).map(|s| {
                ranking::pr_curve(&s.positives, Negatives { anomalous: &s.neg_anomalous, good: &s.neg_good }, PR_POINTS)
            })
        } else {
            let (mut pos, mut na, mut ng) = (Vec::new(), Vec::new(), Vec::new());
            for (_, cat) in &cats {
                if let Some(s) = cat.scores.get(source) {
                    pos = ranking::merge_sorted(&pos, &s.positives);
                    na = ranking::merge_sorted(&na, &s.neg_anomalous);
                    ng = ranking::merge_sorted(&ng, &s.neg_good);
                }
            }
            Some(ranking::pr_curve(&pos, Negatives { anomalous: &na, good: &ng }, PR_POINTS))
        };
        if let Some(points) = points.filter(|p| !p.is_empty()) {
            curves.push(Line { name: name.clone(), points });
        }
    }
    let mut markers = Vec::new();
    for (source, name) in &ctx.masks {
        let mut c = Counts::default();
        for (_, cat) in &cats {
            cat.masks.get(source).into_iter().flatten().flatten().for_each(|x| c.add(x));
        }
        if c.pixels() > 0 {
            markers.push(Marker { name: name.clone(), at: (c.recall(), c.precision()) });
        }
    }
    (curves, markers)
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1500px}\
h2{margin-top:32px;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:8px 0 16px}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}\
td.win{background:#d8f3dc;font-weight:bold}td.gap{color:#8a2b06}.tag{font-size:12px;color:#666}\
.chart{display:block;margin:8px 0;max-width:100%;height:auto}.panel{margin:10px 0 18px}\
.tiles{display:flex;gap:6px;font-size:13px;margin:2px 0}.tiles span{display:block;overflow:hidden;white-space:nowrap}\
.cbar{display:block;height:10px;margin-top:2px}.cbar+small{display:flex;justify-content:space-between}\
.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle;border:1px solid #999}\
figcaption{font-size:14px}nav a{margin-right:12px}";

fn head(h: &mut String, title: &str) -> std::fmt::Result {
    writeln!(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>", esc(title))?;
    writeln!(h, "<style>{STYLE}</style></head><body>")
}

/// Per row (category or mean): each binarizer's F1 (the best highlighted), the best, and how
/// far it is from each score map's oracle F1-max.
fn best_table(h: &mut String, ctx: &Ctx<'_>, category: Option<&str>, link: bool) -> std::fmt::Result {
    write!(h, "<table><tr><th>category</th>")?;
    for (_, n) in &ctx.masks {
        write!(h, "<th>{}</th>", esc(n))?;
    }
    write!(h, "<th>best binarizer</th>")?;
    for (_, n) in &ctx.scores {
        write!(h, "<th>oracle F1-max ({})</th><th>best vs oracle</th>", esc(n))?;
    }
    writeln!(h, "</tr>")?;
    for cat in rows(ctx, category) {
        let values: Vec<Option<f64>> = ctx.masks.iter().map(|(s, _)| f1(ctx.res, &cat, s)).collect();
        let best = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).max_by(|a, b| a.1.total_cmp(&b.1));
        let label = if cat == MEAN {
            "<b>mean</b>".to_string()
        } else if link {
            format!("<a href=\"categories/{}.html\">{}</a>", safe_name(&cat), esc(&cat))
        } else {
            esc(&cat)
        };
        write!(h, "<tr><td>{label}</td>")?;
        for (i, v) in values.iter().enumerate() {
            let class = if best.is_some_and(|b| b.0 == i) { " class=\"win\"" } else { "" };
            write!(h, "<td{class}>{}</td>", fmt(*v))?;
        }
        write!(h, "<td>{}</td>", best.map_or_else(|| "n/a".into(), |b| esc(&ctx.masks[b.0].1)))?;
        for (s, _) in &ctx.scores {
            let o = oracle(ctx.res, &cat, s);
            let gap = o.zip(best).map(|(o, b)| format!("{:+.3}", b.1 - o));
            write!(h, "<td>{}</td><td class=\"gap\">{}</td>", fmt(o), gap.unwrap_or_else(|| "n/a".into()))?;
        }
        writeln!(h, "</tr>")?;
    }
    writeln!(h, "</table>")
}

/// False positives on good images: pooled area and the share of good images with any.
fn fp_table(h: &mut String, ctx: &Ctx<'_>, category: Option<&str>) -> std::fmt::Result {
    write!(h, "<table><tr><th>category</th>")?;
    for (_, n) in &ctx.masks {
        write!(h, "<th>{} FP area</th><th>{} images with FP</th>", esc(n), esc(n))?;
    }
    writeln!(h, "</tr>")?;
    for cat in rows(ctx, category) {
        write!(h, "<tr><td>{}</td>", if cat == MEAN { "<b>mean</b>".to_string() } else { esc(&cat) })?;
        for (s, _) in &ctx.masks {
            let area = ctx.res.get(&cat, s, "fp_area", "good", "pixels");
            let with = ctx.res.get(&cat, s, "good_images_with_fp", "good", "images");
            write!(h, "<td>{}</td><td>{}</td>", pct(area), pct(with))?;
        }
        writeln!(h, "</tr>")?;
    }
    writeln!(h, "</table>")
}

fn score_table(h: &mut String, ctx: &Ctx<'_>, category: Option<&str>) -> std::fmt::Result {
    let cat = category.unwrap_or(MEAN);
    writeln!(
        h,
        "<table><tr><th>score map</th><th>pixel AUROC</th><th>AUPRO@{}</th><th>image AUROC</th><th>F1-max</th></tr>",
        ctx.res.fpr_limit
    )?;
    for (s, n) in &ctx.scores {
        let g = |m: &str, sub: &str, p: &str| fmt(ctx.res.get(cat, s, m, sub, p));
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(n),
            g("pixel_auroc", "all", "pixels"),
            g("aupro", "all", "pixels"),
            g("image_auroc", "all", "images"),
            g("f1_max", "anomalous", "pixels")
        )?;
    }
    writeln!(h, "</table>")
}

fn chart(h: &mut String, src: &str, alt: &str) -> std::fmt::Result {
    writeln!(h, "<img class=\"chart\" src=\"{}\" alt=\"{}\">", esc(src), esc(alt))
}

fn overlay_legend(h: &mut String) -> std::fmt::Result {
    writeln!(
        h,
        "<p>Each panel: the image, the score map (viridis; one scale per map and category, shown under \
         it), the mask over the darkened image (<span class=\"sw\" style=\"background:{}\"></span>true \
         positive<span class=\"sw\" style=\"background:{}\"></span>false positive<span class=\"sw\" \
         style=\"background:{}\"></span>missed defect), and the ground truth (white).</p>",
        draw::hex(TP),
        draw::hex(FP),
        draw::hex(FN)
    )
}

/// One panel: tile captions, the PNG, colour bars under the score tiles, and the figures.
fn panel_html(
    h: &mut String,
    ctx: &Ctx<'_>,
    out: &mut Out<'_>,
    k: &Kept,
    focus: Option<&str>,
    prefix: &str,
) -> Result<(), MetricsError> {
    let ranges = ctx.ranges.get(&k.category).map_or(&[][..], Vec::as_slice);
    let (file, tiles) = out.panel(k, focus, ranges)?;
    let w = k.w;
    let width = tiles.len() * (w + GAP) - GAP;
    let mut caps = String::new();
    let mut bars = String::new();
    for t in &tiles {
        let (cap, bar) = match t {
            Tile::Image => ("image".to_string(), String::new()),
            Tile::Score { name, range } => (
                format!("score: {}", esc(name)),
                format!(
                    "<i class=\"cbar\" style=\"background:{}\"></i><small><span>{:.3}</span><span>{:.3}</span></small>",
                    draw::viridis_css(),
                    range.0,
                    range.1
                ),
            ),
            Tile::Mask { name } => (format!("mask: {}", esc(name)), String::new()),
            Tile::Truth => ("ground truth".to_string(), String::new()),
        };
        let _ = write!(caps, "<span style=\"width:{w}px\">{cap}</span>");
        let _ = write!(bars, "<span style=\"width:{w}px\">{bar}</span>");
    }
    let figures: Vec<String> = k
        .masks
        .iter()
        .filter(|m| focus.is_none_or(|f| f == m.0))
        .map(|(s, _, c)| {
            let name = esc(s.split('.').next().unwrap_or(s));
            if k.anomalous {
                format!("{name}: F1 {:.3}", c.f1())
            } else {
                format!("{name}: FP area {:.2}%", c.fp_area() * 100.0)
            }
        })
        .collect();
    let _ = writeln!(
        h,
        "<figure class=\"panel\"><div class=\"tiles\">{caps}</div><img src=\"{prefix}{}\" width=\"{width}\" \
         height=\"{}\" alt=\"{}\"><div class=\"tiles\">{bars}</div><figcaption><b>{}</b> <span class=\"tag\">{} / \
         {}</span> &nbsp; {}</figcaption></figure>",
        esc(&file),
        k.h,
        esc(&k.id),
        esc(&k.id),
        esc(&k.category),
        esc(&k.defect),
        figures.join(", ")
    );
    Ok(())
}

/// The kept panels of the lists `pick` selects, merged in rank order, the first `n`.
fn ranked<'a>(ctx: &Ctx<'a>, pick: impl Fn(&List) -> bool, n: usize) -> Vec<&'a Kept> {
    let mut all: Vec<_> = ctx.lists.iter().filter(|(l, _)| pick(l)).flat_map(|(_, v)| v.iter()).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().take(n).map(|(_, k)| k.as_ref()).collect()
}

/// Per binarizer: the worst anomalous images by F1 and the good images with the largest
/// false-positive area (in one category, or over all).
fn failures(
    h: &mut String,
    ctx: &Ctx<'_>,
    out: &mut Out<'_>,
    category: Option<&str>,
    prefix: &str,
) -> Result<(), MetricsError> {
    let in_cat = |c: &String| category.is_none_or(|x| x == c);
    for (mask, name) in &ctx.masks {
        let _ = writeln!(h, "<h3>{}</h3>", esc(name));
        let worst =
            ranked(ctx, |l| matches!(l, List::Worst { category: c, mask: m } if m == mask && in_cat(c)), ctx.failures);
        let _ = writeln!(h, "<h4>Anomalous images with the lowest F1</h4>");
        if worst.is_empty() {
            let _ = writeln!(h, "<p class=\"tag\">none kept</p>");
        }
        for k in worst {
            panel_html(h, ctx, out, k, Some(mask), prefix)?;
        }
        let fp = ranked(
            ctx,
            |l| matches!(l, List::FalsePositive { category: c, mask: m } if m == mask && in_cat(c)),
            ctx.failures,
        );
        let _ = writeln!(h, "<h4>Good images with the largest false-positive area</h4>");
        if fp.is_empty() {
            let _ = writeln!(h, "<p class=\"tag\">no false positive on any good image</p>");
        }
        for k in fp {
            panel_html(h, ctx, out, k, Some(mask), prefix)?;
        }
    }
    Ok(())
}

fn fmt_err(e: std::fmt::Error) -> MetricsError {
    MetricsError::Format { path: "report page".into(), reason: e.to_string() }
}

fn index_page(h: &mut String, ctx: &Ctx<'_>, out: &mut Out<'_>, first: &[&Kept]) -> Result<(), MetricsError> {
    head(h, "anoflow report").map_err(fmt_err)?;
    let res = ctx.res;
    let _ = writeln!(h, "<h1>anoflow report</h1>");
    let _ = write!(h, "<nav>Categories: ");
    for c in &res.categories {
        let _ = write!(h, "<a href=\"categories/{}.html\">{}</a>", safe_name(c), esc(c));
    }
    let _ = writeln!(h, "</nav>");
    if !ctx.masks.is_empty() {
        let _ = writeln!(
            h,
            "<h2>Which binarizer is best on each category <span class=\"tag\">deployable</span></h2>\
             <p>Pixel F1 of each mask on the anomalous test images, pixels pooled; the best of each row is \
             highlighted. The <em>oracle</em> F1-max picks the score map's threshold with the ground truth, which \
             no deployed system can: it bounds what a binarizer of that map could reach. \"best vs oracle\" is \
             the best binarizer's F1 minus it.</p>"
        );
        best_table(h, ctx, None, true).map_err(fmt_err)?;
        chart(h, "charts/f1.svg", "pixel F1 by category and binarizer, with the oracle F1-max").map_err(fmt_err)?;
        let _ = writeln!(
            h,
            "<h2>False positives on good images <span class=\"tag\">deployable</span></h2><p>Share of the good \
             test images' pixels each mask marks, and the share of good images with any marked pixel.</p>"
        );
        fp_table(h, ctx, None).map_err(fmt_err)?;
        chart(h, "charts/fp_area.svg", "false-positive area on good images by category and binarizer")
            .map_err(fmt_err)?;
    }
    let _ = writeln!(
        h,
        "<h2>Precision and recall</h2><p>Curves: each score map over every threshold (oracle); diamonds: \
         each mask's operating point. Per category on its page.</p>"
    );
    chart(h, "charts/pr_all.svg", "precision-recall curves, all categories").map_err(fmt_err)?;
    if !ctx.scores.is_empty() {
        let _ = writeln!(h, "<h2>Score maps <span class=\"tag\">oracle</span></h2><p>Means over categories.</p>");
        score_table(h, ctx, None).map_err(fmt_err)?;
    }
    if !ctx.masks.is_empty() {
        let _ = writeln!(h, "<h2>Failures of each binarizer</h2>");
        overlay_legend(h).map_err(fmt_err)?;
        failures(h, ctx, out, None, "")?;
    }
    if !first.is_empty() {
        let _ = writeln!(h, "<h2>Samples in test order</h2>");
        for k in first {
            panel_html(h, ctx, out, k, None, "")?;
        }
    }
    let _ =
        writeln!(h, "<p class=\"tag\">Full figures: results.json of the segmentation-metrics node.</p></body></html>");
    Ok(())
}

fn category_page(
    h: &mut String,
    ctx: &Ctx<'_>,
    out: &mut Out<'_>,
    cat: &str,
    first: &[&Kept],
) -> Result<(), MetricsError> {
    head(h, &format!("anoflow report: {cat}")).map_err(fmt_err)?;
    let _ = writeln!(h, "<nav><a href=\"../index.html\">all categories</a></nav><h1>{}</h1>", esc(cat));
    if !ctx.masks.is_empty() {
        let _ = writeln!(h, "<h2>Binarizers <span class=\"tag\">deployable</span></h2>");
        best_table(h, ctx, Some(cat), false).map_err(fmt_err)?;
        fp_table(h, ctx, Some(cat)).map_err(fmt_err)?;
    }
    let _ = writeln!(h, "<h2>Precision and recall</h2>");
    chart(h, &format!("../charts/pr_{}.svg", safe_name(cat)), &format!("precision-recall curves, {cat}"))
        .map_err(fmt_err)?;
    if !ctx.scores.is_empty() {
        let _ = writeln!(h, "<h2>Score maps <span class=\"tag\">oracle</span></h2>");
        score_table(h, ctx, Some(cat)).map_err(fmt_err)?;
    }
    if !ctx.masks.is_empty() {
        let _ = writeln!(h, "<h2>Failures of each binarizer in {}</h2>", esc(cat));
        overlay_legend(h).map_err(fmt_err)?;
        failures(h, ctx, out, Some(cat), "../")?;
    }
    let mine: Vec<&&Kept> = first.iter().filter(|k| k.category == cat).collect();
    if !mine.is_empty() {
        let _ = writeln!(h, "<h2>Samples in test order</h2>");
        for k in mine {
            panel_html(h, ctx, out, k, None, "../")?;
        }
    }
    let _ = writeln!(h, "</body></html>");
    Ok(())
}
