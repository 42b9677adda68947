//! Command-line arguments, as typed. `config` turns them into a validated `Config`.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::export::folded::FoldedWeight;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Trace where a program allocates memory, how fast, and what never gets freed — with eBPF
/// uprobes on the allocator, no restart and no instrumentation of the target.
///
/// Targets: `--pid PID` (a running process), `-- CMD ARGS` (launch a command, traced from its
/// first allocation), or nothing (every process using the system libc).
#[derive(Debug, Parser)]
#[command(name = "alloctrace", version, max_term_width = 100)]
pub struct Cli {
    /// Trace a running process (all its threads) until it exits, Ctrl-C, or --duration.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// How often to drain the kernel maps and print a line per process (e.g. 250ms, 2s).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Allocation sites shown in the text report.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Write flamegraph folded stacks (`root;...;leaf VALUE` per line) to FILE.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// What the folded stacks weigh: bytes allocated, allocation count, or live bytes at the end.
    #[arg(long, value_enum, value_name = "WEIGHT", default_value = "bytes")]
    pub folded_weight: FoldedWeight,

    /// Format of the final report.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub report: ReportFormat,

    /// Write the final report to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Distinct allocation sites (process + stack) the kernel maps can hold.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub max_stacks: u32,

    /// Allocated-but-not-freed blocks the kernel can track at once.
    #[arg(long, value_name = "N", default_value_t = 524288)]
    pub max_live: u32,

    /// Show what alloctrace does, and the eBPF programs' own log (loss events).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to launch and trace.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 250ms, 2s, 5m)"))
}
