//! A library that claims other interface versions than this SDK's, so the host's
//! version check can be tested.

use anoflow_sdk::prelude::*;

pub struct Identity;

impl StagePlugin for Identity {
    type Config = NoParams;
    type Stage = Box<dyn Map>;
    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("identity-wrong-contract", "passes a score map through (test fixture)")
            .input("score", ValueKind::ScoreMap, "in")
            .output("score", ValueKind::ScoreMap, "out")
    }

    fn create(_config: NoParams, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Ok(Box::new(IdentityStage))
    }
}

struct IdentityStage;

impl Map for IdentityStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        Ok(Outputs::new().with("score", sample.score_map("score")?.clone()))
    }
}

anoflow_sdk::export_plugin! { @versions (anoflow_sdk::abi::SDK_ABI_VERSION, 99) stages: [Identity] }
