//! The bench's workloads: compiled from bench/workloads/*.c, the libc they use, and the command
//! line that runs one.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The workloads' compiler flags (the per-allocator variants' too). -fno-builtin: the compiler
/// must neither drop nor merge the allocator calls.
pub(super) const WORKLOAD_CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-builtin",
    "-Wall",
    "-pthread",
];

/// Compiles bench/workloads/*.c (or the `only` ones) into `scratch`: `(name, executable)`.
pub(super) fn compile_workloads(
    dir: &Path,
    scratch: &Path,
    only: &[String],
) -> Result<Vec<(String, PathBuf)>> {
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c" || e == "py"))
        .collect();
    sources.sort();
    let mut out = Vec::new();
    for src in sources {
        let name = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        if src.extension().is_some_and(|e| e == "py") {
            // Run as it is by Debian's own interpreter (see `argv`).
            if Path::new(PYTHON).exists() {
                out.push((name, src));
            } else {
                eprintln!(
                    "xtask: bench: {PYTHON} is missing: {} left out",
                    src.display()
                );
            }
            continue;
        }
        let exe = scratch.join(&name);
        cmd::gcc(&src, &exe, WORKLOAD_CFLAGS)?;
        out.push((name, exe));
    }
    if out.is_empty() {
        bail!(
            "no workload to run in {} (--workload {:?})",
            dir.display(),
            only
        );
    }
    Ok(out)
}

/// The libc `exe` loads (what alloctrace probes in launch mode, and the bpftrace script too).
pub(super) fn libc_of(exe: &Path) -> Result<PathBuf> {
    let out = cmd::output(Command::new("ldd").arg(exe))
        .with_context(|| format!("ldd {} failed", exe.display()))?;
    out.lines()
        .find_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            name.starts_with("libc.so").then(|| PathBuf::from(path))
        })
        .with_context(|| format!("ldd finds no libc in {}:\n{out}", exe.display()))
}

/// Debian's python3, an unmodified real program for the `*.py` workloads.
const PYTHON: &str = "/usr/bin/python3";

/// The command line that runs workload `exe`: a compiled workload itself, a `.py` one under
/// Debian's python3 (with PYTHONMALLOC=malloc, set by `run_one`, so objects come from libc).
pub(crate) fn argv(exe: &Path) -> Vec<std::ffi::OsString> {
    if exe.extension().is_some_and(|e| e == "py") {
        vec![PYTHON.into(), exe.into()]
    } else {
        vec![exe.into()]
    }
}
