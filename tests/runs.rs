//! Real pipeline runs (filled as stages land).
