//! Validated run configuration: raw arguments in, a `Config` (or a one-line reason) out.
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::analyze::SortBy;
use crate::cli::{Cli, ReportFormat};
use crate::export::folded::FoldedWeight;
use crate::export::output;
use crate::export::Files;
use crate::model::TraceMode;
use crate::probe::attach::FLOOR_ENV;
use crate::probe::placement::{Mode, MODE_ENV};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    /// argv as given: arguments are bytes, not necessarily UTF-8.
    Command(Vec<OsString>),
    System,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: TargetSpec,
    /// Trace the processes the target starts (`--follow-forks`).
    pub follow_forks: bool,
    pub mode: TraceMode,
    /// Mean bytes between sampled allocations; None records every allocation.
    pub sample_bytes: Option<u64>,
    pub interval: Duration,
    /// The drains' spacing: `--resolution`, at most the interval, which it divides evenly.
    pub resolution: Duration,
    pub duration: Option<Duration>,
    pub top: usize,
    /// The output files asked for, each with its format.
    pub files: Files,
    /// The weight of the folded stacks and the flame graph.
    pub weight: FoldedWeight,
    pub report: ReportFormat,
    pub output: Option<PathBuf>,
    pub max_stacks: u32,
    pub max_live: u32,
    pub max_samples: usize,
    /// How stacks are walked (`--unwind`), and the rows of the DWARF tables.
    pub unwind: crate::unwind::Unwind,
    pub unwind_rows: u32,
    pub analyze: crate::analyze::Options,
    /// Where on each allocator function the probes go: `ALLOCTRACE_PROBE_AT` (`entry`, or
    /// `auto` by default), the bench's knob.
    pub probe_at: Mode,
    /// `cargo xtask bench` only, `ALLOCTRACE_BENCH_FLOOR=1`: the probes attached, counting
    /// nothing (the cost of the probe points alone).
    pub bench_floor: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("give either --pid or a command to launch, not both")]
    PidAndCommand,
    #[error("--pid 0 is not a process")]
    PidZero,
    #[error("--follow-forks needs --pid or a command (system-wide mode traces every process)")]
    FollowSystemWide,
    #[error("--interval must be at least 10ms (got {0:?})")]
    IntervalTooShort(Duration),
    #[error("--resolution must be at least {min:?} (got {0:?})", min = MIN_RESOLUTION)]
    ResolutionTooShort(Duration),
    #[error("--max-samples must be at least {min} (got {0})", min = crate::drain::series::MIN_POINTS)]
    TooFewSamples(usize),
    #[error("--duration must be longer than zero")]
    ZeroDuration,
    #[error("--top must be at least 1")]
    ZeroTop,
    #[error("--{0} must be at least 1")]
    ZeroSize(&'static str),
    #[error("{0}")]
    Output(String),
    #[error("--{0} must be a positive number")]
    BadThreshold(&'static str),
    #[error("{0} needs frees, which --mode alloc-only does not trace: use --mode full")]
    NeedsFrees(&'static str),
    #[error("--sample-bytes must be between 1 and {max} (got {0})", max = alloctrace_common::sampling::MAX_MEAN)]
    SampleBytes(u64),
    /// A file name its format cannot be written to, said by the format.
    #[error("{0}")]
    FileFormat(String),
    /// A bad value of an environment knob, named with its value.
    #[error("{0}")]
    Env(String),
}

/// The shortest `--resolution`: a drain costs tens of microseconds per traced process.
pub const MIN_RESOLUTION: Duration = Duration::from_millis(5);

/// The drains' spacing: at most `asked`, and a whole fraction of `interval`, so every interval
/// line falls on a drain (250ms at 20ms: 19.2ms).
pub fn resolution(interval: Duration, asked: Duration) -> Duration {
    let per_interval = interval.as_nanos().div_ceil(asked.as_nanos().max(1)).max(1);
    interval / u32::try_from(per_interval).unwrap_or(u32::MAX)
}

pub fn validate(cli: Cli) -> Result<Config, ConfigError> {
    let target = match (cli.pid, cli.command.is_empty()) {
        (Some(_), false) => return Err(ConfigError::PidAndCommand),
        (Some(0), true) => return Err(ConfigError::PidZero),
        (Some(pid), true) => TargetSpec::Pid(pid),
        (None, false) => TargetSpec::Command(cli.command),
        (None, true) => TargetSpec::System,
    };
    if cli.follow_forks && target == TargetSpec::System {
        return Err(ConfigError::FollowSystemWide);
    }
    if cli.interval < Duration::from_millis(10) {
        return Err(ConfigError::IntervalTooShort(cli.interval));
    }
    if cli.resolution < MIN_RESOLUTION {
        return Err(ConfigError::ResolutionTooShort(cli.resolution));
    }
    if cli.duration == Some(Duration::ZERO) {
        return Err(ConfigError::ZeroDuration);
    }
    if cli.top == 0 {
        return Err(ConfigError::ZeroTop);
    }
    if cli.max_stacks == 0 {
        return Err(ConfigError::ZeroSize("max-stacks"));
    }
    if cli.max_live == 0 {
        return Err(ConfigError::ZeroSize("max-live"));
    }
    if cli.max_samples < crate::drain::series::MIN_POINTS {
        return Err(ConfigError::TooFewSamples(cli.max_samples));
    }
    for (name, v) in [
        ("small-min-rate", cli.small_min_rate),
        ("large-max-rate", cli.large_max_rate),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(ConfigError::BadThreshold(name));
        }
    }
    if !cli.mode.sees_frees() {
        if cli.weight == FoldedWeight::Live && cli.files.0.iter().any(|(f, _)| f.weighted()) {
            return Err(ConfigError::NeedsFrees("--weight live"));
        }
        if cli.sort == SortBy::Live {
            return Err(ConfigError::NeedsFrees("--sort live"));
        }
        if cli.older.is_some() {
            return Err(ConfigError::NeedsFrees("--older"));
        }
    }
    if let Some(n) = cli.sample_bytes {
        if n == 0 || n > alloctrace_common::sampling::MAX_MEAN {
            return Err(ConfigError::SampleBytes(n));
        }
    }
    for (format, path) in &cli.files.0 {
        format.check_path(path).map_err(ConfigError::FileFormat)?;
    }
    for path in cli.files.0.iter().map(|(_, p)| p).chain(&cli.output) {
        output::check_writable(path).map_err(ConfigError::Output)?;
    }
    // The environment's knobs are read here, once, and travel in the `Config`.
    let probe_at = probe_at(std::env::var(MODE_ENV))?;
    let bench_floor = std::env::var_os(FLOOR_ENV).is_some_and(|v| v == "1");
    Ok(Config {
        target,
        follow_forks: cli.follow_forks,
        mode: cli.mode,
        // 1 byte apart samples every allocation: the same as not sampling.
        sample_bytes: cli.sample_bytes.filter(|&n| n > 1),
        interval: cli.interval,
        resolution: resolution(cli.interval, cli.resolution),
        duration: cli.duration,
        top: cli.top,
        files: cli.files,
        weight: cli.weight,
        report: cli.report,
        output: cli.output,
        max_stacks: cli.max_stacks,
        max_live: cli.max_live,
        max_samples: cli.max_samples,
        unwind: cli.unwind,
        unwind_rows: cli.unwind_rows.max(1),
        analyze: crate::analyze::Options {
            group_by: cli.group_by,
            sort: cli.sort,
            top: cli.top,
            small_max_size: cli.small_max_size,
            small_min_rate: cli.small_min_rate,
            large_min_size: cli.large_min_size,
            large_max_rate: cli.large_max_rate,
            short_lived: cli.short_lived,
            older: cli.older,
        },
        probe_at,
        bench_floor,
    })
}

/// The placement mode `ALLOCTRACE_PROBE_AT` asks for (as `std::env::var` read it); `auto` when
/// unset.
fn probe_at(var: Result<String, std::env::VarError>) -> Result<Mode, ConfigError> {
    match var {
        Err(std::env::VarError::NotPresent) => Ok(Mode::Auto),
        Ok(v) => Mode::parse(&v).map_err(ConfigError::Env),
        Err(e) => Err(ConfigError::Env(format!("{MODE_ENV}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("alloctrace").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        validate(cli).map_err(|e| e.to_string())
    }

    #[test]
    fn targets() {
        assert_eq!(parse(&["--pid", "42"]).unwrap().target, TargetSpec::Pid(42));
        assert_eq!(parse(&[]).unwrap().target, TargetSpec::System);
        assert_eq!(
            parse(&["--", "ls", "-l"]).unwrap().target,
            TargetSpec::Command(vec!["ls".into(), "-l".into()])
        );
        assert_eq!(
            parse(&["--pid", "1", "--", "ls"]).unwrap_err(),
            ConfigError::PidAndCommand.to_string()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--interval", "0"])
            .unwrap_err()
            .contains("at least 10ms"));
        assert!(parse(&["--interval", "0s"])
            .unwrap_err()
            .contains("at least 10ms"));
        assert!(parse(&["--duration=-1s"]).unwrap_err().contains("negative"));
        for opt in ["--interval", "--duration", "--short-lived", "--older"] {
            let e = parse(&[opt, "18446744073709551615s"]).unwrap_err();
            assert!(e.contains(opt) && e.contains("at most a year"), "{e}");
        }
        assert_eq!(
            parse(&["--duration", "365d"]).unwrap().duration,
            Some(crate::cli::MAX_DURATION)
        );
        assert!(parse(&["--duration", "0s"])
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse(&["--top", "0"]).unwrap_err().contains("--top"));
        assert!(parse(&["--older", "1s", "--mode", "alloc-only"])
            .unwrap_err()
            .contains("--older needs frees"));
        assert_eq!(
            parse(&["--older", "250ms"]).unwrap().analyze.older,
            Some(Duration::from_millis(250))
        );
        assert!(parse(&["--max-live", "0"])
            .unwrap_err()
            .contains("--max-live"));
        assert_eq!(
            parse(&["-f"]).unwrap_err(),
            ConfigError::FollowSystemWide.to_string()
        );
        assert!(parse(&["-f", "--", "ls"]).unwrap().follow_forks);
        assert!(parse(&["--pid", "0"])
            .unwrap_err()
            .contains("not a process"));
        assert!(parse(&["--folded", "/nonexistent-dir/x.folded"])
            .unwrap_err()
            .contains("/nonexistent-dir"));
        for opt in ["--flamegraph", "--pprof", "--html", "--plot"] {
            assert!(parse(&[opt, "/nonexistent-dir/x.svg"])
                .unwrap_err()
                .contains("/nonexistent-dir"));
        }
        for args in [
            &[
                "--mode",
                "alloc-only",
                "--folded",
                "/tmp/x",
                "--weight",
                "live",
            ][..],
            &[
                "--mode",
                "alloc-only",
                "--flamegraph",
                "/tmp/x",
                "--weight",
                "live",
            ],
            &["--mode", "alloc-only", "--sort", "live"],
        ] {
            assert!(
                parse(args).unwrap_err().contains("use --mode full"),
                "{args:?}"
            );
        }
        assert_eq!(
            parse(&["--sample-bytes", "4096"]).unwrap().sample_bytes,
            Some(4096)
        );
        assert!(parse(&["--mode", "alloc-only", "--sample-bytes", "0"])
            .unwrap_err()
            .contains("between 1 and"));
        assert_eq!(
            parse(&["--mode", "alloc-only", "--sample-bytes", "4096"])
                .unwrap()
                .sample_bytes,
            Some(4096)
        );
        assert!(parse(&["--plot", "/tmp/x.gif"])
            .unwrap_err()
            .contains(".svg or .png"));
    }

    #[test]
    fn resolution_divides_the_interval() {
        let ms = Duration::from_millis;
        assert_eq!(parse(&[]).unwrap().resolution, ms(20));
        assert_eq!(
            parse(&["--interval", "250ms"]).unwrap().resolution,
            ms(250) / 13
        );
        // Never coarser than the interval.
        let c = parse(&["--interval", "50ms", "--resolution", "2s"]).unwrap();
        assert_eq!(c.resolution, ms(50));
        assert!(parse(&["--resolution", "1ms"])
            .unwrap_err()
            .contains("--resolution must be at least 5ms"));
        assert!(parse(&["--max-samples", "3"])
            .unwrap_err()
            .contains("--max-samples must be at least 8"));
    }

    #[test]
    fn defaults() {
        let c = parse(&["--interval", "250ms"]).unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.top, 10);
        assert_eq!(c.report, ReportFormat::Text);
        assert_eq!(c.weight, FoldedWeight::Bytes);
        assert_eq!(c.mode, TraceMode::Full);
        assert_eq!(
            parse(&["--mode", "alloc-only"]).unwrap().mode,
            TraceMode::AllocOnly
        );
        assert_eq!(c.probe_at, Mode::Auto);
        let c = parse(&["--folded-weight", "live", "--plot", "/tmp/x.PNG"]).unwrap();
        assert_eq!(c.weight, FoldedWeight::Live);
        let files: Vec<_> = c
            .files
            .0
            .iter()
            .map(|(f, p)| (f.option(), p.clone()))
            .collect();
        assert_eq!(files, [("plot", PathBuf::from("/tmp/x.PNG"))]);
    }

    #[test]
    fn probe_at_knob() {
        use std::env::VarError;
        assert_eq!(probe_at(Err(VarError::NotPresent)), Ok(Mode::Auto));
        assert_eq!(probe_at(Ok("entry".into())), Ok(Mode::Entry));
        assert_eq!(probe_at(Ok(" auto ".into())), Ok(Mode::Auto));
        let e = probe_at(Ok("middle".into())).unwrap_err().to_string();
        assert!(e.starts_with("ALLOCTRACE_PROBE_AT=middle"), "{e}");
    }
}
