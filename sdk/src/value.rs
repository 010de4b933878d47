//! The values that flow along the edges of a pipeline.
//!
//! Every buffer is an `RArc<RVec<_>>`: fanning a feature map out to five consumers shares
//! one allocation, and the types are ABI-stable so they cross the plugin boundary as is.
//! Constructors check that the buffer length matches the shape, so a value that exists is
//! well formed ("parse, don't validate").

use abi_stable::{
    std_types::{RArc, RString, RVec},
    StableAbi,
};

use crate::error::StageError;

/// What kind of value a port carries. Used by the host to type-check every edge.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Image,
    Mask,
    ScoreMap,
    FeatureMap,
    PointCloud,
    Scalar,
    Text,
    /// Accepts any kind (for generic stages such as writers).
    Any,
}

impl ValueKind {
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Image => "image",
            ValueKind::Mask => "mask",
            ValueKind::ScoreMap => "score-map",
            ValueKind::FeatureMap => "feature-map",
            ValueKind::PointCloud => "point-cloud",
            ValueKind::Scalar => "scalar",
            ValueKind::Text => "text",
            ValueKind::Any => "any",
        }
    }

    /// Whether a value of kind `found` may flow into a port that expects `self`.
    pub fn accepts(self, found: ValueKind) -> bool {
        self == ValueKind::Any || found == ValueKind::Any || self == found
    }
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Pixel storage of an [`Image`].
#[repr(u8)]
#[derive(StableAbi, Clone, Debug)]
pub enum Pixels {
    U8(RArc<RVec<u8>>),
    F32(RArc<RVec<f32>>),
}

/// An image, `height x width x channels`, row-major, channels interleaved.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct Image {
    height: u32,
    width: u32,
    channels: u32,
    pixels: Pixels,
}

fn check_len(what: &str, len: usize, dims: &[u32]) -> Result<(), StageError> {
    let expected: usize = dims.iter().map(|&d| d as usize).product();
    if dims.contains(&0) {
        return Err(StageError::invalid_input(format!("{what}: every dimension must be positive, got {dims:?}")));
    }
    if len != expected {
        return Err(StageError::invalid_input(format!(
            "{what}: buffer holds {len} elements but shape {dims:?} needs {expected}"
        )));
    }
    Ok(())
}

impl Image {
    pub fn from_u8(height: u32, width: u32, channels: u32, data: Vec<u8>) -> Result<Self, StageError> {
        check_len("image", data.len(), &[height, width, channels])?;
        Ok(Self { height, width, channels, pixels: Pixels::U8(RArc::new(data.into())) })
    }

    pub fn from_f32(height: u32, width: u32, channels: u32, data: Vec<f32>) -> Result<Self, StageError> {
        check_len("image", data.len(), &[height, width, channels])?;
        Ok(Self { height, width, channels, pixels: Pixels::F32(RArc::new(data.into())) })
    }

    pub fn height(&self) -> usize {
        self.height as usize
    }
    pub fn width(&self) -> usize {
        self.width as usize
    }
    pub fn channels(&self) -> usize {
        self.channels as usize
    }
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// The pixels as f32 in `[0, 255]` for u8 images, unchanged for f32 images.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(d) => d.iter().map(|&v| f32::from(v)).collect(),
            Pixels::F32(d) => d.to_vec(),
        }
    }

    /// The pixels as u8 (f32 values are rounded and clamped to `[0, 255]`).
    pub fn to_u8(&self) -> Vec<u8> {
        match &self.pixels {
            Pixels::U8(d) => d.to_vec(),
            Pixels::F32(d) => d.iter().map(|&v| v.round().clamp(0.0, 255.0) as u8).collect(),
        }
    }
}

/// A binary mask, `height x width`, one byte per pixel holding 0 or 1.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct Mask {
    height: u32,
    width: u32,
    data: RArc<RVec<u8>>,
}

impl Mask {
    /// Builds a mask; every non-zero byte becomes 1.
    pub fn new(height: u32, width: u32, mut data: Vec<u8>) -> Result<Self, StageError> {
        check_len("mask", data.len(), &[height, width])?;
        for v in &mut data {
            *v = u8::from(*v != 0);
        }
        Ok(Self { height, width, data: RArc::new(data.into()) })
    }

    pub fn zeros(height: u32, width: u32) -> Result<Self, StageError> {
        Self::new(height, width, vec![0; height as usize * width as usize])
    }

