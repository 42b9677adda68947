//! Compiles the ground-truth workloads (`workloads/*.c`) into `$OUT_DIR/workloads/<name>` and
//! tells the tests where they are (`env!("WORKLOAD_DIR")`).
//!
//! Frame pointers and no sibling calls keep every allocating function on its stacks; `-Werror`
//! keeps the workloads honest. Workloads named `static_*.c` are linked with `-static`: when
//! that fails (no static libc installed), the build goes on and the compiler's message is left
//! in `<name>.build-error`, which the tests that need the binary report instead of skipping.
//! Workloads named `nofp_*.c` are built as distributions build code: `-O2` without frame
//! pointers (NOFP_CFLAGS).
//!
//! The allocator workloads (tests/it/allocators) are built as [`VARIANTS`] more: one C source
//! against every allocator and libc, one C++ source with and without tcmalloc, and the Rust
//! programs of `rust-workloads/` (cargo, see [`rust_workloads`]). A variant that cannot be
//! built leaves `<name>.build-error` and the build goes on: the tests that need it fail saying
//! why.
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
    for v in VARIANTS {
        build_variant(v, &src_dir, &out_dir);
    }
    rust_workloads(&manifest.join("rust-workloads"), &out_dir);
    go_workloads(&manifest.join("go-workloads"), &out_dir);
}

/// One more build of a workload source: with another compiler, linked with an allocator, or
/// stripped.
struct Variant {
    name: &'static str,
    /// In `workloads/`.
    src: &'static str,
    compiler: &'static str,
    /// Before the source (language, -static).
    flags: &'static [&'static str],
    /// After it (libraries).
    libs: &'static [&'static str],
    /// `strip -s` afterwards: no symbol table at all.
    strip: bool,
}

const fn variant(
    name: &'static str,
    src: &'static str,
    compiler: &'static str,
    flags: &'static [&'static str],
    libs: &'static [&'static str],
) -> Variant {
    Variant {
        name,
        src,
        compiler,
        flags,
        libs,
        strip: false,
    }
}

/// `allocators.c` is also built plainly (glibc, shared) as `allocators`, and run with each
/// allocator in LD_PRELOAD by the tests.
const VARIANTS: &[Variant] = &[
    variant(
        "allocators_static",
        "allocators.c",
        "gcc",
        &["-static"],
        &[],
    ),
    Variant {
        strip: true,
        ..variant(
            "allocators_static_stripped",
            "allocators.c",
            "gcc",
            &["-static"],
            &[],
        )
    },
    variant("allocators_musl", "allocators.c", "musl-gcc", &[], &[]),
    // A static program whose allocator cannot be probed: no symbol table at all (tests/it/exec).
    Variant {
        strip: true,
        ..variant(
            "static_wait_stripped",
            "static_wait.c",
            "gcc",
            &["-static"],
            &[],
        )
    },
    variant(
        "allocators_musl_static",
        "allocators.c",
        "musl-gcc",
        &["-static"],
        &[],
    ),
    variant(
        "allocators_jemalloc",
        "allocators.c",
        "gcc",
        &[],
        &["-ljemalloc"],
    ),
    // Debian's libjemalloc_pic.a: jemalloc's unprefixed malloc linked into the executable.
    variant(
        "allocators_jemalloc_static",
        "allocators.c",
        "gcc",
        &[],
        &["-l:libjemalloc_pic.a", "-lpthread", "-ldl", "-lm"],
    ),
    variant(
        "allocators_tcmalloc",
        "allocators.c",
        "gcc",
        &[],
        &["-ltcmalloc"],
    ),
    variant(
        "allocators_mimalloc",
        "allocators.c",
        "gcc",
        &[],
        &["-lmimalloc"],
    ),
    variant(
        "newdelete",
        "newdelete.cpp",
        "g++",
        &["-std=c++20"],
        &["-ltcmalloc"],
    ),
    // A library without frame pointers, dlopen'ed by nofp_dlopen (tests/it/unwind.rs).
    variant(
        "libnofp_lib.so",
        "lib/nofp_lib.c",
        "gcc",
        &["-shared", "-fPIC", "-O2", "-fomit-frame-pointer"],
        &[],
    ),
    variant(
        "newdelete_glibc",
        "newdelete.cpp",
        "g++",
        &["-std=c++20"],
        &[],
    ),
];

