//! alloctrace: where a program allocates, how fast, in which patterns, and what never dies.
mod allocator;
mod analyze;
mod cli;
mod config;
mod drain;
mod engine;
mod export;
mod frontend;
mod golang;
mod kmaps;
mod numfmt;
mod probe;
mod process;
mod render;
mod symbolize;
mod target;
#[cfg(test)]
mod testkit;
mod unwind;

use std::process::ExitCode;

use alloctrace_model as model;
use clap::Parser;

fn main() -> ExitCode {
    let mut cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, not clap's usage block: the first line says what was wrong.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("alloctrace: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(cli::Sub::Compare { before, after }) = &cli.subcommand {
        return match frontend::compare::run(before, after) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("alloctrace: error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        };
    }
    // -vv: alloctrace's own debug lines, not its libraries'.
    let (level, own) = match cli.verbose {
        0 => (log::LevelFilter::Warn, log::LevelFilter::Warn),
        1 => (log::LevelFilter::Info, log::LevelFilter::Info),
        _ => (log::LevelFilter::Info, log::LevelFilter::Debug),
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module(module_path!(), own)
        .format_target(false)
        .init();
    // `serve` and `top` trace as the batch run does, their own `-- CMD` being the command (a
    // last positional cannot be global).
    enum Front {
        Batch,
        Serve(frontend::serve::Options),
        Top,
    }
    let front = match cli.subcommand.take() {
        Some(cli::Sub::Serve {
            listen,
            allow_remote,
            auth_token_file,
            command,
        }) => {
            cli.command = command;
            Front::Serve(frontend::serve::Options {
                listen,
                allow_remote,
                auth_token_file,
            })
        }
        Some(cli::Sub::Top { command }) => {
            cli.command = command;
            Front::Top
        }
        other => {
            cli.subcommand = other;
            Front::Batch
        }
    };
    let cfg = match config::validate(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("alloctrace: error: {e}");
            return ExitCode::from(2);
        }
    };
    let run = match front {
        Front::Batch => frontend::batch::run(cfg),
        Front::Serve(opts) => frontend::serve::run(cfg, opts),
        Front::Top => frontend::top::run(cfg),
    };
    match run {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("alloctrace: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line. aya's errors put their cause in their own message
/// too, so a cause already in the line is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::from_raw_os_error(12);
        let e = anyhow::Error::new(io).context("failed to create map `LIVE`");
        let e = e.context("cannot load the eBPF programs: failed to create map `LIVE`");
        assert_eq!(
            one_line(&e),
            format!(
                "cannot load the eBPF programs: failed to create map `LIVE`: {}",
                std::io::Error::from_raw_os_error(12)
            )
        );
    }
}
