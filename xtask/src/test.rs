//! `cargo xtask test`: unit tests of the whole workspace, then the privileged integration tests
//! (package alloctrace-tests, one binary `it`, `#[ignore]`d for plain `cargo test`) as root, one
//! at a time since they share kernel state. A FILTER after `--` goes to both harnesses; an
//! integration test's name starts with its module (`modes::...`), so `-- modes` selects a
//! subject.
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::{build, cmd};

/// Fails, before anything is built, unless we are root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the integration tests load eBPF programs and need root: run \
             `sudo -E env PATH=\"$PATH\" cargo xtask test` (for the unprivileged unit tests \
             alone, `cargo test`)"
        );
    }
    Ok(())
}

/// Call `require_root` first (main does, before setup).
pub fn test(args: &[String]) -> Result<ExitCode> {
    let build::Built { obj, bin } = build::build(&build::BuildOpts::default())?;
    let target_dir = cmd::target_dir()?;

    eprintln!("xtask: unit tests");
    // tracer-ebpf only builds for the BPF target, and alloctrace-tests runs next. With the
    // object in ALLOCTRACE_EBPF_OBJ, tracer-user's build script sees what `build` saw.
    cmd::run(
        cmd::cargo("stable")?
            .args([
                "test",
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
            ])
            .args(["--exclude", "alloctrace-tests", "--target-dir"])
            .arg(&target_dir)
            .env("ALLOCTRACE_EBPF_OBJ", &obj)
            .arg("--")
            .args(args),
    )?;

    eprintln!(
        "xtask: integration tests with ALLOCTRACE_BIN={}",
        bin.display()
    );
    cmd::run(
        cmd::cargo("stable")?
            .args([
                "test",
                "--no-fail-fast",
                "-p",
                "alloctrace-tests",
                "--test",
                "it",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("ALLOCTRACE_EBPF_OBJ", &obj)
            .env("ALLOCTRACE_BIN", &bin)
            .args(["--", "--include-ignored", "--test-threads=1"])
            .args(args),
    )?;
    Ok(ExitCode::SUCCESS)
}
