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
mod spill;
pub mod stages;
#[cfg(test)]
mod testdata;

// The old module paths (`patchcore::Bank` in the benches) keep working.
pub use stages::pca_residual as pca;
pub use stages::{padim, patchcore};
pub use stages::{padim::Padim, patchcore::PatchCore, pca_residual::PcaResidual};

anoflow_sdk::export_plugin! { stages: [PatchCore, Padim, PcaResidual] }
