//! What is done with a trace's results: each front end consumes the engine's snapshots.
pub mod batch;
pub mod compare;
pub mod serve;
pub mod top;
