//! A stage that misbehaves on purpose, so the host's fault handling can be tested:
//! it panics, returns NaN, returns a map of the wrong size, or an undeclared output.

use anoflow_sdk::prelude::*;

pub struct Faulty;

/// How to fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Panic,
    Nan,
    WrongSize,
    UndeclaredOutput,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultyConfig {
    /// How to fail.
    #[serde(default)]
    pub mode: Mode,
    /// Fail only on samples whose id contains this (empty: all).
    #[serde(default)]
    pub only: String,
}

impl StagePlugin for Faulty {
    type Config = FaultyConfig;
    type Stage = Box<dyn Map>;
    fn descriptor() -> StageDescriptor {
        StageDescriptor::new("faulty", "misbehaves on purpose (test fixture)")
            .input("score", ValueKind::ScoreMap, "any score map")
            .output("score", ValueKind::ScoreMap, "the misbehaving output")
    }

    fn create(config: FaultyConfig, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Ok(Box::new(FaultyStage { mode: config.mode, only: config.only }))
    }
}

/// `faulty`, declaring its output the size of its input: a wrong size is caught where it is made.
pub struct FaultySized;

impl StagePlugin for FaultySized {
    type Config = FaultyConfig;
    type Stage = Box<dyn Map>;
    fn descriptor() -> StageDescriptor {
        let mut d = Faulty::descriptor();
        d.name = "faulty-sized".into();
        d.outputs.clear();
        d.output_same_size("score", ValueKind::ScoreMap, "score", "the misbehaving output, declared the input's size")
    }

    fn create(config: FaultyConfig, ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
        Faulty::create(config, ctx)
    }
}

struct FaultyStage {
    mode: Mode,
    only: String,
}

impl Map for FaultyStage {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
        let s = sample.score_map("score")?;
        let (h, w) = (s.height() as u32, s.width() as u32);
        if !sample.meta.id.contains(self.only.as_str()) {
            return Ok(Outputs::new().with("score", s.clone()));
        }
        match self.mode {
            Mode::Panic => panic!("deliberate panic on sample {}", sample.meta.id),
            Mode::Nan => Ok(Outputs::new().with("score", ScoreMap::new(h, w, vec![f32::NAN; (h * w) as usize])?)),
            Mode::WrongSize => {
                Ok(Outputs::new().with("score", ScoreMap::new(h / 2, w / 2, vec![0.0; (h / 2 * w / 2) as usize])?))
            }
            Mode::UndeclaredOutput => Ok(Outputs::new().with("surprise", s.clone())),
            Mode::Error => Err(StageError::invalid_input(format!("deliberate error on sample {}", sample.meta.id))),
        }
    }
}

anoflow_sdk::export_plugin! { stages: [Faulty, FaultySized] }
