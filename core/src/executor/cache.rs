//! The caches: content addresses of fitted states and of node outputs, the checksummed
//! envelope every cached state (and sink state) is written in, and the value codec's use for
//! node outputs.

use std::path::{Path, PathBuf};

use anoflow_sdk::{
    abi::StageBox,
    value::{PortValue, SampleMeta},
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_128;

use super::{provenance, Instant, Runner, Slot};
use crate::fsutil::write_file_replace;
use anoflow_sdk::codec;

impl Runner<'_> {
    /// Where each node of `nodes` (that caches its outputs) finds its outputs for each sample of
    /// a chunk; all `None` without a cache.
    pub(super) fn output_keys(&self, nodes: &[usize], chunk: &[Slot]) -> Vec<Vec<Option<PathBuf>>> {
        let n_nodes = self.p.nodes.len();
        let Some(dir) = &self.opts.cache_dir else {
            return vec![vec![None; chunk.len()]; n_nodes];
        };
        let samples: Vec<Vec<u8>> = chunk
            .par_iter()
            .map(|slot| {
                let mut key = sample_key(&slot.meta);
                if !slot.cache_tag.is_empty() {
                    key.push(0);
                    key.extend_from_slice(slot.cache_tag.as_bytes());
                }
                key
            })
            .collect();
        (0..n_nodes)
            .map(|n| {
                if !(nodes.contains(&n) && self.p.nodes[n].cache) {
                    return vec![None; chunk.len()];
                }
                let node = Sha256::digest(self.signature(n).as_bytes());
                samples.iter().map(|sample| Some(output_cache_path(dir, &node, sample))).collect()
            })
            .collect()
    }

    /// Writes the fresh outputs of node `n` (the chunk slots `fresh`) to the cache, in
    /// parallel; a failed write only costs a recomputation later.
    pub(super) fn cache_outputs(&self, n: usize, fresh: &[usize], keys: &[Vec<Option<PathBuf>>], chunk: &[Slot]) {
        fresh.par_iter().for_each(|&i| {
            // Encode only what has a cache entry to write: outputs can be whole decoded images.
            let Some(path) = &keys[n][i] else { return };
            if let Ok(bytes) = codec::encode(&chunk[i].outputs[n]) {
                // Not fsynced: a lost or damaged entry fails its hash and is recomputed.
                let _ = write_file_replace(path, &encode_state(&bytes));
            }
        });
    }

    /// Loads node `f`'s fitted state from the cache into `stage`; false when there is none
    /// (or it was rejected: then the node is fitted again).
    pub(super) fn load_cached_state(&self, f: usize, key: &str, stage: &mut StageBox) -> bool {
        let Some(state) = self.cache_read(key) else {
            return false;
        };
        let t = Instant::now();
        match stage.load_state(state.into()).into_result() {
            Ok(()) => {
                self.with_stats(f, |s| {
                    *s.fit_seconds.get_or_insert(0.0) += t.elapsed().as_secs_f64();
                    s.fit_state = Some("loaded from cache".into());
                });
                true
            }
            Err(e) => {
                eprintln!("warning: node `{}`: cached state rejected ({e}); fitting again", self.p.nodes[f].id);
                false
            }
        }
    }

    /// A content address for a fitted node's state: its signature (stage, library file,
    /// params and the files they name, inputs recursively) and every fit sample (id, file,
    /// labels, and the SHA-256 of its file's content).
    pub(super) fn cache_key(&self, f: usize, fit_samples: &[SampleMeta]) -> String {
        let mut h = Sha256::new();
        h.update(self.signature(f).as_bytes());
        let samples: Vec<Vec<u8>> = fit_samples.par_iter().map(sample_key).collect();
        for (m, key) in fit_samples.iter().zip(samples) {
            h.update(&key);
            h.update([0]);
            h.update(m.category.as_bytes());
            h.update([0]);
            h.update(m.defect.as_bytes());
            h.update([0]);
            h.update(m.label.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// What node `n`'s results depend on, as text: its stage, library (name, version and the
    /// SHA-256 of the library file), params, the content of the files and directories its
    /// params name, its fitted state, and the same for its inputs.
    pub(super) fn signature(&self, n: usize) -> String {
        let node = &self.p.nodes[n];
        let inputs: Vec<String> =
            node.inputs.iter().map(|e| format!("{}<-{}:{}", e.to_port, e.from_port, self.signature(e.from))).collect();
        let fitted = self.fit_keys[n].as_deref().unwrap_or_default();
        let content = self.content[n].get_or_init(|| {
            let skip: Vec<PathBuf> =
                [Some(&self.opts.out_dir), self.opts.cache_dir.as_ref()].into_iter().flatten().cloned().collect();
            format!(
                "lib={}|files={}",
                provenance::sha256_or_reason(&node.stage.library.path),
                provenance::named_content(self.p, n, &skip)
            )
        });
        format!(
            "{}@{}/{}|{content}|{}|fit={:?}:{fitted}|[{}]",
            node.stage.library.name,
            node.stage.library.version,
            node.plugin(),
            serde_json::Value::Object(node.params.clone()),
            node.fit,
            inputs.join(",")
        )
    }

    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        self.opts.cache_dir.as_ref().map(|d| d.join("fitted").join(format!("{key}.state")))
    }

    fn cache_read(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.cache_path(key)?;
        let bytes = crate::cache_store::read_entry(&path).ok()?;
        match decode_state(&bytes) {
            Some(state) => Some(state),
            None => {
                eprintln!("warning: cache entry {} is corrupt; recomputing", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub(super) fn cache_write(&self, key: &str, state: &[u8]) {
        if let Some(path) = self.cache_path(key) {
            if let Err(e) = write_file_replace(&path, &encode_state(state)) {
                eprintln!("warning: could not write cache entry {}: {e}", path.display());
            }
        }
    }
}

/// Entries written now: the payload's 128-bit XXH3 digest, which catches a damaged file (what
/// the digest is for: whoever can write the cache directory can write a matching digest of any
/// kind, so a cryptographic one bought nothing, and hashing megabytes of features with SHA-256
/// was a twentieth of a run that fills the cache).
const STATE_MAGIC: &[u8] = b"ANOFLOW-STATE-2\n";
/// Entries written before: the payload's SHA-256; still read.
const STATE_MAGIC_SHA256: &[u8] = b"ANOFLOW-STATE-1\n";
/// Where a sink's accumulated state is kept inside its output directory.
pub const SINK_STATE_FILE: &str = "sink.state";

/// A cached state: magic, digest of the payload, payload.
pub(super) fn encode_state(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_MAGIC.len() + 16 + state.len());
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&xxh3_128(state).to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// What identifies a sample for the caches: its id, its file, and the file's size,
/// modification time and SHA-256 (hashed once per process), so an edited file is never
/// served stale outputs, even when the edit keeps its size and timestamp.
fn sample_key(meta: &SampleMeta) -> Vec<u8> {
    let mut key = Vec::with_capacity(meta.id.len() + meta.path.len() + 96);
    key.extend_from_slice(meta.id.as_bytes());
    key.push(0);
    key.extend_from_slice(meta.path.as_bytes());
    if !meta.path.is_empty() {
        key.push(0);
        match provenance::file_digest(Path::new(meta.path.as_str())) {
            Ok(d) => {
                key.extend_from_slice(&d.size.to_le_bytes());
                key.extend_from_slice(&d.mtime_ns.to_le_bytes());
                key.extend_from_slice(d.sha256.as_bytes());
            }
            Err(e) => key.extend_from_slice(format!("unreadable: {e}").as_bytes()),
        }
    }
    key
}

/// Where a node's outputs for one sample are cached: addressed by the hash of the node's
/// signature (stage, library version, params, inputs, fitted states) and the sample's key.
fn output_cache_path(dir: &Path, node: &[u8], sample: &[u8]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(node);
    h.update([0]);
    h.update(sample);
    let key = hex::encode(h.finalize());
    dir.join("outputs").join(&key[..2]).join(format!("{key}.bin"))
}

/// A cached node output, or `None` when missing or corrupt (a corrupt entry is removed, so
/// it is recomputed and rewritten).
pub(super) fn read_cached_outputs(path: &Path) -> Option<Vec<PortValue>> {
    let bytes = crate::cache_store::read_entry(path).ok()?;
    let values = decode_state(&bytes).and_then(|payload| codec::decode(&payload).ok());
    if values.is_none() {
        eprintln!("warning: cache entry {} is corrupt; recomputing", path.display());
        let _ = std::fs::remove_file(path);
    }
    values
}

/// The payload of an entry whose digest matches, in either format.
pub(super) fn decode_state(bytes: &[u8]) -> Option<Vec<u8>> {
    if let Some(rest) = bytes.strip_prefix(STATE_MAGIC) {
        let (digest, payload) = rest.split_at_checked(16)?;
        return (xxh3_128(payload).to_le_bytes().as_slice() == digest).then(|| payload.to_vec());
    }
    let rest = bytes.strip_prefix(STATE_MAGIC_SHA256)?;
    let (digest, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == digest).then(|| payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_state_detects_corruption() {
        let enc = encode_state(b"bank");
        assert_eq!(decode_state(&enc).as_deref(), Some(&b"bank"[..]));
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_state(&bad).is_none());
        // A flipped digest byte, a cut digest, a payload cut short.
        let mut bad = enc.clone();
        bad[STATE_MAGIC.len()] ^= 1;
        assert!(decode_state(&bad).is_none());
        assert!(decode_state(&enc[..STATE_MAGIC.len() + 10]).is_none());
        assert!(decode_state(&enc[..enc.len() - 1]).is_none());
        assert!(decode_state(b"junk").is_none());
    }

    #[test]
    fn entries_of_the_sha256_format_are_still_read() {
        let mut old = STATE_MAGIC_SHA256.to_vec();
        old.extend_from_slice(&Sha256::digest(b"bank"));
        old.extend_from_slice(b"bank");
        assert_eq!(decode_state(&old).as_deref(), Some(&b"bank"[..]));
        let last = old.len() - 1;
        old[last] ^= 1;
        assert!(decode_state(&old).is_none());
        assert!(decode_state(&old[..STATE_MAGIC_SHA256.len() + 20]).is_none());
    }
}
