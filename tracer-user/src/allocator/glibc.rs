//! glibc's malloc family: in `libc.so.6` (or an older `libc-2.x.so`), or linked statically
//! into an executable (found by its internals in `.symtab`).
use alloctrace_common as abi;

use super::symbols::text_after;
use super::{alloc, release, Allocator, ProbeSpec, Symbols};

pub struct Glibc;

/// glibc hands realloc(NULL, n) and the aligned family's small alignments to the exported
/// malloc (`__libc_malloc`, one address): its alloc-only programs count those at the outer
/// call and have malloc skip them (the delegation in tracer-ebpf's `alloc::count`).
pub const PROBES: &[ProbeSpec] = &[
    alloc(
        "malloc",
        abi::PROG_MALLOC_ENTER,
        Some(abi::PROG_MALLOC_COUNT),
    )
    .required(),
    alloc(
        "calloc",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    )
    .required(),
    alloc(
        "realloc",
        abi::PROG_REALLOC_ENTER,
        Some(abi::PROG_REALLOC_COUNT),
    )
    .required(),
    // Calls realloc, which counts it in alloc-only mode.
    alloc("reallocarray", abi::PROG_REALLOCARRAY_ENTER, None),
    alloc(
        "posix_memalign",
        abi::PROG_POSIX_MEMALIGN_ENTER,
        Some(abi::PROG_POSIX_MEMALIGN_COUNT),
    ),
    alloc(
        "aligned_alloc",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT),
    ),
    alloc(
        "memalign",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT),
    ),
    alloc(
        "valloc",
        abi::PROG_VALLOC_ENTER,
        Some(abi::PROG_VALLOC_COUNT),
    ),
    alloc(
        "pvalloc",
        abi::PROG_VALLOC_ENTER,
        Some(abi::PROG_VALLOC_COUNT),
    ),
    release("free").required(),
];

/// Name prefixes of glibc's allocator internals (`__libc_malloc`, `_int_malloc`, ...).
const INTERNAL_PREFIXES: &[&str] = &["__libc_", "_int_", "_mid_memalign", "tcache_"];

const MARKERS: &[&str] = &["_int_malloc", "__libc_malloc", "malloc"];

impl Allocator for Glibc {
    fn name(&self) -> &'static str {
        "glibc"
    }

    /// glibc's `libc.so.6`, or an older `libc-2.x.so`.
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name == b"libc.so.6" || (name.starts_with(b"libc-2.") && name.ends_with(b".so"))
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        MARKERS
    }

    /// Static glibc: its malloc internals (`_int_malloc`, a local symbol in `.symtab`), and
    /// `malloc` the alias of `__libc_malloc`, not another allocator's malloc linked over it.
    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        (s.has("_int_malloc") && s.same("malloc", "__libc_malloc")).then_some("")
    }

    /// "GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36." → "2.36".
    fn version(&self, data: &[u8]) -> Option<String> {
        let v = text_after(data, b"release version ", b"\n\0")?;
        Some(v.trim_end_matches('.').to_string())
    }

    fn owns_function(&self, name: &str) -> bool {
        PROBES.iter().any(|p| p.symbol == name)
            || INTERNAL_PREFIXES.iter().any(|p| name.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_names() {
        let is_libc = |p: &[u8]| Glibc.holds(p);
        assert!(is_libc(b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc(b"/lib/libc-2.31.so"));
        assert!(is_libc(b"/tmp/x\xff/libc.so.6"));
        assert!(!is_libc(b"/lib/ld-musl-x86_64.so.1"));
        assert!(!is_libc(b"/usr/lib/libcrypt.so.1"));
        assert!(!is_libc(b"/usr/lib/libc++.so.1"));
    }

    #[test]
    fn static_glibc_is_its_internals_with_malloc_its_own() {
        let glibc = Symbols::from_pairs(&[
            ("_int_malloc", 0x10),
            ("__libc_malloc", 0x20),
            ("malloc", 0x20),
        ]);
        assert_eq!(Glibc.defined_in(&glibc), Some(""));
        // Another allocator's malloc linked over glibc's.
        let over = Symbols::from_pairs(&[
            ("_int_malloc", 0x10),
            ("__libc_malloc", 0x20),
            ("malloc", 0x30),
        ]);
        assert_eq!(Glibc.defined_in(&over), None);
        // tcmalloc and mimalloc alias __libc_malloc too, without glibc's internals.
        let tc = Symbols::from_pairs(&[("__libc_malloc", 0x20), ("malloc", 0x20)]);
        assert_eq!(Glibc.defined_in(&tc), None);
    }
}
