//! The charts of a sweep: `sweep.html` beside `sweep.md`, with each headline figure of every
//! sink that reports `records` (the segmentation metrics) against each swept param, one line
//! per category and the mean (with several axes, one line per category and value of the
//! other axes). Static files, viewable offline; the charts go to `sweep-charts/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anoflow_charts::Line;
use anyhow::{Context, Result};
use serde_json::Value as Json;

use crate::executor::RunSummary;

/// The figures charted: metric, subset, pooling, and the axis title.
const FIGURES: [(&str, &str, &str, &str); 4] = [
    ("f1", "anomalous", "pixels", "pixel F1 (anomalous images)"),
    ("fp_area", "good", "pixels", "false-positive area (good images)"),
    ("pixel_auroc", "all", "pixels", "pixel AUROC"),
    ("aupro", "all", "pixels", "AUPRO"),
];

/// A variant's swept params: name and value, in axis order.
type Params = Vec<(String, String)>;
/// A sink's results: node and JSON.
type Sinks = Vec<(String, Json)>;
/// Per (node, source, figure index), each (category, param values, value).
type Series = BTreeMap<(String, String, usize), Vec<(String, Vec<String>, f64)>>;

/// A variant's params from its name (`k=2,percentile=99`, as the sweep names them).
fn params(name: &str) -> Option<Params> {
    name.split(',').map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One value of `record` field `k`.
fn field<'a>(r: &'a Json, k: &str) -> &'a str {
    r[k].as_str().unwrap_or_default()
}

/// [`write_html`] for the runs of a sweep as the executor summarized them.
pub fn write_for_runs(out_dir: &Path, runs: &[(String, RunSummary)]) -> Result<Option<PathBuf>> {
    let variants: Vec<(String, Sinks)> = runs
        .iter()
        .map(|(name, s)| (name.clone(), s.sinks.iter().map(|x| (x.node.clone(), x.json.clone())).collect()))
        .collect();
    write_html(out_dir, &variants)
}

