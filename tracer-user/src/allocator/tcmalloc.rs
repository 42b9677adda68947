//! gperftools' tcmalloc: `libtcmalloc.so.4`, `libtcmalloc_minimal.so.4`,
//! `libtcmalloc_and_profiler.so.4`, the `_debug` builds, or linked into an executable (found by
//! its `tc_*` names); the C++ operators it defines itself.
//!
//! Its standard names (`malloc`, `_Znwm`, `_ZdlPv`, ...) are aliases of the `tc_*` ones (one
//! address each), probed once under the table's first name. Disassembled (Debian's 2.10, both
//! builds): posix_memalign calls tc_memalign, valloc and pvalloc jump to it (not probed in
//! alloc-only mode: tc_memalign counts them); the full build's sized deletes jump to tc_free
//! on one path (the eBPF side takes such a nested free as one); calloc and realloc call only
//! tc_nallocx, which allocates nothing; realloc(NULL, n) runs tcmalloc's internals.
use alloctrace_common as abi;

use super::symbols::text_after;
use super::{alloc, cxx, release, Allocator, ProbeSpec, Symbols};

pub struct Tcmalloc;

const PLAIN: Option<&str> = Some(abi::PROG_VALLOC_COUNT);

pub const PROBES: &[ProbeSpec] = &[
    alloc("tc_malloc", abi::PROG_MALLOC_ENTER, PLAIN).required(),
    alloc(
        "tc_calloc",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    )
    .required(),
    alloc(
        "tc_realloc",
        abi::PROG_REALLOC_ENTER,
        Some(abi::PROG_REALLOC_COUNT_DIRECT),
    )
    .required(),
    release("tc_free").required(),
    release("tc_free_sized"),
    // tc_memalign(alignment, size) is also aligned_alloc and memalign.
    alloc(
        "tc_memalign",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT_DIRECT),
    )
    .required(),
    alloc("tc_posix_memalign", abi::PROG_POSIX_MEMALIGN_ENTER, None),
    alloc("tc_valloc", abi::PROG_VALLOC_ENTER, None),
    alloc("tc_pvalloc", abi::PROG_VALLOC_ENTER, None),
    alloc("tc_malloc_skip_new_handler", abi::PROG_MALLOC_ENTER, PLAIN),
    // operator new and new[] (size), nothrow, aligned (size, alignment): own code each.
    alloc("tc_new", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_newarray", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_new_nothrow", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_newarray_nothrow", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_new_aligned", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_newarray_aligned", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_new_aligned_nothrow", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("tc_newarray_aligned_nothrow", abi::PROG_MALLOC_ENTER, PLAIN),
    release("tc_delete"),
    release("tc_deletearray"),
    release("tc_delete_sized"),
    release("tc_deletearray_sized"),
    release("tc_delete_nothrow"),
    release("tc_deletearray_nothrow"),
    release("tc_delete_aligned"),
    release("tc_deletearray_aligned"),
    release("tc_delete_sized_aligned"),
    release("tc_deletearray_sized_aligned"),
    release("tc_delete_aligned_nothrow"),
    release("tc_deletearray_aligned_nothrow"),
    // The C++ names, for a build where they are not aliases of the tc_ ones.
    alloc(cxx::NEW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ARRAY, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_NOTHROW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ARRAY_NOTHROW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ALIGNED, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ARRAY_ALIGNED, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ALIGNED_NOTHROW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(
        cxx::NEW_ARRAY_ALIGNED_NOTHROW,
        abi::PROG_MALLOC_ENTER,
        PLAIN,
    ),
    release(cxx::DELETES[0]),
    release(cxx::DELETES[1]),
    release(cxx::DELETES[2]),
    release(cxx::DELETES[3]),
    release(cxx::DELETES[4]),
    release(cxx::DELETES[5]),
    release(cxx::DELETES[6]),
    release(cxx::DELETES[7]),
    release(cxx::DELETES[8]),
    release(cxx::DELETES[9]),
    release(cxx::DELETES[10]),
    release(cxx::DELETES[11]),
];

const MARKERS: &[&str] = &["tc_malloc", "tc_free"];

impl Allocator for Tcmalloc {
    fn name(&self) -> &'static str {
        "tcmalloc"
    }

    /// `libtcmalloc*.so*`: `libtcmalloc.so.4.5.10`, `libtcmalloc_minimal.so.4`, ...
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name.starts_with(b"libtcmalloc") && name.windows(3).any(|w| w == b".so")
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        MARKERS
    }

    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        (s.has("tc_malloc") && s.has("tc_free")).then_some("")
    }

    /// "gperftools 2.10" → "2.10".
    fn version(&self, data: &[u8]) -> Option<String> {
        text_after(data, b"gperftools ", b"\0 \n")
    }

    fn owns_function(&self, name: &str) -> bool {
        name.starts_with("tc_")
            || name.starts_with("tcmalloc::")
            || name.starts_with("(anonymous namespace)::do_")
            || PROBES.iter().any(|p| p.symbol == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcmalloc_names() {
        for n in [
            "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4.5.10",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_and_profiler.so.4.6.5",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal_debug.so.4",
        ] {
            assert!(Tcmalloc.holds(n.as_bytes()), "{n}");
        }
        assert!(!Tcmalloc.holds(b"/usr/lib/libtcmalloc.a"));
        assert!(Tcmalloc.owns_function("tcmalloc::ThreadCache::Allocate"));
    }
}
