//! `cargo xtask demo`: traces tests/workloads/demo.c, a program with one function per
//! allocation pattern that prints its own ground truth, and writes its folded stacks.
use std::{
    fs,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};

use crate::{build, cmd};

pub fn demo() -> Result<ExitCode> {
    let bin = build::build(&build::BuildOpts::default())?.bin;
    let out_dir = cmd::target_dir()?.join("demo");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let demo = out_dir.join("demo");
    let folded = out_dir.join("demo.folded");

    // Frame pointers and no sibling calls keep every pattern's function on its stacks.
    cmd::run(
        Command::new("gcc")
            .args([
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-fno-optimize-sibling-calls",
                "-o",
            ])
            .arg(&demo)
            .arg(cmd::root().join("tests/workloads/demo.c")),
    )?;

    let st = cmd::status(
        Command::new(&bin)
            .arg("--folded")
            .arg(&folded)
            .arg("--")
            .arg(&demo),
    )?;
    if folded.is_file() {
        eprintln!("xtask: folded stacks in {}", folded.display());
        eprintln!(
            "xtask: for a flame graph: inferno-flamegraph < {} > demo.svg",
            folded.display()
        );
    }
    Ok(cmd::exit_code(st))
}
