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
    #[arg(short, long, value_name = "PID", global = true)]
    pub pid: Option<u32>,

    /// Trace the processes the target starts too (fork, vfork, clone of a process; and theirs),
    /// each under its own pid with its own allocator, through their execs, as `strace -f`
    /// does; the run lasts until every one of them has exited.
    #[arg(short = 'f', long, global = true)]
    pub follow_forks: bool,

    /// How often to print a line per process (e.g. 250ms, 2s).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration, global = true)]
    pub interval: Duration,

    /// How often to drain the kernel maps into the time series the analyses and plots read
    /// (at most the interval, which is made a whole number of drains): bursts shorter than
    /// this blur together.
    #[arg(long, value_name = "DUR", default_value = "20ms", value_parser = parse_duration, global = true)]
    pub resolution: Duration,

    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, global = true)]
    pub duration: Option<Duration>,

    /// What to measure: `full` (allocations, frees, live bytes, lifetimes) or `alloc-only`
    /// (allocations, bytes and sizes per stack, at the lowest cost: entry probes only).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "full",
        global = true
    )]
    pub mode: TraceMode,

    /// Sample allocations by bytes: record the stack of one allocation per N bytes on average
    /// (random exponential intervals, as Go's and tcmalloc's heap profilers do); per-site
    /// numbers become unbiased estimates, per-process totals stay exact (in full mode every
    /// block is still tracked: frees and live bytes per process stay exact too).
    #[arg(long, value_name = "N", global = true)]
    pub sample_bytes: Option<u64>,

    /// Allocation sites shown in the text report.
    #[arg(long, value_name = "N", default_value_t = 10, global = true)]
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
        default_value = "bytes",
        global = true
    )]
    pub weight: FoldedWeight,

    /// Format of the final report.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        global = true
    )]
    pub report: ReportFormat,

    /// Write the final report to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub output: Option<PathBuf>,

    /// How stacks are walked: `dwarf` (each binary's unwind tables, compiled from its CFI:
    /// full stacks in code built without frame pointers, as most distributions' binaries are;
    /// frame pointers where a binary has none) or `fp` (frame pointers only: cheaper per
    /// frame and nothing to build at start, but stacks of code built without them end at the
    /// caller).
    #[arg(
        long,
        value_enum,
        value_name = "HOW",
        default_value = "dwarf",
        global = true
    )]
    pub unwind: crate::unwind::Unwind,

    /// Rows the kernel's DWARF unwind tables hold (8 bytes each; python3 needs ~65k): a
    /// binary whose table does not fit is walked by frame pointers (said once).
    #[arg(
        long,
        value_name = "N",
        default_value_t = alloctrace_common::unwind_table::DEFAULT_ROWS,
        global = true
    )]
    pub unwind_rows: u32,

    /// Distinct allocation sites (process + stack) the kernel maps can hold. Each stack (up to
    /// 127 frames) takes ~1.1 KiB of kernel memory, allocated at start: 17 MiB by default.
    #[arg(long, value_name = "N", default_value_t = 16384, global = true)]
    pub max_stacks: u32,

    /// Room for N allocated-but-not-freed blocks: the kernel's in-flight table gets 2N slots
    /// (rounded up to a power of two); a block that finds none of its 64 slots free is lost.
    #[arg(long, value_name = "N", default_value_t = 524288, global = true)]
    pub max_live: u32,

    /// Points kept per time series (the processes' samples, and each site's series): beyond,
    /// adjacent points are merged, the older part of the run coarser; never the start of the
    /// run, never the totals.
    #[arg(long, value_name = "N", default_value_t = 1000, global = true)]
    pub max_samples: usize,

    /// What a hot spot is: the first function outside the allocator and libc, or the whole stack.
    #[arg(
        long,
        value_enum,
        value_name = "BY",
        default_value = "function",
        global = true
    )]
    pub group_by: GroupBy,

    /// Order of the hot spots.
    #[arg(
        long,
        value_enum,
        value_name = "KEY",
        default_value = "bytes",
        global = true
    )]
    pub sort: SortBy,

    /// Pattern thresholds: small-frequent sites allocate below this size (bytes)...
    #[arg(long, value_name = "BYTES", default_value_t = 1024, global = true)]
    pub small_max_size: u64,

    /// ...at more than this many allocations per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 100.0, global = true)]
    pub small_min_rate: f64,

    /// Large-infrequent sites allocate above this size (bytes)...
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024, global = true)]
    pub large_min_size: u64,

    /// ...at fewer than this many allocations per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 10.0, global = true)]
    pub large_max_rate: f64,

    /// Blocks freed sooner than this are short-lived.
    #[arg(long, value_name = "DUR", default_value = "1ms", value_parser = parse_duration, global = true)]
    pub short_lived: Duration,

    /// List, per site, the blocks still allocated at the end that are older than DUR
    /// (memleak's "outstanding allocations older than"), e.g. 500ms, 5m. Without it the leak
    /// section shows every site's live blocks with their ages (oldest, median).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, global = true)]
    pub older: Option<Duration>,

    /// Show what alloctrace does (probe placement, drain times); -vv also its bookkeeping
    /// (exited processes retired, per-CPU slots freed).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to launch and trace.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,

    #[command(subcommand)]
    pub subcommand: Option<Sub>,
}

