//! What calibration chose, and why: the report kept in `run.json`, merged from shards, and
//! written as `calibration.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// What calibration chose, and why: kept in `run.json` and written as `calibration.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub seconds: f64,
    pub objective: String,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The node whose mask was scored.
    pub target: String,
    pub categories: Vec<CategoryChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryChoice {
    pub category: String,
    pub clean_images: usize,
    pub defect_images: usize,
    /// `node.param` -> the value used in the test phase.
    pub chosen: Map<String, Json>,
    /// Index into `candidates` of the chosen one; `None` when the params as written are used.
    pub chosen_index: Option<usize>,
    /// Why calibration did not (fully) apply here; `None` when it did.
    pub flag: Option<String>,
    pub candidates: Vec<CandidateScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    pub params: Map<String, Json>,
    /// Pooled pixel F1 of the target mask against the defects' masks.
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of the clean images' pixels the mask marks.
    pub good_fp_area: f64,
    /// Whether `good_fp_area` is within the bound.
    pub feasible: bool,
}

/// `every_candidate`, each candidate's objective.
/// The calibration of a run merged from its shards' reports: every category once, in the
/// order one whole run lists them. Shards split by sample each calibrate every category, and
/// must agree; shards split by category each bring their own. `seconds` is the longest shard's.
pub fn merge_reports(reports: &[CalibrationReport]) -> Result<Option<CalibrationReport>, String> {
    let Some(first) = reports.first() else { return Ok(None) };
    let mut merged = CalibrationReport { seconds: 0.0, objective: first.objective.clone(), groups: Vec::new() };
    for g in &first.groups {
        merged.groups.push(GroupReport { target: g.target.clone(), categories: Vec::new() });
    }
    for (r, report) in reports.iter().enumerate() {
        let targets = |x: &CalibrationReport| x.groups.iter().map(|g| g.target.clone()).collect::<Vec<_>>();
        if report.objective != first.objective || targets(report) != targets(first) {
            return Err(format!("shard {r} calibrated other groups or by another objective than shard 0"));
        }
        merged.seconds = merged.seconds.max(report.seconds);
        for (into, group) in merged.groups.iter_mut().zip(&report.groups) {
            for choice in &group.categories {
                match into.categories.iter().find(|c| c.category == choice.category) {
                    Some(known) if known != choice => {
                        return Err(format!(
                            "shards disagree on the calibration of `{}` in category `{}`",
                            group.target, choice.category
                        ))
                    }
                    Some(_) => {}
                    None => into.categories.push(choice.clone()),
                }
            }
        }
    }
    for g in &mut merged.groups {
        g.categories.sort_by(|a, b| a.category.cmp(&b.category));
    }
    Ok(Some(merged))
}

/// The report as Markdown: per group, the chosen params per category and, with
/// `every_candidate`, each candidate's objective.
pub fn markdown(report: &CalibrationReport, every_candidate: bool) -> String {
    let mut out = format!("# Calibration\n\nObjective: {}.\n", report.objective);
    for g in &report.groups {
        out.push_str(&format!("\n## `{}`\n\n| category | clean | defect images | chosen | F1 | good FP area | note |\n|---|---:|---:|---|---:|---:|---|\n", g.target));
        for c in &g.categories {
            let chosen: Vec<String> = c.chosen.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let (f1, fp) =
                c.chosen_index.and_then(|i| c.candidates.get(i)).map_or(("-".to_string(), "-".to_string()), |s| {
                    (format!("{:.3}", s.f1), format!("{:.4}", s.good_fp_area))
                });
            out.push_str(&format!(
                "| {} | {} | {} | {} | {f1} | {fp} | {} |\n",
                c.category,
                c.clean_images,
                c.defect_images,
                chosen.join(", "),
                c.flag.as_deref().unwrap_or("")
            ));
        }
        for c in g.categories.iter().filter(|_| every_candidate) {
            if c.candidates.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n<details><summary>{}: every candidate</summary>\n\n| params | F1 | precision | recall | good FP area | within bound |\n|---|---:|---:|---:|---:|---|\n",
                c.category
            ));
            for s in &c.candidates {
                let params: Vec<String> = s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!(
                    "| {} | {:.3} | {:.3} | {:.3} | {:.4} | {} |\n",
                    params.join(", "),
                    s.f1,
                    s.precision,
                    s.recall,
                    s.good_fp_area,
                    if s.feasible { "yes" } else { "no" }
                ));
            }
            out.push_str("\n</details>\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::calibrate::search::tests::score;

    fn report(categories: &[(&str, f64)], seconds: f64) -> CalibrationReport {
        let choice = |(category, f1): &(&str, f64)| CategoryChoice {
            category: category.to_string(),
            clean_images: 4,
            defect_images: 16,
            chosen: Map::new(),
            chosen_index: Some(0),
            flag: None,
            candidates: vec![score(*f1, 0.0)],
        };
        CalibrationReport {
            seconds,
            objective: "F1".into(),
            groups: vec![GroupReport { target: "thr".into(), categories: categories.iter().map(choice).collect() }],
        }
    }

    #[test]
    fn shard_reports_merge_into_the_whole_runs_order_and_must_agree() {
        let whole = report(&[("pill", 0.5), ("tiles", 0.4), ("woven", 0.3)], 9.0);
        // Split by category (any order), or by sample (every shard calibrated every category).
        let by_category = [report(&[("woven", 0.3)], 2.0), report(&[("pill", 0.5), ("tiles", 0.4)], 5.0)];
        let merged = merge_reports(&by_category).unwrap().unwrap();
        assert_eq!(merged.groups, whole.groups);
        assert_eq!(merged.seconds, 5.0, "the longest shard's");
        assert_eq!(merge_reports(&[whole.clone(), whole.clone()]).unwrap().unwrap().groups, whole.groups);
        assert_eq!(merge_reports(&[]).unwrap(), None);

        let disagreeing = [whole.clone(), report(&[("pill", 0.5), ("tiles", 0.41), ("woven", 0.3)], 9.0)];
        let e = merge_reports(&disagreeing).unwrap_err();
        assert!(e.contains("`thr`") && e.contains("`tiles`"), "{e}");
        let mut other = whole.clone();
        other.groups[0].target = "thr_cal".into();
        assert!(merge_reports(&[whole, other]).unwrap_err().contains("shard 1"));
    }
}
