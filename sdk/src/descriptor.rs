//! What a stage declares about itself: kind, ports, parameters. The host type-checks a
//! pipeline against descriptors before anything runs, and `anoflow plugins inspect`
//! prints them, so the docs of a stage cannot drift from its code.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

use crate::value::ValueKind;

/// How the executor drives a stage.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// Yields samples per split; has no inputs.
    Source,
    /// Maps each sample independently; no state across samples.
    Map,
    /// Learns from one split (named in the pipeline with `fit:`), then maps samples.
    Fitted,
    /// Consumes every sample of the run, then writes its results.
    Sink,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Source => "source",
            StageKind::Map => "map",
            StageKind::Fitted => "fitted",
            StageKind::Sink => "sink",
        }
    }
}

/// A typed input or output of a stage.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub name: RString,
    pub kind: ValueKind,
    /// Inputs: the port accepts several edges (e.g. many masks into one metrics node).
    /// Outputs: the port may carry several labelled values per sample (e.g. one feature map
    /// per backbone layer); it can only feed a `multiple` input.
    pub multiple: bool,
    /// Inputs only: the port may be left unconnected.
    pub optional: bool,
    pub doc: RString,
    /// Outputs only: the name of an input whose value this output matches in height and
    /// width (empty: no relation). The host and the harness check it on every sample, so a
    /// wrong size is blamed on the stage that made it, not on the next stage that reads it.
    pub same_size_as: RString,
}

/// The type of a parameter value, as written in YAML.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Bool,
    Int,
    Float,
    String,
    /// A file or directory path ([`crate::config::File`]); relative paths resolve against the
    /// pipeline file. The host fingerprints what it names.
    File,
    /// A model ([`crate::config::Model`]): a name in the model manifest or a file path.
    Model,
    IntList,
    FloatList,
    StringList,
    /// A list of [`ParamType::File`].
    FileList,
    /// A nested mapping (e.g. `classifier: { kind: linear-svm, c: 0.001 }`).
    Object,
    /// Anything.
    Any,
}

impl ParamType {
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Bool => "bool",
            ParamType::Int => "integer",
            ParamType::Float => "number",
            ParamType::String => "string",
            ParamType::File => "path",
            ParamType::Model => "model",
            ParamType::IntList => "list of integers",
            ParamType::FloatList => "list of numbers",
            ParamType::StringList => "list of strings",
            ParamType::FileList => "list of paths",
            ParamType::Object => "mapping",
            ParamType::Any => "any value",
        }
    }

    /// Whether a JSON value fits this type. Integers are accepted where numbers are.
    pub fn matches(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match self {
            ParamType::Bool => v.is_boolean(),
            ParamType::Int => v.is_i64() || v.is_u64(),
            ParamType::Float => v.is_number(),
            ParamType::String | ParamType::File | ParamType::Model => v.is_string(),
            ParamType::IntList => {
                matches!(v, J::Array(a) if a.iter().all(|e| e.is_i64() || e.is_u64()))
            }
            ParamType::FloatList => matches!(v, J::Array(a) if a.iter().all(J::is_number)),
            ParamType::StringList | ParamType::FileList => matches!(v, J::Array(a) if a.iter().all(J::is_string)),
            ParamType::Object => v.is_object(),
            ParamType::Any => true,
        }
    }

    /// The JSON Schema fragment for this type.
    pub fn json_schema(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ParamType::Bool => json!({"type": "boolean"}),
            ParamType::Int => json!({"type": "integer"}),
            ParamType::Float => json!({"type": "number"}),
            ParamType::String => json!({"type": "string"}),
            ParamType::File => json!({"type": "string", "format": crate::config::FORMAT_FILE}),
            ParamType::Model => json!({"type": "string", "format": crate::config::FORMAT_MODEL}),
            ParamType::IntList => json!({"type": "array", "items": {"type": "integer"}}),
            ParamType::FloatList => json!({"type": "array", "items": {"type": "number"}}),
            ParamType::StringList => json!({"type": "array", "items": {"type": "string"}}),
            ParamType::FileList => {
                json!({"type": "array", "items": {"type": "string", "format": crate::config::FORMAT_FILE}})
            }
            ParamType::Object => json!({"type": "object"}),
            ParamType::Any => json!({}),
        }
    }
}

/// One end of the range a numeric parameter must lie in.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub value: f64,
    /// The bound itself is outside the range (`> value` rather than `>= value`).
    pub exclusive: bool,
}

/// A parameter of a stage.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: RString,
    pub ty: ParamType,
    /// The default as JSON text; `RNone` means the parameter is required.
    pub default: ROption<RString>,
    /// For string parameters (and each element of a string list): the allowed values
    /// (empty: any string).
    pub choices: RVec<RString>,
    /// For numeric parameters (and each element of a number list): the smallest value allowed.
    pub minimum: ROption<Bound>,
    /// For numeric parameters (and each element of a number list): the largest value allowed.
    pub maximum: ROption<Bound>,
    pub doc: RString,
}

