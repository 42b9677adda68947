//! Compiles the ground-truth workloads (`workloads/*.c`) into `$OUT_DIR/workloads/<name>` and
//! tells the tests where they are (`env!("WORKLOAD_DIR")`).
//!
//! Frame pointers and no sibling calls keep every allocating function on its stacks; `-Werror`
//! keeps the workloads honest. Workloads named `static_*.c` are linked with `-static`: when
//! that fails (no static libc installed), the build goes on and the compiler's message is left
//! in `<name>.build-error`, which the tests that need the binary report instead of skipping.
//! Workloads named `nofp_*.c` are built as distributions build code: `-O2` without frame
//! pointers (NOFP_CFLAGS).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CFLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// For `nofp_*` workloads, in place of CFLAGS' optimization and frame-pointer flags.
const NOFP_CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-Werror",
];

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let src_dir = manifest.join("workloads");
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("workloads");
    fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
    println!("cargo:rerun-if-changed={}", src_dir.display());
    println!("cargo:rustc-env=WORKLOAD_DIR={}", out_dir.display());

    let mut entries: Vec<PathBuf> = fs::read_dir(&src_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", src_dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", src_dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    for path in &entries {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for src in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
    {
        compile(src, &out_dir);
    }
}

fn compile(src: &Path, out_dir: &Path) {
    let name = src
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("workload names are UTF-8");
    let out = out_dir.join(name);
    let error_file = out_dir.join(format!("{name}.build-error"));
    let is_static = name.starts_with("static_");
    let mut cmd = Command::new("gcc");
    cmd.args(if name.starts_with("nofp_") {
        NOFP_CFLAGS
    } else {
        CFLAGS
    });
    if is_static {
        cmd.arg("-static");
    }
    cmd.arg("-o").arg(&out).arg(src);
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run gcc ({e}): the integration tests' workloads are C programs; install gcc")
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        let _ = fs::remove_file(&error_file);
        return;
    }
    if is_static {
        // Most likely no static libc (libc6-dev's libc.a); the tests that need it say so.
        let _ = fs::remove_file(&out);
        let msg = format!("`{cmd:?}` failed ({}):\n{stderr}", output.status);
        fs::write(&error_file, &msg)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", error_file.display()));
        println!(
            "cargo:warning=cannot link {name} statically (is libc.a installed?): see {}",
            error_file.display()
        );
        return;
    }
    panic!(
        "compiling workload {} failed ({}):\n{cmd:?}\n{stderr}",
        src.display(),
        output.status
    );
}
