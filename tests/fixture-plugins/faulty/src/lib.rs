//! A stage that misbehaves on purpose, so the host's fault handling can be tested:
//! it panics, returns NaN, returns a map of the wrong size, or an undeclared output.

use anoflow_sdk::prelude::*;

pub struct Faulty;

impl StagePlugin for Faulty {
    fn descriptor() -> StageDescriptor {
        StageDescriptor::map("faulty", "misbehaves on purpose (test fixture)")
            .input("score", ValueKind::ScoreMap, "any score map")
            .output("score", ValueKind::ScoreMap, "the misbehaving output")
            .param(ParamSpec::choice(
                "mode",
                &["panic", "nan", "wrong-size", "undeclared-output", "error"],
                "how to fail",
            ))
            .param(ParamSpec::string("only", "", "fail only on samples whose id contains this (empty: all)"))
    }

    fn create(params: &Params, _ctx: &CreateContext) -> StageResult<StageImpl> {
        Ok(StageImpl::Map(Box::new(FaultyStage { mode: params.string("mode")?, only: params.string("only")? })))
    }
}

/// `faulty`, declaring its output the size of its input: a wrong size is caught where it is made.
pub struct FaultySized;

impl StagePlugin for FaultySized {
    fn descriptor() -> StageDescriptor {
        let mut d = Faulty::descriptor();
        d.name = "faulty-sized".into();
        d.outputs.clear();
        d.output_same_size("score", ValueKind::ScoreMap, "score", "the misbehaving output, declared the input's size")
    }

    fn create(params: &Params, ctx: &CreateContext) -> StageResult<StageImpl> {
        Faulty::create(params, ctx)
    }
}

struct FaultyStage {
    mode: String,
    only: String,
}

impl Map for FaultyStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let s = sample.score_map("score")?;
        let (h, w) = (s.height() as u32, s.width() as u32);
        if !sample.meta.id.contains(self.only.as_str()) {
            return Ok(Outputs::new().with("score", s.clone()));
        }
        match self.mode.as_str() {
            "panic" => panic!("deliberate panic on sample {}", sample.meta.id),
            "nan" => Ok(Outputs::new().with("score", ScoreMap::new(h, w, vec![f32::NAN; (h * w) as usize])?)),
            "wrong-size" => {
                Ok(Outputs::new().with("score", ScoreMap::new(h / 2, w / 2, vec![0.0; (h / 2 * w / 2) as usize])?))
            }
            "undeclared-output" => Ok(Outputs::new().with("surprise", s.clone())),
            _ => Err(StageError::invalid_input(format!("deliberate error on sample {}", sample.meta.id))),
        }
    }
}

anoflow_sdk::export_plugin! { stages: [Faulty, FaultySized] }
