//! `cargo xtask demo`: traces tests/workloads/demo.c, a program with one function per
//! allocation pattern that prints its own ground truth, and writes its folded stacks, flame
//! graph, plot and HTML report.
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
    let svg = out_dir.join("demo.svg");
    let plot = out_dir.join("demo-plot.png");
    let html = out_dir.join("demo.html");

    // Frame pointers and no sibling calls keep every pattern's function on its stacks.
    cmd::gcc(
        &cmd::root().join("tests/workloads/demo.c"),
        &demo,
        &[
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
        ],
    )?;

    // Default options: the analyses read the fine series (every --resolution), whatever the
    // interval of the lines printed.
    let st = cmd::status(
        Command::new(&bin)
            .args(["--folded"])
            .arg(&folded)
            .arg("--flamegraph")
            .arg(&svg)
            .arg("--plot")
            .arg(&plot)
            .arg("--html")
            .arg(&html)
            .arg("--")
            .arg(&demo),
    )?;
    if html.is_file() {
        eprintln!("xtask: open {} in a browser", html.display());
    }
    Ok(cmd::exit_code(st))
}