    pub fn height(&self) -> usize {
        self.height as usize
    }
    pub fn width(&self) -> usize {
        self.width as usize
    }
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    pub fn count_ones(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// A dense f32 map, `height x width`: an anomaly score map or a classifier decision map.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ScoreMap {
    height: u32,
    width: u32,
    data: RArc<RVec<f32>>,
}

impl ScoreMap {
    pub fn new(height: u32, width: u32, data: Vec<f32>) -> Result<Self, StageError> {
        check_len("score map", data.len(), &[height, width])?;
        Ok(Self { height, width, data: RArc::new(data.into()) })
    }

    pub fn height(&self) -> usize {
        self.height as usize
    }
    pub fn width(&self) -> usize {
        self.width as usize
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn get(&self, y: usize, x: usize) -> f32 {
        self.data[y * self.width as usize + x]
    }
}

/// A feature map stored channels-last: `height x width x channels`, so the feature vector
/// of one location is one contiguous row (what nearest-neighbour search and per-pixel
/// classifiers read). `stride` is the number of image pixels per feature cell.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FeatureMap {
    channels: u32,
    height: u32,
    width: u32,
    stride: f32,
    data: RArc<RVec<f32>>,
}

impl FeatureMap {
    /// Builds a feature map from a channels-last buffer (`h x w x c`).
    pub fn new(channels: u32, height: u32, width: u32, stride: f32, data: Vec<f32>) -> Result<Self, StageError> {
        check_len("feature map", data.len(), &[height, width, channels])?;
        if !(stride.is_finite() && stride > 0.0) {
            return Err(StageError::invalid_input(format!("feature map: stride must be positive, got {stride}")));
        }
        Ok(Self { channels, height, width, stride, data: RArc::new(data.into()) })
    }

    pub fn channels(&self) -> usize {
        self.channels as usize
    }
    pub fn height(&self) -> usize {
        self.height as usize
    }
    pub fn width(&self) -> usize {
        self.width as usize
    }
    pub fn stride(&self) -> f32 {
        self.stride
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The feature vector at cell `(y, x)`.
    pub fn at(&self, y: usize, x: usize) -> &[f32] {
        let c = self.channels as usize;
        let start = (y * self.width as usize + x) * c;
        &self.data[start..start + c]
    }
}

/// An organized point cloud, `height x width x 3` (x, y, z per pixel); a point that is all
/// zeros is invalid (no measurement), as in MVTec 3D-AD.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PointCloud {
    height: u32,
    width: u32,
    data: RArc<RVec<f32>>,
}

impl PointCloud {
    pub fn new(height: u32, width: u32, data: Vec<f32>) -> Result<Self, StageError> {
        check_len("point cloud", data.len(), &[height, width, 3])?;
        Ok(Self { height, width, data: RArc::new(data.into()) })
    }

    pub fn height(&self) -> usize {
        self.height as usize
    }
    pub fn width(&self) -> usize {
        self.width as usize
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn point(&self, y: usize, x: usize) -> [f32; 3] {
        let i = (y * self.width as usize + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
    pub fn is_valid(&self, y: usize, x: usize) -> bool {
        let p = self.point(y, x);
        p.iter().all(|v| v.is_finite()) && p != [0.0, 0.0, 0.0]
    }
}

/// One value on an edge.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug)]
pub enum Value {
    Image(Image),
    Mask(Mask),
    ScoreMap(ScoreMap),
    FeatureMap(FeatureMap),
    PointCloud(PointCloud),
    Scalar(f64),
    Text(RString),
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Image(_) => ValueKind::Image,
            Value::Mask(_) => ValueKind::Mask,
            Value::ScoreMap(_) => ValueKind::ScoreMap,
            Value::FeatureMap(_) => ValueKind::FeatureMap,
            Value::PointCloud(_) => ValueKind::PointCloud,
            Value::Scalar(_) => ValueKind::Scalar,
            Value::Text(_) => ValueKind::Text,
        }
    }

    /// Height and width for spatial values.
    pub fn spatial_size(&self) -> Option<(usize, usize)> {
        match self {
            Value::Image(v) => Some((v.height(), v.width())),
            Value::Mask(v) => Some((v.height(), v.width())),
            Value::ScoreMap(v) => Some((v.height(), v.width())),
            Value::FeatureMap(v) => Some((v.height(), v.width())),
            Value::PointCloud(v) => Some((v.height(), v.width())),
            Value::Scalar(_) | Value::Text(_) => None,
        }
    }
}

macro_rules! value_from {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for Value {
            fn from(v: $ty) -> Self {
                Value::$variant(v)
            }
        }
    )*};
}
value_from!(Image(Image), Mask(Mask), ScoreMap(ScoreMap), FeatureMap(FeatureMap), PointCloud(PointCloud), Scalar(f64));

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v.into())
    }
}

/// Label of a sample as known from the dataset.
pub const LABEL_NOMINAL: i32 = 0;
pub const LABEL_ANOMALOUS: i32 = 1;
pub const LABEL_UNKNOWN: i32 = -1;

