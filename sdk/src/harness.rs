//! A test harness for plugin authors: create a stage from JSON params and drive it on
//! hand-made samples, without the host. It goes through the same FFI shims, parameter
//! checks and output checks as the host does, so a stage that passes here behaves the
//! same when loaded from its library.

use std::path::{Path, PathBuf};

use abi_stable::std_types::{RResult, RString, RVec};

use crate::{
    abi::{CreateContext, FinishContext, InputEdge, SinkReport, StageBox},
    checks::check_outputs,
    descriptor::StageDescriptor,
    error::{StageError, StageResult},
    params::{check_params, with_defaults},
    stage::{create_shim, describe, StagePlugin},
    value::{FeatureMap, Mask, PortValue, SampleInput, SampleMeta, ScoreMap, Value},
};

/// A stage created for tests.
pub struct StageHarness {
    desc: StageDescriptor,
    stage: StageBox,
    node: String,
    /// The work directory when the harness owns it; declared last so that the stage is
    /// dropped before its directory is removed.
    _scratch: Option<ScratchDir>,
}

/// Outputs of one sample, checked against the descriptor.
#[derive(Debug, Clone)]
pub struct HarnessOutputs(pub Vec<PortValue>);

impl HarnessOutputs {
    pub fn get(&self, port: &str) -> Option<&Value> {
        self.0.iter().find(|p| p.port == port).map(|p| &p.value)
    }
    pub fn score_map(&self, port: &str) -> &ScoreMap {
        match self.get(port) {
            Some(Value::ScoreMap(v)) => v,
            other => panic!("output `{port}` is not a score map: {other:?}"),
        }
    }
    pub fn mask(&self, port: &str) -> &Mask {
        match self.get(port) {
            Some(Value::Mask(v)) => v,
            other => panic!("output `{port}` is not a mask: {other:?}"),
        }
    }
    pub fn feature_map(&self, port: &str) -> &FeatureMap {
        match self.get(port) {
            Some(Value::FeatureMap(v)) => v,
            other => panic!("output `{port}` is not a feature map: {other:?}"),
        }
    }
    pub fn scalar(&self, port: &str) -> f64 {
        match self.get(port) {
            Some(Value::Scalar(v)) => *v,
            other => panic!("output `{port}` is not a scalar: {other:?}"),
        }
    }
}

/// Builds a sample's inputs from `(port, value)` pairs; the edge is named `test.<port>`.
pub fn inputs(pairs: Vec<(&str, Value)>) -> Vec<PortValue> {
    pairs
        .into_iter()
        .map(|(port, value)| PortValue { port: port.into(), source: format!("test.{port}").into(), value })
        .collect()
}

/// A sample id for tests.
pub fn meta(id: &str) -> SampleMeta {
    SampleMeta::new(id, "test", "test")
}

impl StageHarness {
    /// Creates stage `T` with `params` (a JSON object), in a scratch work directory.
    pub fn new<T: StagePlugin>(params: serde_json::Value) -> StageResult<Self> {
        let dir = std::env::temp_dir().join(format!("anoflow-harness-{}", std::process::id()));
        Self::with_dirs::<T>(params, Path::new("."), &dir)
    }

    /// Creates stage `T`; relative paths in params resolve against `base_dir`.
    pub fn with_dirs<T: StagePlugin>(params: serde_json::Value, base_dir: &Path, work_dir: &Path) -> StageResult<Self> {
        Self::create::<T>(params, base_dir, work_dir, RVec::new())
    }

    /// Creates stage `T` wired to input edges `(port, source)`, e.g. `("masks", "thr.mask")`,
    /// as the host lists them in [`CreateContext::inputs`] (for sinks that expect their edges).
    pub fn with_edges<T: StagePlugin>(params: serde_json::Value, edges: &[(&str, &str)]) -> StageResult<Self> {
        let dir = std::env::temp_dir().join(format!("anoflow-harness-{}", std::process::id()));
        let edges = edges
            .iter()
            .map(|(port, source)| InputEdge { port: (*port).into(), source: (*source).into(), labelled: false })
            .collect();
        Self::create::<T>(params, Path::new("."), &dir, edges)
    }