/// Writes `sweep.html` and its charts; `None` when nothing could be charted (no variant
/// names of the form `param=value`, or no sink with records).
pub fn write_html(out_dir: &Path, variants: &[(String, Sinks)]) -> Result<Option<PathBuf>> {
    let Some(named): Option<Vec<(Params, &Sinks)>> =
        variants.iter().map(|(name, sinks)| params(name).map(|p| (p, sinks))).collect()
    else {
        return Ok(None);
    };
    let axes: Vec<String> = named.first().map(|(p, _)| p.iter().map(|kv| kv.0.clone()).collect()).unwrap_or_default();
    let mut series: Series = BTreeMap::new();
    for (values, sinks) in &named {
        for (node, json) in sinks.iter() {
            for r in json["records"].as_array().into_iter().flatten() {
                let figure = FIGURES.iter().position(|(m, s, p, _)| {
                    field(r, "metric") == *m && field(r, "subset") == *s && field(r, "pooling") == *p
                });
                if let (Some(i), Some(v)) = (figure, r["value"].as_f64()) {
                    let key = (node.clone(), field(r, "source").to_string(), i);
                    let vals = values.iter().map(|kv| kv.1.clone()).collect();
                    series.entry(key).or_default().push((field(r, "category").to_string(), vals, v));
                }
            }
        }
    }
    if series.is_empty() || axes.is_empty() {
        return Ok(None);
    }
    let charts_dir = out_dir.join("sweep-charts");
    std::fs::create_dir_all(&charts_dir).with_context(|| format!("cannot create {}", charts_dir.display()))?;
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>anoflow sweep</title><style>\
         body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:28px;border-bottom:1px solid #ddd}\
         .chart{display:block;margin:8px 0;max-width:100%;height:auto}</style></head><body><h1>anoflow sweep</h1>",
    );
    let _ = writeln!(h, "<p>{} variants over {}; the table: sweep.md.</p>", named.len(), esc(&axes.join(", ")));
    for ((node, source, fig), points) in &series {
        let label = FIGURES[*fig].3;
        let _ = writeln!(h, "<h2>{}: {} <small>({})</small></h2>", esc(source), esc(label), esc(node));
        for (a, axis) in axes.iter().enumerate() {
            let order: Vec<&String> = {
                let mut seen: Vec<&String> = Vec::new();
                for (_, vals, _) in points {
                    if !seen.contains(&&vals[a]) {
                        seen.push(&vals[a]);
                    }
                }
                seen
            };
            let numeric = order.iter().all(|v| v.parse::<f64>().is_ok());
            let x_of = |v: &String| -> f64 {
                if numeric {
                    v.parse().unwrap_or_default()
                } else {
                    order.iter().position(|o| *o == v).unwrap_or_default() as f64
                }
            };
            let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for (category, vals, v) in points {
                let others: Vec<String> = axes
                    .iter()
                    .zip(vals)
                    .enumerate()
                    .filter(|(i, _)| *i != a)
                    .map(|(_, (k, v))| format!("{k}={v}"))
                    .collect();
                let name =
                    if others.is_empty() { category.clone() } else { format!("{category}, {}", others.join(", ")) };
                lines.entry(name).or_default().push((x_of(&vals[a]), *v));
            }
            let lines: Vec<Line> = lines
                .into_iter()
                .map(|(name, mut points)| {
                    points.sort_by(|p, q| p.0.total_cmp(&q.0));
                    Line { name, points }
                })
                .collect();
            let x_label = if numeric { axis.clone() } else { format!("{axis} (in sweep order)") };
            let svg = anoflow_charts::line_chart(&format!("{source}: {label}"), &x_label, label, &lines)?;
            let file = format!("sweep-charts/{}_{}_{}_{}.svg", safe(node), safe(source), FIGURES[*fig].0, safe(axis));
            let path = out_dir.join(&file);
            crate::fsutil::write_atomic(&path, svg.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            let _ = writeln!(
                h,
                "<img class=\"chart\" src=\"{}\" alt=\"{} against {}\">",
                esc(&file),
                esc(label),
                esc(axis)
            );
        }
    }
    h.push_str("</body></html>\n");
    let page = out_dir.join("sweep.html");
    crate::fsutil::write_atomic(&page, h.as_bytes()).with_context(|| format!("cannot write {}", page.display()))?;
    Ok(Some(page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sinks(f1: &[(&str, f64)]) -> Vec<(String, Json)> {
        let records: Vec<Json> = f1
            .iter()
            .map(|(cat, v)| {
                json!({"category": cat, "source": "thr.mask", "metric": "f1", "subset": "anomalous", "pooling": "pixels", "value": v})
            })
            .collect();
        vec![("eval".to_string(), json!({ "records": records })), ("report".to_string(), Json::Null)]
    }

    #[test]
    fn each_figure_is_charted_against_each_param_one_line_per_category() {
        let tmp = tempfile::tempdir().unwrap();
        let variants = vec![
            ("k=3".to_string(), sinks(&[("pill", 0.3), ("mean", 0.3)])),
            ("k=2".to_string(), sinks(&[("pill", 0.1), ("mean", 0.1)])),
        ];
        let page = write_html(tmp.path(), &variants).unwrap().unwrap();
        let html = std::fs::read_to_string(page).unwrap();
        assert!(html.contains("src=\"sweep-charts/eval_thr_mask_f1_k.svg\""), "{html}");
        let svg = std::fs::read_to_string(tmp.path().join("sweep-charts/eval_thr_mask_f1_k.svg")).unwrap();
        for text in ["pill", "mean", "k", "pixel F1 (anomalous images)"] {
            assert!(svg.contains(&format!(">\n{text}\n</text>")), "names {text}");
        }
        // Points sorted by the param's value: the pill line (second series, orange) runs from
        // k=2 (0.1) up to k=3 (0.3): left to right, and upwards on screen.
        let pill = svg
            .split("<polyline")
            .find(|p| p.contains("stroke=\"#FF7F0E\"") && p.contains("points=\"") && p.matches(',').count() == 2)
            .expect("the pill line");
        let pts = &pill[pill.find("points=\"").unwrap() + 8..];
        let pts: Vec<(f64, f64)> = pts[..pts.find('"').unwrap()]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(pts.len() == 2 && pts[0].0 < pts[1].0 && pts[0].1 > pts[1].1, "{pts:?}");
    }

    #[test]
    fn variants_without_param_names_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let variants = vec![("plain".to_string(), sinks(&[("pill", 0.3)]))];
        assert!(write_html(tmp.path(), &variants).unwrap().is_none());
        assert!(!tmp.path().join("sweep.html").exists());
    }
}
