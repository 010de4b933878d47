//! `anoflow compare RUN_A RUN_B --out DIR`: two runs side by side as one static HTML page
//! (`DIR/compare.html`), viewable offline. Every figure a sink reports as records (the
//! segmentation metrics' `records`: category, source, metric, subset, pooling, value) is
//! paired by its labels; the headline figures come first, each difference highlighted as
//! better or worse, then every other figure that differs. The charts of each run's report
//! sinks (`*.svg` files) are copied under `DIR/a/` and `DIR/b/` and shown in pairs.
//!
//! The host names no stage here: any sink whose JSON holds `records` of that shape compares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::run_record;

/// A figure's labels: sink node, category, source, metric, subset, pooling.
type Key = (String, String, String, String, String, String);

/// One run as compare reads it.
struct Run {
    dir: PathBuf,
    pipeline: String,
    figures: BTreeMap<Key, f64>,
    /// Per sink node, its SVG files (relative to the run directory).
    charts: BTreeMap<String, Vec<String>>,
}

fn read_run(dir: &Path) -> Result<Run> {
    let summary = run_record::read_completed(dir).map_err(anyhow::Error::msg)?;
    let mut figures = BTreeMap::new();
    let mut charts = BTreeMap::new();
    for sink in &summary.sinks {
        let node = sink.node.clone();
        for r in sink.json["records"].as_array().into_iter().flatten() {
            let label = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            if let Some(value) = r["value"].as_f64() {
                let key = (
                    node.clone(),
                    label("category"),
                    label("source"),
                    label("metric"),
                    label("subset"),
                    label("pooling"),
                );
                figures.insert(key, value);
            }
        }
        let svgs: Vec<String> = sink.files.iter().filter(|f| f.ends_with(".svg")).cloned().collect();
        if !svgs.is_empty() {
            charts.insert(node, svgs);
        }
    }
    Ok(Run { dir: dir.to_path_buf(), pipeline: summary.pipeline, figures, charts })
}

/// The figures shown first, with whether higher is better.
const HEADLINE: [(&str, &str, &str, bool); 5] = [
    ("f1", "anomalous", "pixels", true),
    ("fp_area", "good", "pixels", false),
    ("f1_max", "anomalous", "pixels", true),
    ("pixel_auroc", "all", "pixels", true),
    ("aupro", "all", "pixels", true),
];

/// Differences smaller than this are shown as equal (the tables print 4 decimals).
const TOLERANCE: f64 = 5e-5;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "&ndash;".to_string(), |v| format!("{v:.4}"))
}

/// The delta cell: `better`/`worse` classes when it moved beyond the tolerance.
fn delta(a: Option<f64>, b: Option<f64>, higher_is_better: bool) -> String {
    match (a, b) {
        (Some(a), Some(b)) if (b - a).abs() > TOLERANCE => {
            let better = (b > a) == higher_is_better;
            format!("<td class=\"{}\">{:+.4}</td>", if better { "better" } else { "worse" }, b - a)
        }
        (Some(_), Some(_)) => "<td class=\"same\">=</td>".to_string(),
        _ => "<td class=\"missing\">only in one</td>".to_string(),
    }
}

const STYLE: &str =
    "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 16px}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}\
td.better{background:#c7f0d2;font-weight:bold}td.worse{background:#f8c9c4;font-weight:bold}td.same{color:#999}\
td.missing{color:#a60}.pair{display:flex;gap:16px;align-items:flex-start}.pair figure{margin:0;flex:1;min-width:0}\
.pair img{max-width:100%;height:auto;border:1px solid #eee}h2{margin-top:28px;border-bottom:1px solid #ddd}";

