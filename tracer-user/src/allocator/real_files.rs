//! Detection and probe tables checked on the real allocators installed here (Debian's
//! packages) and on small programs compiled at test time (static glibc, static musl, static
//! jemalloc, a prefixed build).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use alloctrace_common as abi;

use super::*;

pub(crate) const LIB: &str = "/usr/lib/x86_64-linux-gnu";

fn names(found: &[Found]) -> Vec<(&'static str, &'static str)> {
    found
        .iter()
        .map(|f| (f.allocator.name(), f.prefix))
        .collect()
}

/// A directory of programs compiled once for these tests.
pub(crate) fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("alloctrace-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("t.c");
        std::fs::write(
            &src,
            "#include <stdlib.h>\n#include <stdio.h>\n\
             int main(void){void*p=malloc(10);p=realloc(p,20);free(p);\
             printf(\"%p\\n\",calloc(2,3));return 0;}\n",
        )
        .unwrap();
        // A program that defines a prefixed jemalloc's markers beside static glibc's malloc.
        let rjem = dir.join("rjem.c");
        std::fs::write(
            &rjem,
            "#include <stdlib.h>\n\
             void *_rjem_mallocx(size_t n, int f){(void)f;return malloc(n);}\n\
             void _rjem_sdallocx(void *p, size_t n, int f){(void)n;(void)f;free(p);}\n\
             void *_rjem_malloc(size_t n){return malloc(n);}\n\
             void *_rjem_calloc(size_t a, size_t b){return calloc(a,b);}\n\
             void *_rjem_realloc(void *p, size_t n){return realloc(p,n);}\n\
             void _rjem_free(void *p){free(p);}\n\
             void *_rjem_rallocx(void *p, size_t n, int f){(void)f;return realloc(p,n);}\n\
             int main(void){free(_rjem_mallocx(8,0));return 0;}\n",
        )
        .unwrap();
        let cc = |compiler: &str, out: &str, args: &[&str]| {
            let st = Command::new(compiler)
                .args(["-O2", "-o"])
                .arg(dir.join(out))
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("{compiler}: {e}"));
            assert!(st.success(), "{compiler} {out}");
        };
        let t = src.to_str().unwrap();
        cc("gcc", "glibc_static", &["-static", t]);
        cc("musl-gcc", "musl_static", &["-static", t]);
        cc("gcc", "dynamic_je", &[t, "-ljemalloc"]);
        let je = format!("{LIB}/libjemalloc_pic.a");
        cc("gcc", "je_static", &["-static", t, &je, "-lpthread", "-lm"]);
        cc("gcc", "rjem_static", &["-static", rjem.to_str().unwrap()]);
        dir
    })
}

