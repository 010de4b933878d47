//! The search of one group on one category: every candidate re-creates the group's nodes
//! with its params, re-fits the fitted ones on the clean images, maps every calibration
//! sample, and is scored by the pixels its target's mask gets right; the best one is kept.

use std::collections::BTreeSet;

use anoflow_sdk::value::{Mask, Value};
use serde_json::{Map, Value as Json};

use super::*;

/// Pixel counts of one candidate over the calibration samples.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tp: u64,
    fp: u64,
    fn_: u64,
    good_fp: u64,
    good_pixels: u64,
}

impl Counts {
    fn score(&self, params: Map<String, Json>, bound: f64) -> CandidateScore {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let good_fp_area = ratio(self.good_fp, self.good_pixels);
        CandidateScore {
            params,
            f1: ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_),
            precision: ratio(self.tp, self.tp + self.fp),
            recall: ratio(self.tp, self.tp + self.fn_),
            good_fp_area,
            feasible: good_fp_area <= bound,
        }
    }
}

impl Runner<'_> {
    /// Tries every candidate of `group` on one category's samples and keeps the best.
    /// Returns the choice and the instances that serve the category, by node.
    pub(super) fn search(
        &self,
        plan: &CalibrationPlan,
        group: &SearchGroup,
        phase: &str,
        category: &str,
        samples: &mut CategorySamples,
        bars: &MultiProgress,
    ) -> Result<(CategoryChoice, Serving), RunError> {
        let target = self.p.nodes[group.target].id.clone();
        let candidates = group.candidates();
        let bar = bars.add(progress_bar(self.opts, candidates.len(), format!("calibrate {target} [{category}]")));
        let mut scores = Vec::with_capacity(candidates.len());
        for (c, candidate) in candidates.iter().enumerate() {
            self.check_interrupt(phase, c, candidates.len())?;
            let (_, outputs) = self.try_candidate(phase, group, candidate, samples)?;
            let counts = self.count(plan, group, samples, &outputs);
            scores.push(counts.score(candidate_params(self.p, candidate), plan.max_good_fp_area));
            bar.inc(1);
        }
        bar.finish_and_clear();
        bars.remove(&bar);
        let Some(chosen) = choose(&scores, group.tolerance) else {
            return Err(self.err(phase, group.target, None, "the search has no candidate"));
        };
        let mut flag = None;
        let first = &scores[0];
        if scores.iter().all(|s| s.f1 == first.f1 && s.good_fp_area == first.good_fp_area) {
            let constant = self.constant_score_inputs(group, samples);
            let why = if constant.is_empty() {
                "every candidate scores the same on the synthetic defects".to_string()
            } else {
                format!("the score maps of {} are constant", constant.join(", "))
            };
            flag = Some(format!("{why}: the params as written are used"));
        } else if !scores[chosen].feasible {
            flag = Some(format!(
                "no candidate kept the clean images' false-positive area within {}: the one marking the least was chosen",
                plan.max_good_fp_area
            ));
        }
        if let Some(f) = &flag {
            eprintln!("warning: calibration of `{target}` [{category}]: {f}");
        }
        let written = flag.as_deref().is_some_and(|f| f.ends_with("the params as written are used"));
        let choice = CategoryChoice {
            category: category.to_string(),
            clean_images: samples.clean.len(),
            defect_images: samples.defect.len(),
            chosen: if written { written_params(self.p, group) } else { scores[chosen].params.clone() },
            chosen_index: (!written).then_some(chosen),
            flag,
            candidates: scores,
        };
        let kept = if written {
            let kept = self.written_params_instances(group)?;
            // Later groups read what the written params produce.
            let candidate: Vec<(usize, String, Json)> = Vec::new();
            let (_, outputs) = self.try_candidate(phase, group, &candidate, samples)?;
            store_outputs(group, samples, outputs);
            kept
        } else {
            // Candidates are deterministic: the chosen one is built again rather than every
            // candidate's instances and outputs being kept.
            let (instances, outputs) = self.try_candidate(phase, group, &candidates[chosen], samples)?;
            store_outputs(group, samples, outputs);
            group.nodes.iter().copied().zip(instances).collect()
        };
        Ok((choice, kept))
    }

    /// Creates the group's nodes with one candidate's params, fits the fitted ones on the clean
    /// samples, and maps every sample. Returns the instances and, per sample (clean first),
    /// each group node's outputs.
    #[allow(clippy::type_complexity)]
    fn try_candidate(
        &self,
        phase: &str,
        group: &SearchGroup,
        candidate: &[(usize, String, Json)],
        samples: &mut CategorySamples,
    ) -> Result<(Vec<StageBox>, Vec<Vec<Vec<PortValue>>>), RunError> {
        let mut instances = Vec::with_capacity(group.nodes.len());
        for &n in &group.nodes {
            let mut params = self.p.nodes[n].params.clone();
            for (_, param, value) in candidate.iter().filter(|(m, ..)| *m == n) {
                crate::calibration_plan::set_param(&mut params, param, value.clone());
            }
            let mut stage = create_stage_with(self.p, n, &params, &self.opts.out_dir, self.opts.threads)?;
            if self.p.nodes[n].kind() == StageKind::Fitted {
                let batch = self.consumer_batch(phase, n, &mut samples.clean)?;
                stage.fit_observe(batch).into_result().map_err(|e| self.err(phase, n, None, e.to_string()))?;
                stage.fit_finish().into_result().map_err(|e| self.err(phase, n, None, e.to_string()))?;
            }
            for slots in [&mut samples.clean, &mut samples.defect] {
                self.map_all(phase, n, &stage, slots)?;
            }
            instances.push(stage);
        }
        let outputs = samples
            .clean
            .iter_mut()
            .chain(samples.defect.iter_mut())
            .map(|slot| group.nodes.iter().map(|&n| std::mem::take(&mut slot.outputs[n])).collect())
            .collect();
        Ok((instances, outputs))
    }

    /// Maps every live slot through `stage` (node `n`), in parallel batches.
    fn map_all(&self, phase: &str, n: usize, stage: &StageBox, slots: &mut [Slot]) -> Result<(), RunError> {
        let batch = self.batch_size(n);
        let mut work: Vec<(usize, SampleInput)> = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate().filter(|(_, s)| !s.failed) {
            match self.gather(n, slot) {
                Ok(inputs) => work.push((i, SampleInput { meta: slot.meta.clone(), inputs: inputs.into() })),
                Err(msg) => self.sample_failed(phase, n, slot, msg)?,
            }
        }
        let tasks: Vec<(&StageBox, &[(usize, SampleInput)])> = work.chunks(batch).map(|c| (stage, c)).collect();
        let (_, busy) = self.run_batches(phase, n, &tasks, slots)?;
        self.with_stats(n, |s| s.busy_seconds += busy.as_secs_f64());
        Ok(())
    }

    /// Pixel counts of the target's mask: against the defects' masks on defect samples, and
    /// marked pixels on clean ones. Samples that failed count as nothing found.
    fn count(
        &self,
        plan: &CalibrationPlan,
        group: &SearchGroup,
        samples: &CategorySamples,
        outputs: &[Vec<Vec<PortValue>>],
    ) -> Counts {
        let t = group.nodes.iter().position(|&n| n == group.target).unwrap_or(group.nodes.len() - 1);
        let mask_of = |values: &[PortValue]| -> Option<Mask> {
            values.iter().find(|pv| pv.port == "mask").and_then(|pv| match &pv.value {
                Value::Mask(m) => Some(m.clone()),
                _ => None,
            })
        };
        let mut counts = Counts::default();
        for (slot, out) in samples.clean.iter().zip(outputs) {
            if let Some(m) = mask_of(&out[t]) {
                counts.good_fp += m.data().iter().map(|&v| u64::from(v)).sum::<u64>();
                counts.good_pixels += m.data().len() as u64;
            } else if !slot.failed {
                counts.good_pixels += 1;
            }
        }
        for (slot, out) in samples.defect.iter().zip(&outputs[samples.clean.len()..]) {
            let Some(gt) = mask_of(&slot.outputs[plan.defects]) else { continue };
            match mask_of(&out[t]) {
                Some(m) if m.data().len() == gt.data().len() => {
                    for (&p, &g) in m.data().iter().zip(gt.data()) {
                        match (p != 0, g != 0) {
                            (true, true) => counts.tp += 1,
                            (true, false) => counts.fp += 1,
                            (false, true) => counts.fn_ += 1,
                            (false, false) => {}
                        }
                    }
                }
                _ => counts.fn_ += gt.data().iter().map(|&v| u64::from(v)).sum::<u64>(),
            }
        }
        counts
    }

    /// Nodes feeding the group whose score maps hold one value over every calibration sample.
    fn constant_score_inputs(&self, group: &SearchGroup, samples: &CategorySamples) -> Vec<String> {
        let feeding: BTreeSet<usize> = group
            .nodes
            .iter()
            .flat_map(|&n| self.p.nodes[n].inputs.iter().map(|e| e.from))
            .filter(|n| !group.nodes.contains(n))
            .collect();
        feeding
            .into_iter()
            .filter(|&n| {
                let mut range: Option<(f32, f32)> = None;
                let mut any = false;
                for slot in samples.clean.iter().chain(&samples.defect) {
                    for pv in &slot.outputs[n] {
                        if let Value::ScoreMap(m) = &pv.value {
                            any = true;
                            for &v in m.data() {
                                let (lo, hi) = range.get_or_insert((v, v));
                                *lo = lo.min(v);
                                *hi = hi.max(v);
                            }
                        }
                    }
                }
                any && range.is_some_and(|(lo, hi)| lo == hi)
            })
            .map(|n| format!("`{}`", self.p.nodes[n].id))
            .collect()
    }
}