/// Writes `out/compare.html` and the copied charts; returns the page's path.
pub fn write_html(a: &Path, b: &Path, out: &Path) -> Result<PathBuf> {
    let (ra, rb) = (read_run(a)?, read_run(b)?);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>anoflow compare</title>\
         <style>{STYLE}</style></head><body><h1>anoflow compare</h1><table><tr><th></th><th>run</th><th>pipeline</th></tr>\
         <tr><td>A</td><td>{}</td><td>{}</td></tr><tr><td>B</td><td>{}</td><td>{}</td></tr></table>\
         <p>B &minus; A: <span style=\"background:#c7f0d2\">&nbsp;better&nbsp;</span> \
         <span style=\"background:#f8c9c4\">&nbsp;worse&nbsp;</span> (lower is better for false-positive area); \
         differences under {TOLERANCE} show as =.</p>",
        esc(&ra.dir.display().to_string()),
        esc(&ra.pipeline),
        esc(&rb.dir.display().to_string()),
        esc(&rb.pipeline)
    );
    let mut keys: Vec<&Key> = ra.figures.keys().chain(rb.figures.keys()).collect();
    keys.sort();
    keys.dedup();
    for (metric, subset, pooling, higher) in HEADLINE {
        let rows: Vec<&&Key> = keys.iter().filter(|k| k.3 == metric && k.4 == subset && k.5 == pooling).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            h,
            "<h2>{metric} <small>({subset} images, {pooling})</small></h2><table><tr><th>node</th><th>category</th>\
             <th>source</th><th>A</th><th>B</th><th>B &minus; A</th></tr>"
        );
        for k in rows {
            let (va, vb) = (ra.figures.get(*k).copied(), rb.figures.get(*k).copied());
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                esc(&k.0),
                esc(&k.1),
                esc(&k.2),
                cell(va),
                cell(vb),
                delta(va, vb, higher)
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let others: Vec<&&Key> = keys
        .iter()
        .filter(|k| !HEADLINE.iter().any(|(m, s, p, _)| k.3 == *m && k.4 == *s && k.5 == *p))
        .filter(|k| match (ra.figures.get(**k), rb.figures.get(**k)) {
            (Some(x), Some(y)) => (x - y).abs() > TOLERANCE,
            _ => true,
        })
        .collect();
    let _ = writeln!(
        h,
        "<h2>Every other figure that differs ({})</h2><details><summary>show</summary><table><tr><th>node</th>\
         <th>category</th><th>source</th><th>figure</th><th>A</th><th>B</th><th>B &minus; A</th></tr>",
        others.len()
    );
    for k in others {
        let (va, vb) = (ra.figures.get(*k).copied(), rb.figures.get(*k).copied());
        let d = va.zip(vb).map_or_else(|| "only in one".to_string(), |(x, y)| format!("{:+.4}", y - x));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {} {}</td><td>{}</td><td>{}</td><td>{d}</td></tr>",
            esc(&k.0),
            esc(&k.1),
            esc(&k.2),
            esc(&k.3),
            esc(&k.4),
            esc(&k.5),
            cell(va),
            cell(vb)
        );
    }
    let _ = writeln!(h, "</table></details>");
    for (node, files) in &ra.charts {
        let Some(other) = rb.charts.get(node) else { continue };
        let _ = writeln!(h, "<h2>Charts of <code>{}</code>: A left, B right</h2>", esc(node));
        for f in files.iter().filter(|f| other.contains(f)) {
            let mut pair = Vec::new();
            for (side, run) in [("a", &ra), ("b", &rb)] {
                let target = out.join(side).join(f);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let bytes = std::fs::read(run.dir.join(f))
                    .with_context(|| format!("cannot read {}", run.dir.join(f).display()))?;
                crate::fsutil::write_atomic(&target, &bytes)
                    .with_context(|| format!("cannot write {}", target.display()))?;
                pair.push(format!(
                    "<figure><img class=\"chart\" src=\"{side}/{}\" alt=\"{side}: {}\"></figure>",
                    esc(f),
                    esc(f)
                ));
            }
            let _ = writeln!(h, "<div class=\"pair\">{}</div>", pair.join(""));
        }
    }
    let _ = writeln!(h, "</body></html>");
    let page = out.join("compare.html");
    crate::fsutil::write_atomic(&page, h.as_bytes()).with_context(|| format!("cannot write {}", page.display()))?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::SinkResult;
    use crate::run_record::{test_summary, RunRecord};
    use serde_json::json;

    fn run_dir(root: &Path, name: &str, f1: f64, fp: f64) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("report/charts")).unwrap();
        std::fs::write(
            dir.join("report/charts/f1.svg"),
            format!("<svg xmlns=\"http://www.w3.org/2000/svg\">{name}</svg>"),
        )
        .unwrap();
        let rec = |metric: &str, subset: &str, v: f64| json!({"category": "pill", "source": "thr.mask", "metric": metric, "subset": subset, "pooling": "pixels", "value": v});
        let sink = |node: &str, json: serde_json::Value, files: &[&str]| SinkResult {
            node: node.into(),
            markdown: String::new(),
            json,
            files: files.iter().map(|f| f.to_string()).collect(),
            headline: Default::default(),
        };
        let sinks = vec![
            sink(
                "eval",
                json!({"records": [rec("f1", "anomalous", f1), rec("fp_area", "good", fp), rec("iou", "anomalous", f1 / 2.0)]}),
                &[],
            ),
            sink("report", serde_json::Value::Null, &["report/charts/f1.svg", "report/index.html"]),
        ];
        let run = RunRecord::Completed { run: test_summary(None, sinks) };
        std::fs::write(dir.join("run.json"), run.to_json_text().unwrap()).unwrap();
        dir
    }

    #[test]
    fn differences_are_highlighted_and_charts_paired() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (run_dir(tmp.path(), "a", 0.30, 0.02), run_dir(tmp.path(), "b", 0.40, 0.03));
        let page = write_html(&a, &b, &tmp.path().join("cmp")).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        // F1 went up (better), the false-positive area up too (worse), IoU differs (listed).
        assert!(html.contains("<td>0.3000</td><td>0.4000</td><td class=\"better\">+0.1000</td>"), "{html}");
        assert!(html.contains("<td>0.0200</td><td>0.0300</td><td class=\"worse\">+0.0100</td>"), "{html}");
        assert!(html.contains("Every other figure that differs (1)") && html.contains("iou anomalous pixels"));
        assert!(
            html.contains("src=\"a/report/charts/f1.svg\"") && html.contains("src=\"b/report/charts/f1.svg\""),
            "{html}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cmp/b/report/charts/f1.svg")).unwrap().matches('b').count(),
            1
        );
    }

    #[test]
    fn a_run_that_did_not_complete_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = run_dir(tmp.path(), "a", 0.3, 0.0);
        let b = tmp.path().join("b");
        std::fs::create_dir_all(&b).unwrap();
        let error = crate::executor::RunError {
            phase: "test".into(),
            node: String::new(),
            stage: String::new(),
            sample: None,
            message: "stopped".into(),
        };
        std::fs::write(b.join("run.json"), RunRecord::stopped("q", &error, false).to_json_text().unwrap()).unwrap();
        let err = write_html(&a, &b, &tmp.path().join("cmp")).unwrap_err().to_string();
        assert!(err.contains("did not complete") && err.contains("run.json"), "{err}");
    }
}
