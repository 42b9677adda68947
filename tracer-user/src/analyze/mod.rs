//! Analyzers: pure functions of a drained `Profile`, one module each.
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// What an allocation site is, for the hot-spot table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The first frame outside the allocator and libc.
    Function,
    /// The whole stack.
    Stack,
}

/// Order of the hot-spot table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    Bytes,
    Count,
    Live,
}

/// Analyzer settings; the defaults are the allocation-profiling guide's.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub group_by: GroupBy,
    pub sort: SortBy,
    pub top: usize,
    /// small-frequent: typical size below this...
    pub small_max_size: u64,
    /// ...and more than this many allocations per second, sustained.
    pub small_min_rate: f64,
    /// large-infrequent: typical size above this...
    pub large_min_size: u64,
    /// ...and fewer than this many allocations per second.
    pub large_max_rate: f64,
    /// Blocks freed within this are "short-lived".
    pub short_lived: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            group_by: GroupBy::Function,
            sort: SortBy::Bytes,
            top: 10,
            small_max_size: 1024,
            small_min_rate: 100.0,
            large_min_size: 1024 * 1024,
            large_max_rate: 10.0,
            short_lived: Duration::from_millis(1),
        }
    }
}
