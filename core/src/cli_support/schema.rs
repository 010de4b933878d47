//! `anoflow schema`: a JSON Schema of pipeline files, with every loaded stage's params,
//! for editor completion and validation.

use serde_json::{json, Map, Value as Json};

use crate::registry::Registry;
use crate::spec::calibrate_defaults;

pub fn pipeline_schema(reg: &Registry) -> Json {
    let mut variants = Vec::new();
    for (name, e) in &reg.stages {
        let d = &e.descriptor;
        // The stage's own config schema: types, ranges, choices, nested options and docs.
        let with: Json = serde_json::from_str(&d.config_schema).unwrap_or_else(|_| json!({"type": "object"}));
        let inputs: Map<String, Json> = d
            .inputs
            .iter()
            .map(|p| {
                let edge = json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"});
                let s = if p.multiple { json!({"anyOf": [edge, {"type": "array", "items": edge}]}) } else { edge };
                (p.name.to_string(), json!({"description": p.doc.as_str(), "allOf": [s]}))
            })
            .collect();
        let mut node_props = json!({
            "plugin": {"const": name},
            "doc": {"type": "string"},
            "with": with,
            "inputs": {"type": "object", "properties": inputs, "additionalProperties": false},
        });
        if d.kind == anoflow_sdk::descriptor::StageKind::Fitted {
            let splits = json!({"type": "string", "description": "the split this stage is fitted on"});
            node_props["fit"] = splits;
        }
        variants.push(json!({
            "title": name,
            "description": d.summary.as_str(),
            "type": "object",
            "properties": node_props,
            "required": ["plugin"],
            "additionalProperties": false,
        }));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "anoflow pipeline",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "vars": {"type": "object"},
            "sweep": {"type": "object", "additionalProperties": {"type": "array"}},
            "calibrate": calibrate_schema(),
            "nodes": {"type": "object", "additionalProperties": {"oneOf": variants}},
        },
        "required": ["nodes"],
        "additionalProperties": false,
    })
}

/// The `calibrate:` section (docs/pipelines.md).
fn calibrate_schema() -> serde_json::Value {
    let grid = json!({"type": "array", "minItems": 1});
    json!({
        "type": "object",
        "description": "choose params per category on synthetic defects pasted into the clean validation images",
        "properties": {
            "defects": {"type": "string", "description": "the node that pastes synthetic defects (e.g. synthetic-defects)"},
            "variants": {"type": "integer", "minimum": 1, "default": calibrate_defaults::VARIANTS},
            "max_samples": {"type": "integer", "minimum": 1, "default": calibrate_defaults::MAX_SAMPLES},
            "min_images": {"type": "integer", "minimum": 1, "default": calibrate_defaults::MIN_IMAGES},
            "max_good_fp_area": {"type": "number", "minimum": 0, "maximum": 1, "default": calibrate_defaults::MAX_GOOD_FP_AREA},
            "tolerance": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": calibrate_defaults::TOLERANCE},
            "search": {
                "type": "object",
                "description": "node whose `mask` is scored -> { NODE.PARAM: [candidate values] }",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"tolerance": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                                                 "description": "this group's own tolerance"}},
                    "additionalProperties": grid,
                },
            },
        },
        "required": ["defects", "search"],
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use crate::spec::{CALIBRATE_KEYS, TOP_LEVEL_KEYS};

    #[test]
    fn every_key_the_parser_accepts_is_in_the_schema() {
        let schema = super::pipeline_schema(&crate::registry::Registry::default());
        for key in TOP_LEVEL_KEYS {
            assert!(schema["properties"].get(*key).is_some(), "top-level `{key}` missing from the schema");
        }
        for key in CALIBRATE_KEYS {
            assert!(
                schema["properties"]["calibrate"]["properties"].get(*key).is_some(),
                "calibrate `{key}` missing from the schema"
            );
        }
    }
}
