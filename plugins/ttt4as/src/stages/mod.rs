//! One file per stage, named after the stage (`-` as `_`).

pub mod ttt4as;
