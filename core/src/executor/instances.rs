//! The stage instances of each node: one serving every sample, or one per category (a node
//! fitted per category, or calibrated per category).

use std::collections::BTreeMap;

use anoflow_sdk::abi::{CreateContext, InputEdge, StageBox};

use super::{CheckedPipeline, Path, RunError, RunOptions};

/// The instances serving one node's samples.
pub(super) enum Instances {
    /// One instance for every sample.
    One(StageBox),
    /// One instance per category; a category without one has no model for this node.
    PerCategory(BTreeMap<String, StageBox>),
}

impl Instances {
    /// The instance serving every sample; `None` for a node with one per category.
    pub(super) fn single(&self) -> Option<&StageBox> {
        match self {
            Instances::One(stage) => Some(stage),
            Instances::PerCategory(_) => None,
        }
    }

    pub(super) fn single_mut(&mut self) -> Option<&mut StageBox> {
        match self {
            Instances::One(stage) => Some(stage),
            Instances::PerCategory(_) => None,
        }
    }

    /// The instance serving samples of `category`.
    pub(super) fn for_category(&self, category: &str) -> Option<&StageBox> {
        match self {
            Instances::One(stage) => Some(stage),
            Instances::PerCategory(by_category) => by_category.get(category),
        }
    }

    /// Makes `stage` serve `category`; a node with one instance for every sample gets one per
    /// category from then on.
    pub(super) fn insert(&mut self, category: String, stage: StageBox) {
        match self {
            Instances::PerCategory(by_category) => {
                by_category.insert(category, stage);
            }
            Instances::One(_) => *self = Instances::PerCategory(BTreeMap::from([(category, stage)])),
        }
    }

    /// The categories with an instance of their own (none for a node with one instance).
    pub(super) fn categories(&self) -> Vec<&str> {
        match self {
            Instances::One(_) => Vec::new(),
            Instances::PerCategory(by_category) => by_category.keys().map(String::as_str).collect(),
        }
    }

    /// Takes the instance out to fit it, leaving a node with no instance yet (one per category,
    /// none fitted): what the fit puts back replaces it.
    pub(super) fn take_unfitted(&mut self) -> Option<StageBox> {
        match std::mem::replace(self, Instances::PerCategory(BTreeMap::new())) {
            Instances::One(stage) => Some(stage),
            Instances::PerCategory(_) => None,
        }
    }
}

/// One instance of every node, created with its checked params (so bad params fail before
/// any work).
pub(super) fn create_all(p: &CheckedPipeline, opts: &RunOptions) -> Result<Vec<Instances>, RunError> {
    (0..p.nodes.len()).map(|n| create_stage(p, n, opts).map(Instances::One)).collect()
}

/// Creates the stage of node `n` with its checked params.
pub(super) fn create_stage(p: &CheckedPipeline, n: usize, opts: &RunOptions) -> Result<StageBox, RunError> {
    create_stage_with(p, n, &p.nodes[n].params, &opts.out_dir, opts.threads)
}

/// The categories of `p`'s test split, sorted: the units a run split by category has.
pub fn test_categories(p: &CheckedPipeline) -> Result<Vec<String>, RunError> {
    let source = create_stage_with(p, p.source, &p.nodes[p.source].params, &p.spec.base_dir, 1)?;
    let metas = source.list("test".into()).into_result().map_err(|e| RunError {
        phase: "list test".into(),
        node: p.nodes[p.source].id.clone(),
        stage: p.nodes[p.source].plugin().to_string(),
        sample: None,
        message: e.to_string(),
    })?;
    Ok(metas.iter().map(|m| m.category.to_string()).collect::<std::collections::BTreeSet<_>>().into_iter().collect())
}

/// Creates the stage of node `n` with `params` in place of its checked ones (calibration
/// candidates); its work directory is the node's under `run_dir`.
pub(super) fn create_stage_with(
    p: &CheckedPipeline,
    n: usize,
    params: &serde_json::Map<String, serde_json::Value>,
    run_dir: &Path,
    threads: usize,
) -> Result<StageBox, RunError> {
    let node = &p.nodes[n];
    let ctx = CreateContext {
        node_id: node.id.as_str().into(),
        params_json: serde_json::Value::Object(params.clone()).to_string().into(),
        base_dir: p.spec.base_dir.to_string_lossy().as_ref().into(),
        work_dir: run_dir.join(&node.id).to_string_lossy().as_ref().into(),
        threads: threads as u32,
        inputs: node
            .inputs
            .iter()
            .map(|e| {
                let from = &p.nodes[e.from];
                InputEdge {
                    port: e.to_port.as_str().into(),
                    source: format!("{}.{}", from.id, e.from_port).into(),
                    labelled: from.stage.descriptor.output_port(&e.from_port).is_some_and(|o| o.multiple),
                }
            })
            .collect(),
    };
    (node.stage.factory.create)(&ctx).into_result().map_err(|e| RunError {
        phase: "create".into(),
        node: node.id.clone(),
        stage: node.plugin().to_string(),
        sample: None,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use anoflow_sdk::{
        error::StageError,
        stage::{Map, Outputs, Sample, StageAdapter, StageImpl},
    };

    use super::*;

    fn stage() -> StageBox {
        struct Never;
        impl Map for Never {
            fn process(&self, _: &Sample<'_>) -> Result<Outputs, StageError> {
                Err(StageError::unsupported("a test stage"))
            }
        }
        StageAdapter::new("never", StageImpl::Map(Box::new(Never))).into_box()
    }

    #[test]
    fn a_node_given_an_instance_per_category_serves_only_those_categories() {
        let mut instances = Instances::One(stage());
        assert!(instances.single().is_some() && instances.for_category("pill").is_some());
        assert!(instances.categories().is_empty());
        instances.insert("pill".into(), stage());
        instances.insert("tiles".into(), stage());
        assert!(instances.single().is_none(), "the instance for every sample is gone");
        assert_eq!(instances.categories(), ["pill", "tiles"]);
        assert!(instances.for_category("tiles").is_some());
        assert!(instances.for_category("carpet").is_none(), "no instance was made for `carpet`");
    }

    #[test]
    fn a_node_taken_out_to_fit_has_no_instance_until_one_is_put_back() {
        let mut instances = Instances::One(stage());
        assert!(instances.take_unfitted().is_some());
        assert!(instances.for_category("pill").is_none() && instances.single().is_none());
        assert!(instances.take_unfitted().is_none(), "nothing left to take");
    }
}
