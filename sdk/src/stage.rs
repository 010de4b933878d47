//! The traits plugin authors implement, and the adapter that turns them into the
//! ABI-stable [`StageFfi`] object, catching every panic on the plugin side.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString, RVec},
};

use crate::{
    abi::{CreateContext, FinishContext, SampleOutputs, SinkReport, StageBox, StageFfi, StageFfi_TO},
    config::{field_order, param_specs, parse_config, schema_of, with_batch_size},
    descriptor::{StageDescriptor, StageKind},
    error::{ErrorKind, StageError, StageResult},
    panics::QuietPanics,
    value::{FeatureMap, Image, Mask, PointCloud, PortValue, SampleInput, SampleMeta, ScoreMap, Value},
};

/// Read-only view of one sample handed to a stage.
pub struct Sample<'a> {
    pub meta: &'a SampleMeta,
    inputs: &'a [PortValue],
}

macro_rules! typed_input {
    ($fn_name:ident, $variant:ident, $ty:ty) => {
        /// The value on a single-edge input port, of the expected kind.
        pub fn $fn_name(&self, port: &str) -> StageResult<&'a $ty> {
            match self.value(port)? {
                Value::$variant(v) => Ok(v),
                other => Err(self.wrong_kind(port, stringify!($variant), other)),
            }
        }
    };
}

impl<'a> Sample<'a> {
    pub fn new(meta: &'a SampleMeta, inputs: &'a [PortValue]) -> Self {
        Self { meta, inputs }
    }

    /// All values on a port with the edge each came from (`node.port`), in pipeline order.
    pub fn all(&self, port: &str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        let port = port.to_string();
        self.inputs.iter().filter(move |p| p.port == port.as_str()).map(|p| (p.source.as_str(), &p.value))
    }

    /// The value on a port, if connected.
    pub fn maybe(&self, port: &str) -> Option<&'a Value> {
        self.inputs.iter().find(|p| p.port == port).map(|p| &p.value)
    }

    /// The value on a required port.
    pub fn value(&self, port: &str) -> StageResult<&'a Value> {
        self.maybe(port).ok_or_else(|| {
            StageError::invalid_input(format!("sample `{}`: input port `{port}` received no value", self.meta.id))
        })
    }

    fn wrong_kind(&self, port: &str, expected: &str, found: &Value) -> StageError {
        StageError::invalid_input(format!(
            "sample `{}`: input port `{port}` expected {expected}, found {}",
            self.meta.id,
            found.kind()
        ))
    }

    typed_input!(image, Image, Image);
    typed_input!(mask, Mask, Mask);
    typed_input!(score_map, ScoreMap, ScoreMap);
    typed_input!(feature_map, FeatureMap, FeatureMap);
    typed_input!(point_cloud, PointCloud, PointCloud);

    pub fn scalar(&self, port: &str) -> StageResult<f64> {
        match self.value(port)? {
            Value::Scalar(v) => Ok(*v),
            other => Err(self.wrong_kind(port, "Scalar", other)),
        }
    }

    /// All feature maps on a multi-edge port.
    pub fn feature_maps(&self, port: &str) -> StageResult<Vec<&'a FeatureMap>> {
        self.all(port)
            .map(|(_, v)| match v {
                Value::FeatureMap(f) => Ok(f),
                other => Err(self.wrong_kind(port, "FeatureMap", other)),
            })
            .collect()
    }
}

/// Named output values of one sample.
#[derive(Default, Debug, Clone)]
pub struct Outputs(Vec<PortValue>);

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a value on an output port.
    pub fn with(mut self, port: &str, value: impl Into<Value>) -> Self {
        self.push(port, value);
        self
    }
    pub fn push(&mut self, port: &str, value: impl Into<Value>) {
        self.0.push(PortValue { port: port.into(), source: RString::new(), value: value.into() });
    }
    /// Adds one of several values on a multi-value output port, with its label (e.g. the
    /// layer name). Consumers see it as coming from `node.port[label]`.
    pub fn push_labeled(&mut self, port: &str, label: &str, value: impl Into<Value>) {
        self.0.push(PortValue { port: port.into(), source: label.into(), value: value.into() });
    }
    pub fn into_vec(self) -> Vec<PortValue> {
        self.0
    }
}

/// A source of samples.
pub trait Source: Send + Sync {
    /// The samples of a split, in a deterministic order. An unknown split is an error.
    fn list(&self, split: &str) -> StageResult<Vec<SampleMeta>>;
    /// Loads one sample's values.
    fn load(&self, meta: &SampleMeta) -> StageResult<Outputs>;
}

/// A per-sample stage without state across samples.
pub trait Map: Send + Sync {
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs>;

