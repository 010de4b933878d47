//! Parameters: checked against the stage's [`ParamSpec`]s once (by the host, or by the test
//! harness), merged with their defaults, then read by the stage with typed getters whose
//! errors name the node and the parameter.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use crate::{
    descriptor::{ParamSpec, StageDescriptor},
    error::StageError,
};

/// A problem found while checking the parameters a pipeline gives a node. `OutOfRange`: a
/// number (or an element of a number list) outside the declared range.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamProblem {
    Unknown { name: String, suggestion: Option<String> },
    Missing { name: String },
    WrongType { name: String, expected: String, found: String },
    NotAChoice { name: String, found: String, choices: Vec<String> },
    OutOfRange { name: String, found: String, range: String },
}

impl ParamProblem {
    /// The parameter the problem is about.
    pub fn param(&self) -> &str {
        match self {
            ParamProblem::Unknown { name, .. }
            | ParamProblem::Missing { name }
            | ParamProblem::WrongType { name, .. }
            | ParamProblem::NotAChoice { name, .. }
            | ParamProblem::OutOfRange { name, .. } => name,
        }
    }
}

impl std::fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamProblem::Unknown { name, suggestion: Some(s) } => {
                write!(f, "unknown param `{name}` (did you mean `{s}`?)")
            }
            ParamProblem::Unknown { name, suggestion: None } => write!(f, "unknown param `{name}`"),
            ParamProblem::Missing { name } => write!(f, "missing required param `{name}`"),
            ParamProblem::WrongType { name, expected, found } => {
                write!(f, "param `{name}`: expected {expected}, found {found}")
            }
            ParamProblem::NotAChoice { name, found, choices } => {
                write!(f, "param `{name}`: `{found}` is not one of {}", choices.join(", "))
            }
            ParamProblem::OutOfRange { name, found, range } => {
                write!(f, "param `{name}`: {found} is out of range: expected a value {range}")
            }
        }
    }
}

/// A short description of a JSON value's type for error messages.
pub fn describe_json(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("bool `{b}`"),
        Json::Number(n) if n.is_i64() || n.is_u64() => format!("integer `{n}`"),
        Json::Number(n) => format!("number `{n}`"),
        Json::String(s) => format!("string \"{s}\""),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a mapping".into(),
    }
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks `given` against the stage's specs; returns every problem at once.
pub fn check_params(desc: &StageDescriptor, given: &Map<String, Json>) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    for (name, value) in given {
        let Some(spec) = desc.param_spec(name) else {
            problems.push(ParamProblem::Unknown {
                name: name.clone(),
                suggestion: did_you_mean(name, desc.params.iter().map(|p| p.name.as_str())),
            });
            continue;
        };
        if !spec.ty.matches(value) {
            problems.push(ParamProblem::WrongType {
                name: name.clone(),
                expected: spec.ty.name().to_string(),
                found: describe_json(value),
            });
        } else if let Some(problem) = check_value(spec, value) {
            problems.push(problem);
        }
    }
    for spec in &desc.params {
        if spec.is_required() && !given.contains_key(spec.name.as_str()) {
            problems.push(ParamProblem::Missing { name: spec.name.to_string() });
        }
    }
    problems
}

/// The declared choices and range of `spec` against a value of the right type: the value
/// itself, or each element of a list. The first offending value is reported.
pub fn check_value(spec: &ParamSpec, value: &Json) -> Option<ParamProblem> {
    let name = spec.name.to_string();
    let (items, in_list): (Vec<&Json>, bool) = match value {
        Json::Array(items) => (items.iter().collect(), true),
        other => (vec![other], false),
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = |text: String| if in_list { format!("element {i} ({text})") } else { text };
        if let (false, Some(s)) = (spec.choices.is_empty(), item.as_str()) {
            if !spec.choices.iter().any(|c| c == s) {
                return Some(ParamProblem::NotAChoice {
                    name,
                    found: s.to_string(),
                    choices: spec.choices.iter().map(|c| c.to_string()).collect(),
                });
            }
        }
        if let (Some(v), Some(range)) = (item.as_f64(), spec.range_text()) {
            if !spec.in_range(v) {
                return Some(ParamProblem::OutOfRange { name, found: at(item.to_string()), range });
            }
        }
    }
    None
}