/// Puts a group's outputs back into the samples, for the groups after it.
fn store_outputs(group: &SearchGroup, samples: &mut CategorySamples, outputs: Vec<Vec<Vec<PortValue>>>) {
    for (slot, values) in samples.clean.iter_mut().chain(samples.defect.iter_mut()).zip(outputs) {
        for (&n, v) in group.nodes.iter().zip(values) {
            slot.outputs[n] = v;
        }
    }
}

/// The chosen candidate: the earliest in grid order whose F1 is within `tolerance` (relative)
/// of the best feasible one, among feasible candidates; when none is feasible, the one marking
/// the least of the clean images (then the higher F1).
fn choose(scores: &[CandidateScore], tolerance: f64) -> Option<usize> {
    let best = scores
        .iter()
        .filter(|s| s.feasible)
        .map(|s| s.f1)
        .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m| m.max(f))));
    match best {
        Some(best) => scores.iter().position(|s| s.feasible && s.f1 >= best * (1.0 - tolerance)),
        None => (0..scores.len()).min_by(|&a, &b| {
            let (a, b) = (&scores[a], &scores[b]);
            a.good_fp_area.total_cmp(&b.good_fp_area).then(b.f1.total_cmp(&a.f1))
        }),
    }
}

fn candidate_params(p: &CheckedPipeline, candidate: &[(usize, String, Json)]) -> Map<String, Json> {
    candidate.iter().map(|(n, param, v)| (format!("{}.{param}", p.nodes[*n].id), v.clone())).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A candidate's score with only F1 and false-positive area set (feasible up to 0.05).
    pub(in crate::executor::calibrate) fn score(f1: f64, good_fp_area: f64) -> CandidateScore {
        CandidateScore {
            params: Map::new(),
            f1,
            precision: 0.0,
            recall: 0.0,
            good_fp_area,
            feasible: good_fp_area <= 0.05,
        }
    }

    #[test]
    fn the_best_feasible_candidate_wins_and_ties_keep_the_earliest() {
        let scores = [score(0.40, 0.2), score(0.50, 0.01), score(0.60, 0.0), score(0.60, 0.0), score(0.30, 0.0)];
        assert_eq!(choose(&scores, 0.0), Some(2), "an infeasible candidate never wins over a feasible one");
        // Within 20% of the best (0.60 -> 0.48), the earliest feasible one is chosen.
        assert_eq!(choose(&scores, 0.2), Some(1));
        assert_eq!(choose(&scores, 0.1), Some(2));
    }

    #[test]
    fn without_a_feasible_candidate_the_one_marking_least_is_chosen() {
        let scores = [score(0.5, 0.3), score(0.2, 0.1), score(0.4, 0.1), score(0.9, 0.2)];
        assert_eq!(choose(&scores, 0.0), Some(2));
        assert_eq!(choose(&[], 0.0), None);
    }

    #[test]
    fn counts_give_pooled_f1_precision_recall_and_clean_area() {
        let c = Counts { tp: 30, fp: 10, fn_: 20, good_fp: 5, good_pixels: 1000 };
        let s = c.score(Map::new(), 0.01);
        assert!((s.f1 - 60.0 / 90.0).abs() < 1e-12);
        assert!((s.precision - 0.75).abs() < 1e-12 && (s.recall - 0.6).abs() < 1e-12);
        assert!((s.good_fp_area - 0.005).abs() < 1e-12 && s.feasible);
        assert!(!Counts { good_fp: 20, good_pixels: 1000, ..c }.score(Map::new(), 0.01).feasible);
    }
}
