//! The `report` sink's accumulated state as bytes, so the shards of a run merge into the
//! report one unsharded run would have written: the metric accumulators (for the curves and
//! tables) and the panels kept so far, already shrunk to the tile size, each stored once with
//! the lists it is in.
//!
//! In the SDK's state format: a byte section `accumulators` (the accumulators' own state),
//! a JSON section `panels` describing each panel, then each panel's pixels: `<i>/image`
//! (RGB8 `[h, w, 3]`, if any), `<i>/score/<j>` (f32 `[h, w]`), `<i>/mask/<j>` and `<i>/gt`
//! (u8 `[h, w]`).

use anoflow_sdk::state::{StateError, StateReader, StateWriter};
use anoflow_seg_metrics::accumulate::{Accumulators, MetricsError};
use anoflow_seg_metrics::confusion::Counts;
use serde::{Deserialize, Serialize};

use crate::report::{Kept, List};

const STATE_NAME: &str = "report";
/// The layout of the sections above.
const FORMAT_VERSION: u32 = 1;

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
pub(crate) fn encode(acc: &[u8], panels: &[(&Kept, Vec<List>)]) -> Result<Vec<u8>, MetricsError> {
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
    let mut w = StateWriter::new(STATE_NAME, FORMAT_VERSION).bytes("accumulators", acc).json("panels", &header);
    for (i, (k, _)) in panels.iter().enumerate() {
        if let Some(img) = &k.image {
            w = w.u8(&format!("{i}/image"), &[k.h, k.w, 3], img);
        }
        for (j, (_, s)) in k.scores.iter().enumerate() {
            w = w.f32(&format!("{i}/score/{j}"), &[k.h, k.w], s);
        }
        for (j, (_, m, _)) in k.masks.iter().enumerate() {
            w = w.u8(&format!("{i}/mask/{j}"), &[k.h, k.w], m);
        }
        w = w.u8(&format!("{i}/gt"), &[k.h, k.w], &k.gt);
    }
    w.finish().map_err(format_error)
}

fn format_error(e: StateError) -> MetricsError {
    MetricsError::Format { path: "report state".into(), reason: e.to_string() }
}

/// A panel as decoded, with the lists it is in.
pub(crate) type Decoded = (Kept, Vec<List>);

/// Parses [`encode`]'s bytes: the accumulators and the panels with their lists.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Accumulators, Vec<Decoded>), MetricsError> {
    let r = StateReader::parse(bytes, STATE_NAME, FORMAT_VERSION).map_err(format_error)?;
    let acc = Accumulators::from_bytes(r.bytes("accumulators").map_err(format_error)?, "report state")?;
    let header: Vec<PanelHeader> = r.json("panels").map_err(format_error)?;
    let mut panels = Vec::with_capacity(header.len());
    for (i, p) in header.into_iter().enumerate() {
        let hw = [p.h, p.w];
        let image = if p.image {
            Some(r.array_shape(&format!("{i}/image"), &[p.h, p.w, 3]).map_err(format_error)?)
        } else {
            None
        };
        let mut scores = Vec::with_capacity(p.scores.len());
        for (j, name) in p.scores.into_iter().enumerate() {
            scores.push((name, r.array_shape(&format!("{i}/score/{j}"), &hw).map_err(format_error)?));
        }
        let mut masks = Vec::with_capacity(p.masks.len());
        for (j, (name, counts)) in p.masks.into_iter().enumerate() {
            masks.push((name, r.array_shape(&format!("{i}/mask/{j}"), &hw).map_err(format_error)?, counts));
        }
        let gt = r.array_shape(&format!("{i}/gt"), &hw).map_err(format_error)?;
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
    Ok((acc, panels))
}
