//! The `report` sink's accumulated state as bytes, so the shards of a run merge into the
//! report one unsharded run would have written: the metric accumulators (for the curves and
//! tables) and the panels kept so far, already shrunk to the tile size, each stored once with
//! the lists it is in.
//!
//! Layout: magic, format version, the accumulators' own binary form (length-prefixed), a
//! JSON header describing each panel (length-prefixed), then each panel's pixels in header
//! order: image (RGB8, if any), each score map (f32 little-endian), each mask, the GT.

use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulators, MetricsError};
use crate::confusion::Counts;
use crate::report::{Kept, List};

const MAGIC: &[u8; 8] = b"ANOFREPT";
/// 2: panels carry their lists (1 had one anomalous flag).
const FORMAT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct PanelHeader {
    id: String,
    index: u64,
    category: String,
    defect: String,
    anomalous: bool,
    lists: Vec<List>,
    h: usize,
    w: usize,
    image: bool,
    scores: Vec<String>,
    masks: Vec<(String, Counts)>,
}

/// The state: `acc` as [`Accumulators::to_bytes`] wrote it, and the kept panels, each with
/// the lists it is in.
pub(crate) fn encode(acc: &[u8], panels: &[(&Kept, Vec<List>)]) -> Vec<u8> {
    let header: Vec<PanelHeader> = panels
        .iter()
        .map(|(k, lists)| PanelHeader {
            id: k.id.clone(),
            index: k.index,
            category: k.category.clone(),
            defect: k.defect.clone(),
            anomalous: k.anomalous,
            lists: lists.clone(),
            h: k.h,
            w: k.w,
            image: k.image.is_some(),
            scores: k.scores.iter().map(|s| s.0.clone()).collect(),
            masks: k.masks.iter().map(|m| (m.0.clone(), m.2)).collect(),
        })
        .collect();
    // Serializing plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(acc.len() + json.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(acc.len() as u64).to_le_bytes());
    out.extend_from_slice(acc);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (k, _) in panels {
        if let Some(img) = &k.image {
            out.extend_from_slice(img);
        }
        for (_, s) in &k.scores {
            s.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        for (_, m, _) in &k.masks {
            out.extend_from_slice(m);
        }
        out.extend_from_slice(&k.gt);
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(reason: impl Into<String>) -> MetricsError {
        MetricsError::Format { path: "report state".into(), reason: reason.into() }
    }
    fn take(&mut self, n: usize) -> Result<&[u8], MetricsError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| Self::err(format!("truncated at byte {}", self.pos)))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn len(&mut self) -> Result<usize, MetricsError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| Self::err("truncated"))?;
        usize::try_from(u64::from_le_bytes(b)).map_err(|_| Self::err("length out of range"))
    }
}

/// A panel as decoded, with the lists it is in.
pub(crate) type Decoded = (Kept, Vec<List>);

/// Parses [`encode`]'s bytes: the accumulators and the panels with their lists.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Accumulators, Vec<Decoded>), MetricsError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err(Reader::err("not a report state (bad magic)"));
    }
    let version = u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| Reader::err("truncated"))?);
    if version != FORMAT_VERSION {
        return Err(Reader::err(format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    let n = r.len()?;
    let acc = Accumulators::from_bytes(r.take(n)?, "report state")?;
    let n = r.len()?;
    let header: Vec<PanelHeader> =
        serde_json::from_slice(r.take(n)?).map_err(|e| Reader::err(format!("panel header: {e}")))?;
    let mut panels = Vec::with_capacity(header.len());
    for p in header {
        let px = p.h.checked_mul(p.w).ok_or_else(|| Reader::err("panel size out of range"))?;
        let image = if p.image { Some(r.take(px.saturating_mul(3))?.to_vec()) } else { None };
        let mut scores = Vec::with_capacity(p.scores.len());
        for name in p.scores {
            let raw = r.take(px.saturating_mul(4))?;
            let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            scores.push((name, values));
        }
        let mut masks = Vec::with_capacity(p.masks.len());
        for (name, counts) in p.masks {
            masks.push((name, r.take(px)?.to_vec(), counts));
        }
        let gt = r.take(px)?.to_vec();
        let kept = Kept {
            id: p.id,
            index: p.index,
            category: p.category,
            defect: p.defect,
            anomalous: p.anomalous,
            h: p.h,
            w: p.w,
            image,
            scores,
            masks,
            gt,
        };
        panels.push((kept, p.lists));
    }
    if r.pos != bytes.len() {
        return Err(Reader::err(format!("{} unexpected trailing bytes", bytes.len() - r.pos)));
    }
    Ok((acc, panels))
}
