//! One binary format for every state a stage keeps as bytes: a fitted stage's state (the
//! host's cache, bundles), a sink's accumulated state (shard merge) and the host's cached
//! values ([`crate::codec`]). Little-endian throughout:
//!
//! ```text
//! header:  magic "ANOFSTAT" | format version u32 | stage name (u32 length + UTF-8)
//!          | stage format version u32 | section count u32 | CRC-32 of the header bytes
//! section: name (u32 length + UTF-8) | element type u8 | rank u32 | dims u64 * rank
//!          | data length u64 | data | CRC-32 of the section bytes
//! ```
//!
//! Every part carries its own checksum, so a truncated or corrupted state is an error that
//! names the section, never a wrong result. The stage name and the stage's own format
//! version refuse a state written by another stage (or an older layout of the same one).
//!
//! ```
//! use anoflow_sdk::state::{StateReader, StateWriter};
//! let bytes = StateWriter::new("patchcore", 1).f32("bank", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).finish().unwrap();
//! let r = StateReader::parse(&bytes, "patchcore", 1).unwrap();
//! assert_eq!(r.f32_rank("bank", 2).unwrap(), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
//! ```

use std::fmt;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::StageError;

const MAGIC: &[u8; 8] = b"ANOFSTAT";
/// Version of the container layout above (not of any stage's content).
pub const FORMAT_VERSION: u32 = 1;

/// The element type of a section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    U8,
    U32,
    U64,
    I64,
    F32,
    F64,
    /// UTF-8 text (rank 1, one element per byte).
    Text,
    /// JSON text (rank 1, one element per byte).
    Json,
}

impl ElemType {
    fn code(self) -> u8 {
        match self {
            Self::U8 => 1,
            Self::U32 => 2,
            Self::U64 => 3,
            Self::I64 => 4,
            Self::F32 => 5,
            Self::F64 => 6,
            Self::Text => 7,
            Self::Json => 8,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::U8,
            2 => Self::U32,
            3 => Self::U64,
            4 => Self::I64,
            5 => Self::F32,
            6 => Self::F64,
            7 => Self::Text,
            8 => Self::Json,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Self::U8 | Self::Text | Self::Json => 1,
            Self::U32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::U8 => "u8",
            Self::U32 => "u32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Text => "text",
            Self::Json => "json",
        };
        f.write_str(name)
    }
}

/// What is wrong with a state. `stage` is the stage that wrote it (as far as it could be read).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("saved state is not in the anoflow state format (bad magic); it may predate this build")]
    BadMagic,
    #[error("saved state has container format version {found}, this build reads version {FORMAT_VERSION}")]
    FormatVersion { found: u32 },
    #[error("saved state header is truncated or corrupted")]
    Header,
    #[error("saved state was written by stage `{found}` (format {found_version}), expected `{expected}` (format {expected_version})")]
    WrongStage { expected: String, expected_version: u32, found: String, found_version: u32 },
    #[error("saved state of stage `{stage}`: section `{section}`: {problem}")]
    Section { stage: String, section: String, problem: String },
    #[error("saved state of stage `{stage}`: {problem}")]
    Other { stage: String, problem: String },
}

impl From<StateError> for StageError {
    fn from(e: StateError) -> Self {
        StageError::invalid_input(e.to_string())
    }
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, s.len() as u32);
    buf.extend_from_slice(s.as_bytes());
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Builds a state section by section. A section whose data does not match its shape, a
/// repeated name or a value that cannot be serialized is reported by [`StateWriter::finish`].
pub struct StateWriter {
    stage: String,
    version: u32,
    body: Vec<u8>,
    names: Vec<String>,
    error: Option<StateError>,
}

/// A plain number type a section can hold, stored little-endian.
pub trait Element: Copy {
    const TYPE: ElemType;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
    /// Appends every element of `data` (the same bytes as [`Element::put`] one at a time).
    fn put_all(data: &[Self], out: &mut Vec<u8>) {
        data.iter().for_each(|v| v.put(out));
    }
    /// Every element of `bytes`, whose length is a multiple of the element's size.
    fn get_all(bytes: &[u8]) -> Vec<Self> {
        bytes.chunks_exact(Self::TYPE.size()).map(Self::get).collect()
    }
}

