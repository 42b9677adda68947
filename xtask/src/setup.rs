//! `cargo xtask setup`: installs what the build needs, and does nothing (quickly) when it is there.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.9.15";

pub fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    gcc()
}

/// The eBPF object is built with `-Z build-std=core`, which needs nightly's rust-src.
fn rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .with_context(|| {
        format!(
            "cannot list the components of the {NIGHTLY} toolchain: is rustup installed, and \
             the toolchain too (`rustup toolchain install {NIGHTLY} --profile minimal`)?"
        )
    })?;
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {NIGHTLY}");
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// rustc links BPF objects with bpf-linker, found on PATH (we put ~/.cargo/bin first).
fn bpf_linker() -> Result<()> {
    let mut candidates = vec![std::path::PathBuf::from("bpf-linker")];
    candidates.extend(cmd::cargo_bin().map(|bin| bin.join("bpf-linker")));
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    for linker in &candidates {
        if let Some(out) = cmd::output(Command::new(linker).arg("--version")) {
            if out.trim() == want {
                return Ok(());
            }
        }
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (takes a few minutes)");
    cmd::run(cmd::cargo("stable")?.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}

/// gcc links the Rust binaries and compiles the test and demo workloads.
fn gcc() -> Result<()> {
    if cmd::output(Command::new("gcc").arg("--version")).is_none() {
        bail!(
            "gcc not found on PATH: it links alloctrace and compiles the C workloads in \
             tests/workloads (on Debian/Ubuntu: apt-get install gcc)"
        );
    }
    Ok(())
}