/// `given` merged over the stage's defaults. Call after [`check_params`] found no problem.
pub fn with_defaults(desc: &StageDescriptor, given: &Map<String, Json>) -> Map<String, Json> {
    let mut merged = Map::new();
    for spec in &desc.params {
        if let Some(d) = spec.default_value() {
            merged.insert(spec.name.to_string(), d);
        }
    }
    for (k, v) in given {
        merged.insert(k.clone(), v.clone());
    }
    merged
}

/// The checked parameters of one node, as a stage reads them.
#[derive(Debug, Clone)]
pub struct Params {
    node: String,
    base_dir: PathBuf,
    values: Map<String, Json>,
}

impl Params {
    pub fn new(node: impl Into<String>, base_dir: impl Into<PathBuf>, values: Map<String, Json>) -> Self {
        Self { node: node.into(), base_dir: base_dir.into(), values }
    }

    /// Parses the JSON object the host sends across the boundary.
    pub fn from_json(node: &str, base_dir: &str, json: &str) -> Result<Self, StageError> {
        let values: Map<String, Json> = serde_json::from_str(json)
            .map_err(|e| StageError::invalid_param(format!("node `{node}`: params are not a JSON object: {e}")))?;
        Ok(Self::new(node, base_dir, values))
    }

    pub fn node(&self) -> &str {
        &self.node
    }
    pub fn raw(&self) -> &Map<String, Json> {
        &self.values
    }
    pub fn has(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| !v.is_null())
    }

    fn err(&self, name: &str, msg: impl std::fmt::Display) -> StageError {
        StageError::invalid_param(format!("node `{}`: param `{name}`: {msg}", self.node))
    }

    /// Any deserializable type; the error names node, param and what was expected.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, StageError> {
        let v = self.values.get(name).ok_or_else(|| self.err(name, "missing"))?;
        serde_json::from_value(v.clone()).map_err(|e| self.err(name, format!("{e} (found {})", describe_json(v))))
    }

    pub fn get_or<T: DeserializeOwned>(&self, name: &str, default: T) -> Result<T, StageError> {
        if self.has(name) {
            self.get(name)
        } else {
            Ok(default)
        }
    }

    pub fn f64(&self, name: &str) -> Result<f64, StageError> {
        let v: f64 = self.get(name)?;
        if !v.is_finite() {
            return Err(self.err(name, "must be finite"));
        }
        Ok(v)
    }

    /// A number within `[lo, hi]`.
    pub fn f64_in(&self, name: &str, lo: f64, hi: f64) -> Result<f64, StageError> {
        let v = self.f64(name)?;
        if !(lo..=hi).contains(&v) {
            return Err(self.err(name, format!("expected a number in [{lo}, {hi}], found {v}")));
        }
        Ok(v)
    }

    pub fn usize(&self, name: &str) -> Result<usize, StageError> {
        self.get(name)
    }

    /// A positive integer.
    pub fn positive(&self, name: &str) -> Result<usize, StageError> {
        let v = self.usize(name)?;
        if v == 0 {
            return Err(self.err(name, "expected a positive integer, found 0"));
        }
        Ok(v)
    }

    pub fn bool(&self, name: &str) -> Result<bool, StageError> {
        self.get(name)
    }

    pub fn string(&self, name: &str) -> Result<String, StageError> {
        self.get(name)
    }

    /// A path; relative paths resolve against the pipeline file's directory.
    pub fn path(&self, name: &str) -> Result<PathBuf, StageError> {
        let p: String = self.get(name)?;
        Ok(self.resolve_path(&p))
    }

    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A nested mapping as its own `Params` (node name extended with the param name).
    pub fn object(&self, name: &str) -> Result<Params, StageError> {
        let map: Map<String, Json> = self.get(name)?;
        Ok(Params::new(format!("{}.{name}", self.node), self.base_dir.clone(), map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{ParamSpec, ParamType, StageDescriptor};
    use serde_json::json;

    fn desc() -> StageDescriptor {
        StageDescriptor::map("t", "test")
            .param(ParamSpec::float("percentile", 99.0, "p"))
            .param(ParamSpec::required("model", ParamType::Path, "m"))
            .param(ParamSpec::choice("mode", &["a", "b"], "m"))
    }

    #[test]
    fn all_problems_reported() {
        let given = json!({"percentil": 3, "mode": "c"});
        let problems = check_params(&desc(), given.as_object().unwrap());
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean `percentile`")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("`c` is not one of a, b")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("missing required param `model`")), "{text:?}");
    }

    #[test]
    fn wrong_type_names_expected_and_found() {
        let given = json!({"percentile": "high", "model": "m.onnx"});
        let problems = check_params(&desc(), given.as_object().unwrap());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].to_string(), "param `percentile`: expected number, found string \"high\"");
    }

    fn bounded() -> StageDescriptor {
        StageDescriptor::map("t", "test")
            .param(ParamSpec::float("sigma", 4.0, "s").min(0.0))
            .param(ParamSpec::float("coreset", 0.1, "c").above(0.0).max(1.0))
            .param(ParamSpec::int("size", 64, "n").min(64.0))
            .param(ParamSpec::with_default("mean", ParamType::FloatList, json!([0.5]), "m").range(0.0, 1.0))
            .param(ParamSpec::with_default("cats", ParamType::StringList, json!(["a"]), "k").one_of(&["a", "b"]))
    }

    fn problems_of(given: serde_json::Value) -> Vec<String> {
        check_params(&bounded(), given.as_object().unwrap()).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn bounds_are_enforced_inclusive_and_exclusive() {
        assert_eq!(problems_of(json!({"sigma": -3})), ["param `sigma`: -3 is out of range: expected a value >= 0"]);
        assert!(problems_of(json!({"sigma": 0, "coreset": 1.0, "size": 64})).is_empty(), "values on the bounds pass");
        assert_eq!(
            problems_of(json!({"coreset": 0.0})),
            ["param `coreset`: 0.0 is out of range: expected a value in (0, 1]"]
        );
        assert_eq!(problems_of(json!({"size": 10})), ["param `size`: 10 is out of range: expected a value >= 64"]);
    }

    #[test]
    fn list_elements_are_checked_one_by_one() {
        assert_eq!(
            problems_of(json!({"mean": [0.2, 1.5]})),
            ["param `mean`: element 1 (1.5) is out of range: expected a value in [0, 1]"]
        );
        assert_eq!(problems_of(json!({"cats": ["a", "zebra"]})), ["param `cats`: `zebra` is not one of a, b"]);
        assert!(problems_of(json!({"mean": [0.0, 1.0], "cats": ["b", "a"]})).is_empty());
    }

    #[test]
    fn json_schema_carries_bounds_and_choices() {
        let d = bounded();
        assert_eq!(d.param_spec("sigma").unwrap().json_schema(), json!({"type": "number", "minimum": 0}));
        assert_eq!(
            d.param_spec("coreset").unwrap().json_schema(),
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1})
        );
        assert_eq!(
            d.param_spec("mean").unwrap().json_schema(),
            json!({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}})
        );
        assert_eq!(
            d.param_spec("cats").unwrap().json_schema(),
            json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}})
        );
        assert_eq!(d.param_spec("coreset").unwrap().range_text().as_deref(), Some("in (0, 1]"));
    }

    #[test]
    fn defaults_and_typed_getters() {
        let given = json!({"model": "m.onnx"});
        let p = Params::new("ttt", "/base", with_defaults(&desc(), given.as_object().unwrap()));
        assert_eq!(p.f64("percentile").unwrap(), 99.0);
        assert_eq!(p.path("model").unwrap(), PathBuf::from("/base/m.onnx"));
        let err = p.usize("mode").unwrap_err().to_string();
        assert!(err.starts_with("node `ttt`: param `mode`:"), "{err}");
        assert!(p.f64_in("percentile", 0.0, 50.0).is_err());
    }
}
