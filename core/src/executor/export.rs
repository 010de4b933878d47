//! What a deployment bundle needs from the executor: the fitted instances of a run (fit and
//! calibration phases, every fitted state saved through the stages' own `save_state`), and a
//! predictor that loads them back and maps new samples through the same compute path the test
//! phase uses (routing per category, batching, output checks), with no sinks.

use abi_stable::std_types::RVec;
use serde_json::{Map, Value as Json};

use super::*;

/// One category's instance of a node: the params it was created with (the calibrated ones
/// where calibration chose) and its fitted state, if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryInstance {
    pub params: Map<String, Json>,
    pub state: Option<Vec<u8>>,
}

/// How a node's stage comes back in a predictor.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeState {
    /// Created from the pipeline's params; nothing learned.
    Plain,
    /// One instance for every category, with this fitted state.
    Global(Vec<u8>),
    /// One instance per category (fitted per category, or calibrated per category).
    PerCategory(BTreeMap<String, CategoryInstance>),
}

/// The fitted and calibrated instances of a pipeline, as states.
#[derive(Debug, Clone)]
pub struct FittedPipeline {
    /// Per node, in the pipeline's order.
    pub nodes: Vec<NodeState>,
    pub calibration: Option<CalibrationReport>,
    /// Channels of the source's `image` on the first fit sample (what predict inputs must have).
    pub image_channels: Option<usize>,
}

/// Runs the fit passes and the calibration of `p` (fitted states load from the cache when it
/// has them), then saves every fitted instance. No test sample is read.
pub fn fit_for_export(p: &CheckedPipeline, opts: &RunOptions) -> Result<FittedPipeline, RunError> {
    let mut runner = Runner::new(p, opts, super::instances::create_all(p, opts)?);
    let mut first_fit_sample = None;
    for pass in fit_passes(p) {
        if first_fit_sample.is_none() {
            let split = p.nodes[pass[0]].fit.clone().unwrap_or_else(|| "train".into());
            first_fit_sample = runner.list(&split)?.into_iter().next();
        }
        runner.fit(&pass)?;
    }
    let calibration = match &p.calibration {
        Some(plan) => Some(runner.calibrate(plan)?),
        None => None,
    };
    let image_channels = first_fit_sample.and_then(|meta| source_image_channels(&runner, &meta));
    let mut nodes = Vec::with_capacity(p.nodes.len());
    for n in 0..p.nodes.len() {
        nodes.push(runner.export_node(n, calibration.as_ref())?);
    }
    Ok(FittedPipeline { nodes, calibration, image_channels })
}

/// The channel count of the source's `image` output for one sample.
fn source_image_channels(runner: &Runner<'_>, meta: &SampleMeta) -> Option<usize> {
    let input = SampleInput { meta: meta.clone(), inputs: RVec::new() };
    let out =
        runner.instances[runner.p.source].single()?.process(RVec::from(vec![input])).into_vec().into_iter().next()?;
    let values = out.into_result().ok()?;
    values.iter().find(|v| v.port == "image").and_then(|v| match &v.value {
        anoflow_sdk::value::Value::Image(img) => Some(img.channels()),
        _ => None,
    })
}

/// A stage's fitted state; `None` for stages that keep none (maps).
fn saved_state(stage: &StageBox) -> Result<Option<Vec<u8>>, StageError> {
    match stage.save_state().into_result() {
        Ok(state) => Ok(Some(state.into_vec())),
        Err(e) if e.kind == anoflow_sdk::error::ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e),
    }
}

/// `params` of node `id` for `category`, with what calibration chose there.
fn calibrated_params(
    id: &str,
    mut params: Map<String, Json>,
    category: &str,
    calibration: Option<&CalibrationReport>,
) -> Map<String, Json> {
    let prefix = format!("{id}.");
    let chosen = calibration
        .into_iter()
        .flat_map(|c| &c.groups)
        .flat_map(|g| &g.categories)
        .filter(|c| c.category == category)
        .flat_map(|c| &c.chosen);
    for (key, value) in chosen {
        if let Some(param) = key.strip_prefix(&prefix) {
            crate::calibration_plan::set_param(&mut params, param, value.clone());
        }
    }
    params
}

impl Runner<'_> {
    fn export_node(&self, n: usize, calibration: Option<&CalibrationReport>) -> Result<NodeState, RunError> {
        let fail = |e: StageError| self.err("export", n, None, format!("cannot save its fitted state: {e}"));
        let stage = match &self.instances[n] {
            Instances::PerCategory(by_category) => {
                let mut instances = BTreeMap::new();
                for (category, stage) in by_category {
                    let params =
                        calibrated_params(&self.p.nodes[n].id, self.p.nodes[n].params.clone(), category, calibration);
                    let state = saved_state(stage).map_err(fail)?;
                    instances.insert(category.clone(), CategoryInstance { params, state });
                }
                return Ok(NodeState::PerCategory(instances));
            }
            Instances::One(stage) => stage,
        };
        if self.p.nodes[n].kind() != StageKind::Fitted {
            return Ok(NodeState::Plain);
        }
        match saved_state(stage).map_err(fail)? {
            Some(state) => Ok(NodeState::Global(state)),
            None => {
                Err(self.err("export", n, None, "the stage cannot save its fitted state, so it cannot be deployed"))
            }
        }
    }
}

