//! `cargo xtask build`: the eBPF object on nightly, then `alloctrace` on stable with the object
//! embedded (tracer-user/build.rs reads its path from ALLOCTRACE_EBPF_OBJ).
use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;

use crate::{cmd, setup::NIGHTLY};

const BPF_TARGET: &str = "bpfel-unknown-none";

#[derive(Debug, Default, Args)]
pub struct BuildOpts {
    /// Build alloctrace with the dev profile (target/debug); the eBPF object is always release.
    #[arg(long)]
    pub debug: bool,
}

/// Builds the eBPF object; returns its absolute path.
fn build_ebpf() -> Result<PathBuf> {
    let target_dir = cmd::target_dir()?;
    cmd::run(
        cmd::cargo(NIGHTLY)?
            .args(["build", "-p", "tracer-ebpf", "-Z", "build-std=core"])
            .args(["--target", BPF_TARGET, "--release", "--target-dir"])
            .arg(&target_dir)
            // Full debug info for every crate, build-std's compiler_builtins included: its
            // memset/memcpy get BTF FUNC entries with real types only then, and the kernel
            // refuses the object's BTF (needed by the task-storage map) otherwise.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "2"),
    )?;
    let obj = target_dir.join(BPF_TARGET).join("release/tracer-ebpf");
    ensure!(
        obj.is_file(),
        "the eBPF build succeeded but {} is missing",
        obj.display()
    );
    Ok(obj)
}

/// What `build` produced, as absolute paths.
pub struct Built {
    /// The eBPF object, as passed to tracer-user's build script in ALLOCTRACE_EBPF_OBJ.
    pub obj: PathBuf,
    /// The alloctrace binary.
    pub bin: PathBuf,
}

/// Builds the eBPF object and alloctrace with it embedded.
pub fn build(opts: &BuildOpts) -> Result<Built> {
    let obj = build_ebpf()?;
    let target_dir = cmd::target_dir()?;
    let mut cargo = cmd::cargo("stable")?;
    cargo
        .args(["build", "-p", "alloctrace", "--target-dir"])
        .arg(&target_dir);
    if !opts.debug {
        cargo.arg("--release");
    }
    cmd::run(cargo.env("ALLOCTRACE_EBPF_OBJ", &obj))?;
    let bin = target_dir
        .join(if opts.debug { "debug" } else { "release" })
        .join("alloctrace");
    ensure!(
        bin.is_file(),
        "the build succeeded but {} is missing",
        bin.display()
    );
    Ok(Built { obj, bin })
}
