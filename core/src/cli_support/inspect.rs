//! `anoflow plugins list|inspect`: what the plugin path offers, from the descriptors
//! themselves, so these docs cannot drift from the code.

use std::fmt::Write;

use anoflow_sdk::{
    config::param_specs,
    descriptor::{ParamSpec, StageDescriptor},
};
use serde_json::Value as Json;

use crate::registry::Registry;

pub fn list(reg: &Registry) -> String {
    let mut s = String::new();
    if reg.stages.is_empty() {
        s.push_str("no plugin stages found; run `anoflow doctor`\n");
        return s;
    }
    let width = reg.stages.keys().map(String::len).max().unwrap_or(0);
    for (name, e) in &reg.stages {
        let _ = writeln!(
            s,
            "{name:width$}  {:6}  {}  [{} {}]",
            e.descriptor.kind.name(),
            e.descriptor.summary,
            e.library.name,
            e.library.version
        );
    }
    s
}

/// Markdown documentation of one stage, as `inspect` prints it.
pub fn describe(d: &StageDescriptor, library: &str, version: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} ({} stage)\n\n{}\n\nlibrary: {library} {version}", d.name, d.kind.name(), d.summary);
    if !d.source_file.is_empty() {
        let _ = writeln!(s, "code: {}", d.source_file);
    }
    if !d.splits.is_empty() {
        let splits: Vec<&str> = d.splits.iter().map(|x| x.as_str()).collect();
        let _ = writeln!(s, "splits: {}", splits.join(", "));
    }
    let ports = |title: &str, ports: &[anoflow_sdk::descriptor::PortSpec], s: &mut String| {
        if ports.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n## {title}\n");
        for p in ports {
            let mut flags = Vec::new();
            if p.multiple {
                flags.push("several");
            }
            if p.optional {
                flags.push("optional");
            }
            let relation = format!("same height and width as input `{}`", p.same_size_as);
            if !p.same_size_as.is_empty() {
                flags.push(&relation);
            }
            let flags = if flags.is_empty() { String::new() } else { format!(", {}", flags.join(", ")) };
            let _ = writeln!(s, "- `{}` ({}{flags}): {}", p.name, p.kind, p.doc);
        }
    };
    ports("inputs", &d.inputs, &mut s);
    ports("outputs", &d.outputs, &mut s);
    if !d.params.is_empty() {
        let _ = writeln!(s, "\n## params\n");
        let schema: Json = serde_json::from_str(&d.config_schema).unwrap_or(Json::Null);
        write_params(&mut s, &d.params, schema.get("properties"), 0);
    }
    s
}

/// One line per param, and under a param that is a choice with settings of its own
/// (`labeler: { kind: level, level: 1.4 }`), each choice with its settings, indented.
fn write_params(s: &mut String, params: &[ParamSpec], props: Option<&Json>, depth: usize) {
    let indent = "  ".repeat(depth);
    for p in params {
        let default = p.default.as_ref().into_option().map_or("required".to_string(), |d| format!("default {d}"));
        let choices = if p.choices.is_empty() {
            String::new()
        } else {
            let c: Vec<&str> = p.choices.iter().map(|c| c.as_str()).collect();
            format!(", one of: {}", c.join(", "))
        };
        let range = p.range_text().map_or_else(String::new, |r| format!(", {r}"));
        let _ = writeln!(s, "{indent}- `{}` ({}, {default}{range}{choices}): {}", p.name, p.ty.name(), p.doc);
        let variants = props.and_then(|m| m.get(p.name.as_str())).and_then(|v| v.get("oneOf")).and_then(Json::as_array);
        for variant in variants.into_iter().flatten() {
            let Some(kind) = variant.pointer("/properties/kind/const").and_then(Json::as_str) else { continue };
            let doc = variant.get("description").and_then(Json::as_str).unwrap_or_default();
            let _ = writeln!(s, "{indent}  - `kind: {kind}`{}{doc}", if doc.is_empty() { "" } else { ": " });
            let settings: Vec<ParamSpec> =
                param_specs(variant, &[]).into_iter().filter(|v| v.name.as_str() != "kind").collect();
            write_params(s, &settings, variant.get("properties"), depth + 2);
        }
    }
}

/// A stage by name, or every stage of a library by library name.
pub fn inspect(reg: &Registry, name: &str) -> anyhow::Result<String> {
    if let Some(e) = reg.stage(name) {
        return Ok(describe(&e.descriptor, &e.library.name, &e.library.version));
    }
    let of_library: Vec<String> = reg
        .stages
        .values()
        .filter(|e| e.library.name == name || e.library.name == format!("anoflow-plugin-{name}"))
        .map(|e| describe(&e.descriptor, &e.library.name, &e.library.version))
        .collect();
    if !of_library.is_empty() {
        return Ok(of_library.join("\n"));
    }
    let hint = crate::diag::did_you_mean(name, reg.stages.keys().map(String::as_str));
    anyhow::bail!("no stage or library `{name}`{hint}; `anoflow plugins list` shows what is loaded")
}