    /// Several samples at once. The host sends batches of `batch_size` samples to a stage
    /// that declares a `batch_size` param (e.g. to run a network on a batch); by default each
    /// sample is processed alone. One result per sample, in order.
    fn process_batch(&self, samples: &[Sample<'_>]) -> Vec<StageResult<Outputs>> {
        samples.iter().map(|s| self.process(s)).collect()
    }
}

/// A stage that learns from one split, then maps samples.
pub trait Fitted: Send + Sync {
    /// Observes one sample of the fit split (samples arrive in order).
    fn observe(&mut self, sample: &Sample<'_>) -> StageResult<()>;
    /// Learns from what was observed.
    fn finish_fit(&mut self) -> StageResult<()>;
    /// Maps a sample once fitted.
    fn process(&self, sample: &Sample<'_>) -> StageResult<Outputs>;
    /// The fitted state as bytes, for the cache. Default: not supported.
    fn save_state(&self) -> StageResult<Vec<u8>> {
        Err(StageError::unsupported("this stage cannot save its fitted state"))
    }
    /// Restores a state written by `save_state`.
    fn load_state(&mut self, _state: &[u8]) -> StageResult<()> {
        Err(StageError::unsupported("this stage cannot load a fitted state"))
    }
}

/// A stage that consumes every sample, then writes results.
pub trait Sink: Send + Sync {
    /// Takes in one sample. Check the sample before changing any state: on an error the
    /// host counts the sample as failed for this sink. An error about one input's value,
    /// made with [`StageError::bad_input`] and the edge's name from [`Sample::all`], is
    /// blamed on the node that produced that value; under `--keep-going` the host then
    /// offers the sample again without it, so the sink can still count the other inputs.
    /// A sink therefore sees samples that lack some edges (a producer that failed on
    /// them): [`CreateContext::edges`] lists every edge it should expect.
    fn consume(&mut self, sample: &Sample<'_>) -> StageResult<()>;
    fn finish(&mut self, ctx: &FinishContext) -> StageResult<SinkReport>;
    /// What the sink has accumulated, as bytes, so that shards of a run can be merged
    /// (`anoflow merge`). Default: not supported.
    fn save_state(&self) -> StageResult<Vec<u8>> {
        Err(StageError::unsupported("this sink cannot save what it accumulated"))
    }
    /// Adds a state written by `save_state` (another shard's) to this sink's. Merging must be
    /// exact: the merged results equal those of one unsharded run.
    fn merge_state(&mut self, _state: &[u8]) -> StageResult<()> {
        Err(StageError::unsupported("this sink cannot merge accumulated states"))
    }
}

/// A created stage of one of the four kinds.
pub enum StageImpl {
    Source(Box<dyn Source>),
    Map(Box<dyn Map>),
    Fitted(Box<dyn Fitted>),
    Sink(Box<dyn Sink>),
}

/// What [`StagePlugin::create`] returns: a boxed stage of one of the four kinds. The kind a
/// stage declares comes from this type, so it cannot disagree with what the stage does.
pub trait IntoStage {
    const KIND: StageKind;
    fn into_stage(self) -> StageImpl;
}

macro_rules! into_stage {
    ($trait:ident, $kind:ident) => {
        impl IntoStage for Box<dyn $trait> {
            const KIND: StageKind = StageKind::$kind;
            fn into_stage(self) -> StageImpl {
                StageImpl::$kind(self)
            }
        }
    };
}
into_stage!(Source, Source);
into_stage!(Map, Map);
into_stage!(Fitted, Fitted);
into_stage!(Sink, Sink);

/// Implemented once per stage type; the export macro lists these types.
pub trait StagePlugin {
    /// The node's params (`with:` in a pipeline), as one serde type: see [`crate::config`]
    /// for the conventions. Its schema is the stage's whole param declaration.
    type Config: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema;
    /// `Box<dyn Map>`, `Box<dyn Fitted>`, `Box<dyn Source>` or `Box<dyn Sink>`.
    type Stage: IntoStage;
    /// Name, summary, ports (and splits, for a source). Kind and params come from the types.
    fn descriptor() -> StageDescriptor;
    /// A stage for one node, from its checked config.
    fn create(config: Self::Config, ctx: &CreateContext) -> StageResult<Self::Stage>;
}

/// Where a library's crate lives; the export macro implements it, so a descriptor can name
/// the file of its stage's code.
pub trait CrateInfo {
    /// `CARGO_MANIFEST_DIR` of the plugin crate.
    const MANIFEST_DIR: &'static str;
}

/// The file of a type's module, from its path: `crate::stages::ttt4as::Ttt4as` ->
/// `src/stages/ttt4as.rs`; a type at the crate root -> `src/lib.rs`.
fn module_file(type_name: &str) -> String {
    let path = type_name.split('<').next().unwrap_or(type_name);
    let segments: Vec<&str> = path.split("::").collect();
    match segments.as_slice() {
        [_krate, modules @ .., _ty] if !modules.is_empty() => format!("src/{}.rs", modules.join("/")),
        _ => "src/lib.rs".into(),
    }
}

/// The full descriptor of stage type `T`: what it declares, with the kind from its `Stage`
/// type and the params and schema from its `Config`.
pub fn describe<T: StagePlugin>() -> StageDescriptor {
    let mut desc = T::descriptor();
    desc.kind = <T::Stage as IntoStage>::KIND;
    let mut schema = schema_of::<T::Config>();
    if desc.batch_size > 0 {
        schema = with_batch_size(schema, desc.batch_size);
    }
    desc.params = param_specs(&schema, &field_order::<T::Config>()).into();
    desc.config_schema = schema.to_string().into();
    desc.source_file = module_file(std::any::type_name::<T>()).into();
    desc
}

/// [`describe`], with the source file relative to the workspace (`plugins/x/src/...`).
pub fn describe_in<T: StagePlugin, C: CrateInfo>() -> StageDescriptor {
    let mut desc = describe::<T>();
    let dir = std::path::Path::new(C::MANIFEST_DIR);
    let tail: Vec<String> = dir
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    desc.source_file = format!("{}/{}", tail.join("/"), desc.source_file).into();
    desc
}

/// Text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Runs `f`, turning a panic into an error that names the stage and says where it happened
/// (`stage `x` panicked: message (at src/lib.rs:42:9)`), with the backtrace when
/// `RUST_BACKTRACE` is set. Nothing is printed: the host reports the error once per node.
pub fn guard<T>(stage: &str, f: impl FnOnce() -> StageResult<T>) -> StageResult<T> {
    let quiet = QuietPanics::enter();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let caught = quiet.caught();
            let at =
                caught.as_ref().and_then(|c| c.location.as_ref()).map(|l| format!(" (at {l})")).unwrap_or_default();
            let backtrace = caught
                .and_then(|c| c.backtrace)
                .map(|b| format!("\nstack backtrace (RUST_BACKTRACE is set):\n{b}"))
                .unwrap_or_default();
            Err(StageError::new(
                ErrorKind::Panic,
                format!("stage `{stage}` panicked: {}{at}{backtrace}", panic_message(payload.as_ref())),
            ))
        }
    }
}

/// One sample's result in its ABI-stable form.
fn to_ffi(result: StageResult<Outputs>) -> SampleOutputs {
    match result {
        Ok(o) => RResult::ROk(RVec::from(o.into_vec())),
        Err(e) => RResult::RErr(e),
    }
}

/// Wraps an author's stage into the FFI trait.
pub struct StageAdapter {
    name: String,
    inner: StageImpl,
}

impl StageAdapter {
    pub fn new(name: impl Into<String>, inner: StageImpl) -> Self {
        Self { name: name.into(), inner }
    }

