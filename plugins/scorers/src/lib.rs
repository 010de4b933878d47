//! Upstream anomaly scorers over patch features (channels-last feature maps from
//! `patch-aggregate`): `patchcore` (coreset memory bank + nearest neighbour), `padim`
//! (per-position Gaussian, Mahalanobis distance) and `pca-residual` (reconstruction error of a
//! PCA fitted on nominal patches). Each outputs a score map at image resolution, upsampled
//! bilinearly and Gaussian-blurred, and an image score.

mod common;
pub mod coreset;
mod coreset_fit;
pub mod linalg;
pub mod nn_exact;
pub mod nn_hnsw;
pub mod nn_kernel;
pub mod nn_pruned;
pub mod padim;
pub mod patchcore;
pub mod pca;
mod spill;
#[cfg(test)]
mod testdata;

pub use padim::Padim;
pub use patchcore::PatchCore;
pub use pca::PcaResidual;

anoflow_sdk::export_plugin! { stages: [PatchCore, Padim, PcaResidual] }