/// A bound as text: integral values without a fraction (`0`, not `0.0`).
fn number_text(v: f64) -> String {
    format!("{v}")
}

/// A bound as a JSON number: integral values as integers.
fn number_json(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

impl ParamSpec {
    fn make(name: &str, ty: ParamType, default: Option<serde_json::Value>, doc: &str) -> Self {
        Self {
            name: name.into(),
            ty,
            default: default.map(|d| RString::from(d.to_string())).into(),
            choices: RVec::new(),
            minimum: ROption::RNone,
            maximum: ROption::RNone,
            doc: doc.into(),
        }
    }

    /// A required parameter (no default).
    pub fn required(name: &str, ty: ParamType, doc: &str) -> Self {
        Self::make(name, ty, None, doc)
    }
    /// A parameter with a default.
    pub fn with_default(name: &str, ty: ParamType, default: serde_json::Value, doc: &str) -> Self {
        Self::make(name, ty, Some(default), doc)
    }
    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::with_default(name, ParamType::Bool, default.into(), doc)
    }
    pub fn int(name: &str, default: i64, doc: &str) -> Self {
        Self::with_default(name, ParamType::Int, default.into(), doc)
    }
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::with_default(name, ParamType::Float, default.into(), doc)
    }
    pub fn string(name: &str, default: &str, doc: &str) -> Self {
        Self::with_default(name, ParamType::String, default.into(), doc)
    }
    /// A string parameter restricted to `choices`; the first choice is the default.
    pub fn choice(name: &str, choices: &[&str], doc: &str) -> Self {
        let mut p = Self::string(name, choices.first().copied().unwrap_or_default(), doc);
        p.choices = choices.iter().map(|c| RString::from(*c)).collect();
        p
    }

    /// Values must be `>= min` (for a number list: each element).
    pub fn min(mut self, min: f64) -> Self {
        self.minimum = ROption::RSome(Bound { value: min, exclusive: false });
        self
    }
    /// Values must be `> min` (for a number list: each element).
    pub fn above(mut self, min: f64) -> Self {
        self.minimum = ROption::RSome(Bound { value: min, exclusive: true });
        self
    }
    /// Values must be `<= max` (for a number list: each element).
    pub fn max(mut self, max: f64) -> Self {
        self.maximum = ROption::RSome(Bound { value: max, exclusive: false });
        self
    }
    /// Values must be `< max` (for a number list: each element).
    pub fn below(mut self, max: f64) -> Self {
        self.maximum = ROption::RSome(Bound { value: max, exclusive: true });
        self
    }
    /// Values must lie in `[min, max]`.
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }
    /// Restricts a string (or each element of a string list) to `choices`, keeping the default.
    pub fn one_of(mut self, choices: &[&str]) -> Self {
        self.choices = choices.iter().map(|c| RString::from(*c)).collect();
        self
    }

    /// The numeric range as text (`>= 0`, `in (0, 1]`), if the parameter has one.
    pub fn range_text(&self) -> Option<String> {
        let min = self.minimum.into_option();
        let max = self.maximum.into_option();
        match (min, max) {
            (None, None) => None,
            (Some(lo), None) => Some(format!("{} {}", if lo.exclusive { ">" } else { ">=" }, number_text(lo.value))),
            (None, Some(hi)) => Some(format!("{} {}", if hi.exclusive { "<" } else { "<=" }, number_text(hi.value))),
            (Some(lo), Some(hi)) => Some(format!(
                "in {}{}, {}{}",
                if lo.exclusive { "(" } else { "[" },
                number_text(lo.value),
                number_text(hi.value),
                if hi.exclusive { ")" } else { "]" }
            )),
        }
    }

    /// Whether a number lies within the declared range.
    pub fn in_range(&self, v: f64) -> bool {
        let above_min = self.minimum.into_option().is_none_or(|b| if b.exclusive { v > b.value } else { v >= b.value });
        let below_max = self.maximum.into_option().is_none_or(|b| if b.exclusive { v < b.value } else { v <= b.value });
        above_min && below_max
    }

    /// The JSON Schema of the parameter's values: its type, with the declared range
    /// (`minimum`, `exclusiveMinimum`, ...) and choices (`enum`), on the list's items for a list.
    pub fn json_schema(&self) -> serde_json::Value {
        let mut schema = self.ty.json_schema();
        let mut constraints = serde_json::Map::new();
        if let Some(b) = self.minimum.into_option() {
            let key = if b.exclusive { "exclusiveMinimum" } else { "minimum" };
            constraints.insert(key.into(), number_json(b.value));
        }
        if let Some(b) = self.maximum.into_option() {
            let key = if b.exclusive { "exclusiveMaximum" } else { "maximum" };
            constraints.insert(key.into(), number_json(b.value));
        }
        if !self.choices.is_empty() {
            let choices = self.choices.iter().map(|c| serde_json::Value::String(c.to_string())).collect();
            constraints.insert("enum".into(), serde_json::Value::Array(choices));
        }
        let target = match self.ty {
            ParamType::IntList | ParamType::FloatList | ParamType::StringList | ParamType::FileList => {
                schema.get_mut("items")
            }
            _ => Some(&mut schema),
        };
        if let Some(serde_json::Value::Object(m)) = target {
            m.extend(constraints);
        }
        schema
    }

    pub fn default_value(&self) -> Option<serde_json::Value> {
        self.default.as_ref().into_option().and_then(|d| serde_json::from_str(d).ok())
    }
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

