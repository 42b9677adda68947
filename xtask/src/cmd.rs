//! Paths and child processes shared by the tasks.
use std::{
    env,
    ffi::OsString,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask lives one level below it.
pub fn root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if the user set one, else `<root>/target`.
/// Passed to every inner cargo as `--target-dir`, so outputs are where xtask looks for them.
pub fn target_dir() -> Result<PathBuf> {
    let dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => env::current_dir()?.join(dir),
        _ => root().join("target"),
    };
    absolute(&dir)
}

/// `path` made absolute and free of `..` (without requiring it to exist).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            part => out.push(part),
        }
    }
    Ok(out)
}

/// Variables that would override the toolchain, compiler, flags or output directory of an inner
/// cargo. The outer `cargo xtask` runs under rustup's stable proxy, which sets RUSTUP_TOOLCHAIN
/// (`+nightly` wins over it, but nothing below should inherit "stable"); an inherited RUSTC
/// makes `cargo +nightly` compile with stable rustc, which then fails on `-Z build-std`; a host
/// RUSTFLAGS or RUSTC_WRAPPER would leak into the BPF build. Removed for both builds, so
/// `cargo xtask build` builds the same way whatever the shell exported.
const SCRUBBED: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
];

/// Prefixes of per-package variables cargo set for xtask itself.
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_BIN_",
    "CARGO_CRATE_",
];

/// `cargo +TOOLCHAIN` in the workspace root, with a clean environment (see `SCRUBBED`) and
/// `~/.cargo/bin` first on PATH, so `cargo` is rustup's proxy and bpf-linker is found.
pub fn cargo(toolchain: &str) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"))
        .current_dir(root())
        .env("PATH", path_with_cargo_bin()?);
    for (name, _) in env::vars_os() {
        let name_str = name.to_string_lossy();
        if SCRUBBED.contains(&&*name_str)
            || SCRUBBED_PREFIXES.iter().any(|p| name_str.starts_with(p))
        {
            cmd.env_remove(&name);
        }
    }
    Ok(cmd)
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`).
pub fn cargo_bin() -> Option<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home).join("bin")),
        _ => env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin")),
    }
}

/// PATH with `$CARGO_HOME/bin` moved to the front.
pub fn path_with_cargo_bin() -> Result<OsString> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(bin) = cargo_bin() {
        dirs.retain(|d| *d != bin);
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).context("PATH contains a directory with ':' in its name")
}

/// Runs `cmd` with inherited stdio and returns how it ended.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("cannot run {}", describe(cmd)))
}

/// Runs `cmd` with inherited stdio and fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("{} failed ({st})", describe(cmd));
    }
    Ok(())
}

/// Compiles the C program `src` into `exe` with gcc and `flags` (each caller's own: the
/// workloads' allocator calls and frames depend on them).
pub fn gcc(src: &Path, exe: &Path, flags: &[&str]) -> Result<()> {
    run(Command::new("gcc").args(flags).arg("-o").arg(exe).arg(src))
}

/// Runs `cmd` and returns its standard output, or None if it cannot be started or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The exit code a shell would report for a child that ended with `st`.
pub fn exit_code(st: ExitStatus) -> ExitCode {
    let code = st
        .code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `name` as the shell would find it in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `program arg...`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