macro_rules! element {
    ($t:ty, $e:ident) => {
        impl Element for $t {
            const TYPE: ElemType = ElemType::$e;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            // On a little-endian host the stored bytes are the values' own: one copy
            // (feature maps are megabytes; element by element was most of a cache write).
            #[cfg(target_endian = "little")]
            fn put_all(data: &[Self], out: &mut Vec<u8>) {
                out.extend_from_slice(bytemuck::cast_slice(data));
            }
            #[cfg(target_endian = "little")]
            fn get_all(bytes: &[u8]) -> Vec<Self> {
                let n = bytes.len() / std::mem::size_of::<$t>();
                let mut values: Vec<$t> = vec![0 as $t; n];
                let whole = &bytes[..n * std::mem::size_of::<$t>()];
                bytemuck::cast_slice_mut::<$t, u8>(&mut values).copy_from_slice(whole);
                values
            }
        }
    };
}
element!(u8, U8);
element!(u32, U32);
element!(u64, U64);
element!(i64, I64);
element!(f32, F32);
element!(f64, F64);

impl StateWriter {
    /// A state of `stage`, in that stage's own format `version` (bump it when the sections
    /// a stage writes change meaning).
    pub fn new(stage: &str, version: u32) -> Self {
        Self { stage: stage.to_string(), version, body: Vec::new(), names: Vec::new(), error: None }
    }

    fn fail(&mut self, section: &str, problem: String) {
        if self.error.is_none() {
            self.error = Some(StateError::Section { stage: self.stage.clone(), section: section.to_string(), problem });
        }
    }

    fn section(mut self, name: &str, ty: ElemType, dims: &[usize], data: impl FnOnce(&mut Vec<u8>)) -> Self {
        if self.names.iter().any(|n| n == name) {
            self.fail(name, "written twice".into());
            return self;
        }
        self.names.push(name.to_string());
        let start = self.body.len();
        put_str(&mut self.body, name);
        self.body.push(ty.code());
        put_u32(&mut self.body, dims.len() as u32);
        for &d in dims {
            self.body.extend_from_slice(&(d as u64).to_le_bytes());
        }
        let len_at = self.body.len();
        self.body.extend_from_slice(&0u64.to_le_bytes());
        let data_at = self.body.len();
        data(&mut self.body);
        let len = (self.body.len() - data_at) as u64;
        self.body[len_at..data_at].copy_from_slice(&len.to_le_bytes());
        let sum = crc(&self.body[start..]);
        put_u32(&mut self.body, sum);
        self
    }

    /// A tensor of numbers with its shape (`&[]` for one scalar).
    pub fn array<T: Element>(mut self, name: &str, shape: &[usize], data: &[T]) -> Self {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            self.fail(name, format!("shape {shape:?} does not hold {} elements", data.len()));
            return self;
        }
        self.section(name, T::TYPE, shape, |out| {
            out.reserve(data.len() * T::TYPE.size());
            T::put_all(data, out);
        })
    }

    pub fn u8(self, name: &str, shape: &[usize], data: &[u8]) -> Self {
        // Bytes are copied as they are: no per-element loop.
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return self.array(name, shape, data);
        }
        self.section(name, ElemType::U8, shape, |out| out.extend_from_slice(data))
    }
    /// Raw bytes, rank 1.
    pub fn bytes(self, name: &str, data: &[u8]) -> Self {
        self.u8(name, &[data.len()], data)
    }
    pub fn u32(self, name: &str, shape: &[usize], data: &[u32]) -> Self {
        self.array(name, shape, data)
    }
    pub fn u64(self, name: &str, shape: &[usize], data: &[u64]) -> Self {
        self.array(name, shape, data)
    }
    pub fn i64(self, name: &str, shape: &[usize], data: &[i64]) -> Self {
        self.array(name, shape, data)
    }
    pub fn f32(self, name: &str, shape: &[usize], data: &[f32]) -> Self {
        self.array(name, shape, data)
    }
    pub fn f64(self, name: &str, shape: &[usize], data: &[f64]) -> Self {
        self.array(name, shape, data)
    }
    /// UTF-8 text.
    pub fn text(self, name: &str, text: &str) -> Self {
        self.section(name, ElemType::Text, &[text.len()], |out| out.extend_from_slice(text.as_bytes()))
    }
    /// A value as JSON (for small structured settings; numbers go in number sections).
    pub fn json<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(json) => self.section(name, ElemType::Json, &[json.len()], |out| out.extend_from_slice(&json)),
            Err(e) => {
                self.fail(name, format!("cannot serialize: {e}"));
                self
            }
        }
    }

    /// The state's bytes.
    pub fn finish(self) -> Result<Vec<u8>, StateError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut out = Vec::with_capacity(self.body.len() + self.stage.len() + 32);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, FORMAT_VERSION);
        put_str(&mut out, &self.stage);
        put_u32(&mut out, self.version);
        put_u32(&mut out, self.names.len() as u32);
        let sum = crc(&out);
        put_u32(&mut out, sum);
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(u64::get)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

