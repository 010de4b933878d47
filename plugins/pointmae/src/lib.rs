//! # anoflow-plugin-pointmae
//!
//! `point-mae-features`: Point-MAE features of an organized point cloud (`PointCloud`,
//! `h x w x 3`, zeros or non-finite = no point) on a `stride`-pixel grid aligned with an RGB
//! backbone's feature map, as M3DM uses them:
//!
//! 1. the valid points; farthest point sampling of `groups` centres (fewer when the cloud has
//!    fewer points), starting from a point picked by `seed` and the sample id (deterministic);
//! 2. the `k` nearest points of each centre, relative to it (Point-MAE's tokenizer,
//!    `anoflow-pointops`);
//! 3. one ONNX Runtime run of the encoder (`tools/export_point_mae.py`: inputs `neighborhood`
//!    `[1, G, k, 3]`, `center` `[1, G, 3]`, output `features` `[1, G, C]`);
//! 4. every valid point takes the inverse-distance-weighted mean of its 3 nearest centres'
//!    features (M3DM's interpolation), and the points of each `stride x stride` cell are
//!    averaged. A cell without a valid point is zeros.

pub mod encoder;
pub mod spread;
pub mod stages;

pub use stages::point_mae_features::{PointMaeConfig, PointMaeFeatures};

anoflow_sdk::export_plugin! { stages: [PointMaeFeatures] }
