//! The commands of the `anoflow` binary that are more than glue.

pub mod args;
pub mod cache_cmd;
pub mod compare;
pub mod deploy_cmd;
pub mod doctor;
pub mod failures;
pub mod graph;
pub mod inspect;
pub mod new_plugin;
pub mod run_cmd;
pub mod schema;
pub mod sweep_charts;
