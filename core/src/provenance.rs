//! What a result depends on, by content: the SHA-256 of files (each file hashed once per
//! process), of plugin libraries, of the files a node's params name, and the listing of the
//! directories they name. The cache keys (executor) and `plugins.json` (report) are built
//! from these, and `anoflow merge` compares them between shards.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
    time::UNIX_EPOCH,
};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use anoflow_ort_session::manifest;

use crate::check::CheckedPipeline;

/// A file as a cache key sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (0 when the system cannot tell).
    pub mtime_ns: u128,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// (path, size, mtime) -> SHA-256: a file is read once per process, however many keys use it.
type DigestMemo = HashMap<(PathBuf, u64, u128), String>;

fn digest_memo() -> &'static Mutex<DigestMemo> {
    static MEMO: OnceLock<Mutex<DigestMemo>> = OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(HashMap::new()))
}

fn mtime_ns(md: &std::fs::Metadata) -> u128 {
    md.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

/// Size, modification time and SHA-256 of a file. The content is hashed, so an edit that keeps
/// the size and the timestamp (or lands within the file system's timestamp granularity) is
/// still seen.
pub fn file_digest(path: &Path) -> std::io::Result<FileDigest> {
    let md = std::fs::metadata(path)?;
    let (size, mtime_ns) = (md.len(), mtime_ns(&md));
    let key = (path.to_path_buf(), size, mtime_ns);
    if let Some(sha256) = digest_memo().lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(FileDigest { size, mtime_ns, sha256: sha256.clone() });
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = hex::encode(hasher.finalize());
    // A file rewritten while it was read is not remembered: the next key reads it again.
    let after = std::fs::metadata(path)?;
    if (after.len(), self::mtime_ns(&after)) == (size, mtime_ns) {
        digest_memo().lock().unwrap_or_else(PoisonError::into_inner).insert(key, sha256.clone());
    }
    Ok(FileDigest { size, mtime_ns, sha256 })
}

/// The SHA-256 of a file, or a text saying why there is none (which then differs from every
/// digest, so a key built from it matches nothing cached).
pub fn sha256_or_reason(path: &Path) -> String {
    file_digest(path).map_or_else(|e| format!("unreadable {}: {e}", path.display()), |d| d.sha256)
}

/// Most entries a directory listing takes before it gives up (a param naming `/` or a home
/// directory must not walk the whole disk).
const MAX_LISTED: usize = 200_000;

/// The listing of a directory as a cache key sees it: every file below it (hidden entries and
/// the `skip` paths excepted) by relative path, size and modification time, hashed. Adding,
/// removing, renaming or rewriting a file changes it. `None` when the directory holds more
/// than [`MAX_LISTED`] entries. Computed once per process and directory.
pub fn directory_fingerprint(dir: &Path, skip: &[PathBuf]) -> Option<String> {
    type Memo = HashMap<PathBuf, Option<String>>;
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(fp) = memo.lock().unwrap_or_else(PoisonError::into_inner).get(dir) {
        return fp.clone();
    }
    let skip: Vec<PathBuf> = skip.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let mut entries: Vec<(String, u64, u128)> = Vec::new();
    let complete = list_files(dir, Path::new(""), &skip, &mut entries);
    let fp = complete.then(|| {
        entries.sort();
        let mut h = Sha256::new();
        for (rel, size, mtime) in &entries {
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(size.to_le_bytes());
            h.update(mtime.to_le_bytes());
        }
        format!("{} files {}", entries.len(), hex::encode(h.finalize()))
    });
    memo.lock().unwrap_or_else(PoisonError::into_inner).insert(dir.to_path_buf(), fp.clone());
    fp
}

/// Appends the files below `dir` to `out`; false when there were too many.
fn list_files(dir: &Path, rel: &Path, skip: &[PathBuf], out: &mut Vec<(String, u64, u128)>) -> bool {
    let Ok(read) = std::fs::read_dir(dir) else { return true };
    for entry in read.flatten() {
        if out.len() >= MAX_LISTED {
            return false;
        }
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(md) = std::fs::metadata(&path) else { continue };
        let rel = rel.join(&name);
        if md.is_dir() {
            if path.canonicalize().is_ok_and(|c| skip.contains(&c)) {
                continue;
            }
            if !list_files(&path, &rel, skip, out) {
                return false;
            }
        } else {
            out.push((rel.to_string_lossy().into_owned(), md.len(), mtime_ns(&md)));
        }
    }
    true
}

/// A file or directory a node's params name.
#[derive(Debug, Clone)]
pub struct NamedPath {
    pub param: String,
    /// The model name, when the param named a model of `models/manifest.yaml`.
    pub model: Option<String>,
    /// The param is a model ([`anoflow_sdk::config::Model`]), named or given as a path.
    pub is_model: bool,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The directory before the first wildcard component of a glob pattern (`data/*/a.png` ->
/// `data`), or the pattern itself.
fn glob_root(pattern: &str) -> &str {
    match pattern.find(['*', '?', '[']) {
        Some(i) => pattern[..i].rfind('/').map_or("", |j| &pattern[..j]),
        None => pattern,
    }
}

/// Every file and directory node `n`'s params name: each param its stage declares a file
/// ([`anoflow_sdk::config::File`], anywhere in its config; for a glob pattern, the directory
/// before its wildcards) that exists, and each model ([`anoflow_sdk::config::Model`]): a
/// path, or a name resolved through the model manifest. Found by type, never by name.
pub fn named_paths(p: &CheckedPipeline, n: usize) -> Vec<NamedPath> {
    let base = &p.spec.base_dir;
    let node = &p.nodes[n];
    let schema: Json = serde_json::from_str(&node.stage.descriptor.config_schema).unwrap_or(Json::Null);
    let mut out = Vec::new();
    for named in anoflow_sdk::config::named_refs(&schema, &node.params) {
        let root = glob_root(&named.text);
        if root.is_empty() {
            continue;
        }
        let path = base.join(root);
        if path.is_file() || path.is_dir() {
            let is_dir = path.is_dir();
            out.push(NamedPath { param: named.param, model: None, is_model: named.is_model, path, is_dir });
        } else if named.is_model {
            let manifest = model_manifest(base, &named.text);
            if let Some(file) = manifest.and_then(|m| manifest_entry(&m, &named.text)).map(|(f, _)| f) {
                let model = Some(named.text.clone());
                out.push(NamedPath { param: named.param, model, is_model: true, path: file, is_dir: false });
            }
        }
    }
    out
}

/// The content fingerprint of what node `n`'s params name, for its cache signature: each
/// file's SHA-256, each directory's listing (see [`directory_fingerprint`]).
pub fn named_content(p: &CheckedPipeline, n: usize, skip: &[PathBuf]) -> String {
    named_paths(p, n)
        .iter()
        .map(|np| {
            let what = if np.is_dir {
                directory_fingerprint(&np.path, skip).unwrap_or_else(|| {
                    // Too big to list: a key that matches nothing, so nothing stale is served.
                    eprintln!(
                        "warning: node `{}`: param `{}` names {}, which holds more than {MAX_LISTED} entries; \
                         outputs that depend on it are not taken from the cache",
                        p.nodes[n].id,
                        np.param,
                        np.path.display()
                    );
                    format!("unlisted {:?}", std::time::SystemTime::now())
                })
            } else {
                sha256_or_reason(&np.path)
            };
            format!("{}={what}", np.param)
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The manifest listing model `name` (its directory and content), found by the one manifest
/// rule (`anoflow_ort_session::manifest::search_starts`) from the pipeline's directory `base`.
pub fn model_manifest(base: &Path, name: &str) -> Option<(PathBuf, Json)> {
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let starts = manifest::search_starts(Some(&base));
    let (_, file) = manifest::find_model(name, &starts).ok()??;
    let text = std::fs::read_to_string(&file).ok()?;
    Some((file.parent()?.to_path_buf(), serde_yaml::from_str(&text).ok()?))
}

/// A model's file and the SHA-256 the manifest gives it.
pub fn manifest_entry((dir, manifest): &(PathBuf, Json), name: &str) -> Option<(PathBuf, String)> {
    let entry = manifest["models"].as_array()?.iter().find(|m| m["name"] == name)?;
    Some((dir.join(entry["file"].as_str()?), entry["sha256"].as_str()?.to_string()))
}

/// Keys of `plugins.json` that may differ between shards of one run: where things were
/// installed or started from (the content is compared through the digests and the
/// expanded pipeline), and the list of every library on the plugin path.
const MACHINE_KEYS: &[&str] = &["path", "pipeline_file", "libraries"];

/// The first way two run directories differ in what they ran, or `None` when they ran the
/// same expanded pipeline with the same libraries (name, version, SHA-256) and the same
/// files (SHA-256). Names the file, the key and both values.
pub fn run_difference(a: &Path, b: &Path) -> Option<String> {
    for (file, strip) in [(crate::report::EXPANDED_PIPELINE_FILE, false), (crate::report::PLUGINS_FILE, true)] {
        let (va, vb) = match (read_tree(&a.join(file)), read_tree(&b.join(file))) {
            (Ok(va), Ok(vb)) => (va, vb),
            (Err(e), _) | (_, Err(e)) => return Some(e),
        };
        let (va, vb) = if strip { (strip_keys(va), strip_keys(vb)) } else { (va, vb) };
        if let Some((key, x, y)) = first_difference(&va, &vb, "") {
            return Some(format!(
                "{file}: `{key}` is {} in {} but {} in {}",
                show(x),
                a.display(),
                show(y),
                b.display()
            ));
        }
    }
    None
}

/// A run file as a tree: JSON, or YAML read into the same shape.
fn read_tree(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("{} is not readable: {e}", path.display()))
}

fn strip_keys(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .filter(|(k, _)| !MACHINE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, strip_keys(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.into_iter().map(strip_keys).collect()),
        other => other,
    }
}

fn show(v: Option<&Json>) -> String {
    let text = v.map_or_else(|| "absent".to_string(), |v| format!("`{v}`"));
    if text.chars().count() > 120 {
        format!("{}...", text.chars().take(117).collect::<String>())
    } else {
        text
    }
}

/// The first key (dotted path; list items by their `node` name when they have one) where
/// `a` and `b` differ, with both values (`None`: absent on that side).
fn first_difference<'a>(a: &'a Json, b: &'a Json, at: &str) -> Option<(String, Option<&'a Json>, Option<&'a Json>)> {
    let child = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, &child(k)) {
                            return Some(d);
                        }
                    }
                    None => return Some((child(k), Some(va), None)),
                }
            }
            y.iter().find(|(k, _)| !x.contains_key(*k)).map(|(k, vb)| (child(k), None, Some(vb)))
        }
        (Json::Array(x), Json::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let name = x.get(i).or_else(|| y.get(i)).and_then(|v| v.get("node")).and_then(Json::as_str);
                let key = format!("{at}[{}]", name.map_or_else(|| i.to_string(), str::to_string));
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => {
                        if let Some(d) = first_difference(va, vb, &key) {
                            return Some(d);
                        }
                    }
                    (va, vb) => return Some((key, va, vb)),
                }
            }
            None
        }
        _ => (a != b).then(|| (at.to_string(), Some(a), Some(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_equal_size_and_time_get_the_digests_of_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"secnd").unwrap();
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::File::options().write(true).open(&b).unwrap().set_modified(mtime).unwrap();
        let (da, db) = (file_digest(&a).unwrap(), file_digest(&b).unwrap());
        assert_eq!((da.size, da.mtime_ns), (db.size, db.mtime_ns));
        assert_eq!(db.sha256, hex::encode(Sha256::digest(b"secnd")));
        assert_ne!(da.sha256, db.sha256);
        // Asked again, the memo answers with the same digest.
        assert_eq!(file_digest(&b).unwrap(), db);
    }

    #[test]
    fn a_directory_listing_sees_added_files_and_skips_hidden_and_excluded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("train")).unwrap();
        std::fs::create_dir_all(root.join("runs")).unwrap();
        std::fs::write(root.join("train/1.png"), b"x").unwrap();
        std::fs::write(root.join(".hidden"), b"x").unwrap();
        std::fs::write(root.join("runs/out.json"), b"x").unwrap();
        let mut entries = Vec::new();
        assert!(list_files(&root, Path::new(""), &[root.join("runs").canonicalize().unwrap()], &mut entries));
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["train/1.png"]);
        let before = directory_fingerprint(&root, &[]).unwrap();
        assert!(before.starts_with("2 files "), "{before}");
    }

    #[test]
    fn the_first_difference_names_the_key_and_both_values() {
        let a =
            serde_json::json!({"name": "q", "nodes": {"thr": {"with": {"k": 3}}}, "list": [{"node": "grad", "v": 1}]});
        let mut b = a.clone();
        b["nodes"]["thr"]["with"]["k"] = 4.into();
        let (key, x, y) = first_difference(&a, &b, "").unwrap();
        assert_eq!((key.as_str(), x, y), ("nodes.thr.with.k", Some(&3.into()), Some(&4.into())));
        let mut c = a.clone();
        c["list"][0]["v"] = 2.into();
        assert_eq!(first_difference(&a, &c, "").unwrap().0, "list[grad].v");
        c["extra"] = true.into();
        assert!(first_difference(&a, &a, "").is_none());
        let stripped = strip_keys(serde_json::json!({"path": "/x", "nodes": [{"path": "/y", "sha": "1"}]}));
        assert_eq!(stripped, serde_json::json!({"nodes": [{"sha": "1"}]}));
    }

    #[test]
    fn glob_patterns_name_the_directory_before_their_wildcards() {
        assert_eq!(glob_root("data/*/train/*.png"), "data");
        assert_eq!(glob_root("*.png"), "");
        assert_eq!(glob_root("data/train"), "data/train");
    }
}