    fn create<T: StagePlugin>(
        params: serde_json::Value,
        base_dir: &Path,
        work_dir: &Path,
        edges: RVec<InputEdge>,
    ) -> StageResult<Self> {
        let desc = describe::<T>();
        let node = format!("test-{}", desc.name);
        let given = params
            .as_object()
            .cloned()
            .ok_or_else(|| StageError::invalid_param(format!("node `{node}`: params must be a JSON object")))?;
        let problems = check_params(&desc, &given);
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(StageError::invalid_param(format!("node `{node}`: {}", text.join("; "))));
        }
        let merged = with_defaults(&desc, &given);
        let ctx = CreateContext {
            node_id: node.as_str().into(),
            params_json: serde_json::Value::Object(merged).to_string().into(),
            base_dir: base_dir.to_string_lossy().as_ref().into(),
            work_dir: work_dir.to_string_lossy().as_ref().into(),
            threads: 1,
            inputs: edges,
        };
        let stage = create_shim::<T>(&ctx).into_result()?;
        Ok(Self { desc, stage, node, _scratch: None })
    }

    /// Creates stage `T` with a scratch work directory of its own, removed with the harness;
    /// relative paths in params resolve against `base_dir`.
    pub fn with_scratch_work_dir<T: StagePlugin>(
        params: serde_json::Value,
        base_dir: &Path,
        tag: &str,
    ) -> StageResult<Self> {
        let work = scratch_dir(tag);
        let mut harness = Self::with_dirs::<T>(params, base_dir, &work)?;
        harness._scratch = Some(work);
        Ok(harness)
    }

    pub fn descriptor(&self) -> &StageDescriptor {
        &self.desc
    }

    /// The host's output checks ([`crate::checks::check_outputs`]), with the sample named.
    fn check_outputs(
        &self,
        meta: &SampleMeta,
        inputs: &[PortValue],
        outs: Vec<PortValue>,
    ) -> StageResult<HarnessOutputs> {
        check_outputs(&self.desc, inputs, &outs).map_err(|msg| {
            StageError::internal(format!(
                "node `{}` (stage `{}`), sample `{}`: {msg}",
                self.node, self.desc.name, meta.id
            ))
        })?;
        Ok(HarnessOutputs(outs))
    }

    /// Sources: the sample list of a split.
    pub fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>> {
        self.stage.list(split.into()).into_result().map(RVec::into_vec)
    }

    /// Sources: loads one sample. Map and fitted stages: processes one sample.
    pub fn process(&self, meta: &SampleMeta, inputs: Vec<PortValue>) -> StageResult<HarnessOutputs> {
        let batch = RVec::from(vec![SampleInput { meta: meta.clone(), inputs: inputs.clone().into() }]);
        let mut results = self.stage.process(batch).into_vec();
        match results.pop() {
            Some(RResult::ROk(outs)) => self.check_outputs(meta, &inputs, outs.into_vec()),
            Some(RResult::RErr(e)) => Err(e),
            None => Err(StageError::internal("stage returned no result for the sample")),
        }
    }

    /// Map and fitted stages: processes several samples in one call, as the host does for a
    /// stage with a `batch_size` param.
    pub fn process_batch(&self, samples: Vec<(SampleMeta, Vec<PortValue>)>) -> Vec<StageResult<HarnessOutputs>> {
        let batch: RVec<SampleInput> =
            samples.into_iter().map(|(meta, inputs)| SampleInput { meta, inputs: inputs.into() }).collect();
        self.stage
            .process(batch.clone())
            .into_iter()
            .zip(batch.iter())
            .map(|(r, s)| r.into_result().and_then(|outs| self.check_outputs(&s.meta, &s.inputs, outs.into_vec())))
            .collect()
    }

    /// Sources: loads one sample.
    pub fn load(&self, meta: &SampleMeta) -> StageResult<HarnessOutputs> {
        self.process(meta, Vec::new())
    }

    /// Fitted stages: observes every sample in order, then fits.
    pub fn fit(&mut self, samples: Vec<(SampleMeta, Vec<PortValue>)>) -> StageResult<()> {
        let batch: RVec<SampleInput> =
            samples.into_iter().map(|(meta, inputs)| SampleInput { meta, inputs: inputs.into() }).collect();
        self.stage.fit_observe(batch).into_result()?;
        self.stage.fit_finish().into_result()
    }

    pub fn save_state(&self) -> StageResult<Vec<u8>> {
        self.stage.save_state().into_result().map(RVec::into_vec)
    }

    pub fn load_state(&mut self, state: Vec<u8>) -> StageResult<()> {
        self.stage.load_state(state.into()).into_result()
    }

    /// Sinks: consumes one sample.
    pub fn consume(&mut self, meta: &SampleMeta, inputs: Vec<PortValue>) -> StageResult<()> {
        let batch = RVec::from(vec![SampleInput { meta: meta.clone(), inputs: inputs.into() }]);
        self.stage.consume(batch).into_result()
    }

    /// Sinks: finishes, writing into `out_dir`.
    pub fn finish(&mut self, out_dir: &Path) -> StageResult<SinkReport> {
        let ctx = FinishContext {
            node_id: RString::from(self.node.as_str()),
            out_dir: RString::from(out_dir.to_string_lossy().as_ref()),
        };
        self.stage.finish(&ctx).into_result()
    }
}

