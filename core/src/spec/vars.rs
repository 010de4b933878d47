//! `{{var}}` and `${ENV}` substitution, and setting a value at a dotted path.

use super::*;

pub(super) fn set_path(map: &mut Map<String, Json>, path: &[String], value: Json) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.clone()).or_insert_with(|| Json::Object(Map::new()));
            if !entry.is_object() {
                *entry = Json::Object(Map::new());
            }
            if let Json::Object(m) = entry {
                set_path(m, rest, value);
            }
        }
    }
}

pub(super) fn substitute_vars(
    vars: &Map<String, Json>,
    positions: &BTreeMap<String, Pos>,
    env: &dyn Env,
    d: &mut Diagnostics,
) -> Map<String, Json> {
    let mut out = Map::new();
    for (k, v) in vars {
        let mut v = v.clone();
        // Vars may use ${ENV} and vars defined before them.
        substitute(&mut v, &out, env, d, positions.get(k).copied(), "");
        out.insert(k.clone(), v);
    }
    out
}

/// Replaces `${ENV}`, `${ENV:-default}` and `{{var}}` in every string of `v`. A string that
/// is exactly one `{{var}}` takes the var's value with its type (so numbers stay numbers).
pub(super) fn substitute(
    v: &mut Json,
    vars: &Map<String, Json>,
    env: &dyn Env,
    d: &mut Diagnostics,
    pos: Option<Pos>,
    node: &str,
) {
    let node_ref = (!node.is_empty()).then_some(node);
    match v {
        Json::String(s) => {
            let trimmed = s.trim();
            if let Some(name) = trimmed.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                if !name.contains("{{") {
                    match vars.get(name.trim()) {
                        Some(val) => *v = val.clone(),
                        None => d.error(pos, node_ref, unknown_var(name.trim(), vars)),
                    }
                    return;
                }
            }
            match expand(s, vars, env) {
                Ok(e) => *s = e,
                Err(msg) => d.error(pos, node_ref, msg),
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| substitute(i, vars, env, d, pos, node)),
        Json::Object(m) => m.values_mut().for_each(|i| substitute(i, vars, env, d, pos, node)),
        _ => {}
    }
}

pub(super) fn unknown_var(name: &str, vars: &Map<String, Json>) -> String {
    let hint = crate::diag::did_you_mean(name, vars.keys().map(String::as_str));
    format!("unknown variable `{{{{{name}}}}}`{hint}; define it under `vars:` or with --set vars.{name}=...")
}

pub(super) fn expand(s: &str, vars: &Map<String, Json>, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let next_env = rest.find("${");
        let next_var = rest.find("{{");
        let (start, is_env) = match (next_env, next_var) {
            (None, None) => break,
            (Some(e), Some(v)) if v < e => (v, false),
            (Some(e), _) => (e, true),
            (None, Some(v)) => (v, false),
        };
        out.push_str(&rest[..start]);
        if is_env {
            let body_start = start + 2;
            let end = rest[body_start..].find('}').ok_or_else(|| format!("unclosed `${{` in \"{s}\""))? + body_start;
            let body = &rest[body_start..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, dflt)) => (n, Some(dflt)),
                None => (body, None),
            };
            match (env.get(name), default) {
                (Some(val), _) => out.push_str(&val),
                (None, Some(dflt)) => out.push_str(dflt),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (used in \"{s}\"); set it, or write `${{{name}:-default}}`"
                    ))
                }
            }
            rest = &rest[end + 1..];
        } else {
            let body_start = start + 2;
            let end = rest[body_start..].find("}}").ok_or_else(|| format!("unclosed `{{{{` in \"{s}\""))? + body_start;
            let name = rest[body_start..end].trim();
            match vars.get(name) {
                Some(Json::String(v)) => out.push_str(v),
                Some(other) => out.push_str(&other.to_string()),
                None => return Err(unknown_var(name, vars)),
            }
            rest = &rest[end + 2..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
