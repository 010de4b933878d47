//! The fitted state of a scorer as bytes, for the host's cache: a small versioned binary
//! format, little-endian throughout.
//!
//! ```text
//! magic "ANOFLOWS" | format version u32 | stage name (u32 length + UTF-8) | section count u32
//! per section: name (u32 length + UTF-8) | dtype u8 (1 = f32, 2 = f64) | rank u32 | dims u64 * rank | data
//! FNV-1a 64 checksum of every byte before it
//! ```

use anoflow_sdk::prelude::StageError;

const MAGIC: &[u8; 8] = b"ANOFLOWS";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("fitted state is truncated (needed {needed} bytes at offset {offset}, {len} in all)")]
    Truncated { needed: usize, offset: usize, len: usize },
    #[error("fitted state does not start with the anoflow state magic")]
    BadMagic,
    #[error("fitted state has format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("fitted state was written by stage `{found}`, expected `{expected}`")]
    WrongStage { expected: String, found: String },
    #[error("fitted state checksum mismatch: the bytes are corrupted")]
    Checksum,
    #[error("fitted state: section `{name}`: {problem}")]
    Section { name: String, problem: String },
}

impl From<StateError> for StageError {
    fn from(e: StateError) -> Self {
        StageError::invalid_input(e.to_string())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Builds a state blob section by section.
pub struct StateWriter {
    buf: Vec<u8>,
    sections: u32,
    count_at: usize,
}

impl StateWriter {
    pub fn new(stage: &str) -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        put_str(&mut buf, stage);
        let count_at = buf.len();
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self { buf, sections: 0, count_at }
    }

    fn header(&mut self, name: &str, dtype: u8, dims: &[usize]) {
        put_str(&mut self.buf, name);
        self.buf.push(dtype);
        self.buf.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for &d in dims {
            self.buf.extend_from_slice(&(d as u64).to_le_bytes());
        }
        self.sections += 1;
    }

    pub fn f32s(mut self, name: &str, dims: &[usize], data: &[f32]) -> Self {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.header(name, 1, dims);
        self.buf.reserve(data.len() * 4);
        for v in data {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    pub fn f64s(mut self, name: &str, dims: &[usize], data: &[f64]) -> Self {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.header(name, 2, dims);
        self.buf.reserve(data.len() * 8);
        for v in data {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.sections.to_le_bytes());
        let sum = fnv1a(&self.buf);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        self.buf
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// One array read back from a state blob.
pub enum Array {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A parsed state blob: named arrays with their shapes.
pub struct StateReader {
    sections: Vec<(String, Vec<usize>, Array)>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(StateError::Truncated {
            needed: n,
            offset: self.at,
            len: self.bytes.len(),
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, StateError> {
        let n = self.u32()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

impl StateReader {
    /// Parses and checks a blob written by [`StateWriter`] for `stage`.
    pub fn parse(bytes: &[u8], stage: &str) -> Result<Self, StateError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StateError::BadMagic);
        }
        let body_len = bytes.len().checked_sub(8).ok_or(StateError::Truncated { needed: 8, offset: 0, len: 0 })?;
        let mut c = Cursor { bytes: &bytes[..body_len], at: MAGIC.len() };
        let version = c.u32()?;
        if version != FORMAT_VERSION {
            return Err(StateError::Version { found: version });
        }
        let found = c.string()?;
        if found != stage {
            return Err(StateError::WrongStage { expected: stage.to_string(), found });
        }
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[body_len..]);
        if fnv1a(&bytes[..body_len]) != u64::from_le_bytes(sum) {
            return Err(StateError::Checksum);
        }
        let count = c.u32()?;
        let mut sections = Vec::new();
        for _ in 0..count {
            let name = c.string()?;
            let dtype = c.take(1)?[0];
            let rank = c.u32()? as usize;
            let dims = (0..rank).map(|_| c.u64().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
            let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| StateError::Section {
                name: name.clone(),
                problem: format!("shape {dims:?} overflows"),
            })?;
            let array = match dtype {
                1 => Array::F32(
                    c.take(len.saturating_mul(4))?
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                2 => Array::F64(
                    c.take(len.saturating_mul(8))?
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                        .collect(),
                ),
                other => {
                    return Err(StateError::Section { name, problem: format!("unknown dtype code {other}") });
                }
            };
            sections.push((name, dims, array));
        }
        Ok(Self { sections })
    }

    fn section(&mut self, name: &str) -> Result<(Vec<usize>, Array), StateError> {
        let i = self
            .sections
            .iter()
            .position(|s| s.0 == name)
            .ok_or_else(|| StateError::Section { name: name.to_string(), problem: "missing".into() })?;
        let (_, dims, a) = self.sections.swap_remove(i);
        Ok((dims, a))
    }

    /// Takes an f32 array and its shape.
    pub fn f32s(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>), StateError> {
        match self.section(name)? {
            (dims, Array::F32(v)) => Ok((dims, v)),
            _ => Err(StateError::Section { name: name.into(), problem: "expected f32 data".into() }),
        }
    }

    /// Takes an f64 array and its shape.
    pub fn f64s(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f64>), StateError> {
        match self.section(name)? {
            (dims, Array::F64(v)) => Ok((dims, v)),
            _ => Err(StateError::Section { name: name.into(), problem: "expected f64 data".into() }),
        }
    }
}

/// Checks that a section has `rank` dimensions; returns them.
pub fn expect_rank(name: &str, dims: &[usize], rank: usize) -> Result<(), StateError> {
    if dims.len() != rank {
        return Err(StateError::Section {
            name: name.into(),
            problem: format!("expected rank {rank}, found {dims:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_checks() {
        let blob = StateWriter::new("patchcore").f32s("bank", &[2, 3], &[1., 2., 3., 4., 5., 6.]).f64s(
            "mean",
            &[2],
            &[0.5, -1.0],
        );
        let blob = blob.finish();
        let mut r = StateReader::parse(&blob, "patchcore").unwrap();
        assert_eq!(r.f32s("bank").unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        assert_eq!(r.f64s("mean").unwrap().1, vec![0.5, -1.0]);
        assert!(r.f32s("bank").is_err(), "taken once");

        let err = StateReader::parse(&blob, "padim").err().unwrap().to_string();
        assert!(err.contains("written by stage `patchcore`, expected `padim`"), "{err}");
        let mut bad = blob.clone();
        bad[40] ^= 1;
        assert!(matches!(StateReader::parse(&bad, "patchcore"), Err(StateError::Checksum)));
        assert!(matches!(StateReader::parse(&blob[..20], "patchcore"), Err(StateError::Truncated { .. })));
        assert!(matches!(StateReader::parse(b"garbage!", "patchcore"), Err(StateError::BadMagic)));
    }
}
