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

use anoflow_sdk::value::LABEL_ANOMALOUS;
use serde_json::{Map, Value as Json};

use super::*;
use crate::calibration_plan::{CalibrationPlan, SearchGroup};

mod report;
mod search;
pub use report::{markdown, merge_reports, CalibrationReport, CandidateScore, CategoryChoice, GroupReport};

/// Instances that serve a category in the test phase, with their nodes.
type Serving = Vec<(usize, StageBox)>;

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
                self.instances[n].insert(category.to_string(), stage);
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
    ) -> Result<(Vec<CategoryChoice>, Serving), RunError> {
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
        let defects_stage = self.instances[plan.defects].for_category(category).ok_or_else(|| {
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
                        d.id = d.variant_id(k as u64).into();
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

    /// Instances of the group's nodes with the params as written, to serve a category (the
    /// already fitted instances of fitted nodes stay: none is made for them).
    fn written_params_instances(&self, group: &SearchGroup) -> Result<Serving, RunError> {
        let maps = group.nodes.iter().filter(|&&n| self.p.nodes[n].kind() != StageKind::Fitted);
        maps.map(|&n| Ok((n, create_stage(self.p, n, self.opts)?))).collect()
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

fn written_params(p: &CheckedPipeline, group: &SearchGroup) -> Map<String, Json> {
    group
        .axes
        .iter()
        .map(|(n, param, _)| {
            let written = crate::calibration_plan::get_param(&p.nodes[*n].params, param);
            (format!("{}.{param}", p.nodes[*n].id), written.cloned().unwrap_or(Json::Null))
        })
        .collect()
}
