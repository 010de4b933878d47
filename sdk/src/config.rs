//! Typed stage configs. A stage's params are one serde type, its `Config`; the type's JSON
//! Schema (derived with `schemars`) is the only declaration of names, types, defaults,
//! ranges, choices and docs. The host checks a pipeline's params against the schema before
//! anything runs (every problem at once, with did-you-mean), `anoflow plugins inspect`
//! prints it, and the stage receives the value already deserialized.
//!
//! Conventions for a `Config`:
//! - `#[serde(deny_unknown_fields)]`; a field's doc comment is the param's doc;
//! - defaults with `#[serde(default = "...")]`, ranges with `#[schemars(range(min = ..))]`
//!   or, for an open end, `#[schemars(extend("exclusiveMinimum" = 0))]`;
//! - a choice is an enum (`#[serde(rename_all = "kebab-case")]`); a choice with settings of
//!   its own is a tagged enum (`#[serde(tag = "kind", rename_all = "kebab-case")]`), written
//!   `labeler: { kind: level, level: 1.4 }`;
//! - files are [`File`], models [`Model`]: the host hashes what they name for provenance.

use std::{borrow::Cow, path::PathBuf};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{
    de::{self, DeserializeOwned, Visitor},
    Deserialize, Serialize,
};
use serde_json::{Map, Value as Json};

use crate::{
    abi::CreateContext,
    descriptor::{Bound, ParamSpec, ParamType},
    params::{describe_json, did_you_mean, ParamProblem},
};

/// The `format` of a [`File`] param's schema.
pub const FORMAT_FILE: &str = "path";
/// The `format` of a [`Model`] param's schema.
pub const FORMAT_MODEL: &str = "model";
/// The param the host reads the batch size of a batched stage from (see
/// [`crate::descriptor::StageDescriptor::batched`]); it is not part of the stage's `Config`.
pub const BATCH_SIZE_PARAM: &str = "batch_size";

/// The config of a stage without params.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// A file or directory a stage reads, as written in the pipeline. Relative paths resolve
/// against the pipeline file's directory ([`File::resolve`]). The host fingerprints what it
/// names (a file's SHA-256, a directory's listing) for provenance and cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct File(pub String);

impl File {
    /// The path, resolved against the pipeline's directory.
    pub fn resolve(&self, ctx: &CreateContext) -> PathBuf {
        self.resolve_in(ctx.base_dir.as_str())
    }

    /// The path, resolved against `base_dir`.
    pub fn resolve_in(&self, base_dir: &str) -> PathBuf {
        let p = std::path::Path::new(&self.0);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::path::Path::new(base_dir).join(p)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for File {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "File".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": FORMAT_FILE})
    }
}

/// A model: a name in `models/manifest.yaml` (its file is checked against the manifest's
/// SHA-256) or a path to a model file. The host fingerprints the file for provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Model(pub String);

impl Model {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for Model {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Model".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": FORMAT_MODEL})
    }
}