    pub fn into_box(self) -> StageBox {
        StageFfi_TO::from_value(self, TD_Opaque)
    }

    fn wrong_call(&self, what: &str) -> StageError {
        let kind = match &self.inner {
            StageImpl::Source(_) => "source",
            StageImpl::Map(_) => "map",
            StageImpl::Fitted(_) => "fitted",
            StageImpl::Sink(_) => "sink",
        };
        StageError::unsupported(format!("stage `{}` is a {kind} stage: `{what}` does not apply", self.name))
    }

    fn per_sample(
        &self,
        batch: &[SampleInput],
        f: impl Fn(&SampleInput) -> StageResult<Outputs>,
    ) -> RVec<SampleOutputs> {
        batch.iter().map(|s| to_ffi(guard(&self.name, || f(s)))).collect()
    }
}

impl StageFfi for StageAdapter {
    fn list(&self, split: RStr<'_>) -> RResult<RVec<SampleMeta>, StageError> {
        guard(&self.name, || match &self.inner {
            StageImpl::Source(s) => s.list(split.as_str()).map(RVec::from),
            _ => Err(self.wrong_call("list")),
        })
        .into()
    }

    fn process(&self, batch: RVec<SampleInput>) -> RVec<SampleOutputs> {
        match &self.inner {
            StageImpl::Source(s) => self.per_sample(&batch, |x| s.load(&x.meta)),
            StageImpl::Map(m) if batch.len() > 1 => {
                let samples: Vec<Sample<'_>> = batch.iter().map(|x| Sample::new(&x.meta, &x.inputs)).collect();
                match guard(&self.name, || Ok(m.process_batch(&samples))) {
                    Ok(results) if results.len() == batch.len() => results.into_iter().map(to_ffi).collect(),
                    Ok(results) => {
                        let e = StageError::internal(format!(
                            "stage `{}` returned {} results for a batch of {}",
                            self.name,
                            results.len(),
                            batch.len()
                        ));
                        batch.iter().map(|_| RResult::RErr(e.clone())).collect()
                    }
                    Err(e) => batch.iter().map(|_| RResult::RErr(e.clone())).collect(),
                }
            }
            StageImpl::Map(m) => self.per_sample(&batch, |x| m.process(&Sample::new(&x.meta, &x.inputs))),
            StageImpl::Fitted(m) => self.per_sample(&batch, |x| m.process(&Sample::new(&x.meta, &x.inputs))),
            StageImpl::Sink(_) => {
                let err = self.wrong_call("process");
                batch.iter().map(|_| RResult::RErr(err.clone())).collect()
            }
        }
    }

