//! Exporters: pure functions of a drained `Profile` (and its `Analysis`) to the bytes of one
//! output file each; `trace` writes them atomically.
pub mod flamegraph;
pub mod folded;
pub mod html;
pub mod json;
pub mod output;
pub mod plot;
pub mod pprof;