fn build_variant(v: &Variant, src_dir: &Path, out_dir: &Path) {
    let out = out_dir.join(v.name);
    let mut cmd = Command::new(v.compiler);
    cmd.args(CFLAGS)
        .args(v.flags)
        .arg("-o")
        .arg(&out)
        .arg(src_dir.join(v.src))
        .args(v.libs);
    let mut result = run(&mut cmd);
    if result.is_ok() && v.strip {
        result = run(Command::new("strip").arg("-s").arg(&out));
    }
    settle(v.name, out_dir, result);
}

/// Runs `cmd`; Err(its command line, status and output) when it cannot start or fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Err(e) => Err(format!("cannot run `{cmd:?}`: {e}")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{cmd:?}` failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// Leaves `<name>.build-error` (and no binary) when `result` is an error, removes a stale one
/// otherwise.
fn settle(name: &str, out_dir: &Path, result: Result<(), String>) {
    let error_file = out_dir.join(format!("{name}.build-error"));
    match result {
        Ok(()) => {
            let _ = fs::remove_file(&error_file);
        }
        Err(msg) => {
            let _ = fs::remove_file(out_dir.join(name));
            fs::write(&error_file, &msg)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", error_file.display()));
            println!(
                "cargo:warning=cannot build workload {name}: see {}",
                error_file.display()
            );
        }
    }
}

/// The Rust workloads, each a cargo project of its own under `rust-workloads/` (its own
/// workspace and Cargo.lock), built in release mode with frame pointers and copied to
/// `rust_<project>`. Their target directory outlives this package's OUT_DIR (it is
/// `target/<profile>/rust-workloads`), so the C allocator they compile (tikv-jemalloc-sys
/// builds jemalloc: about 1m45 on two busy CPUs) is built once, not at every change of a
/// workload.
fn rust_workloads(dir: &Path, out_dir: &Path) {
    // A directory: cargo looks at every file in it.
    println!("cargo:rerun-if-changed={}", dir.display());
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|profile_dir| profile_dir.join("rust-workloads"))
        .unwrap_or_else(|| out_dir.join("rust-workloads"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for project in ["rjem", "mimalloc", "nofp"] {
        let manifest = dir.join(project).join("Cargo.toml");
        let name = format!("rust_{project}");
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
        // Our own build's settings are not the workload's: it is built for the host, by the
        // toolchain cargo picks, with frame pointers (as the C workloads).
        for var in [
            "RUSTC",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "TARGET",
            "HOST",
            "OUT_DIR",
        ] {
            cmd.env_remove(var);
        }
        // `nofp` is built as Rust release builds are by default: without (tests/it/unwind).
        let fp = if project == "nofp" { "no" } else { "yes" };
        cmd.env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-Cforce-frame-pointers={fp}"),
        );
        let built = target_dir.join("release").join(project);
        let result = run(&mut cmd).and_then(|()| {
            fs::copy(&built, out_dir.join(&name))
                .map(drop)
                .map_err(|e| format!("cannot copy {}: {e}", built.display()))
        });
        settle(&name, out_dir, result);
    }
}

/// The Go programs of `go-workloads/` (one module, a package per program), built with the
/// system's `go` (Debian's golang-go): `(binary, package, extra go build arguments)`. A build
/// that fails leaves `<name>.build-error`, as the C variants do.
const GO_WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("go_alloc", "./goalloc", &[]),
    // No .symtab, no DWARF: only .gopclntab names the functions.
    ("go_alloc_stripped", "./goalloc", &["-ldflags=-s -w"]),
    // Position-independent: the table is `.data.rel.ro.gopclntab` there.
    (
        "go_alloc_pie_stripped",
        "./goalloc",
        &["-buildmode=pie", "-ldflags=-s -w"],
    ),
    // Position-independent with its symbols and DWARF: MemStats read at its load address.
    ("go_alloc_pie", "./goalloc", &["-buildmode=pie"]),
    // Go and C in one process: mallocgc and glibc's malloc both probed.
    ("go_cgo", "./gocgo", &[]),
    ("go_http", "./gohttp", &[]),
];

fn go_workloads(dir: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    for (name, package, extra) in GO_WORKLOADS {
        let mut cmd = Command::new("go");
        cmd.current_dir(dir)
            .args(["build", "-trimpath", "-o"])
            .arg(out_dir.join(name))
            .args(*extra)
            .arg(package)
            // Offline and self-contained: the module has no dependencies.
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local");
        settle(name, out_dir, run(&mut cmd));
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
