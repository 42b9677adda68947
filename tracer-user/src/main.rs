//! alloctrace: where a program allocates, how fast, in which patterns, and what never dies.
mod analyze;
mod cli;
mod compare;
mod config;
mod drain;
mod export;
mod live_table;
mod loader;
mod map_batch;
mod mmap_watch;
mod model;
mod output;
mod owned_totals;
mod probes;
mod procmaps;
mod report;
mod sampling;
mod shared_array;
mod spawn;
mod symbolize;
mod target;
mod trace;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
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
        return match compare::run(before, after) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("alloctrace: error: {e:#}");
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
    let cfg = match config::validate(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("alloctrace: error: {e}");
            return ExitCode::from(2);
        }
    };
    match trace::run(cfg) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("alloctrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