/// One sample's result from a [`Predictor`]: the outputs of each requested node, or why there
/// are none.
pub type Prediction = Result<Vec<Vec<PortValue>>, String>;

/// Maps samples through a pipeline whose fitted instances come from states: the test phase's
/// compute path, with the requested nodes as its consumers.
pub struct Predictor<'a> {
    runner: Runner<'a>,
    compute: Vec<usize>,
    outputs: Vec<usize>,
}

impl<'a> Predictor<'a> {
    /// Creates every stage of `p` (a pipeline without sinks), restoring `states`, and keeps the
    /// outputs of the `outputs` nodes.
    pub fn new(
        p: &'a CheckedPipeline,
        opts: &'a RunOptions,
        states: &[NodeState],
        outputs: Vec<usize>,
    ) -> Result<Self, RunError> {
        let restore = |n: usize, stage: &mut StageBox, state: &[u8], what: &str| {
            stage.load_state(state.to_vec().into()).into_result().map_err(|e| RunError {
                phase: "load bundle".into(),
                node: p.nodes[n].id.clone(),
                stage: p.nodes[n].plugin().to_string(),
                sample: None,
                message: format!("its saved state{what} does not load: {e}"),
            })
        };
        let mut instances = Vec::with_capacity(p.nodes.len());
        for n in 0..p.nodes.len() {
            instances.push(match states.get(n).unwrap_or(&NodeState::Plain) {
                NodeState::Plain => Instances::One(create_stage(p, n, opts)?),
                NodeState::Global(state) => {
                    let mut stage = create_stage(p, n, opts)?;
                    restore(n, &mut stage, state, "")?;
                    Instances::One(stage)
                }
                NodeState::PerCategory(by_category) => {
                    let mut stages = BTreeMap::new();
                    for (category, instance) in by_category {
                        let mut s = create_stage_with(p, n, &instance.params, &opts.out_dir, opts.threads)?;
                        if let Some(state) = &instance.state {
                            restore(n, &mut s, state, &format!(" for category `{category}`"))?;
                        }
                        stages.insert(category.clone(), s);
                    }
                    Instances::PerCategory(stages)
                }
            });
        }
        let runner = Runner::new(p, opts, instances);
        let compute = (0..p.nodes.len()).filter(|&n| p.nodes[n].kind() != StageKind::Sink).collect();
        Ok(Predictor { runner, compute, outputs })
    }

    /// The categories the per-category nodes have instances for (empty when none is).
    pub fn categories(&self) -> BTreeSet<String> {
        self.runner.instances.iter().flat_map(|i| i.categories()).map(str::to_string).collect()
    }

    /// Maps `metas` (loaded by the pipeline's source) and returns, per sample, the outputs of
    /// the requested nodes in their order, or the failure that stopped its branch.
    pub fn predict(&self, metas: &[SampleMeta]) -> Result<Vec<Prediction>, RunError> {
        let mut chunk = self.runner.new_chunk(metas);
        chunk.iter_mut().for_each(|slot| slot.isolated = true);
        self.runner.compute_retaining("predict", &self.compute, &self.outputs, Retain::ConsumerInputs, &mut chunk)?;
        let failures = self.runner.failures.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default();
        Ok(chunk
            .into_iter()
            .map(|mut slot| {
                let lost = slot.failed || self.outputs.iter().any(|&o| slot.lost[o] || slot.outputs[o].is_empty());
                if lost {
                    let why: Vec<String> = failures
                        .iter()
                        .filter(|f| f.sample.as_deref() == Some(slot.meta.id.as_str()))
                        .map(|f| f.to_string())
                        .collect();
                    return Err(if why.is_empty() { "no output was produced".to_string() } else { why.join("; ") });
                }
                Ok(self.outputs.iter().map(|&o| std::mem::take(&mut slot.outputs[o])).collect())
            })
            .collect())
    }

    /// Per node: samples mapped and the time spent inside the stage.
    pub fn stats(&self) -> Vec<NodeStats> {
        self.runner.stats.iter().map(|s| s.lock().map(|s| s.clone()).unwrap_or_default()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::calibrate::{CategoryChoice, GroupReport};

    #[test]
    fn calibrated_choices_override_only_their_node_and_category() {
        let choice = |category: &str, k: f64| CategoryChoice {
            category: category.into(),
            clean_images: 1,
            defect_images: 1,
            chosen: [("thr.k".to_string(), Json::from(k)), ("other.k".to_string(), Json::from(99.0))]
                .into_iter()
                .collect(),
            chosen_index: Some(0),
            flag: None,
            candidates: Vec::new(),
        };
        let report = CalibrationReport {
            seconds: 0.0,
            objective: String::new(),
            groups: vec![GroupReport { target: "thr".into(), categories: vec![choice("a", 2.0), choice("b", 5.0)] }],
        };
        let mut params = Map::new();
        params.insert("k".into(), Json::from(3.0));
        params.insert("other".into(), Json::from(1));
        let b = calibrated_params("thr", params.clone(), "b", Some(&report));
        assert_eq!(b["k"], Json::from(5.0));
        assert_eq!(b["other"], Json::from(1), "`other.k` belongs to node `other`");
        assert_eq!(calibrated_params("thr", params.clone(), "a", Some(&report))["k"], Json::from(2.0));
        assert_eq!(calibrated_params("thr", params.clone(), "c", Some(&report)), params, "no choice for `c`");
        assert_eq!(calibrated_params("thr", params.clone(), "b", None), params);
    }
}
