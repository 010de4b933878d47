//! The Point-MAE encoder in ONNX Runtime, with the interface `tools/export_point_mae.py`
//! writes: inputs `neighborhood` `[1, G, k, 3]` and `center` `[1, G, 3]`, output `features`
//! `[1, G, C]`.

use std::{
    path::Path,
    sync::{Mutex, PoisonError},
};

use anoflow_ort_session::{
    open_session,
    ort::{session::Session, value::Tensor},
    OnnxError, Provider,
};

pub const INPUT_PATCHES: &str = "neighborhood";
pub const INPUT_CENTRES: &str = "center";
pub const OUTPUT: &str = "features";

/// An opened encoder. ONNX Runtime's `run` needs exclusive access, so the host's worker
/// threads take turns.
pub struct Encoder {
    label: String,
    session: Mutex<Session>,
    /// G and k when the model fixes them.
    pub fixed_groups: Option<usize>,
    pub fixed_k: Option<usize>,
    /// C when the model fixes it.
    pub fixed_channels: Option<usize>,
}

fn fixed(d: i64) -> Option<usize> {
    usize::try_from(d).ok().filter(|&d| d > 0)
}

impl Encoder {
    /// Opens `path` and checks its inputs and output against the Point-MAE interface.
    pub fn open(path: &Path, label: &str, threads: usize, provider: Provider) -> Result<Self, OnnxError> {
        let session = open_session(path, label, threads, provider)?;
        let bad = |reason: String| OnnxError::BadParam { model: label.into(), reason };
        let interface = "expected Point-MAE's encoder interface (tools/export_point_mae.py): inputs `neighborhood` \
                         [1, G, k, 3] and `center` [1, G, 3], output `features` [1, G, C]";
        let shape_of = |name: &str, outlets: Vec<(String, Option<Vec<i64>>)>, what: &str| {
            let names = outlets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
            outlets
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.unwrap_or_default())
                .ok_or_else(|| bad(format!("has no {what} `{name}` (its {what}s: {names}); {interface}")))
        };
        let ins: Vec<_> = session
            .inputs()
            .iter()
            .map(|i| (i.name().to_string(), i.dtype().tensor_shape().map(|s| s.to_vec())))
            .collect();
        let outs: Vec<_> = session
            .outputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().tensor_shape().map(|s| s.to_vec())))
            .collect();
        let patches = shape_of(INPUT_PATCHES, ins.clone(), "input")?;
        let centres = shape_of(INPUT_CENTRES, ins, "input")?;
        let out = shape_of(OUTPUT, outs, "output")?;
        let rank_ok = |s: &[i64], rank: usize, last: Option<i64>| {
            s.len() == rank && last.is_none_or(|l| s[rank - 1] == l || s[rank - 1] < 0)
        };
        if !rank_ok(&patches, 4, Some(3)) || !rank_ok(&centres, 3, Some(3)) || !rank_ok(&out, 3, None) {
            return Err(bad(format!(
                "has shapes neighborhood {patches:?}, center {centres:?}, features {out:?}; {interface} (negative = \
                 dynamic)"
            )));
        }
        Ok(Self {
            label: label.into(),
            session: Mutex::new(session),
            fixed_groups: fixed(patches[1]),
            fixed_k: fixed(patches[2]),
            fixed_channels: fixed(out[2]),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs one cloud's `G x k` patches and `G` centres; returns the `G x C` features and C.
    pub fn run(
        &self,
        groups: usize,
        k: usize,
        patches: Vec<f32>,
        centres: Vec<f32>,
    ) -> Result<(Vec<f32>, usize), String> {
        let patches = Tensor::from_array(([1, groups, k, 3], patches)).map_err(|e| e.to_string())?;
        let centres = Tensor::from_array(([1, groups, 3], centres)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let result = session
            .run(anoflow_ort_session::ort::inputs![INPUT_PATCHES => patches, INPUT_CENTRES => centres])
            .map_err(|e| format!("ONNX Runtime failed on G = {groups} groups of k = {k} points: {e}"))?;
        let value = result.get(OUTPUT).ok_or_else(|| format!("the model returned no `{OUTPUT}`"))?;
        let (shape, data) =
            value.try_extract_tensor::<f32>().map_err(|e| format!("output `{OUTPUT}` is not a float tensor: {e}"))?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        match dims.as_slice() {
            &[1, g, c] if usize::try_from(g).ok() == Some(groups) && c > 0 => Ok((data.to_vec(), c as usize)),
            _ => {
                Err(format!("output `{OUTPUT}` has shape {dims:?}; expected [1, {groups}, C] (one feature per group)"))
            }
        }
    }
}
