//! One file per stage, named after its `plugin:` name.

pub mod synthetic_defects;