/// Everything a stage declares about itself. A stage writes its name, summary, ports and
/// splits ([`crate::stage::StagePlugin::descriptor`]); the SDK fills in the rest from the
/// stage's types: the kind from its `Stage` type, the params and schema from its `Config`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct StageDescriptor {
    /// The name pipelines use in `plugin:`, e.g. `ttt4as`.
    pub name: RString,
    /// Filled in by the SDK from the stage's `Stage` type.
    pub kind: StageKind,
    /// One line saying what the stage does.
    pub summary: RString,
    pub inputs: RVec<PortSpec>,
    pub outputs: RVec<PortSpec>,
    /// The top-level params, derived from the config schema (filled in by the SDK).
    pub params: RVec<ParamSpec>,
    /// Sources: the splits they provide (e.g. train, validation, test).
    pub splits: RVec<RString>,
    /// The JSON Schema of the stage's config (filled in by the SDK): nested options, ranges
    /// and docs, for the host's checks and `plugins inspect`.
    pub config_schema: RString,
    /// Batched stages: the default of the host-read `batch_size` param (0: not batched).
    pub batch_size: u32,
    /// The source file of the stage's code, relative to its crate (e.g.
    /// `src/stages/ttt4as.rs`), filled in by the SDK where the stage is exported.
    pub source_file: RString,
}

impl StageDescriptor {
    /// A stage named `name` (as pipelines write it in `plugin:`), with a one-line summary.
    pub fn new(name: &str, summary: &str) -> Self {
        Self {
            name: name.into(),
            // Set from the stage's `Stage` type by the SDK.
            kind: StageKind::Map,
            summary: summary.into(),
            inputs: RVec::new(),
            outputs: RVec::new(),
            params: RVec::new(),
            splits: RVec::new(),
            config_schema: RString::new(),
            batch_size: 0,
            source_file: RString::new(),
        }
    }

    /// A stage that takes several samples per call: the host sends batches of the reserved
    /// `batch_size` param (an integer >= 1, default `default`), which the SDK adds to the
    /// stage's params; the stage's `Config` does not hold it.
    pub fn batched(mut self, default: u32) -> Self {
        self.batch_size = default.max(1);
        self
    }

    fn port(name: &str, kind: ValueKind, multiple: bool, optional: bool, doc: &str) -> PortSpec {
        PortSpec { name: name.into(), kind, multiple, optional, doc: doc.into(), same_size_as: RString::new() }
    }

    /// A required input fed by exactly one edge.
    pub fn input(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.inputs.push(Self::port(name, kind, false, false, doc));
        self
    }
    /// An input that may be left unconnected.
    pub fn optional_input(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.inputs.push(Self::port(name, kind, false, true, doc));
        self
    }
    /// An input fed by one or more edges.
    pub fn multi_input(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.inputs.push(Self::port(name, kind, true, false, doc));
        self
    }
    /// An input fed by zero or more edges.
    pub fn optional_multi_input(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.inputs.push(Self::port(name, kind, true, true, doc));
        self
    }
    pub fn output(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.outputs.push(Self::port(name, kind, false, false, doc));
        self
    }
    /// An output with the same height and width as the value on input `input` (e.g. a mask
    /// made from a score map), checked on every sample.
    pub fn output_same_size(mut self, name: &str, kind: ValueKind, input: &str, doc: &str) -> Self {
        let mut port = Self::port(name, kind, false, false, doc);
        port.same_size_as = input.into();
        self.outputs.push(port);
        self
    }
    /// An output carrying one or more labelled values per sample (see [`PortSpec::multiple`]).
    pub fn multi_output(mut self, name: &str, kind: ValueKind, doc: &str) -> Self {
        self.outputs.push(Self::port(name, kind, true, false, doc));
        self
    }
    pub fn splits(mut self, splits: &[&str]) -> Self {
        self.splits = splits.iter().map(|s| RString::from(*s)).collect();
        self
    }

    pub fn input_port(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }
    pub fn output_port(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }
    pub fn param_spec(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}