    fn fit_observe(&mut self, batch: RVec<SampleInput>) -> RResult<(), StageError> {
        let name = self.name.clone();
        let unsupported = self.wrong_call("fit");
        guard(&name, || match &mut self.inner {
            StageImpl::Fitted(f) => batch.iter().try_for_each(|x| f.observe(&Sample::new(&x.meta, &x.inputs))),
            _ => Err(unsupported),
        })
        .into()
    }

    fn fit_finish(&mut self) -> RResult<(), StageError> {
        let name = self.name.clone();
        let unsupported = self.wrong_call("fit");
        guard(&name, || match &mut self.inner {
            StageImpl::Fitted(f) => f.finish_fit(),
            _ => Err(unsupported),
        })
        .into()
    }

    fn save_state(&self) -> RResult<RVec<u8>, StageError> {
        guard(&self.name, || match &self.inner {
            StageImpl::Fitted(f) => f.save_state().map(RVec::from),
            StageImpl::Sink(s) => s.save_state().map(RVec::from),
            _ => Err(self.wrong_call("save_state")),
        })
        .into()
    }

    fn load_state(&mut self, state: RVec<u8>) -> RResult<(), StageError> {
        let name = self.name.clone();
        let unsupported = self.wrong_call("load_state");
        guard(&name, || match &mut self.inner {
            StageImpl::Fitted(f) => f.load_state(&state),
            StageImpl::Sink(s) => s.merge_state(&state),
            _ => Err(unsupported),
        })
        .into()
    }

    fn consume(&mut self, batch: RVec<SampleInput>) -> RResult<(), StageError> {
        let name = self.name.clone();
        let unsupported = self.wrong_call("consume");
        guard(&name, || match &mut self.inner {
            StageImpl::Sink(s) => batch.iter().try_for_each(|x| s.consume(&Sample::new(&x.meta, &x.inputs))),
            _ => Err(unsupported),
        })
        .into()
    }

    fn finish(&mut self, ctx: &FinishContext) -> RResult<SinkReport, StageError> {
        let name = self.name.clone();
        let unsupported = self.wrong_call("finish");
        guard(&name, || match &mut self.inner {
            StageImpl::Sink(s) => s.finish(ctx),
            _ => Err(unsupported),
        })
        .into()
    }
}

/// FFI shim: the descriptor of stage type `T` of the crate `C`, panics caught.
pub extern "C" fn descriptor_shim<T: StagePlugin, C: CrateInfo>() -> RResult<StageDescriptor, StageError> {
    guard(std::any::type_name::<T>(), || Ok(describe_in::<T, C>())).into()
}

/// FFI shim: creates stage type `T` from the host's context, panics caught.
pub extern "C" fn create_shim<T: StagePlugin>(ctx: &CreateContext) -> RResult<StageBox, StageError> {
    let name = ctx.node_id.to_string();
    guard(&name, || {
        let desc = T::descriptor();
        let config = parse_config::<T::Config>(&ctx.node_id, &ctx.params_json)?;
        let inner = T::create(config, ctx)?.into_stage();
        Ok(StageAdapter::new(desc.name.to_string(), inner).into_box())
    })
    .into()
}

#[cfg(test)]
mod tests {
    use super::module_file;

    #[test]
    fn a_stage_names_the_file_of_its_module() {
        assert_eq!(module_file("anoflow_plugin_ttt4as::stages::ttt4as::Ttt4as"), "src/stages/ttt4as.rs");
        assert_eq!(module_file("anoflow_plugin_example::GradientMagnitude"), "src/lib.rs");
        assert_eq!(module_file("a::b::C<x::y::Z>"), "src/b.rs");
    }
}
