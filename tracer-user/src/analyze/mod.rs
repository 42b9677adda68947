//! Analyzers: pure functions of a drained `Profile`, one module each (rate, hotspots,
//! patterns, lifetimes, leaks, advice; `periods` and `trend` read the series for patterns);
//! `histogram` reads the kernel's log2 histograms for them.
//! They format numbers with `crate::numfmt`, never with the text report (which imports them).
pub mod advice;
pub mod histogram;
pub mod hotspots;
pub mod leaks;
pub mod lifetimes;
pub mod patterns;
mod periods;
pub mod rate;
mod trend;

use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::model::{duration_secs, Process, Profile};

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    #[serde(with = "duration_secs")]
    pub short_lived: Duration,
    /// `--older DUR`: the leak section lists, per site, the live blocks older than this
    /// (counted exactly when the in-flight table is read). None: every live block, with its
    /// ages.
    #[serde(
        default,
        with = "opt_duration_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub older: Option<Duration>,
}

/// An optional duration as fractional seconds.
mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
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
            older: None,
        }
    }
}

/// Everything the analyzers found, as the text report prints it and `--report json` stores it
/// under `"analysis"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The settings these results were computed with.
    pub options: Options,
    pub rate: rate::RateReport,
    pub hotspots: hotspots::Hotspots,
    /// Every site with allocations, biggest (bytes) first.
    pub patterns: Vec<patterns::SitePattern>,
    /// Every site with freed blocks, in the same order.
    pub lifetimes: Vec<lifetimes::SiteLifetimes>,
    /// Every site that keeps blocks enough to be a leak candidate, most confident first.
    #[serde(default)]
    pub leaks: Vec<leaks::LeakCandidate>,
    pub advice: Vec<advice::Advice>,
}

/// The traced processes, most bytes allocated first (by pid on a tie), as the report's and
/// the page's process tables list them.
pub fn processes_by_bytes(p: &Profile) -> Vec<&Process> {
    let mut procs: Vec<_> = p.processes.iter().collect();
    procs.sort_by(|a, b| {
        b.counters
            .bytes
            .cmp(&a.counters.bytes)
            .then(a.pid.cmp(&b.pid))
    });
    procs
}

/// Runs every analyzer over `p`.
pub fn analyze(p: &Profile, o: &Options) -> Analysis {
    let patterns = patterns::analyze(p, o);
    let lifetimes = lifetimes::analyze(p, o);
    let leaks = leaks::analyze(p);
    Analysis {
        options: o.clone(),
        rate: rate::analyze(p),
        hotspots: hotspots::analyze(p, o),
        advice: advice::analyze(&patterns, &lifetimes, &leaks, o),
        patterns,
        lifetimes,
        leaks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{profile, series_site};

    #[test]
    fn analysis_round_trips_through_json() {
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 1000, i * 1000)).collect();
        let mut p = profile(5000, vec![]);
        p.sites = vec![series_site(64, &pts, 100)];
        let a = analyze(&p, &Options::default());
        assert_eq!(a.patterns.len(), 1);
        assert_eq!(a.hotspots.top.len(), 1);
        assert_eq!(a.advice.len(), 1);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Analysis>(&text).unwrap(), a);
    }

    #[test]
    fn empty_profile() {
        let a = analyze(&profile(0, vec![]), &Options::default());
        assert!(a.patterns.is_empty() && a.advice.is_empty() && a.hotspots.top.is_empty());
        assert!(a.rate.series.is_empty());
    }
}
