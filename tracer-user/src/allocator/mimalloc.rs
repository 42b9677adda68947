//! mimalloc: `libmimalloc.so.2` (and its `-secure`/`-debug` builds), or linked into an
//! executable (Rust's mimalloc crate, a static `mimalloc-override`), found by its `mi_*` names.
//!
//! Only the `mi_*` functions are probed: its standard names are aliases of them (malloc is
//! mi_malloc) or one-jump stubs into them (valloc, cfree, the nothrow and aligned C++
//! operators, Debian's 2.0.9 disassembled), so the probe on the `mi_*` function sees every
//! call, with the program's return address on the stack. Not probed: the `mi_heap_*` API (the
//! `mi_*` functions run it as internals), `mi_strdup`/`mi_strndup`/`mi_realpath` (the size is
//! not an argument), `mi_expand` (in place).
use alloctrace_common as abi;

use super::{alloc, release, Allocator, ProbeSpec, Symbols};

pub struct Mimalloc;

const PLAIN: Option<&str> = Some(abi::PROG_VALLOC_COUNT);
/// mimalloc's realloc(p, 0) returns a new block.
const REALLOC: Option<&str> = Some(abi::PROG_REALLOC0_COUNT_DIRECT);
const REALLOCN: Option<&str> = Some(abi::PROG_REALLOCARRAY_COUNT_DIRECT);

/// Only mi_free is required: Rust's mimalloc crate calls the aligned functions and mi_free
/// alone, and its linker drops the functions nothing calls (mi_malloc among them).
pub const PROBES: &[ProbeSpec] = &[
    alloc("mi_malloc", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(
        "mi_calloc",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    alloc("mi_realloc", abi::PROG_REALLOC_ENTER, REALLOC),
    release("mi_free").required(),
    alloc("mi_zalloc", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("mi_malloc_small", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("mi_zalloc_small", abi::PROG_MALLOC_ENTER, PLAIN),
    // (count, size)
    alloc(
        "mi_mallocn",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    alloc(
        "mi_new_n",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    // (p, size); reallocf frees p when it fails.
    alloc("mi_reallocf", abi::PROG_REALLOC_ENTER, REALLOC),
    alloc("mi_rezalloc", abi::PROG_REALLOC_ENTER, REALLOC),
    // (p, count, size)
    alloc("mi_reallocn", abi::PROG_REALLOCARRAY_ENTER, REALLOCN),
    alloc("mi_recalloc", abi::PROG_REALLOCARRAY_ENTER, REALLOCN),
    // (size, alignment[, offset]): the size first, unlike aligned_alloc.
    // mi_posix_memalign and mi_new_aligned call it (see below): in alloc-only mode it skips
    // what they counted.
    alloc(
        "mi_malloc_aligned",
        abi::PROG_MALLOC_ENTER,
        Some(abi::PROG_MALLOC_COUNT),
    ),
    alloc("mi_malloc_aligned_at", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("mi_zalloc_aligned", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("mi_zalloc_aligned_at", abi::PROG_MALLOC_ENTER, PLAIN),
    // (count, size, alignment[, offset])
    alloc(
        "mi_calloc_aligned",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    alloc(
        "mi_calloc_aligned_at",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    // (p, size, alignment[, offset])
    alloc("mi_realloc_aligned", abi::PROG_REALLOC_ENTER, REALLOC),
    alloc("mi_realloc_aligned_at", abi::PROG_REALLOC_ENTER, REALLOC),
    alloc("mi_rezalloc_aligned", abi::PROG_REALLOC_ENTER, REALLOC),
    // (p, count, size, alignment)
    alloc(
        "mi_recalloc_aligned",
        abi::PROG_REALLOCARRAY_ENTER,
        REALLOCN,
    ),
    alloc("mi_new", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc("mi_new_nothrow", abi::PROG_MALLOC_ENTER, PLAIN),
    // These two `call` mi_malloc_aligned: counted at their entry in alloc-only mode, where
    // the stack is the program's (mimalloc keeps no frame pointers), and it told to skip.
    alloc(
        "mi_posix_memalign",
        abi::PROG_POSIX_MEMALIGN_ENTER,
        Some(abi::PROG_POSIX_MEMALIGN_COUNT_TO_MALLOC),
    ),
    alloc(
        "mi_new_aligned",
        abi::PROG_MALLOC_ENTER,
        Some(abi::PROG_SIZE_FIRST_COUNT_TO_MALLOC),
    ),
    // These end in a jump to mi_malloc_aligned / mi_realloc / mi_reallocn, which counts them
    // in alloc-only mode with the program's return address on the stack.
    alloc("mi_aligned_alloc", abi::PROG_ALIGNED_ALLOC_ENTER, None),
    alloc("mi_memalign", abi::PROG_ALIGNED_ALLOC_ENTER, None),
    alloc("mi_valloc", abi::PROG_VALLOC_ENTER, None),
    alloc("mi_pvalloc", abi::PROG_VALLOC_ENTER, None),
    alloc("mi_new_aligned_nothrow", abi::PROG_MALLOC_ENTER, None),
    alloc("mi_new_realloc", abi::PROG_REALLOC_ENTER, None),
    alloc("mi_new_reallocn", abi::PROG_REALLOCARRAY_ENTER, None),
    alloc("mi_reallocarray", abi::PROG_REALLOCARRAY_ENTER, None),
    // Jump to mi_free (the eBPF side takes the nested free as one).
    release("mi_free_size"),
    release("mi_free_size_aligned"),
    release("mi_free_aligned"),
    release("mi_cfree"),
];

const MARKERS: &[&str] = &[
    "mi_free",
    "mi_malloc",
    "mi_malloc_aligned",
    "mi_zalloc_aligned",
    "mi_realloc_aligned",
];

impl Allocator for Mimalloc {
    fn name(&self) -> &'static str {
        "mimalloc"
    }

    /// `libmimalloc.so.2.0`, `libmimalloc-secure.so.2`, ...
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name.starts_with(b"libmimalloc") && name.windows(3).any(|w| w == b".so")
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        MARKERS
    }

    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        (s.has("mi_free") && MARKERS[1..].iter().any(|m| s.has(m))).then_some("")
    }

    fn owns_function(&self, name: &str) -> bool {
        name.starts_with("mi_") || name.starts_with("_mi_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimalloc_names() {
        assert!(Mimalloc.holds(b"/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0"));
        assert!(Mimalloc.holds(b"/usr/lib/libmimalloc-secure.so.2"));
        assert!(!Mimalloc.holds(b"/usr/lib/libmi.so"));
    }
}
