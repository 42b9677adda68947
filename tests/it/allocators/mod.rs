//! Every process's real allocator, found by alloctrace itself (issue 20): the ground-truth
//! workloads built against each allocator (`workloads/allocators.c`, `newdelete.cpp`,
//! `rust-workloads/`; build.rs) traced in launch and --pid mode, each exact per site, with the
//! report's `processes[].allocators[]` naming the allocator and no site charged to the
//! allocator's own functions; a stripped static binary marked unseen, never a silent zero;
//! system-wide mode and an exec from glibc into static musl; alloc-only mode; Debian's
//! redis-server (jemalloc) under redis-benchmark.
//!
//! Privileged: run with `cargo xtask test -- allocators` (root, `ALLOCTRACE_BIN`).
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::support::*;

mod modes;
mod redis;
mod variants;

/// One way a workload is built and run, and the allocator it then really uses.
#[derive(Clone, Copy)]
pub struct Variant {
    /// The workload binary (build.rs's name).
    pub binary: &'static str,
    /// A shared library run in LD_PRELOAD (a file name, looked for in the library
    /// directories), or none.
    pub preload: Option<&'static str>,
    /// The allocator the report must name for the process.
    pub allocator: &'static str,
    /// The file holding it: a shared library's file name, or None for the executable itself.
    pub file: Option<&'static str>,
    /// Whether, in launch mode, nothing but the workload's sites allocates in the process (no
    /// C++ or Rust runtime allocating at start-up), so the process totals are the ground
    /// truth's sum. In --pid mode that holds for every C and C++ workload: they wait before
    /// their work, and nothing after it allocates.
    pub quiet_start: bool,
    /// A Rust workload: its runtime allocates around the work (the ground truth's writing too),
    /// so only its sites are exact.
    pub rust: bool,
}

pub const fn c(
    binary: &'static str,
    allocator: &'static str,
    file: Option<&'static str>,
) -> Variant {
    Variant {
        binary,
        preload: None,
        allocator,
        file,
        quiet_start: true,
        rust: false,
    }
}

/// Directories the allocator libraries are looked for in (Debian's multiarch first).
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib",
];

/// The shared library `name` (`libjemalloc.so.2`, or an absolute path), its links resolved;
/// panics naming the package to install when it is missing.
pub fn library(name: &str) -> PathBuf {
    let found = if name.starts_with('/') {
        Some(PathBuf::from(name))
    } else {
        LIB_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    };
    found
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (cargo xtask setup installs musl-tools, libjemalloc2, \
                 libtcmalloc-minimal4, libgoogle-perftools-dev and libmimalloc2.0 when root)"
            )
        })
}

/// What a variant adds to a workload run's environment: LD_PRELOAD when it preloads.
fn preload_env(v: &Variant) -> Vec<(&'static str, OsString)> {
    v.preload
        .map(|lib| ("LD_PRELOAD", library(lib).into_os_string()))
        .into_iter()
        .collect()
}

/// One traced run of a variant: alloctrace's outputs, the report, the workload's truth.
pub struct Traced {
    pub finished: Finished,
    pub report: Report,
    pub truth: GroundTruth,
    /// The workload's executable.
    pub exe: PathBuf,
    pub context: String,
}

/// `alloctrace EXTRA -- WORKLOAD`, to its end; when the variant preloads, with LD_PRELOAD in
/// alloctrace's environment, which the command inherits (as `LD_PRELOAD=LIB alloctrace --
/// CMD` run as root: alloctrace must resolve what the command will bind to).
pub fn launch_variant(v: &Variant, extra: &[&OsStr]) -> Traced {
    let env = preload_env(v);
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let run = launch_env(v.binary, &[], extra, &env, Scratch::new());
    let context = run.finished.describe();
    run.finished.assert_code(0);
    Traced {
        finished: run.finished,
        report: run.report,
        truth: run.truth,
        exe: run.command,
        context,
    }
}

/// The variant started with `wait` (LD_PRELOAD in its environment when it preloads),
/// `alloctrace --pid` attached to it, the workload released, to its end.
pub fn pid_variant(v: &Variant, extra: &[&OsStr]) -> Traced {
    let env = preload_env(v);
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let run = attach_env(INTERVAL, v.binary, &["wait"], &env, extra, Scratch::new());
    Traced {
        finished: run.finished,
        report: run.report,
        truth: run.truth,
        exe: workload(v.binary),
        context: run.context,
    }
}

