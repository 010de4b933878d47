//! # anoflow-core
//!
//! The host side of anoflow: pipeline files ([`spec`]), plugin discovery ([`registry`]),
//! the checked graph ([`check`]), the executor ([`executor`]), the run report, and deployment
//! bundles ([`bundle`], [`predict`]).

pub mod bundle;
pub mod cache_store;
pub mod calibration_plan;
pub mod check;
pub mod cli_support;
pub mod diag;
pub mod executor;
pub mod fsutil;
pub mod local_dirs;
pub mod predict;
pub mod provenance;
pub mod registry;
pub mod report;
pub mod run_record;
pub mod rundir;
pub mod shard;
pub mod spec;
pub mod yaml;