/// A fresh scratch directory under the system temp dir, `anoflow-<tag>-<pid>-<n>`. It is removed
/// with everything in it when the guard is dropped, so tests leave nothing behind: hold the guard
/// as long as the directory is used (it derefs to its `Path`).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("anoflow-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid would mix into this test's files.
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::create_dir_all(&path);
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a failed removal must not turn into a panic while a test unwinds.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh scratch directory, removed when the returned guard is dropped.
pub fn scratch_dir(tag: &str) -> ScratchDir {
    ScratchDir::new(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    struct Doubler;
    struct DoublerStage {
        factor: f32,
    }
    impl Map for DoublerStage {
        fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
            let s = sample.score_map("score")?;
            if s.data().iter().any(|v| v.is_nan()) {
                panic!("NaN in score map");
            }
            let data = s.data().iter().map(|v| v * self.factor).collect();
            Ok(Outputs::new().with("score", ScoreMap::new(s.height() as u32, s.width() as u32, data)?))
        }
    }
    fn two() -> f32 {
        2.0
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct DoublerConfig {
        /// multiplier
        #[serde(default = "two")]
        factor: f32,
    }
    impl StagePlugin for Doubler {
        type Config = DoublerConfig;
        type Stage = Box<dyn Map>;
        fn descriptor() -> StageDescriptor {
            StageDescriptor::new("doubler", "multiplies a score map").input("score", ValueKind::ScoreMap, "in").output(
                "score",
                ValueKind::ScoreMap,
                "out",
            )
        }
        fn create(config: DoublerConfig, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
            Ok(Box::new(DoublerStage { factor: config.factor }))
        }
    }

    #[test]
    fn the_kind_and_params_come_from_the_types() {
        let d = describe::<Doubler>();
        assert_eq!(d.kind, StageKind::Map);
        assert_eq!(d.params.len(), 1);
        assert_eq!((d.params[0].name.as_str(), d.params[0].doc.as_str()), ("factor", "multiplier"));
        assert!(d.source_file.ends_with(".rs"), "{}", d.source_file);
    }

    #[test]
    fn drives_a_map_stage() {
        let h = StageHarness::new::<Doubler>(serde_json::json!({"factor": 3})).unwrap();
        let map = ScoreMap::new(1, 2, vec![1.0, 2.0]).unwrap();
        let out = h.process(&meta("a"), inputs(vec![("score", map.into())])).unwrap();
        assert_eq!(out.score_map("score").data(), &[3.0, 6.0]);
    }

    #[test]
    fn batches_give_one_result_per_sample() {
        let h = StageHarness::new::<Doubler>(serde_json::json!({})).unwrap();
        let ok = ScoreMap::new(1, 1, vec![2.0]).unwrap();
        let bad = ScoreMap::new(1, 1, vec![f32::NAN]).unwrap();
        let out = h.process_batch(vec![
            (meta("a"), inputs(vec![("score", ok.into())])),
            (meta("b"), inputs(vec![("score", Value::Scalar(1.0))])),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().score_map("score").data(), &[4.0]);
        assert!(out[1].as_ref().unwrap_err().message.contains("sample `b`"));
        // A panic inside a batch fails every sample of that batch, never the host.
        let out = h.process_batch(vec![
            (meta("c"), inputs(vec![("score", bad.clone().into())])),
            (meta("d"), inputs(vec![("score", bad.into())])),
        ]);
        assert!(out.iter().all(|r| r.as_ref().unwrap_err().kind == ErrorKind::Panic));
    }

    #[test]
    fn panics_become_errors_with_their_location() {
        let h = StageHarness::new::<Doubler>(serde_json::json!({})).unwrap();
        let map = ScoreMap::new(1, 1, vec![f32::NAN]).unwrap();
        let err = h.process(&meta("a"), inputs(vec![("score", map.into())])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Panic);
        assert!(err.message.contains("stage `doubler` panicked: NaN in score map (at sdk/src/harness.rs:"), "{err}");
    }

    #[test]
    fn bad_params_and_wrong_kinds_are_reported() {
        let err = StageHarness::new::<Doubler>(serde_json::json!({"factr": 1})).err().unwrap();
        assert!(err.message.contains("did you mean `factor`"), "{err}");
        let h = StageHarness::new::<Doubler>(serde_json::json!({})).unwrap();
        let err = h.process(&meta("s1"), inputs(vec![("score", Value::Scalar(1.0))])).unwrap_err();
        assert!(err.message.contains("sample `s1`: input port `score` expected ScoreMap, found scalar"), "{err}");
    }

    /// Misbehaves as its `mode` param says, to show the harness runs the host's checks.
    struct Sloppy;
    struct SloppyStage(String);
    impl Map for SloppyStage {
        fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs> {
            let s = sample.score_map("score")?;
            let (h, w) = (s.height() as u32, s.width() as u32);
            let half = Mask::new(h / 2, w / 2, vec![0; (h / 2 * w / 2) as usize])?;
            let full = Mask::new(h, w, vec![0; (h * w) as usize])?;
            Ok(match self.0.as_str() {
                "twice" => Outputs::new().with("mask", full.clone()).with("mask", full),
                "half" => Outputs::new().with("mask", half),
                "nan" => Outputs::new().with("mask", full).with("level", f64::NAN),
                _ => Outputs::new().with("mask", full).with("level", 0.5),
            })
        }
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct SloppyConfig {
        /// how to misbehave
        mode: String,
    }
    impl StagePlugin for Sloppy {
        type Config = SloppyConfig;
        type Stage = Box<dyn Map>;
        fn descriptor() -> StageDescriptor {
            StageDescriptor::new("sloppy", "misbehaves on request")
                .input("score", ValueKind::ScoreMap, "in")
                .output_same_size("mask", ValueKind::Mask, "score", "same size as `score`")
                .output("level", ValueKind::Scalar, "a level")
        }
        fn create(config: SloppyConfig, _ctx: &CreateContext) -> StageResult<Box<dyn Map>> {
            Ok(Box::new(SloppyStage(config.mode)))
        }
    }

    #[test]
    fn outputs_get_the_hosts_checks() {
        let run = |mode: &str| {
            let h = StageHarness::new::<Sloppy>(serde_json::json!({ "mode": mode })).unwrap();
            let map = ScoreMap::new(4, 4, vec![0.0; 16]).unwrap();
            h.process(&meta("s1"), inputs(vec![("score", map.into())])).map(|o| o.scalar("level"))
        };
        assert_eq!(run("ok").unwrap(), 0.5);
        let err = run("twice").unwrap_err().message.to_string();
        assert!(err.contains("sample `s1`: output `mask` takes one value per sample"), "{err}");
        let err = run("half").unwrap_err().message.to_string();
        assert!(err.contains("output `mask` is 2x2") && err.contains("input `score`, which is 4x4"), "{err}");
        let err = run("nan").unwrap_err().message.to_string();
        assert!(err.contains("output `level` is NaN"), "{err}");
    }

    #[test]
    fn scratch_dirs_are_distinct_and_removed_on_drop() {
        let a = scratch_dir("harness-scratch");
        let b = scratch_dir("harness-scratch");
        assert_ne!(a.path(), b.path());
        assert!(a.is_dir() && b.is_dir());
        std::fs::create_dir_all(a.join("sub/deeper")).unwrap();
        std::fs::write(a.join("sub/deeper/f"), b"x").unwrap();
        let gone = a.to_path_buf();
        drop(a);
        assert!(!gone.exists(), "{} was left behind", gone.display());
        assert!(b.is_dir(), "dropping one guard removed another's directory");
    }
}
