//! musl's malloc (mallocng, musl 1.2.x): in its libc (`libc.so`, which is also its dynamic
//! loader `ld-musl-*.so.1`), or linked statically into an executable (found by its internals).
//!
//! Unlike glibc, musl's realloc(NULL, n) and aligned_alloc run its internal malloc
//! (`__libc_malloc_impl`), not the exported one; calloc does call the exported malloc, and
//! memalign, valloc and posix_memalign call (or tail-call) aligned_alloc (musl 1.2.3,
//! disassembled).
use alloctrace_common as abi;

use super::{alloc, release, Allocator, ProbeSpec, Symbols};

pub struct Musl;

/// Only malloc is required: a static program links each of musl's functions from its own
/// object file, only those it calls (one that never frees has no free).
pub const PROBES: &[ProbeSpec] = &[
    // Alloc-only: skips the requests calloc counted and handed over.
    alloc(
        "malloc",
        abi::PROG_MALLOC_ENTER,
        Some(abi::PROG_MALLOC_COUNT),
    )
    .required(),
    alloc(
        "calloc",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT_TO_MALLOC),
    ),
    // realloc(p, 0) returns a new block in musl.
    alloc(
        "realloc",
        abi::PROG_REALLOC_ENTER,
        Some(abi::PROG_REALLOC0_COUNT_DIRECT),
    ),
    // Tail-calls realloc.
    alloc("reallocarray", abi::PROG_REALLOCARRAY_ENTER, None),
    alloc(
        "aligned_alloc",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT_DIRECT),
    ),
    // These three end in aligned_alloc, which counts them in alloc-only mode.
    alloc("posix_memalign", abi::PROG_POSIX_MEMALIGN_ENTER, None),
    alloc("memalign", abi::PROG_ALIGNED_ALLOC_ENTER, None),
    alloc("valloc", abi::PROG_VALLOC_ENTER, None),
    release("free"),
];

/// Name prefixes of musl's malloc internals.
const INTERNAL_PREFIXES: &[&str] = &[
    "__libc_malloc",
    "__libc_free",
    "__libc_realloc",
    "__malloc_",
];

const MARKERS: &[&str] = &["__libc_malloc_impl", "__malloc_replaced", "malloc"];

impl Allocator for Musl {
    fn name(&self) -> &'static str {
        "musl"
    }

    /// musl's `libc.so` (glibc's is a linker script, never mapped) or `ld-musl-*.so.1`.
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name == b"libc.so" || (name.starts_with(b"ld-musl-") && name.ends_with(b".so.1"))
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        MARKERS
    }

    /// Static musl: mallocng's internals (`__libc_malloc_impl`, `__malloc_replaced`, global
    /// symbols in `.symtab` of a `musl-gcc -static` program) and a `malloc`. A malloc linked
    /// over musl's is another allocator's, found by its own markers; musl's table would then
    /// probe that malloc too, so musl is not reported when one of them is there.
    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        let replaced = super::REGISTRY
            .iter()
            .filter(|a| a.name() != self.name() && a.name() != "glibc")
            .any(|a| a.defined_in(s) == Some(""));
        (s.has("__libc_malloc_impl") && s.has("__malloc_replaced") && s.has("malloc") && !replaced)
            .then_some("")
    }

    fn owns_function(&self, name: &str) -> bool {
        PROBES.iter().any(|p| p.symbol == name)
            || INTERNAL_PREFIXES.iter().any(|p| name.starts_with(p))
            || matches!(name, "default_malloc" | "alloc_slot" | "alloc_group")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn musl_names() {
        assert!(Musl.holds(b"/lib/ld-musl-x86_64.so.1"));
        assert!(Musl.holds(b"/usr/lib/x86_64-linux-musl/libc.so"));
        assert!(!Musl.holds(b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