#[test]
fn debian_libraries_by_name() {
    let cases = [
        ("/lib/x86_64-linux-gnu/libc.so.6", "glibc"),
        ("/usr/lib/x86_64-linux-musl/libc.so", "musl"),
        ("/lib/ld-musl-x86_64.so.1", "musl"),
        ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
        ("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4", "tcmalloc"),
        (
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "tcmalloc",
        ),
        ("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2", "mimalloc"),
    ];
    for (path, name) in cases {
        assert_eq!(
            names(&detect(Path::new(path)).unwrap()),
            [(name, "")],
            "{path}"
        );
    }
    // A library that is none.
    assert!(
        detect(Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_renamed_library_by_its_symbols() {
    let dir = built();
    for (lib, name) in [
        ("libjemalloc.so.2", "jemalloc"),
        ("libtcmalloc_minimal.so.4", "tcmalloc"),
        ("libmimalloc.so.2", "mimalloc"),
    ] {
        let copy = dir.join(format!("libvendored-{name}.so"));
        std::fs::copy(Path::new(LIB).join(lib), &copy).unwrap();
        assert_eq!(names(&detect(&copy).unwrap()), [(name, "")], "{lib}");
    }
}

#[test]
fn static_and_prefixed_programs_by_their_symbols() {
    let dir = built();
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("glibc_static", &[("glibc", "")]),
        ("musl_static", &[("musl", "")]),
        ("je_static", &[("jemalloc", "")]),
        ("rjem_static", &[("glibc", ""), ("jemalloc", "_rjem_")]),
        // Linked with libjemalloc.so.2: the executable itself holds none.
        ("dynamic_je", &[]),
    ];
    for (exe, want) in cases {
        let got = detect(&dir.join(exe)).unwrap();
        assert_eq!(names(&got), want, "{exe}");
    }
}

/// glibc's delegation (a request counted at the outer call, malloc told to skip it) is used
/// only where the outer call really reaches the exported malloc: glibc's realloc and aligned
/// family, musl's calloc, mimalloc's posix_memalign and aligned operator new (which call
/// mi_malloc_aligned); every other allocator's alloc-only programs delegate nothing.
#[test]
fn alloc_only_programs_delegate_only_where_the_allocator_does() {
    let delegating = [
        abi::PROG_REALLOC_COUNT,
        abi::PROG_POSIX_MEMALIGN_COUNT,
        abi::PROG_ALIGNED_ALLOC_COUNT,
        abi::PROG_CALLOC_COUNT_TO_MALLOC,
        abi::PROG_POSIX_MEMALIGN_COUNT_TO_MALLOC,
        abi::PROG_SIZE_FIRST_COUNT_TO_MALLOC,
    ];
    for a in REGISTRY {
        let delegates = a
            .probes()
            .iter()
            .any(|p| p.count.is_some_and(|c| delegating.contains(&c)));
        let skips = a
            .probes()
            .iter()
            .any(|p| p.count == Some(abi::PROG_MALLOC_COUNT));
        let expected = matches!(a.name(), "glibc" | "musl" | "mimalloc");
        assert_eq!(delegates, expected, "{}", a.name());
        // Where something delegates, malloc must skip what it was handed.
        assert_eq!(skips, expected, "{}", a.name());
        for p in a.probes() {
            // A release is never counted; every counted function returns a block, or is
            // counted at its entry in both modes (Go's mallocgc: never a return probe).
            let entry_only = p.count == Some(p.program);
            assert!(
                p.returns_block || p.count.is_none() || entry_only,
                "{}",
                p.symbol
            );
        }
    }
    let count =
        |a: &dyn Allocator, sym: &str| a.probes().iter().find(|p| p.symbol == sym).unwrap().count;
    assert_eq!(
        count(&jemalloc::Jemalloc, "realloc"),
        Some(abi::PROG_REALLOC_COUNT_DIRECT)
    );
    assert_eq!(
        count(&jemalloc::Jemalloc, "malloc"),
        Some(abi::PROG_VALLOC_COUNT)
    );
    assert_eq!(
        count(&glibc::Glibc, "realloc"),
        Some(abi::PROG_REALLOC_COUNT)
    );
    assert_eq!(count(&glibc::Glibc, "reallocarray"), None);
    assert_eq!(
        count(&musl::Musl, "realloc"),
        Some(abi::PROG_REALLOC0_COUNT_DIRECT)
    );
    assert_eq!(
        count(&mimalloc::Mimalloc, "mi_posix_memalign"),
        Some(abi::PROG_POSIX_MEMALIGN_COUNT_TO_MALLOC)
    );
    assert_eq!(count(&mimalloc::Mimalloc, "mi_aligned_alloc"), None);
}

/// Versions read from the installed libraries' read-only data.
#[test]
fn versions() {
    let v = |path: &str, a: &dyn Allocator| version(Path::new(path), a);
    let glibc = v("/lib/x86_64-linux-gnu/libc.so.6", &glibc::Glibc).unwrap();
    assert!(glibc.starts_with("2."), "{glibc}");
    let je = v(&format!("{LIB}/libjemalloc.so.2"), &jemalloc::Jemalloc).unwrap();
    assert!(je.starts_with("5."), "{je}");
    let tc = v(
        &format!("{LIB}/libtcmalloc_minimal.so.4"),
        &tcmalloc::Tcmalloc,
    )
    .unwrap();
    assert!(tc.starts_with("2."), "{tc}");
}

/// Detection of a large file that holds no allocator reads only its symbol tables.
#[test]
fn detect_is_fast_on_a_large_library() {
    let Some(big) = std::fs::read_dir(LIB)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("libLLVM"))
        .max_by_key(|p| p.metadata().map_or(0, |m| m.len()))
    else {
        panic!("no libLLVM in {LIB} to measure with");
    };
    let t = std::time::Instant::now();
    assert!(detect(&big).unwrap().is_empty());
    let took = t.elapsed();
    eprintln!("detect({}) took {took:?}", big.display());
    assert!(took.as_secs_f64() < 2.0, "{took:?}");
    // chromium (when installed): its own malloc (PartitionAlloc), no allocator alloctrace
    // knows, said so.
    let chromium = Path::new("/usr/lib/chromium/chromium");
    if chromium.exists() {
        let t = std::time::Instant::now();
        assert!(detect(chromium).unwrap().is_empty());
        eprintln!("detect({}) took {:?}", chromium.display(), t.elapsed());
        assert!(defines_unknown_malloc(chromium).unwrap());
    }
}

#[test]
fn a_malloc_of_an_unknown_allocator_is_told_apart() {
    let dir = built();
    // Static glibc's malloc is known; libstdc++ defines none.
    assert!(!defines_unknown_malloc(&dir.join("glibc_static")).unwrap());
    assert!(
        !defines_unknown_malloc(Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")).unwrap()
    );
    // A program with its own malloc.
    let src = dir.join("own.c");
    std::fs::write(
        &src,
        "#include <stddef.h>\nstatic char heap[1<<16]; static size_t top;\n\
         void *malloc(size_t n){void *p=heap+top; top+=(n+15)&~(size_t)15; return p;}\n\
         void free(void *p){(void)p;}\nint main(void){return malloc(4)==0;}\n",
    )
    .unwrap();
    let exe = dir.join("own");
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(detect(&exe).unwrap().is_empty());
    assert!(defines_unknown_malloc(&exe).unwrap());
}