/// The report names `v.allocator` among the process's allocators, in the file it lives in
/// (the preloaded or linked library, or the executable), and no allocator but it and glibc
/// (libc.so.6 is mapped by every dynamically linked program on glibc: it may be probed too).
pub fn assert_allocator(report: &Report, pid: u32, v: &Variant, exe: &Path) {
    let process = report.process(pid);
    let uses: Vec<(String, String)> = process["allocators"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    (
                        u["name"].as_str().unwrap_or("").to_string(),
                        u["path"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want_file = match v.file {
        Some(lib) => library(lib),
        None => std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf()),
    };
    let same_file = |p: &str| std::fs::canonicalize(p).is_ok_and(|c| c == want_file);
    assert!(
        uses.iter()
            .any(|(name, path)| name == v.allocator && same_file(path)),
        "pid {pid} ({}): the report does not name allocator {:?} in {} among its allocators \
         {uses:?}\nprocess: {process}",
        v.binary,
        v.allocator,
        want_file.display()
    );
    let others: Vec<&(String, String)> = uses
        .iter()
        .filter(|(name, _)| name != v.allocator && name != "glibc")
        .collect();
    assert!(
        others.is_empty(),
        "pid {pid} ({}): allocators other than {:?} (and glibc) named: {others:?}\nprocess: {process}",
        v.binary,
        v.allocator
    );
}

/// Whether a function name is an allocator's own or a language runtime's wrapper around one:
/// never what a site or hot spot may be charged to.
pub fn is_allocator_function(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "mallocx",
        "rallocx",
        "xallocx",
        "sdallocx",
        "dallocx",
    ];
    const PREFIXES: &[&str] = &[
        "__libc_",
        "_int_",
        "je_",
        "_rjem_",
        "tc_",
        "tcmalloc::",
        "mi_",
        "_mi_",
        "operator new",
        "operator delete",
        "_Zn",
        "_Zd",
        "__rust_",
        "__rdl_",
        "__rg_",
        "<tikv_jemallocator::",
        "<mimalloc::",
        "alloc::alloc::",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether a mapped file is an allocator's (a C library or an allocator library).
fn is_allocator_file(module: &str) -> bool {
    let name = module.rsplit('/').next().unwrap_or(module);
    [
        "libc.so",
        "libc-",
        "ld-musl",
        "libjemalloc",
        "libtcmalloc",
        "libmimalloc",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// No site of `pid` has an allocator function innermost (nor an unnamed frame in an
/// allocator's file; an unnamed frame elsewhere, as libstdc++'s start-up without a symbol
/// table, is the program's), and no hot spot is an allocator function: sites are the
/// program's functions.
pub fn assert_sites_are_program_functions(report: &Report, pid: u32) {
    let bad: std::collections::BTreeSet<String> = report
        .sites_of(pid)
        .into_iter()
        .filter_map(|s| {
            let f = &s["frames"][0];
            match (f["function"].as_str(), f["module"].as_str()) {
                (Some(name), _) => is_allocator_function(name).then(|| name.to_string()),
                (None, Some(m)) => is_allocator_file(m).then(|| Report::frame_label(f)),
                (None, None) => Some(Report::frame_label(f)),
            }
        })
        .collect();
    assert!(
        bad.is_empty(),
        "pid {pid}: sites charged to allocator functions: {bad:?}\n{}",
        report.describe_sites(pid)
    );
    let hot: Vec<&str> = report.json["analysis"]["hotspots"]["top"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|h| h["pid"].as_u64() == Some(u64::from(pid)))
                .filter_map(|h| h["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let bad_hot: Vec<&&str> = hot.iter().filter(|h| is_allocator_function(h)).collect();
    assert!(
        bad_hot.is_empty(),
        "hot spots that are allocator functions: {bad_hot:?}\nhotspots: {}",
        report.json["analysis"]["hotspots"]
    );
}

/// The report lists `pid` with some allocation counted: fails first, with the reason, when the
/// variant's allocator was not probed at all.
pub fn assert_counted_something(report: &Report, pid: u32, v: &Variant, context: &str) {
    let process = report
        .processes()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)));
    assert!(
        process.is_some_and(|p| p["counters"]["allocs"].as_u64().is_some_and(|n| n > 0)),
        "{}: alloctrace counted no allocation of pid {pid} (was its allocator, {}, probed?); \
         its report entry: {}\n{context}",
        v.binary,
        v.allocator,
        process.map_or("none".to_string(), |p| p.to_string())
    );
}

/// No count lost: every `losses` counter zero but `stacks_cut` (and its bytes,
/// `stacks_cut_bytes`), which says how many sites' stacks stop before their thread's entry
/// (static glibc's start-up allocates from code with neither unwind tables alloctrace loads
/// nor frame pointers: those sites lose outer frames, not counts).
pub fn assert_nothing_lost(report: &Report) {
    let lost: std::collections::BTreeMap<String, u64> = report
        .losses()
        .into_iter()
        .filter(|(k, n)| *n > 0 && !k.starts_with("stacks_cut"))
        .collect();
    assert!(
        lost.is_empty(),
        "alloctrace lost data: {lost:?}\nlosses: {}",
        report.json["losses"]
    );
}

/// Everything a run of a variant must show: every ground-truth site exact (counters, live
/// bytes, size histogram, one lifetime per free), the process totals too where nothing else
/// allocates (`exact_process`), sites charged to program functions, nothing lost, and (last,
/// so that a report from before `allocators[]` was filled fails there alone) the allocator
/// named, in the report and in alloctrace's messages (which say what each process is probed
/// through).
pub fn assert_variant_exact(run: &Traced, v: &Variant, exact_process: bool) {
    let (report, truth) = (&run.report, &run.truth);
    assert_counted_something(report, truth.pid, v, &run.context);
    assert_sites_match(report, truth, &[]);
    if exact_process {
        assert_process_matches(report, truth);
    }
    assert_sites_are_program_functions(report, truth.pid);
    assert_nothing_lost(report);
    assert_allocator(report, truth.pid, v, &run.exe);
    assert!(
        run.finished
            .stderr
            .lines()
            .any(|l| l.starts_with("alloctrace: ") && l.contains(v.allocator)),
        "no alloctrace line names the allocator probed for {} ({:?})\n{}",
        v.binary,
        v.allocator,
        run.context
    );
}
