//! An organized point cloud with its validity made explicit.
//!
//! A point is invalid when it is all zeros (no measurement, as MVTec 3D-AD stores it) or when
//! any coordinate is NaN or infinite: a non-finite point is treated exactly like a missing
//! one and written back as zeros, so nothing downstream ever sees it. Every computation in
//! this crate reads only valid points.

use anoflow_sdk::prelude::PointCloud;

/// `height x width` points, row-major, with a validity flag per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Organized {
    pub height: usize,
    pub width: usize,
    /// Invalid pixels hold `[0, 0, 0]`.
    pub points: Vec<[f32; 3]>,
    pub valid: Vec<bool>,
}

pub use anoflow_pointops::is_valid_point;

impl Organized {
    /// From a raw `h x w x 3` buffer; non-finite points become invalid (zeros).
    pub fn from_raw(height: usize, width: usize, data: &[f32]) -> Self {
        debug_assert_eq!(data.len(), height * width * 3);
        let mut points = Vec::with_capacity(height * width);
        let mut valid = Vec::with_capacity(height * width);
        for c in data.chunks_exact(3) {
            let p = [c[0], c[1], c[2]];
            let ok = is_valid_point(p);
            points.push(if ok { p } else { [0.0; 3] });
            valid.push(ok);
        }
        Self { height, width, points, valid }
    }

    pub fn from_cloud(cloud: &PointCloud) -> Self {
        Self::from_raw(cloud.height(), cloud.width(), cloud.data())
    }

    /// Number of valid points.
    pub fn valid_count(&self) -> usize {
        self.valid.iter().filter(|&&v| v).count()
    }

    /// Marks a pixel invalid (its point becomes zeros).
    pub fn invalidate(&mut self, i: usize) {
        self.valid[i] = false;
        self.points[i] = [0.0; 3];
    }

    /// The valid points and the pixel index each came from, in row-major order.
    pub fn valid_points(&self) -> (Vec<[f32; 3]>, Vec<usize>) {
        let idx: Vec<usize> = (0..self.points.len()).filter(|&i| self.valid[i]).collect();
        (idx.iter().map(|&i| self.points[i]).collect(), idx)
    }

    /// The raw `h x w x 3` buffer (invalid points as zeros).
    pub fn to_raw(&self) -> Vec<f32> {
        self.points.iter().flat_map(|p| p.iter().copied()).collect()
    }
}

pub(crate) fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
pub(crate) fn norm(a: [f32; 3]) -> f32 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_zero_points_are_invalid_and_zeroed() {
        let raw = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, f32::NAN, 1.0, 1.0, 1.0, f32::INFINITY, 2.0];
        let c = Organized::from_raw(2, 2, &raw);
        assert_eq!(c.valid, vec![true, false, false, false]);
        assert_eq!(c.valid_count(), 1);
        assert_eq!(c.to_raw(), vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // A point with one zero coordinate is a measurement.
        assert!(is_valid_point([0.0, 0.0, 5.0]));
    }
}
