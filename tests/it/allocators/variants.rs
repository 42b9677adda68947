//! Each variant of the allocator workloads traced in launch mode and in --pid mode: every site
//! exact, the allocator named, sites charged to the program's functions. Test names are
//! `allocators::variants::<variant>::{launch,pid}`.
use super::*;

const GLIBC_SHARED: Variant = c("allocators", "glibc", Some("libc.so.6"));
/// Static glibc's start-up allocates (_dl_non_dynamic_init, _dl_new_object: 5 blocks).
const GLIBC_STATIC: Variant = Variant {
    quiet_start: false,
    ..c("allocators_static", "glibc", None)
};
const MUSL_DYNAMIC: Variant = c("allocators_musl", "musl", Some("/lib/ld-musl-x86_64.so.1"));
const MUSL_STATIC: Variant = c("allocators_musl_static", "musl", None);
/// libjemalloc.so.2 needs libstdc++, whose start-up allocates (its emergency exception pool).
const JEMALLOC_SHARED: Variant = Variant {
    quiet_start: false,
    ..c("allocators_jemalloc", "jemalloc", Some("libjemalloc.so.2"))
};
const JEMALLOC_STATIC: Variant = c("allocators_jemalloc_static", "jemalloc", None);
/// gperftools' tcmalloc is C++: libstdc++'s start-up allocates.
const TCMALLOC_SHARED: Variant = Variant {
    quiet_start: false,
    ..c("allocators_tcmalloc", "tcmalloc", Some("libtcmalloc.so.4"))
};
const MIMALLOC_SHARED: Variant = c("allocators_mimalloc", "mimalloc", Some("libmimalloc.so.2"));

/// The glibc build with `lib` preloaded; `quiet_start` unless the library needs libstdc++,
/// whose start-up allocates (jemalloc's and tcmalloc's do).
const fn preloaded(lib: &'static str, allocator: &'static str, quiet_start: bool) -> Variant {
    Variant {
        preload: Some(lib),
        quiet_start,
        ..c("allocators", allocator, Some(lib))
    }
}
const PRELOAD_JEMALLOC: Variant = preloaded("libjemalloc.so.2", "jemalloc", false);
const PRELOAD_TCMALLOC: Variant = preloaded("libtcmalloc_minimal.so.4", "tcmalloc", false);
const PRELOAD_MIMALLOC: Variant = preloaded("libmimalloc.so.2", "mimalloc", true);

/// C++ new/delete in all their forms, bound to tcmalloc's own operator new and delete.
const CXX_TCMALLOC: Variant = Variant {
    quiet_start: false,
    ..c("newdelete", "tcmalloc", Some("libtcmalloc.so.4"))
};

const fn rust(binary: &'static str, allocator: &'static str) -> Variant {
    Variant {
        quiet_start: false,
        rust: true,
        ..c(binary, allocator, None)
    }
}
/// tikv-jemallocator: static jemalloc, `_rjem_` names (sized frees with `_rjem_sdallocx`).
const RUST_JEMALLOC: Variant = rust("rust_rjem", "jemalloc");
/// The mimalloc crate: static mimalloc, `mi_*` names (`mi_malloc_aligned`, `mi_free`...).
const RUST_MIMALLOC: Variant = rust("rust_mimalloc", "mimalloc");

/// A module per variant holding its `launch` and `pid` tests.
macro_rules! variant_tests {
    ($($module:ident: $variant:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            #[ignore = "needs root and BPF: run with cargo xtask test"]
            fn launch() {
                alloctrace_bin();
                let v = $variant;
                let run = launch_variant(&v, &[]);
                assert_variant_exact(&run, &v, v.quiet_start && !v.rust);
            }

            #[test]
            #[ignore = "needs root and BPF: run with cargo xtask test"]
            fn pid() {
                alloctrace_bin();
                let v = $variant;
                let run = pid_variant(&v, &[]);
                assert_variant_exact(&run, &v, !v.rust);
            }
        }
    )*};
}

variant_tests! {
    glibc_shared: GLIBC_SHARED;
    glibc_static: GLIBC_STATIC;
    musl_dynamic: MUSL_DYNAMIC;
    musl_static: MUSL_STATIC;
    jemalloc_shared: JEMALLOC_SHARED;
    jemalloc_static: JEMALLOC_STATIC;
    tcmalloc_shared: TCMALLOC_SHARED;
    mimalloc_shared: MIMALLOC_SHARED;
    preload_jemalloc: PRELOAD_JEMALLOC;
    preload_tcmalloc: PRELOAD_TCMALLOC;
    preload_mimalloc: PRELOAD_MIMALLOC;
    cxx_tcmalloc: CXX_TCMALLOC;
    rust_jemalloc: RUST_JEMALLOC;
    rust_mimalloc: RUST_MIMALLOC;
}