struct Section<'a> {
    name: String,
    ty: ElemType,
    dims: Vec<usize>,
    data: &'a [u8],
}

/// A parsed, checked state; sections are read by name with typed getters. Data is borrowed
/// from the bytes and converted on request.
pub struct StateReader<'a> {
    stage: String,
    version: u32,
    sections: Vec<Section<'a>>,
}

impl<'a> StateReader<'a> {
    /// Parses a state and checks that `stage` wrote it in its format `version`.
    pub fn parse(bytes: &'a [u8], stage: &str, version: u32) -> Result<Self, StateError> {
        let r = Self::parse_any(bytes)?;
        if r.stage != stage || r.version != version {
            return Err(StateError::WrongStage {
                expected: stage.to_string(),
                expected_version: version,
                found: r.stage,
                found_version: r.version,
            });
        }
        Ok(r)
    }

    /// Parses a state written by any stage ([`StateReader::stage`] says which).
    pub fn parse_any(bytes: &'a [u8]) -> Result<Self, StateError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StateError::BadMagic);
        }
        let mut c = Cursor { bytes, at: MAGIC.len() };
        let found = c.u32().ok_or(StateError::Header)?;
        if found != FORMAT_VERSION {
            return Err(StateError::FormatVersion { found });
        }
        let (stage, version, count) = (|| Some((c.string()?, c.u32()?, c.u32()?)))().ok_or(StateError::Header)?;
        let header_end = c.at;
        let sum = c.u32().ok_or(StateError::Header)?;
        if crc(&bytes[..header_end]) != sum {
            return Err(StateError::Header);
        }
        let mut sections: Vec<Section<'a>> = Vec::with_capacity((count as usize).min(1024));
        for i in 0..count {
            let start = c.at;
            let after = sections.last().map_or("the header".to_string(), |s| format!("section `{}`", s.name));
            let other = |problem: String| StateError::Other { stage: stage.clone(), problem };
            let name = c.string().ok_or_else(|| {
                other(format!("section {} of {count} (after {after}) is truncated or corrupted", i + 1))
            })?;
            let bad = |problem: &str| StateError::Section {
                stage: stage.clone(),
                section: name.clone(),
                problem: problem.to_string(),
            };
            let code = c.take(1).ok_or_else(|| bad("truncated"))?[0];
            let rank = c.u32().ok_or_else(|| bad("truncated"))? as usize;
            if rank > 16 {
                return Err(bad("corrupted (rank out of range)"));
            }
            let dims = (0..rank)
                .map(|_| c.u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("truncated"))?;
            let len = c.u64().ok_or_else(|| bad("truncated"))?;
            let data = usize::try_from(len).ok().and_then(|n| c.take(n)).ok_or_else(|| bad("truncated"))?;
            let end = c.at;
            let sum = c.u32().ok_or_else(|| bad("truncated"))?;
            if crc(&bytes[start..end]) != sum {
                return Err(bad("checksum mismatch: the bytes are corrupted"));
            }
            let ty = ElemType::from_code(code).ok_or_else(|| bad("unknown element type"))?;
            let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n.and_then(|n| n.checked_mul(ty.size())) != Some(data.len()) {
                return Err(bad("data length does not match its shape"));
            }
            sections.push(Section { name, ty, dims, data });
        }
        if c.at != bytes.len() {
            return Err(StateError::Other {
                stage,
                problem: format!("{} unexpected bytes after the last section", bytes.len() - c.at),
            });
        }
        Ok(Self { stage, version, sections })
    }

    /// The stage that wrote this state.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The stage's format version this state was written in.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether a section of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s.name == name)
    }

    /// An error about section `name`, for checks a stage makes on what it read.
    pub fn error(&self, name: &str, problem: impl Into<String>) -> StateError {
        StateError::Section { stage: self.stage.clone(), section: name.to_string(), problem: problem.into() }
    }

    fn get(&self, name: &str, ty: ElemType) -> Result<&Section<'a>, StateError> {
        let s = self.sections.iter().find(|s| s.name == name).ok_or_else(|| self.error(name, "missing"))?;
        if s.ty != ty {
            return Err(self.error(name, format!("expected {ty} data, found {}", s.ty)));
        }
        Ok(s)
    }

    /// A tensor of numbers and its shape.
    pub fn array<T: Element>(&self, name: &str) -> Result<(Vec<usize>, Vec<T>), StateError> {
        let s = self.get(name, T::TYPE)?;
        Ok((s.dims.clone(), T::get_all(s.data)))
    }

    /// A tensor that must have `rank` dimensions.
    pub fn array_rank<T: Element>(&self, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<T>), StateError> {
        let s = self.get(name, T::TYPE)?;
        if s.dims.len() != rank {
            return Err(self.error(name, format!("expected rank {rank}, found shape {:?}", s.dims)));
        }
        self.array(name)
    }

    /// A tensor that must have exactly `shape`.
    pub fn array_shape<T: Element>(&self, name: &str, shape: &[usize]) -> Result<Vec<T>, StateError> {
        let s = self.get(name, T::TYPE)?;
        if s.dims != shape {
            return Err(self.error(name, format!("expected shape {shape:?}, found {:?}", s.dims)));
        }
        Ok(self.array(name)?.1)
    }

    /// One number (a section of shape `[]`).
    pub fn scalar<T: Element>(&self, name: &str) -> Result<T, StateError> {
        let v = self.array_shape::<T>(name, &[])?;
        v.first().copied().ok_or_else(|| self.error(name, "empty"))
    }

    pub fn u8(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>), StateError> {
        let s = self.get(name, ElemType::U8)?;
        Ok((s.dims.clone(), s.data.to_vec()))
    }
    /// Raw bytes, borrowed (any shape).
    pub fn bytes(&self, name: &str) -> Result<&'a [u8], StateError> {
        Ok(self.get(name, ElemType::U8)?.data)
    }
    pub fn u32(&self, name: &str) -> Result<(Vec<usize>, Vec<u32>), StateError> {
        self.array(name)
    }
    pub fn u64(&self, name: &str) -> Result<(Vec<usize>, Vec<u64>), StateError> {
        self.array(name)
    }
    pub fn i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>), StateError> {
        self.array(name)
    }
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), StateError> {
        self.array(name)
    }
    pub fn f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>), StateError> {
        self.array(name)
    }
    /// An f32 tensor that must have `rank` dimensions.
    pub fn f32_rank(&self, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<f32>), StateError> {
        self.array_rank(name, rank)
    }
    /// An f64 tensor that must have `rank` dimensions.
    pub fn f64_rank(&self, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<f64>), StateError> {
        self.array_rank(name, rank)
    }
    /// UTF-8 text.
    pub fn text(&self, name: &str) -> Result<String, StateError> {
        let s = self.get(name, ElemType::Text)?;
        String::from_utf8(s.data.to_vec()).map_err(|_| self.error(name, "text is not UTF-8"))
    }
    /// A JSON section, deserialized.
    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, StateError> {
        let s = self.get(name, ElemType::Json)?;
        serde_json::from_slice(s.data).map_err(|e| self.error(name, format!("unreadable JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        StateWriter::new("patchcore", 2)
            .f32("bank", &[2, 3], &[1., 2., 3., 4., 5., 6.])
            .f64("mean", &[2], &[0.5, -1.0])
            .u32("ids", &[2], &[7, u32::MAX])
            .u64("count", &[], &[u64::MAX])
            .i64("delta", &[1], &[-5])
            .bytes("raw", &[0, 255, 3])
            .text("note", "héllo")
            .json("config", &serde_json::json!({"k": 3}))
            .finish()
            .unwrap()
    }

    #[test]
    fn whole_arrays_are_stored_as_their_elements_one_by_one() {
        fn check<T: Element + PartialEq + std::fmt::Debug>(values: &[T]) {
            let mut one_by_one = Vec::new();
            values.iter().for_each(|v| v.put(&mut one_by_one));
            let mut whole = Vec::new();
            T::put_all(values, &mut whole);
            assert_eq!(whole, one_by_one);
            let back: Vec<T> = one_by_one.chunks_exact(T::TYPE.size()).map(T::get).collect();
            assert_eq!(T::get_all(&whole), back);
            // Read from an odd offset too: stored bytes need not be aligned.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&whole);
            assert_eq!(T::get_all(&shifted[1..]), back);
        }
        check(&[1.5f32, -0.0, f32::MIN_POSITIVE, f32::INFINITY, 3e38]);
        check(&[0.25f64, -7.0, f64::MAX]);
        check(&[7u32, u32::MAX, 0]);
        check(&[u64::MAX, 1]);
        check(&[-5i64, i64::MIN]);
        let nan = f32::from_bits(0x7fc0_0001);
        let mut stored = Vec::new();
        f32::put_all(&[nan], &mut stored);
        assert_eq!(f32::get_all(&stored)[0].to_bits(), nan.to_bits(), "a NaN keeps its payload");
    }

    #[test]
    fn round_trip() {
        let blob = sample();
        let r = StateReader::parse(&blob, "patchcore", 2).unwrap();
        assert_eq!(r.f32_rank("bank", 2).unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        assert_eq!(r.f64("mean").unwrap().1, vec![0.5, -1.0]);
        assert_eq!(r.u32("ids").unwrap().1, vec![7, u32::MAX]);
        assert_eq!(r.scalar::<u64>("count").unwrap(), u64::MAX);
        assert_eq!(r.i64("delta").unwrap().1, vec![-5]);
        assert_eq!(r.bytes("raw").unwrap(), &[0, 255, 3]);
        assert_eq!(r.text("note").unwrap(), "héllo");
        assert_eq!(r.json::<serde_json::Value>("config").unwrap()["k"], 3);
        assert!(r.has("bank") && !r.has("nope"));
        assert_eq!((r.stage(), r.version()), ("patchcore", 2));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let blob = sample();
        for n in 0..blob.len() {
            assert!(StateReader::parse(&blob[..n], "patchcore", 2).is_err(), "truncated to {n} bytes");
        }
        let err = StateReader::parse(&blob[..blob.len() - 3], "patchcore", 2).err().unwrap().to_string();
        assert!(err.contains("section `config`") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let blob = sample();
        for i in 0..blob.len() {
            for bit in [0, 3, 7] {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                assert!(StateReader::parse(&bad, "patchcore", 2).is_err(), "bit {bit} of byte {i}");
            }
        }
        // A flip inside the bank's data names the section.
        let at = blob.windows(4).position(|w| w == 3f32.to_le_bytes()).unwrap();
        let mut bad = blob.clone();
        bad[at] ^= 1;
        let err = StateReader::parse(&bad, "patchcore", 2).err().unwrap().to_string();
        assert!(err.contains("stage `patchcore`: section `bank`: checksum mismatch"), "{err}");
    }

    #[test]
    fn wrong_type_shape_or_missing_section_says_which() {
        let blob = sample();
        let r = StateReader::parse(&blob, "patchcore", 2).unwrap();
        let err = r.f64("bank").unwrap_err().to_string();
        assert!(err.contains("stage `patchcore`: section `bank`: expected f64 data, found f32"), "{err}");
        let err = r.f32_rank("bank", 1).unwrap_err().to_string();
        assert!(err.contains("expected rank 1, found shape [2, 3]"), "{err}");
        assert!(r.array_shape::<f32>("bank", &[3, 2]).is_err());
        let err = r.text("gone").unwrap_err().to_string();
        assert!(err.contains("section `gone`: missing"), "{err}");
    }

    #[test]
    fn wrong_stage_or_version_is_refused() {
        let blob = sample();
        let err = StateReader::parse(&blob, "padim", 2).err().unwrap().to_string();
        assert!(err.contains("written by stage `patchcore` (format 2), expected `padim` (format 2)"), "{err}");
        assert!(matches!(StateReader::parse(&blob, "patchcore", 1), Err(StateError::WrongStage { .. })));
        assert_eq!(StateReader::parse(b"ANOFLOWS garbage", "patchcore", 2).err(), Some(StateError::BadMagic));
    }

    #[test]
    fn writer_mistakes_are_reported() {
        let e = StateWriter::new("s", 1).f32("a", &[3], &[1.0]).finish().unwrap_err().to_string();
        assert!(e.contains("section `a`: shape [3] does not hold 1 elements"), "{e}");
        let e = StateWriter::new("s", 1).u8("a", &[2], &[1]).finish().unwrap_err().to_string();
        assert!(e.contains("section `a`"), "{e}");
        let e = StateWriter::new("s", 1).text("a", "x").text("a", "y").finish().unwrap_err().to_string();
        assert!(e.contains("written twice"), "{e}");
        let empty = StateWriter::new("s", 1).finish().unwrap();
        assert_eq!(StateReader::parse(&empty, "s", 1).unwrap().sections.len(), 0);
        let e = StateReader::parse(&[empty.clone(), vec![0]].concat(), "s", 1).err().unwrap().to_string();
        assert!(e.contains("1 unexpected bytes"), "{e}");
    }
}
