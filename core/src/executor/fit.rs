//! The fit phase: each fit pass streams its split once through the nodes its members depend
//! on; every member observes each chunk, then finishes its fit (or loads its fitted state from
//! the cache). A node fitted per category gets one instance per category.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::Instant,
};

use anoflow_sdk::{abi::StageBox, value::SampleMeta};
use indicatif::MultiProgress;
use sha2::{Digest, Sha256};

use super::{categories, create_stage, progress_bar, progress_bars, Instances, Retain, RunError, Runner};

impl Runner<'_> {
    /// Fits the nodes of one pass (see [`fit_passes`]): their split streams once through
    /// the union of their ancestors, and every node of the pass observes each chunk.
    pub(super) fn fit(&mut self, pass: &[usize]) -> Result<(), RunError> {
        let first = &self.p.nodes[pass[0]];
        let split = first.fit.clone().unwrap_or_else(|| "train".into());
        let ids: Vec<&str> = pass.iter().map(|&f| self.p.nodes[f].id.as_str()).collect();
        let phase = format!("fit {} on {split}", ids.join(", "));
        // A fit per category is done by the task owning the category; one over every category
        // by every task (or loaded from the cache they share).
        let metas = if first.fit_per_category { self.list(&split)? } else { self.list_all(&split)? };
        if metas.is_empty() {
            return Err(self.err(&phase, pass[0], None, format!("the `{split}` split is empty: nothing to fit on")));
        }
        // The instances created with the others (so bad params failed before any work) are
        // fitted first; further categories get fresh instances.
        let mut unfitted: Vec<Option<StageBox>> = pass.iter().map(|&f| self.instances[f].take_unfitted()).collect();
        let bars = progress_bars(self.opts);
        if !first.fit_per_category {
            let fitted = self.fit_instances(pass, &phase, &metas, &mut unfitted, 1, &bars)?;
            for (&f, (stage, key)) in pass.iter().zip(fitted) {
                self.instances[f] = Instances::One(stage);
                self.fit_keys[f] = Some(key);
            }
            return Ok(());
        }
        // One instance per node and category, each fitted on that category's samples only;
        // `categories_in_flight` categories at once (see `categories`), the first one with the
        // instances created above.
        let mut by_category: BTreeMap<String, Vec<SampleMeta>> = BTreeMap::new();
        for m in metas {
            by_category.entry(m.category.to_string()).or_default().push(m);
        }
        let categories: Vec<(String, Vec<SampleMeta>)> = by_category.into_iter().collect();
        let phases: Vec<String> = categories.iter().map(|(category, _)| format!("{phase} [{category}]")).collect();
        let created = Mutex::new(unfitted);
        let failures_before = self.failures.lock().map_or(0, |f| f.len());
        let runner = &*self;
        let workers = self.opts.categories_in_flight.clamp(1, categories.len());
        let fitted = categories::run_in_order(categories.len(), self.opts.categories_in_flight, |i| {
            let mut fresh: Vec<Option<StageBox>> = pass.iter().map(|_| None).collect();
            let mut created = if i == 0 { created.lock().ok() } else { None };
            let unfitted = created.as_deref_mut().map_or(fresh.as_mut_slice(), Vec::as_mut_slice);
            runner.fit_instances(pass, &phases[i], &categories[i].1, unfitted, workers, &bars)
        });
        self.order_failures(failures_before, &phases);
        let mut keys = vec![Vec::new(); pass.len()];
        for ((category, _), fitted) in categories.iter().zip(fitted?) {
            for (j, (stage, key)) in fitted.into_iter().enumerate() {
                self.instances[pass[j]].insert(category.clone(), stage);
                keys[j].push(key);
            }
        }
        for (&f, keys) in pass.iter().zip(keys) {
            self.fit_keys[f] = Some(hex::encode(Sha256::digest(keys.join(",").as_bytes())));
        }
        Ok(())
    }

    /// Puts the failures recorded since the `from`th in the order of `phases` (each
    /// category's in the order recorded): the order a run doing one category after another
    /// records them in, however the categories' work interleaved.
    pub(super) fn order_failures(&self, from: usize, phases: &[String]) {
        if let Some(recent) = self.failures.lock().ok().as_mut().and_then(|f| f.get_mut(from..)) {
            recent.sort_by_key(|e| phases.iter().position(|p| *p == e.phase).unwrap_or(phases.len()));
        }
    }

    /// Fits one instance of each node of `pass` on `metas` (or loads its cached state);
    /// returns the instances with their cache keys, in the order of `pass`.
    pub(super) fn fit_instances(
        &self,
        pass: &[usize],
        phase: &str,
        metas: &[SampleMeta],
        unfitted: &mut [Option<StageBox>],
        workers: usize,
        bars: &MultiProgress,
    ) -> Result<Vec<(StageBox, String)>, RunError> {
        let mut instances = Vec::with_capacity(pass.len());
        let mut pending = Vec::new();
        for (j, &f) in pass.iter().enumerate() {
            let key = self.cache_key(f, metas);
            let mut stage = unfitted[j].take().map_or_else(|| create_stage(self.p, f, self.opts), Ok)?;
            if !self.load_cached_state(f, &key, &mut stage) {
                pending.push(j);
            }
            instances.push((stage, key));
        }
        if pending.is_empty() {
            return Ok(instances);
        }
        let targets: Vec<usize> = pending.iter().map(|&j| pass[j]).collect();
        let needed: Vec<usize> =
            targets.iter().flat_map(|&f| self.p.ancestors(f)).collect::<BTreeSet<_>>().into_iter().collect();
        let bar = bars.add(progress_bar(self.opts, metas.len(), phase.to_string()));
        let t = Instant::now();
        let in_flight = self.category_chunk(&needed, workers);
        for (c, group) in metas.chunks(in_flight).enumerate() {
            self.check_interrupt(phase, c * in_flight, metas.len())?;
            let mut chunk = self.new_chunk(group);
            self.compute_retaining(phase, &needed, &targets, Retain::ConsumerInputs, &mut chunk)?;
            for &j in &pending {
                let f = pass[j];
                let batch = self.consumer_batch(phase, f, &mut chunk)?;
                let t0 = Instant::now();
                instances[j].0.fit_observe(batch).into_result().map_err(|e| self.err(phase, f, None, e.to_string()))?;
                self.with_stats(f, |s| s.busy_seconds += t0.elapsed().as_secs_f64());
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
        bars.remove(&bar);
        let streamed = t.elapsed().as_secs_f64();
        for &j in &pending {
            let f = pass[j];
            let (stage, key) = &mut instances[j];
            let t0 = Instant::now();
            stage.fit_finish().into_result().map_err(|e| self.err(phase, f, None, e.to_string()))?;
            let finished = t0.elapsed().as_secs_f64();
            self.with_stats(f, |s| {
                s.busy_seconds += finished;
                *s.fit_seconds.get_or_insert(0.0) += streamed + finished;
                s.fit_state = Some("fitted".into());
            });
            match stage.save_state().into_result() {
                Ok(state) => self.cache_write(key, &state),
                Err(e) if e.kind == anoflow_sdk::error::ErrorKind::Unsupported => {}
                Err(e) => eprintln!("warning: node `{}`: could not save its fitted state: {e}", self.p.nodes[f].id),
            }
        }
        Ok(instances)
    }
}
