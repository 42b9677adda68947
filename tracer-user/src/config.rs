//! Validated run configuration: raw arguments in, a `Config` (or a one-line reason) out.
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::analyze::SortBy;
use crate::cli::{Cli, ReportFormat};
use crate::export::folded::FoldedWeight;
use crate::export::plot::PlotFormat;
use crate::model::TraceMode;
use crate::export::output;

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
    pub duration: Option<Duration>,
    pub top: usize,
    pub folded: Option<PathBuf>,
    pub flamegraph: Option<PathBuf>,
    /// The weight of the folded stacks and the flame graph.
    pub weight: FoldedWeight,
    pub pprof: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub plot: Option<(PathBuf, PlotFormat)>,
    pub report: ReportFormat,
    pub output: Option<PathBuf>,
    pub max_stacks: u32,
    pub max_live: u32,
    pub max_samples: usize,
    pub analyze: crate::analyze::Options,
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
    #[error("--plot {0}: the file name must end in .svg or .png")]
    PlotFormat(String),
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
    if cli.max_samples == 0 {
        return Err(ConfigError::ZeroSize("max-samples"));
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
        if cli.weight == FoldedWeight::Live && (cli.folded.is_some() || cli.flamegraph.is_some()) {
            return Err(ConfigError::NeedsFrees("--weight live"));
        }
        if cli.sort == SortBy::Live {
            return Err(ConfigError::NeedsFrees("--sort live"));
        }
    }
    if let Some(n) = cli.sample_bytes {
        if n == 0 || n > alloctrace_common::sampling::MAX_MEAN {
            return Err(ConfigError::SampleBytes(n));
        }
    }
    let plot = match cli.plot {
        None => None,
        Some(path) => {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let format = match ext.as_deref() {
                Some("svg") => PlotFormat::Svg,
                Some("png") => PlotFormat::Png,
                _ => return Err(ConfigError::PlotFormat(path.display().to_string())),
            };
            Some((path, format))
        }
    };
    let outputs = [
        &cli.folded,
        &cli.flamegraph,
        &cli.pprof,
        &cli.html,
        &cli.output,
    ];
    for path in outputs
        .into_iter()
        .flatten()
        .chain(plot.as_ref().map(|(p, _)| p))
    {
        output::check_writable(path).map_err(ConfigError::Output)?;
    }
    Ok(Config {
        target,
        follow_forks: cli.follow_forks,
        mode: cli.mode,
        // 1 byte apart samples every allocation: the same as not sampling.
        sample_bytes: cli.sample_bytes.filter(|&n| n > 1),
        interval: cli.interval,
        duration: cli.duration,
        top: cli.top,
        folded: cli.folded,
        flamegraph: cli.flamegraph,
        weight: cli.weight,
        pprof: cli.pprof,
        html: cli.html,
        plot,
        report: cli.report,
        output: cli.output,
        max_stacks: cli.max_stacks,
        max_live: cli.max_live,
        max_samples: cli.max_samples,
        analyze: crate::analyze::Options {
            group_by: cli.group_by,
            sort: cli.sort,
            top: cli.top,
            small_max_size: cli.small_max_size,
            small_min_rate: cli.small_min_rate,
            large_min_size: cli.large_min_size,
            large_max_rate: cli.large_max_rate,
            short_lived: cli.short_lived,
        },
    })
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
        for opt in ["--interval", "--duration", "--short-lived"] {
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
        let c = parse(&["--folded-weight", "live", "--plot", "/tmp/x.PNG"]).unwrap();
        assert_eq!(c.weight, FoldedWeight::Live);
        assert_eq!(c.plot.unwrap().1, PlotFormat::Png);
    }
}