/// The front ends besides the batch run. The tracing options are global (`global = true`):
/// a front end that traces (`serve`, `top`) takes them after its name, as `alloctrace serve
/// --pid N` reads; each such front end has its own `-- CMD` (a last positional cannot be
/// global).
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
    /// Trace until stopped (SIGINT, SIGTERM) and serve the running trace over HTTP, as Go's
    /// net/http/pprof does: `/debug/pprof/allocs` and `/debug/pprof/heap` (pprof, `?pid=N`,
    /// `?seconds=S` delta), `/metrics` (Prometheus), `/debug/pprof/` (index), `/` (HTML report).
    Serve {
        /// Address and port to listen on. Another address than loopback only with
        /// --allow-remote: the data names every traced process's functions.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6060")]
        listen: std::net::SocketAddr,
        /// Let --listen be an address other than loopback (reachable from other machines).
        #[arg(long)]
        allow_remote: bool,
        /// Require `Authorization: Bearer TOKEN` on every request, TOKEN being this file's
        /// content (surrounding whitespace ignored).
        #[arg(long, value_name = "FILE")]
        auth_token_file: Option<PathBuf>,
        /// The command to launch and trace.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// A live, full-screen view of the trace (the processes' allocation rates, the selected
    /// process's top sites), refreshed every --interval; keys: b/c/l/r sort the sites by
    /// bytes, count, live bytes or rate, up/down select a process, q quits. Targets as for
    /// the batch run: `top --pid N`, `top -- CMD ARGS`, or `top` (every process).
    Top {
        /// The command to launch and trace.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_options_after_a_subcommand_reach_the_settings() {
        let cli = Cli::try_parse_from([
            "alloctrace",
            "compare",
            "a.json",
            "b.json",
            "--interval",
            "2s",
            "--html",
            "x.html",
        ])
        .unwrap();
        assert_eq!(cli.interval, Duration::from_secs(2));
        assert_eq!(cli.files.0.len(), 1);
        assert!(matches!(cli.subcommand, Some(Sub::Compare { .. })));
    }

    #[test]
    fn serve_takes_the_tracing_options_and_its_own_command() {
        let cli = Cli::try_parse_from([
            "alloctrace",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "500ms",
            "--",
            "prog",
            "arg",
        ])
        .unwrap();
        assert_eq!(cli.interval, Duration::from_millis(500));
        let Some(Sub::Serve {
            listen, command, ..
        }) = cli.subcommand
        else {
            panic!("not serve: {:?}", cli.subcommand)
        };
        assert_eq!(listen.port(), 0);
        assert_eq!(command, ["prog", "arg"]);
        let cli = Cli::try_parse_from(["alloctrace", "serve", "--pid", "7"]).unwrap();
        assert_eq!(cli.pid, Some(7));
        let Some(Sub::Serve { listen, .. }) = cli.subcommand else {
            panic!("not serve")
        };
        assert_eq!(listen, "127.0.0.1:6060".parse().unwrap());
    }
}