/// Per-sample metadata, produced by the source and handed to every stage.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct SampleMeta {
    /// Unique and stable id, e.g. `bottle/test/broken_large/000`.
    pub id: RString,
    pub category: RString,
    pub split: RString,
    /// Defect type (`good` for nominal samples).
    pub defect: RString,
    /// [`LABEL_NOMINAL`], [`LABEL_ANOMALOUS`] or [`LABEL_UNKNOWN`].
    pub label: i32,
    /// The file the sample was read from (empty for generated samples).
    pub path: RString,
    /// Position in the source's deterministic listing of its split.
    pub index: u64,
}

impl SampleMeta {
    pub fn new(id: impl Into<String>, category: impl Into<String>, split: impl Into<String>) -> Self {
        Self {
            id: RString::from(id.into()),
            category: RString::from(category.into()),
            split: RString::from(split.into()),
            defect: RString::from("good"),
            label: LABEL_UNKNOWN,
            path: RString::new(),
            index: 0,
        }
    }

    pub fn is_anomalous(&self) -> bool {
        self.label == LABEL_ANOMALOUS
    }

    /// The id of this sample's variant `k`: what the host names calibration's defect images,
    /// `v#defect<k>` for validation sample `v`.
    pub fn variant_id(&self, k: u64) -> String {
        format!("{}{VARIANT_MARK}{k}", self.id)
    }

    /// `(v, Some(k))` when this sample is variant `k` of sample `v` (see [`split_variant`]),
    /// else its own id and `None`.
    pub fn variant_of(&self) -> (&str, Option<u64>) {
        split_variant(&self.id)
    }
}

/// What separates a sample id from the number of a variant the host derived from it.
pub const VARIANT_MARK: &str = "#defect";

/// `("bottle/validation/good/003", Some(2))` for `bottle/validation/good/003#defect2` (and for
/// `...#defect2~<tag>`, a tag a stage may add after the number); the id itself and `None` when
/// it names no variant.
pub fn split_variant(id: &str) -> (&str, Option<u64>) {
    match id.find(VARIANT_MARK) {
        Some(at) => {
            let rest = &id[at + VARIANT_MARK.len()..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            (&id[..at], rest[..digits].parse().ok())
        }
        None => (id, None),
    }
}

/// A value delivered to (or produced by) a port. For inputs, `source` names the producing
/// edge as `node.port`, so a port fed by several edges can tell them apart.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PortValue {
    pub port: RString,
    pub source: RString,
    pub value: Value,
}

/// One sample handed to a stage: its metadata and the values on its input ports.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct SampleInput {
    pub meta: SampleMeta,
    pub inputs: RVec<PortValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert!(ScoreMap::new(2, 3, vec![0.0; 6]).is_ok());
        let err = ScoreMap::new(2, 3, vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6"), "{err}");
        assert!(FeatureMap::new(4, 2, 2, 8.0, vec![0.0; 16]).is_ok());
        assert!(FeatureMap::new(4, 2, 2, 0.0, vec![0.0; 16]).is_err());
        assert!(Image::from_u8(0, 3, 3, vec![]).is_err());
    }

    #[test]
    fn mask_is_binary_and_shared() {
        let m = Mask::new(1, 3, vec![0, 7, 255]).unwrap();
        assert_eq!(m.data(), &[0, 1, 1]);
        let v = Value::from(m.clone());
        let Value::Mask(m2) = v.clone() else { panic!("kind") };
        assert!(std::ptr::eq(m.data().as_ptr(), m2.data().as_ptr()), "clone shares the buffer");
    }

    #[test]
    fn feature_rows_are_contiguous() {
        let fm = FeatureMap::new(2, 2, 2, 4.0, (0..8).map(|v| v as f32).collect()).unwrap();
        assert_eq!(fm.at(1, 0), &[4.0, 5.0]);
    }

    #[test]
    fn a_variant_id_names_its_sample_and_number() {
        let meta = SampleMeta::new("cat/validation/good/003", "cat", "validation");
        let variant = SampleMeta::new(meta.variant_id(12), "cat", "calibration");
        assert_eq!(variant.id.as_str(), "cat/validation/good/003#defect12");
        assert_eq!(variant.variant_of(), ("cat/validation/good/003", Some(12)));
        assert_eq!(meta.variant_of(), ("cat/validation/good/003", None));
        // A tag after the number is not part of it; a mark without digits names no number.
        assert_eq!(split_variant("v#defect7~1f2e3d4c"), ("v", Some(7)));
        assert_eq!(split_variant("v#defectx"), ("v", None));
    }
}
