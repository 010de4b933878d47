//! The calibration phase: per category, binarizer params chosen on the clean validation images
//! with synthetic defects pasted into them, never on test data.
//!
//! After the fit passes, for each category:
//! 1. the clean images of the calibration split and `variants` defect images made from them
//!    (the `defects` node's `image` stands in for the output it reads) go through everything
//!    upstream of the searched nodes once; only the values the searched nodes read are kept;
//! 2. for each search group in the order written, every candidate (a combination of the axes'
//!    values) re-creates the group's nodes with those params, re-fits its fitted ones on the
//!    clean images, and maps every calibration sample;
//! 3. the candidate with the best pooled F1 of the target's `mask` against the defects' masks,
//!    among those marking at most `max_good_fp_area` of the clean images' pixels, is kept (with
//!    a `tolerance`, the earliest in grid order within it of the best): its instances serve
//!    that category in the test phase, and its outputs feed later groups.
//!
//! Categories with too few clean images, maps that cannot tell candidates apart, or no
//! candidate under the false-positive bound fall back or are flagged, and the report says so.

use std::collections::{BTreeMap, BTreeSet};

use anoflow_sdk::value::{Mask, Value, LABEL_ANOMALOUS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::*;
use crate::calibration_plan::{CalibrationPlan, SearchGroup};

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

/// Instances that serve a category in the test phase, with their nodes.
type Instances = Vec<(usize, StageBox)>;

/// The calibration samples of one category, with the values the searched nodes read.
struct CategorySamples {
    clean: Vec<Slot>,
    defect: Vec<Slot>,
}

impl<'a> Runner<'a> {
    /// Runs the calibration phase; afterwards every searched node has one instance per category.
    pub(super) fn calibrate(&mut self, plan: &CalibrationPlan) -> Result<CalibrationReport, RunError> {
        let started = Instant::now();
        let phase = format!("calibrate on {}", plan.split);
        let searched: BTreeSet<usize> = plan.groups.iter().flat_map(|g| g.nodes.iter().copied()).collect();
        let upstream: Vec<usize> = searched
            .iter()
            .flat_map(|&n| self.p.ancestors(n))
            .filter(|n| !searched.contains(n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut keep: BTreeSet<usize> = searched
            .iter()
            .flat_map(|&n| self.p.nodes[n].inputs.iter().map(|e| e.from))
            .filter(|n| !searched.contains(n))
            .collect();
        keep.insert(plan.defects);

        let mut by_category: BTreeMap<String, Vec<SampleMeta>> = BTreeMap::new();
        for m in self.list(&plan.split)? {
            by_category.entry(m.category.to_string()).or_default().push(m);
        }
        let mut report = CalibrationReport {
            objective: format!(
                "pooled pixel F1 of the target's mask on synthetic defect images, among candidates marking at most {} \
                 of the clean {} images' pixels; the earliest candidate in grid order within {} (relative) of the \
                 best is chosen{}",
                plan.max_good_fp_area,
                plan.split,
                plan.tolerance,
                own_tolerances(self.p, plan)
            ),
            groups: plan
                .groups
                .iter()
                .map(|g| GroupReport { target: self.p.nodes[g.target].id.clone(), categories: Vec::new() })
                .collect(),
            ..Default::default()
        };
        // Categories are calibrated side by side like fits (`categories_in_flight`), each
        // holding its calibration samples; their results are taken in category order.
        let categories: Vec<(&String, &Vec<SampleMeta>)> = by_category.iter().collect();
        let phases: Vec<String> = categories.iter().map(|(category, _)| format!("{phase} [{category}]")).collect();
        let bars = progress_bars(self.opts);
        let failures_before = self.failures.lock().map_or(0, |f| f.len());
        let runner = &*self;
        let calibrated = categories::run_in_order(categories.len(), self.opts.categories_in_flight, |i| {
            let (category, clean) = categories[i];
            runner.calibrate_category(plan, &phases[i], category, clean, &upstream, &keep, &bars)
        });
        self.order_failures(failures_before, &phases);
        let mut choices: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for ((category, _), (category_choices, instances)) in categories.iter().zip(calibrated?) {
            for (n, stage) in instances {
                self.per_category[n].insert(category.to_string(), stage);
            }
            for ((g, group), choice) in plan.groups.iter().enumerate().zip(category_choices) {
                for &n in &group.nodes {
                    choices.entry(n).or_default().push(format!("{category}={}", Json::Object(choice.chosen.clone())));
                }
                report.groups[g].categories.push(choice);
            }
        }
        // The choices are part of each searched node's signature, so cached outputs of an
        // earlier calibration (or none) are never served for this one.
        for (n, lines) in choices {
            let mut h = Sha256::new();
            h.update(self.fit_keys[n].as_deref().unwrap_or_default().as_bytes());
            h.update(lines.join("\n").as_bytes());
            self.fit_keys[n] = Some(hex::encode(h.finalize()));
            self.with_stats(n, |s| s.fit_state = Some("calibrated".into()));
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Calibrates one category: each search group in turn. Returns each group's choice and the
    /// instances that serve the category in the test phase, by node.
    #[allow(clippy::too_many_arguments)]
    fn calibrate_category(
        &self,
        plan: &CalibrationPlan,
        phase: &str,
        category: &str,
        clean: &[SampleMeta],
        upstream: &[usize],
        keep: &BTreeSet<usize>,
        bars: &MultiProgress,
    ) -> Result<(Vec<CategoryChoice>, Instances), RunError> {
        let mut samples = if clean.len() < plan.min_images {
            None
        } else {
            Some(self.calibration_samples(plan, phase, category, clean, upstream, keep)?)
        };
        let mut choices = Vec::with_capacity(plan.groups.len());
        let mut instances = Vec::new();
        for group in &plan.groups {
            let choice = match samples.as_mut() {
                Some(samples) => {
                    let (choice, kept) = self.search(plan, group, phase, category, samples, bars)?;
                    instances.extend(kept);
                    choice
                }
                None => {
                    let flag = format!(
                        "only {} clean {} image(s), fewer than min_images {}: the params as written are used",
                        clean.len(),
                        plan.split,
                        plan.min_images
                    );
                    eprintln!("warning: calibration of `{}` [{category}]: {flag}", self.p.nodes[group.target].id);
                    instances.extend(self.written_params_instances(group)?);
                    CategoryChoice {
                        category: category.to_string(),
                        clean_images: clean.len(),
                        defect_images: 0,
                        chosen: written_params(self.p, group),
                        chosen_index: None,
                        flag: Some(flag),
                        candidates: Vec::new(),
                    }
                }
            };
            choices.push(choice);
        }
        Ok((choices, instances))
    }

    /// The clean images of one category and the defect images made from them, carried through
    /// everything upstream of the searched nodes; only the values in `keep` are kept.
    fn calibration_samples(
        &self,
        plan: &CalibrationPlan,
        phase: &str,
        category: &str,
        clean: &[SampleMeta],
        upstream: &[usize],
        keep: &BTreeSet<usize>,
    ) -> Result<CategorySamples, RunError> {
        let searched: Vec<usize> = plan.groups.iter().flat_map(|g| g.nodes.iter().copied()).collect();
        let prune = |slot: &mut Slot| {
            for (n, out) in slot.outputs.iter_mut().enumerate() {
                if !keep.contains(&n) {
                    out.clear();
                }
            }
        };
        let r = plan.replaces.0;
        let mut before_replace = self.p.ancestors(r);
        before_replace.push(r);
        let after_replace: Vec<usize> = upstream.iter().copied().filter(|n| !before_replace.contains(n)).collect();
        let defects_stage = self.per_category[plan.defects].get(category).ok_or_else(|| {
            self.err(phase, plan.defects, None, format!("no fitted instance for category `{category}`"))
        })?;
        // Which variants each clean image gets: `variants` rounds over all images, cut at
        // `max_samples`, so a cut spreads over the images.
        let total = (plan.variants * clean.len()).min(plan.max_samples);
        let variants_of = |i: usize| (0..plan.variants).filter(move |&k| k * clean.len() + i < total);
        // Defect images: the sample id names the clean image and the variant (what stages may
        // seed from); the defects node's signature goes into their node-output cache keys, so
        // other defects are never served, while a rebuilt library changes no result.
        let tag = hex::encode(Sha256::digest(self.signature(plan.defects).as_bytes()));

        let in_flight = self.opts.in_flight.max(1);
        let mut clean_slots = Vec::with_capacity(clean.len());
        let mut defect_slots = Vec::with_capacity(total);
        for (c, group) in clean.chunks(in_flight).enumerate() {
            self.check_interrupt(phase, clean_slots.len(), clean.len())?;
            // Each clean image is loaded and prepared once, for itself and its defect variants.
            let mut chunk = self.new_chunk(group);
            self.compute(phase, &before_replace, &[plan.defects], &mut chunk)?;
            for k in 0..plan.variants {
                let members: Vec<usize> = (0..chunk.len())
                    .filter(|&j| !chunk[j].failed && variants_of(c * in_flight + j).any(|v| v == k))
                    .collect();
                if members.is_empty() {
                    continue;
                }
                let metas: Vec<SampleMeta> = members
                    .iter()
                    .map(|&j| {
                        let mut d = chunk[j].meta.clone();
                        d.id = format!("{}#defect{k}", d.id).into();
                        d.split = "calibration".into();
                        d.defect = "synthetic".into();
                        d.label = LABEL_ANOMALOUS;
                        d
                    })
                    .collect();
                let mut defects = self.new_chunk(&metas);
                for (slot, &j) in defects.iter_mut().zip(&members) {
                    slot.cache_tag.clone_from(&tag);
                    for &n in &before_replace {
                        slot.outputs[n] = chunk[j].outputs[n].clone();
                    }
                }
                self.paste_defects(plan, phase, defects_stage, &mut defects)?;
                self.compute(phase, &after_replace, &searched, &mut defects)?;
                for mut slot in defects.into_iter().filter(|s| !s.failed) {
                    prune(&mut slot);
                    defect_slots.push(slot);
                }
            }
            self.compute(phase, &after_replace, &searched, &mut chunk)?;
            for mut slot in chunk.into_iter().filter(|s| !s.failed) {
                prune(&mut slot);
                clean_slots.push(slot);
            }
        }
        Ok(CategorySamples { clean: clean_slots, defect: defect_slots })
    }

    /// Runs the defects stage on `slots` (their clean images prepared up to the replaced
    /// node): its image takes the replaced output's place, its outputs (the mask) are kept.
    fn paste_defects(
        &self,
        plan: &CalibrationPlan,
        phase: &str,
        stage: &StageBox,
        slots: &mut [Slot],
    ) -> Result<(), RunError> {
        let (r, r_port) = (plan.replaces.0, plan.replaces.1.as_str());
        let batch = self.consumer_batch(phase, plan.defects, slots)?;
        let live: Vec<usize> = (0..slots.len()).filter(|&i| !slots[i].failed).collect();
        let t0 = Instant::now();
        let results = stage.process(batch).into_vec();
        self.with_stats(plan.defects, |s| {
            s.samples += results.len() as u64;
            s.busy_seconds += t0.elapsed().as_secs_f64();
        });
        for (&i, result) in live.iter().zip(results) {
            let slot = &mut slots[i];
            let outputs = match result.into_result() {
                Ok(values) => values.into_vec(),
                Err(e) => {
                    self.sample_failed(phase, plan.defects, slot, e.to_string())?;
                    continue;
                }
            };
            if let Err(msg) = self.check_outputs(plan.defects, &outputs) {
                self.sample_failed(phase, plan.defects, slot, msg)?;
                continue;
            }
            let Some(image) = outputs.iter().find(|pv| pv.port == "image").map(|pv| pv.value.clone()) else {
                self.sample_failed(phase, plan.defects, slot, "the stage produced no `image`".into())?;
                continue;
            };
            for pv in slot.outputs[r].iter_mut().filter(|pv| pv.port == r_port) {
                pv.value = image.clone();
            }
            slot.outputs[plan.defects] = outputs;
        }
        Ok(())
    }

    /// Tries every candidate of `group` on one category's samples and keeps the best.
    /// Returns the choice and the instances that serve the category, by node.
    fn search(
        &self,
        plan: &CalibrationPlan,
        group: &SearchGroup,
        phase: &str,
        category: &str,
        samples: &mut CategorySamples,
        bars: &MultiProgress,
    ) -> Result<(CategoryChoice, Instances), RunError> {
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
                params.insert(param.clone(), value.clone());
            }
            let mut stage = create_stage_with(self.p, n, &params, self.opts)?;
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

    /// Instances of the group's nodes with the params as written, to serve a category (the
    /// already fitted instances of fitted nodes stay: none is made for them).
    fn written_params_instances(&self, group: &SearchGroup) -> Result<Instances, RunError> {
        let maps = group.nodes.iter().filter(|&&n| self.p.nodes[n].kind() != StageKind::Fitted);
        maps.map(|&n| Ok((n, create_stage(self.p, n, self.opts)?))).collect()
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

/// `" (groups with their own tolerance: `best`: 0.15)"` for the groups whose own `tolerance` differs from the section's.
fn own_tolerances(p: &CheckedPipeline, plan: &CalibrationPlan) -> String {
    let own: Vec<String> = plan
        .groups
        .iter()
        .filter(|g| g.tolerance != plan.tolerance)
        .map(|g| format!("`{}`: {}", p.nodes[g.target].id, g.tolerance))
        .collect();
    if own.is_empty() {
        String::new()
    } else {
        format!(" (groups with their own tolerance: {})", own.join(", "))
    }
}

fn candidate_params(p: &CheckedPipeline, candidate: &[(usize, String, Json)]) -> Map<String, Json> {
    candidate.iter().map(|(n, param, v)| (format!("{}.{param}", p.nodes[*n].id), v.clone())).collect()
}

fn written_params(p: &CheckedPipeline, group: &SearchGroup) -> Map<String, Json> {
    group
        .axes
        .iter()
        .map(|(n, param, _)| {
            (format!("{}.{param}", p.nodes[*n].id), p.nodes[*n].params.get(param).cloned().unwrap_or(Json::Null))
        })
        .collect()
}

/// The report as Markdown: per group, the chosen params per category and, with
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

    fn score(f1: f64, good_fp_area: f64) -> CandidateScore {
        CandidateScore {
            params: Map::new(),
            f1,
            precision: 0.0,
            recall: 0.0,
            good_fp_area,
            feasible: good_fp_area <= 0.05,
        }
    }

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
