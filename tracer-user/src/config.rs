//! Validated run configuration: raw arguments in, a `Config` (or a one-line reason) out.
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, ReportFormat};
use crate::export::folded::FoldedWeight;
use crate::output;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    Command(Vec<String>),
    System,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: TargetSpec,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub top: usize,
    pub folded: Option<(PathBuf, FoldedWeight)>,
    pub report: ReportFormat,
    pub output: Option<PathBuf>,
    pub max_stacks: u32,
    pub max_live: u32,
    pub max_samples: usize,
    pub analyze: crate::analyze::Options,
    pub verbose: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("give either --pid or a command to launch, not both")]
    PidAndCommand,
    #[error("--pid 0 is not a process")]
    PidZero,
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
}

pub fn validate(cli: Cli) -> Result<Config, ConfigError> {
    let target = match (cli.pid, cli.command.is_empty()) {
        (Some(_), false) => return Err(ConfigError::PidAndCommand),
        (Some(0), true) => return Err(ConfigError::PidZero),
        (Some(pid), true) => TargetSpec::Pid(pid),
        (None, false) => TargetSpec::Command(cli.command),
        (None, true) => TargetSpec::System,
    };
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
    for path in cli.folded.iter().chain(cli.output.iter()) {
        output::check_writable(path).map_err(ConfigError::Output)?;
    }
    Ok(Config {
        target,
        interval: cli.interval,
        duration: cli.duration,
        top: cli.top,
        folded: cli.folded.map(|p| (p, cli.folded_weight)),
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
        verbose: cli.verbose,
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
        assert!(parse(&["--duration", "0s"])
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse(&["--top", "0"]).unwrap_err().contains("--top"));
        assert!(parse(&["--max-live", "0"])
            .unwrap_err()
            .contains("--max-live"));
        assert!(parse(&["--pid", "0"])
            .unwrap_err()
            .contains("not a process"));
        assert!(parse(&["--folded", "/nonexistent-dir/x.folded"])
            .unwrap_err()
            .contains("/nonexistent-dir"));
    }

    #[test]
    fn defaults() {
        let c = parse(&["--interval", "250ms"]).unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.top, 10);
        assert_eq!(c.report, ReportFormat::Text);
    }
}
