//! `cargo xtask`: builds the eBPF object (nightly) and the `alloctrace` binary (stable) that
//! embeds it, and runs the tests, the demo and the benchmarks with them.
mod bench;
mod build;
mod cmd;
mod demo;
mod setup;
mod test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, test and demo alloctrace",
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build needs and is missing: nightly's rust-src, bpf-linker 0.9.15.
    Setup,
    /// Build the eBPF object and the `alloctrace` binary that embeds it.
    Build(build::BuildOpts),
    /// Build, then run `alloctrace` with ARGS (e.g. `cargo xtask run -- --pid 1234`).
    Run {
        #[command(flatten)]
        opts: build::BuildOpts,
        /// Arguments for alloctrace.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Build, then run the unit tests and, as root, the privileged integration tests.
    Test {
        /// Passed to every test binary (e.g. a name filter): `cargo xtask test -- FILTER`.
        #[arg(last = true, value_name = "TEST_ARGS")]
        args: Vec<String>,
    },
    /// Build, then trace the demo workload (tests/workloads/demo.c) and write folded stacks.
    Demo,
    /// Build, then measure the tracing overhead on bench/workloads/*.c: untraced, the probe
    /// floor, alloctrace placed and at entry, and a bpftrace script; writes bench/RESULTS.md.
    Bench(bench::BenchOpts),
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<ExitCode> {
    if matches!(task, Task::Test { .. }) {
        test::require_root()?;
    }
    setup::setup()?;
    match task {
        Task::Setup => Ok(ExitCode::SUCCESS),
        Task::Build(opts) => {
            let built = build::build(&opts)?;
            eprintln!("xtask: eBPF object {}", built.obj.display());
            println!("{}", built.bin.display());
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { opts, args } => {
            let bin = build::build(&opts)?.bin;
            let status = cmd::status(std::process::Command::new(&bin).args(&args))?;
            Ok(cmd::exit_code(status))
        }
        Task::Test { args } => test::test(&args),
        Task::Demo => demo::demo(),
        Task::Bench(opts) => bench::bench(&opts),
    }
}