/// Every variant, in the `launch`/`pid` tests' table order.
const ALL: &[Variant] = &[
    GLIBC_SHARED,
    GLIBC_STATIC,
    MUSL_DYNAMIC,
    MUSL_STATIC,
    JEMALLOC_SHARED,
    JEMALLOC_STATIC,
    TCMALLOC_SHARED,
    MIMALLOC_SHARED,
    PRELOAD_JEMALLOC,
    PRELOAD_TCMALLOC,
    PRELOAD_MIMALLOC,
    CXX_TCMALLOC,
    RUST_JEMALLOC,
    RUST_MIMALLOC,
];

/// A symbol only the allocator a variant links in defines, in its executable.
fn linked_in_marker(v: &Variant) -> &'static str {
    match (v.allocator, v.rust) {
        ("glibc", _) => "__libc_malloc",
        ("musl", _) => "__malloc_alloc_meta",
        ("jemalloc", false) => "je_malloc_default",
        ("jemalloc", true) => "_rjem_sdallocx",
        ("mimalloc", _) => "mi_malloc_aligned",
        (other, _) => panic!("no marker symbol for {other}"),
    }
}

/// Not traced (no root needed): each variant runs, really holds its allocator — the library
/// mapped in the running process, or the allocator's own symbol in the executable — and writes
/// a ground truth that parses with its own pid; every build of allocators.c writes the same
/// sites as the glibc one. What the traced tests compare against is thereby checked too.
#[test]
fn every_variant_holds_its_allocator_and_writes_its_truth() {
    let scratch = Scratch::new();
    let mut reference: Option<Vec<SiteTruth>> = None;
    for v in ALL {
        let truth_path = scratch.path(&format!("{}-{:?}.txt", v.binary, v.preload));
        let mut env = preload_env(v);
        env.push(("GROUND_TRUTH", truth_path.clone().into_os_string()));
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let mut w = Workload::start(v.binary, &["wait"], &env);
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid()))
            .unwrap_or_else(|e| panic!("cannot read the maps of {}: {e}", v.binary));
        w.release();
        w.wait_code(0);
        let truth = GroundTruth::read(&truth_path, &w.describe());
        assert_eq!(truth.pid, w.pid(), "{}: ground-truth pid", v.binary);
        match v.file {
            Some(lib) => {
                let want = library(lib);
                assert!(
                    maps.lines()
                        .filter_map(|l| l.split_whitespace().nth(5))
                        .any(|p| Path::new(p) == want),
                    "{} ({:?} preloaded): {} is not mapped\n{maps}",
                    v.binary,
                    v.preload,
                    want.display()
                );
            }
            None => {
                let marker = linked_in_marker(v);
                assert!(
                    defines_symbol(&workload(v.binary), marker),
                    "{}: the executable does not define {marker}: {} is not linked in",
                    v.binary,
                    v.allocator
                );
            }
        }
        for s in &truth.sites {
            assert_eq!(
                s.size_hist.values().sum::<u64>(),
                s.counters.allocs,
                "{}: {}'s size_hist does not count every allocation\n{}",
                v.binary,
                s.function,
                truth.text
            );
        }
        assert!(
            truth.total().allocs > 0,
            "{} allocates nothing:\n{}",
            v.binary,
            truth.text
        );
        if v.binary.starts_with("allocators") {
            match &reference {
                None => reference = Some(truth.sites.clone()),
                Some(r) => assert_eq!(
                    &truth.sites, r,
                    "{} ({:?} preloaded) writes other sites than the glibc build",
                    v.binary, v.preload
                ),
            }
        }
    }
}

/// Whether the ELF file at `path` defines `name` in its symbol table (or its dynamic one).
fn defines_symbol(path: &Path, name: &str) -> bool {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = object::File::parse(&*data)
        .unwrap_or_else(|e| panic!("{} is not an ELF file: {e}", path.display()));
    file.symbols()
        .chain(file.dynamic_symbols())
        .any(|s| s.is_definition() && s.name() == Ok(name))
}