/// The JSON Schema of a config type: draft-07, every subschema inline (no `$ref`), without
/// the `$schema` and `title` keys.
pub fn schema_of<C: JsonSchema>() -> Json {
    let generator = schemars::generate::SchemaSettings::draft07()
        .with(|s| {
            s.inline_subschemas = true;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<C>().to_value();
    if let Json::Object(m) = &mut schema {
        m.remove("$schema");
        m.remove("title");
    }
    schema
}

/// The fields of a config struct in declaration order (schemas list them sorted), read from
/// the names serde hands its deserializer. Empty for a type that is not a plain struct.
pub fn field_order<C: DeserializeOwned>() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl<'de> de::Deserializer<'de> for &mut Names {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("names only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields.to_vec();
            Err(de::Error::custom("names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names = Names(Vec::new());
    let _ = C::deserialize(&mut names);
    names.0
}

/// Adds the reserved `batch_size` param (an integer >= 1, default `default`) to a schema.
pub fn with_batch_size(mut schema: Json, default: u32) -> Json {
    if let Some(props) = schema.get_mut("properties").and_then(Json::as_object_mut) {
        props.insert(
            BATCH_SIZE_PARAM.into(),
            serde_json::json!({
                "description": "samples per call (the host sends batches of this size)",
                "type": "integer", "minimum": 1, "default": default
            }),
        );
    } else if let Json::Object(m) = &mut schema {
        m.insert("type".into(), "object".into());
        m.insert(
            "properties".into(),
            serde_json::json!({ BATCH_SIZE_PARAM: {
                "description": "samples per call (the host sends batches of this size)",
                "type": "integer", "minimum": 1, "default": default
            }}),
        );
    }
    schema
}

/// The type names a schema allows (`type` as a string or a list).
fn types(schema: &Json) -> Vec<&str> {
    match schema.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The alternatives of a `oneOf` or `anyOf`.
fn alternatives(schema: &Json) -> Option<&Vec<Json>> {
    schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Json::as_array)
}

/// The tag values of a tagged enum's alternatives (`kind: level`), if every alternative is
/// an object with a constant `kind`.
fn tags(alts: &[Json]) -> Option<Vec<&str>> {
    alts.iter().map(|a| a.pointer("/properties/kind/const").and_then(Json::as_str)).collect()
}

/// The values of a choice written as alternatives of constants (schemars writes a plain
/// enum whose variants carry doc comments as `oneOf` of `const`s), if it is one.
fn const_choices(alts: &[Json]) -> Option<Vec<&Json>> {
    let mut out = Vec::new();
    for a in alts {
        match (a.get("const"), a.get("enum").and_then(Json::as_array)) {
            (Some(c), _) => out.push(c),
            (None, Some(values)) => out.extend(values.iter()),
            (None, None) => return None,
        }
    }
    Some(out)
}

/// The param type a property's schema declares.
fn param_type(schema: &Json) -> ParamType {
    let ty: Vec<&str> = types(schema).into_iter().filter(|t| *t != "null").collect();
    match (schema.get("format").and_then(Json::as_str), ty.as_slice()) {
        (Some(FORMAT_MODEL), _) => ParamType::Model,
        (Some(FORMAT_FILE), _) => ParamType::File,
        (_, ["boolean"]) => ParamType::Bool,
        (_, ["integer"]) => ParamType::Int,
        (_, ["number"]) => ParamType::Float,
        (_, ["string"]) => ParamType::String,
        (_, ["array"]) => {
            let items = schema.get("items").unwrap_or(&Json::Null);
            match param_type(items) {
                ParamType::File => ParamType::FileList,
                ParamType::Int => ParamType::IntList,
                ParamType::Float => ParamType::FloatList,
                ParamType::String => ParamType::StringList,
                _ => ParamType::Any,
            }
        }
        (_, ["object"]) => ParamType::Object,
        _ => match alternatives(schema) {
            Some(alts) if tags(alts).is_some() => ParamType::Object,
            Some(alts) if const_choices(alts).is_some_and(|c| c.iter().all(|v| v.is_string() || v.is_null())) => {
                ParamType::String
            }
            // `Option<T>`: T's type.
            Some(alts) => {
                let inner: Vec<&Json> = alts.iter().filter(|a| types(a) != ["null"]).collect();
                match inner.as_slice() {
                    [one] => param_type(one),
                    _ => ParamType::Any,
                }
            }
            None => ParamType::Any,
        },
    }
}

fn bound(schema: &Json, inclusive: &str, exclusive: &str) -> Option<Bound> {
    if let Some(v) = schema.get(exclusive).and_then(Json::as_f64) {
        return Some(Bound { value: v, exclusive: true });
    }
    schema.get(inclusive).and_then(Json::as_f64).map(|v| Bound { value: v, exclusive: false })
}

/// The schema that carries a property's range and choices: the items of a list, the
/// non-null alternative of an option, else the property itself.
fn constraint_carrier(schema: &Json) -> &Json {
    if let Some(items) = schema.get("items") {
        return items;
    }
    if let Some(alts) = alternatives(schema) {
        let inner: Vec<&Json> = alts.iter().filter(|a| types(a) != ["null"]).collect();
        if let [one] = inner.as_slice() {
            return one;
        }
    }
    schema
}

/// The top-level params of a config schema as [`ParamSpec`]s, in `order` (fields not named
/// there follow, sorted). Nested options stay in the schema, which the descriptor carries.
pub fn param_specs(schema: &Json, order: &[&str]) -> Vec<ParamSpec> {
    let Some(props) = schema.get("properties").and_then(Json::as_object) else { return Vec::new() };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Json::as_array)
        .map_or(Vec::new(), |r| r.iter().filter_map(Json::as_str).collect());
    let mut names: Vec<&str> = order.iter().copied().filter(|n| props.contains_key(*n)).collect();
    names.extend(props.keys().map(String::as_str).filter(|k| !order.contains(k)));
    names
        .into_iter()
        .filter_map(|name| props.get(name).map(|p| (name, p)))
        .map(|(name, prop)| {
            let doc = prop.get("description").and_then(Json::as_str).unwrap_or_default();
            let ty = param_type(prop);
            let mut spec = match (prop.get("default"), required.contains(&name)) {
                (Some(d), _) => ParamSpec::with_default(name, ty, d.clone(), doc),
                (None, true) => ParamSpec::required(name, ty, doc),
                // Optional without a declared default: absent means "not set".
                (None, false) => ParamSpec::with_default(name, ty, Json::Null, doc),
            };
            let carrier = constraint_carrier(prop);
            spec.minimum = bound(carrier, "minimum", "exclusiveMinimum").into();
            spec.maximum = bound(carrier, "maximum", "exclusiveMaximum").into();
            if let Some(choices) = carrier.get("enum").and_then(Json::as_array) {
                spec.choices = choices.iter().filter_map(Json::as_str).map(Into::into).collect();
            } else if let Some(choices) = alternatives(carrier).and_then(|a| const_choices(a)) {
                spec.choices = choices.iter().filter_map(|c| c.as_str()).map(Into::into).collect();
            } else if let Some(kinds) = alternatives(prop).and_then(|a| tags(a)) {
                spec.choices = kinds.into_iter().map(Into::into).collect();
            }
            spec
        })
        .collect()
}

/// What a schema expects, in words (`number`, `list of strings`, `mapping`).
fn expected_text(schema: &Json) -> String {
    let ty: Vec<&str> = types(schema).into_iter().filter(|t| *t != "null").collect();
    let one = |t: &str| -> String {
        match t {
            "boolean" => "bool".into(),
            "integer" => "integer".into(),
            "number" => "number".into(),
            "string" => "string".into(),
            "object" => "mapping".into(),
            "array" => match types(schema.get("items").unwrap_or(&Json::Null)).first().copied() {
                Some("integer") => "list of integers".into(),
                Some("number") => "list of numbers".into(),
                Some("string") => "list of strings".into(),
                _ => "a list".into(),
            },
            other => other.into(),
        }
    };
    if ty.is_empty() {
        return match alternatives(schema) {
            Some(alts) if tags(alts).is_some() => "mapping with a `kind`".into(),
            Some(alts) => {
                alts.iter().filter(|a| types(a) != ["null"]).map(expected_text).collect::<Vec<_>>().join(" or ")
            }
            None => "any value".into(),
        };
    }
    ty.into_iter().map(one).collect::<Vec<_>>().join(" or ")
}

fn type_fits(t: &str, v: &Json) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn range_text(lo: Option<Bound>, hi: Option<Bound>) -> Option<String> {
    let mut spec = ParamSpec::required("", ParamType::Float, "");
    spec.minimum = lo.into();
    spec.maximum = hi.into();
    spec.range_text()
}

/// Checks one value against its schema; `name` is the param's dotted path, `element` the
/// index within a list (for the message).
fn check_value(schema: &Json, value: &Json, name: &str, element: Option<usize>, out: &mut Vec<ParamProblem>) {
    let found_text = |v: &Json| match element {
        Some(i) => format!("element {i} ({v})"),
        None => v.to_string(),
    };
    // Tagged enums and options.
    if let Some(alts) = alternatives(schema) {
        if let Some(kinds) = tags(alts) {
            let Some(obj) = value.as_object() else {
                out.push(ParamProblem::WrongType {
                    name: name.into(),
                    expected: format!("mapping with a `kind` ({})", kinds.join(", ")),
                    found: describe_json(value),
                });
                return;
            };
            let kind = obj.get("kind").and_then(Json::as_str);
            match kind.and_then(|k| kinds.iter().position(|c| *c == k)) {
                Some(i) => check_value(&alts[i], value, name, element, out),
                None => out.push(ParamProblem::NotAChoice {
                    name: format!("{name}.kind"),
                    found: kind.map_or_else(|| "(missing)".into(), str::to_string),
                    choices: kinds.iter().map(|k| k.to_string()).collect(),
                }),
            }
            return;
        }
        if let Some(choices) = const_choices(alts) {
            if !choices.contains(&value) {
                out.push(ParamProblem::NotAChoice {
                    name: name.into(),
                    found: value.as_str().map_or_else(|| value.to_string(), str::to_string),
                    choices: choices.iter().filter_map(|c| c.as_str()).map(str::to_string).collect(),
                });
            }
            return;
        }
        // An option or a union: the value must satisfy one alternative; report the problems
        // of the first alternative of the value's type, or that no type fits.
        let mut first_fitting: Option<Vec<ParamProblem>> = None;
        for alt in alts {
            let mut problems = Vec::new();
            check_value(alt, value, name, element, &mut problems);
            if problems.is_empty() {
                return;
            }
            let fits = types(alt).iter().any(|t| type_fits(t, value));
            if fits && first_fitting.is_none() {
                first_fitting = Some(problems);
            }
        }
        out.extend(first_fitting.unwrap_or_else(|| {
            vec![ParamProblem::WrongType {
                name: name.into(),
                expected: expected_text(schema),
                found: describe_json(value),
            }]
        }));
        return;
    }
    let ty = types(schema);
    if !ty.is_empty() && !ty.iter().any(|t| type_fits(t, value)) {
        out.push(ParamProblem::WrongType {
            name: name.into(),
            expected: expected_text(schema),
            found: describe_json(value),
        });
        return;
    }
    if let Some(choices) = schema.get("enum").and_then(Json::as_array) {
        if !choices.contains(value) {
            out.push(ParamProblem::NotAChoice {
                name: name.into(),
                found: value.as_str().map_or_else(|| value.to_string(), str::to_string),
                choices: choices.iter().filter_map(Json::as_str).map(str::to_string).collect(),
            });
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            out.push(ParamProblem::NotAChoice {
                name: name.into(),
                found: value.as_str().map_or_else(|| value.to_string(), str::to_string),
                choices: vec![c.as_str().map_or_else(|| c.to_string(), str::to_string)],
            });
            return;
        }
    }
    if let Some(v) = value.as_f64() {
        let (lo, hi) = (bound(schema, "minimum", "exclusiveMinimum"), bound(schema, "maximum", "exclusiveMaximum"));
        let above = lo.is_none_or(|b| if b.exclusive { v > b.value } else { v >= b.value });
        let below = hi.is_none_or(|b| if b.exclusive { v < b.value } else { v <= b.value });
        if !(above && below) {
            if let Some(range) = range_text(lo, hi) {
                out.push(ParamProblem::OutOfRange { name: name.into(), found: found_text(value), range });
            }
            return;
        }
    }
    match value {
        Json::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                let before = out.len();
                for (i, item) in items.iter().enumerate() {
                    check_value(item_schema, item, name, Some(i), out);
                    // One problem per list is enough to fix it.
                    if out.len() > before {
                        break;
                    }
                }
            }
        }
        Json::Object(given) if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() => {
            check_object(schema, given, Some(name), out);
        }
        _ => {}
    }
}

fn check_object(schema: &Json, given: &Map<String, Json>, parent: Option<&str>, out: &mut Vec<ParamProblem>) {
    let empty = Map::new();
    let props = schema.get("properties").and_then(Json::as_object).unwrap_or(&empty);
    let closed = schema.get("additionalProperties") == Some(&Json::Bool(false));
    let path = |k: &str| parent.map_or_else(|| k.to_string(), |p| format!("{p}.{k}"));
    for (k, v) in given {
        match props.get(k) {
            Some(s) => check_value(s, v, &path(k), None, out),
            None if closed => out.push(ParamProblem::Unknown {
                name: path(k),
                // The tag of a tagged enum is not a setting to suggest.
                suggestion: did_you_mean(k, props.keys().map(String::as_str).filter(|p| *p != "kind")),
            }),
            None => {}
        }
    }
    if let Some(required) = schema.get("required").and_then(Json::as_array) {
        for r in required.iter().filter_map(Json::as_str) {
            if !given.contains_key(r) {
                out.push(ParamProblem::Missing { name: path(r) });
            }
        }
    }
}

/// Every problem of `given` (a node's params) against a stage's config schema.
pub fn check_against_schema(schema: &Json, given: &Map<String, Json>) -> Vec<ParamProblem> {
    let mut out = Vec::new();
    check_object(schema, given, None, &mut out);
    out
}

/// A [`File`] or [`Model`] named in a node's params, wherever it sits (a top-level param, a
/// list element, a setting of a nested option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRef {
    /// The param's dotted path (`labeler.model`; list elements keep the list's name).
    pub param: String,
    pub text: String,
    pub is_model: bool,
}

/// Every [`File`] and [`Model`] in `params`, found through the config schema (so by type,
/// never by a param's name), in param order.
pub fn named_refs(schema: &Json, params: &Map<String, Json>) -> Vec<NamedRef> {
    fn walk(schema: &Json, value: &Json, param: &str, out: &mut Vec<NamedRef>) {
        if let Some(alts) = alternatives(schema) {
            // A tagged choice: the matching alternative; an option: the one that fits.
            let kind = value.get("kind").and_then(Json::as_str);
            let pick = match tags(alts) {
                Some(kinds) => kinds.iter().position(|k| Some(*k) == kind).map(|i| &alts[i]),
                None => alts.iter().find(|a| types(a).iter().any(|t| type_fits(t, value) && *t != "null")),
            };
            if let Some(alt) = pick {
                walk(alt, value, param, out);
            }
            return;
        }
        match (schema.get("format").and_then(Json::as_str), value) {
            (Some(f @ (FORMAT_FILE | FORMAT_MODEL)), Json::String(text)) => {
                out.push(NamedRef { param: param.into(), text: text.clone(), is_model: f == FORMAT_MODEL })
            }
            (_, Json::Array(items)) => {
                if let Some(item_schema) = schema.get("items") {
                    items.iter().for_each(|item| walk(item_schema, item, param, out));
                }
            }
            (_, Json::Object(map)) => {
                if let Some(props) = schema.get("properties").and_then(Json::as_object) {
                    for (k, v) in map {
                        if let Some(s) = props.get(k) {
                            walk(s, v, &format!("{param}.{k}"), out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let props = schema.get("properties").and_then(Json::as_object);
    for (k, v) in params {
        if let Some(s) = props.and_then(|p| p.get(k)) {
            walk(s, v, k, &mut out);
        }
    }
    out
}

/// Deserializes a node's params (checked, merged with defaults) into its config; the
/// reserved `batch_size` is the host's, not the stage's.
pub fn parse_config<C: DeserializeOwned>(node: &str, params_json: &str) -> Result<C, crate::error::StageError> {
    let mut values: Map<String, Json> = serde_json::from_str(params_json).map_err(|e| {
        crate::error::StageError::invalid_param(format!("node `{node}`: params are not a JSON object: {e}"))
    })?;
    values.remove(BATCH_SIZE_PARAM);
    serde_json::from_value(Json::Object(values))
        .map_err(|e| crate::error::StageError::invalid_param(format!("node `{node}`: params: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        MinMax,
        MeanStd,
    }

    /// How pixels are labelled.
    #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    enum Labeler {
        /// Above a level.
        Level {
            /// Times the peak.
            #[schemars(range(min = 0.0))]
            level: f64,
        },
        Otsu,
    }

    fn default_sigma() -> f64 {
        4.0
    }
    fn default_labeler() -> Labeler {
        Labeler::Otsu
    }

    /// A choice whose variants carry docs (schemars writes `oneOf` of constants).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    enum Range {
        /// From the nominal maps.
        #[default]
        Nominal,
        /// From the image's own map.
        Own,
    }

    /// One name or several.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// Gaussian sigma.
        #[serde(default = "default_sigma")]
        #[schemars(range(min = 0.0))]
        sigma: f64,
        /// Coreset fraction.
        #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))]
        coreset: f64,
        /// Normalization.
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default = "default_labeler")]
        labeler: Labeler,
        /// Inputs.
        #[serde(default)]
        maps: Vec<File>,
        #[serde(default)]
        mean: Vec<f64>,
        model: Option<Model>,
        /// Where the range comes from.
        #[serde(default)]
        range: Range,
        #[serde(default)]
        category: Option<OneOrMany>,
    }

    fn problems(given: Json) -> Vec<String> {
        check_against_schema(&schema_of::<Config>(), given.as_object().unwrap()).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn specs_come_from_the_schema_in_field_order() {
        let schema = schema_of::<Config>();
        let specs = param_specs(&schema, &field_order::<Config>());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sigma", "coreset", "mode", "labeler", "maps", "mean", "model", "range", "category"]);
        assert_eq!(specs[7].ty, ParamType::String);
        assert_eq!(specs[7].choices.iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["nominal", "own"]);
        let sigma = &specs[0];
        assert_eq!(
            (sigma.ty, sigma.default_value(), sigma.doc.as_str()),
            (ParamType::Float, Some(json!(4.0)), "Gaussian sigma.")
        );
        assert_eq!(sigma.range_text().as_deref(), Some(">= 0"));
        assert!(specs[1].is_required());
        assert_eq!(specs[1].range_text().as_deref(), Some("in (0, 1]"));
        assert_eq!(specs[2].choices.iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["min-max", "mean-std"]);
        assert_eq!(specs[3].ty, ParamType::Object);
        assert_eq!(specs[3].choices.iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["level", "otsu"]);
        assert_eq!(specs[4].ty, ParamType::FileList);
        assert_eq!(specs[5].ty, ParamType::FloatList);
        assert_eq!(specs[6].ty, ParamType::Model);
    }

    #[test]
    fn every_problem_is_found_with_its_path() {
        assert!(problems(json!({"coreset": 0.5})).is_empty());
        assert!(
            problems(json!({"coreset": 1, "labeler": {"kind": "level", "level": 1.4}, "mode": "min-max"})).is_empty()
        );
        assert_eq!(
            problems(json!({"coreset": 0.5, "sigma": -3})),
            ["param `sigma`: -3 is out of range: expected a value >= 0"]
        );
        assert_eq!(problems(json!({"coreset": 0})), ["param `coreset`: 0 is out of range: expected a value in (0, 1]"]);
        assert_eq!(
            problems(json!({"sigm": 1})),
            ["unknown param `sigm` (did you mean `sigma`?)", "missing required param `coreset`"]
        );
        assert_eq!(problems(json!({"coreset": "x"})), ["param `coreset`: expected number, found string \"x\""]);
        assert_eq!(
            problems(json!({"coreset": 1, "mode": "max"})),
            ["param `mode`: `max` is not one of min-max, mean-std"]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "labeler": {"kind": "lvl"}})),
            ["param `labeler.kind`: `lvl` is not one of level, otsu"]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "labeler": {"kind": "level", "levl": 1}})),
            ["unknown param `labeler.levl` (did you mean `level`?)", "missing required param `labeler.level`"]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "labeler": {"kind": "level", "level": -1}})),
            ["param `labeler.level`: -1 is out of range: expected a value >= 0"]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "labeler": "level"}))[0],
            "param `labeler`: expected mapping with a `kind` (level, otsu), found string \"level\""
        );
        assert_eq!(
            problems(json!({"coreset": 1, "mean": [0.5, "a"]})),
            ["param `mean`: expected number, found string \"a\""]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "maps": "a.bin"})),
            ["param `maps`: expected list of strings, found string \"a.bin\""]
        );
        assert_eq!(
            problems(json!({"coreset": 1, "range": "batch"})),
            ["param `range`: `batch` is not one of nominal, own"]
        );
        assert!(problems(json!({"coreset": 1, "range": "own", "category": ["a", "b"]})).is_empty());
        assert_eq!(
            problems(json!({"coreset": 1, "category": 3})),
            ["param `category`: expected string or list of strings, found integer `3`"]
        );
    }

    #[test]
    fn checked_params_deserialize_and_batch_size_is_the_hosts() {
        let c: Config =
            parse_config("n", r#"{"coreset": 0.5, "batch_size": 4, "labeler": {"kind": "level", "level": 2}}"#)
                .unwrap();
        assert_eq!((c.sigma, c.labeler), (4.0, Labeler::Level { level: 2.0 }));
        let err = parse_config::<Config>("n", r#"{"coreset": 0.5, "extra": 1}"#).unwrap_err();
        assert!(err.message.contains("node `n`: params: unknown field `extra`"), "{err}");
        let schema = with_batch_size(schema_of::<NoParams>(), 8);
        let specs = param_specs(&schema, &[]);
        assert_eq!(specs[0].name.as_str(), BATCH_SIZE_PARAM);
        assert_eq!(specs[0].default_value(), Some(json!(8)));
        assert!(check_against_schema(&schema, json!({"batch_size": 0}).as_object().unwrap()).len() == 1);
    }

    #[test]
    fn files_and_models_are_found_by_type() {
        let schema = schema_of::<Config>();
        let params = json!({"coreset": 1, "maps": ["a.bin", "b.bin"], "model": "net", "mode": "min-max"});
        let refs = named_refs(&schema, params.as_object().unwrap());
        let got: Vec<(&str, &str, bool)> =
            refs.iter().map(|r| (r.param.as_str(), r.text.as_str(), r.is_model)).collect();
        assert_eq!(got, [("maps", "a.bin", false), ("maps", "b.bin", false), ("model", "net", true)]);
    }

    #[test]
    fn files_resolve_against_the_pipeline_directory() {
        assert_eq!(File("a/b.bin".into()).resolve_in("/p"), PathBuf::from("/p/a/b.bin"));
        assert_eq!(File("/abs".into()).resolve_in("/p"), PathBuf::from("/abs"));
    }
}
