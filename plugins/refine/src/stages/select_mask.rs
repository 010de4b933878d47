//! `select-mask` (map): passes one of several masks through, chosen by the name of the
//! edge it arrives on. The host names each value on a multi-edge input after the output
//! it comes from: `node.port`, or `node.port[label]` for a labelled value of a multi-value
//! output (core's executor, `gather`). A calibration step that picks the best binarizer
//! per category names its choice with `pick`.

use anoflow_sdk::prelude::*;

/// The `select-mask` stage type.
pub struct SelectMask;

struct SelectMaskStage {
    node: String,
    pick: String,
}

/// Params of `select-mask`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectMaskConfig {
    /// The edge to pass through, as the host names it: `node.port` (e.g. `thr.mask`), or
    /// `node.port[label]` for a labelled value.
    pub pick: String,
}

impl StagePlugin for SelectMask {
    type Config = SelectMaskConfig;
    type Stage = Box<dyn Map>;

    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("select-mask", "passes through the one mask of several that arrives on the edge `pick`")
            .multi_input("masks", ValueKind::Mask, "candidate masks, told apart by their edges (`node.port`)")
            .output("mask", ValueKind::Mask, "the mask on the edge named by `pick`, unchanged")
    }

    fn create(config: SelectMaskConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        let pick = config.pick;
        if pick.trim().is_empty() {
            return Err(StageError::invalid_param(format!(
                "node `{}`: param `pick`: expected an edge name such as `thr.mask`, found an empty string",
                ctx.node_id
            )));
        }
        Ok(Box::new(SelectMaskStage { node: ctx.node_id.to_string(), pick }))
    }
}

impl Map for SelectMaskStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let Some((_, value)) = sample.all("masks").find(|(source, _)| *source == self.pick) else {
            let available: Vec<String> = sample.all("masks").map(|(source, _)| format!("`{source}`")).collect();
            let available = if available.is_empty() { "none".to_string() } else { available.join(", ") };
            return Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: pick `{}` matches no edge into `masks`; available: {available}",
                self.node, sample.meta.id, self.pick
            )));
        };
        match value {
            Value::Mask(m) => Ok(Outputs::new().with("mask", m.clone())),
            other => Err(StageError::invalid_input(format!(
                "node `{}`, sample `{}`: edge `{}` carries a {}, expected a mask",
                self.node,
                sample.meta.id,
                self.pick,
                other.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_sdk::harness::{meta, StageHarness};
    use anoflow_sdk::value::PortValue;
    use serde_json::json;

    /// A 224x224 mask with a band of rows set, and its edge into `masks`.
    fn edge(source: &str, rows: std::ops::Range<usize>) -> PortValue {
        let data = (0..224 * 224).map(|i| u8::from(rows.contains(&(i / 224)))).collect();
        PortValue { port: "masks".into(), source: source.into(), value: Mask::new(224, 224, data).unwrap().into() }
    }

    fn candidates() -> Vec<PortValue> {
        vec![edge("thr.mask", 0..10), edge("ttt.mask", 10..30), edge("best.mask[calibrated]", 30..60)]
    }

    #[test]
    fn passes_the_picked_mask_through() {
        for (pick, rows) in [("thr.mask", 10), ("ttt.mask", 20), ("best.mask[calibrated]", 30)] {
            let h = StageHarness::new::<SelectMask>(json!({ "pick": pick })).unwrap();
            let out = h.process(&meta("cat/test/x/000"), candidates()).unwrap();
            assert_eq!(out.mask("mask").count_ones(), rows * 224, "{pick}");
        }
    }

    #[test]
    fn an_unmatched_pick_lists_the_edges() {
        let h = StageHarness::new::<SelectMask>(json!({"pick": "thr"})).unwrap();
        let err = h.process(&meta("cat/test/x/001"), candidates()).unwrap_err();
        assert!(err.message.contains("node `test-select-mask`, sample `cat/test/x/001`: pick `thr`"), "{err}");
        assert!(err.message.contains("`thr.mask`, `ttt.mask`, `best.mask[calibrated]`"), "{err}");
        let err = h.process(&meta("cat/test/x/002"), Vec::new()).unwrap_err();
        assert!(err.message.contains("available: none"), "{err}");
        assert!(StageHarness::new::<SelectMask>(json!({})).is_err(), "pick is required");
        assert!(StageHarness::new::<SelectMask>(json!({"pick": " "})).is_err());
    }
}
