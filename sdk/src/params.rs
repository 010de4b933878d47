//! Parameters: checked against the stage's config schema once (by the host, or by the test
//! harness) with every problem reported at once, then merged with their defaults; the stage
//! receives them deserialized into its `Config` ([`crate::config`]).

use serde_json::{Map, Value as Json};

use crate::descriptor::{ParamSpec, StageDescriptor};

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

/// Checks `given` against the stage's config schema; returns every problem at once.
pub fn check_params(desc: &StageDescriptor, given: &Map<String, Json>) -> Vec<ParamProblem> {
    // The registry refuses a library whose schemas do not parse, so this always parses.
    let schema: Json = serde_json::from_str(&desc.config_schema).unwrap_or(Json::Null);
    crate::config::check_against_schema(&schema, given)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{ParamSpec, ParamType};
    use serde_json::json;

    #[test]
    fn json_schema_carries_bounds_and_choices() {
        let sigma = ParamSpec::float("sigma", 4.0, "s").min(0.0);
        assert_eq!(sigma.json_schema(), json!({"type": "number", "minimum": 0}));
        let coreset = ParamSpec::float("coreset", 0.1, "c").above(0.0).max(1.0);
        assert_eq!(coreset.json_schema(), json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}));
        assert_eq!(coreset.range_text().as_deref(), Some("in (0, 1]"));
        let mean = ParamSpec::with_default("mean", ParamType::FloatList, json!([0.5]), "m").range(0.0, 1.0);
        assert_eq!(
            mean.json_schema(),
            json!({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}})
        );
        let cats = ParamSpec::with_default("cats", ParamType::StringList, json!(["a"]), "k").one_of(&["a", "b"]);
        assert_eq!(cats.json_schema(), json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}));
        assert_eq!(
            check_value(&cats, &json!(["a", "z"])).map(|p| p.to_string()).as_deref(),
            Some("param `cats`: `z` is not one of a, b")
        );
        assert_eq!(
            check_value(&mean, &json!([0.2, 1.5])).map(|p| p.to_string()).as_deref(),
            Some("param `mean`: element 1 (1.5) is out of range: expected a value in [0, 1]")
        );
    }

    #[test]
    fn did_you_mean_only_for_near_names() {
        assert_eq!(did_you_mean("percentil", ["percentile", "margin"]).as_deref(), Some("percentile"));
        assert_eq!(did_you_mean("zzz", ["percentile", "margin"]), None);
    }
}
