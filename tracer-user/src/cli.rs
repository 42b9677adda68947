//! Command-line arguments, as typed. `config` turns them into a validated `Config`.
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::analyze::{GroupBy, SortBy};
use crate::export::folded::FoldedWeight;
use crate::model::TraceMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Trace where a program allocates memory, how fast, and what never gets freed — with eBPF
/// uprobes on the allocator, no restart and no instrumentation of the target.
///
/// Targets: `--pid PID` (a running process), `-- CMD ARGS` (launch a command, traced from its
/// first allocation), or nothing (every process, through the allocators its mappings hold).
#[derive(Debug, Parser)]
#[command(name = "alloctrace", version, max_term_width = 100)]
pub struct Cli {
    /// Trace a running process (all its threads) until it exits, Ctrl-C, or --duration.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Trace the processes the target starts too (fork, vfork, clone of a process; and theirs),
    /// each under its own pid with its own allocator, through their execs, as `strace -f`
    /// does; the run lasts until every one of them has exited.
    #[arg(short = 'f', long)]
    pub follow_forks: bool,

    /// How often to print a line per process (e.g. 250ms, 2s).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// How often to drain the kernel maps into the time series the analyses and plots read
    /// (at most the interval, which is made a whole number of drains): bursts shorter than
    /// this blur together.
    #[arg(long, value_name = "DUR", default_value = "20ms", value_parser = parse_duration)]
    pub resolution: Duration,

    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// What to measure: `full` (allocations, frees, live bytes, lifetimes) or `alloc-only`
    /// (allocations, bytes and sizes per stack, at the lowest cost: entry probes only).
    #[arg(long, value_enum, value_name = "MODE", default_value = "full")]
    pub mode: TraceMode,

    /// Sample allocations by bytes: record the stack of one allocation per N bytes on average
    /// (random exponential intervals, as Go's and tcmalloc's heap profilers do); per-site
    /// numbers become unbiased estimates, per-process totals stay exact (in full mode every
    /// block is still tracked: frees and live bytes per process stay exact too).
    #[arg(long, value_name = "N")]
    pub sample_bytes: Option<u64>,

    /// Allocation sites shown in the text report.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    #[command(flatten)]
    pub files: crate::export::Files,

    /// What the folded stacks and the flame graph weigh: bytes allocated, allocation count, or
    /// live bytes at the end.
    #[arg(
        long,
        alias = "folded-weight",
        value_enum,
        value_name = "WEIGHT",
        default_value = "bytes"
    )]
    pub weight: FoldedWeight,

    /// Format of the final report.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub report: ReportFormat,

    /// Write the final report to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// How stacks are walked: `dwarf` (each binary's unwind tables, compiled from its CFI:
    /// full stacks in code built without frame pointers, frame pointers where a binary has
    /// none) or `fp` (frame pointers only).
    #[arg(long, value_enum, value_name = "HOW", default_value = "dwarf")]
    pub unwind: crate::unwind::Unwind,

    /// Rows the kernel's DWARF unwind tables hold (8 bytes each; python3 needs ~65k): a
    /// binary whose table does not fit is walked by frame pointers (said once).
    #[arg(long, value_name = "N", default_value_t = alloctrace_common::unwind_table::DEFAULT_ROWS)]
    pub unwind_rows: u32,

    /// Distinct allocation sites (process + stack) the kernel maps can hold.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub max_stacks: u32,

    /// Room for N allocated-but-not-freed blocks: the kernel's in-flight table gets 2N slots
    /// (rounded up to a power of two); a block that finds none of its 64 slots free is lost.
    #[arg(long, value_name = "N", default_value_t = 524288)]
    pub max_live: u32,

    /// Points kept per time series (the processes' samples, and each site's series): beyond,
    /// adjacent points are merged, the older part of the run coarser; never the start of the
    /// run, never the totals.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_samples: usize,

    /// What a hot spot is: the first function outside the allocator and libc, or the whole stack.
    #[arg(long, value_enum, value_name = "BY", default_value = "function")]
    pub group_by: GroupBy,

    /// Order of the hot spots.
    #[arg(long, value_enum, value_name = "KEY", default_value = "bytes")]
    pub sort: SortBy,

    /// Pattern thresholds: small-frequent sites allocate below this size (bytes)...
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub small_max_size: u64,

    /// ...at more than this many allocations per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 100.0)]
    pub small_min_rate: f64,

    /// Large-infrequent sites allocate above this size (bytes)...
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub large_min_size: u64,

    /// ...at fewer than this many allocations per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 10.0)]
    pub large_max_rate: f64,

    /// Blocks freed sooner than this are short-lived.
    #[arg(long, value_name = "DUR", default_value = "1ms", value_parser = parse_duration)]
    pub short_lived: Duration,

    /// List, per site, the blocks still allocated at the end that are older than DUR
    /// (memleak's "outstanding allocations older than"), e.g. 500ms, 5m. Without it the leak
    /// section shows every site's live blocks with their ages (oldest, median).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub older: Option<Duration>,

    /// Show what alloctrace does (probe placement, drain times); -vv also its bookkeeping
    /// (exited processes retired, per-CPU slots freed).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to launch and trace.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,

    #[command(subcommand)]
    pub subcommand: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Compare two `--report json` files: per site and in total, how allocations, bytes, rate
    /// and live bytes changed (the guide's "validating improvements").
    Compare {
        /// The report before the change.
        before: PathBuf,
        /// The report after the change.
        after: PathBuf,
    },
}

/// The longest duration any option takes: a run's deadline and the interval's ticks are
/// instants computed from it (tokio panics past what an `Instant` can hold, e.g. 2^64 s).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 250ms, 2s, 5m)"))?;
    if d > MAX_DURATION {
        return Err("a duration can be at most a year (365d)".into());
    }
    Ok(d)
}
