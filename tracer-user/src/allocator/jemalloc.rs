//! jemalloc: `libjemalloc.so.2`, or linked into an executable or library under any name,
//! unprefixed (Debian's, redis's), with `je_` (`--with-jemalloc-prefix=je_`) or `_rjem_`
//! (Rust's tikv-jemallocator) before its names; its extended API (`mallocx`, `rallocx`,
//! `sdallocx`, `dallocx`) and its C++ operators.
//!
//! Disassembled (Debian's 5.3.0): no exported function calls another except operator
//! new[] (a jump to operator new), the aligned operator new (a call to aligned_alloc) and the
//! unsized deletes (jumps to free, sdallocx); realloc(NULL, n) and the aligned family run
//! jemalloc's internals, not the exported malloc, so its alloc-only programs delegate nothing.
//! `xallocx` (resizes in place, returns the usable size) is accounted as a realloc that kept
//! the address when it reached the size asked (full mode only). `nallocx` allocates nothing.
use alloctrace_common as abi;

use super::{alloc, cxx, release, Allocator, ProbeSpec, Symbols};

pub struct Jemalloc;

const PLAIN: Option<&str> = Some(abi::PROG_VALLOC_COUNT);

/// Required: the markers `detect` found it by (a linker that drops unused functions may
/// have left out any other).
pub const PROBES: &[ProbeSpec] = &[
    alloc("malloc", abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(
        "calloc",
        abi::PROG_CALLOC_ENTER,
        Some(abi::PROG_CALLOC_COUNT),
    ),
    alloc(
        "realloc",
        abi::PROG_REALLOC_ENTER,
        Some(abi::PROG_REALLOC_COUNT_DIRECT),
    ),
    release("free"),
    alloc(
        "posix_memalign",
        abi::PROG_POSIX_MEMALIGN_ENTER,
        Some(abi::PROG_POSIX_MEMALIGN_COUNT_DIRECT),
    ),
    alloc(
        "aligned_alloc",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT_DIRECT),
    ),
    alloc(
        "memalign",
        abi::PROG_ALIGNED_ALLOC_ENTER,
        Some(abi::PROG_ALIGNED_ALLOC_COUNT_DIRECT),
    ),
    alloc("valloc", abi::PROG_VALLOC_ENTER, PLAIN),
    // mallocx(size, flags), rallocx(ptr, size, flags), sdallocx(ptr, size, flags),
    // dallocx(ptr, flags).
    alloc("mallocx", abi::PROG_MALLOC_ENTER, PLAIN).required(),
    alloc(
        "rallocx",
        abi::PROG_REALLOC_ENTER,
        Some(abi::PROG_REALLOC_COUNT_DIRECT),
    ),
    // Resizes in place (`CallKind::Xallocx`); alloc-only mode cannot tell a success at the
    // entry and leaves it out (the block keeps its address: no new allocation).
    alloc("xallocx", abi::PROG_XALLOCX_ENTER, None),
    release("sdallocx").required(),
    release("dallocx"),
    alloc(cxx::NEW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ARRAY, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_NOTHROW, abi::PROG_MALLOC_ENTER, PLAIN),
    alloc(cxx::NEW_ARRAY_NOTHROW, abi::PROG_MALLOC_ENTER, PLAIN),
    // operator new(size, align) calls aligned_alloc, which counts it in alloc-only mode.
    alloc(cxx::NEW_ALIGNED, abi::PROG_MALLOC_ENTER, None),
    alloc(cxx::NEW_ARRAY_ALIGNED, abi::PROG_MALLOC_ENTER, None),
    alloc(cxx::NEW_ALIGNED_NOTHROW, abi::PROG_MALLOC_ENTER, None),
    alloc(cxx::NEW_ARRAY_ALIGNED_NOTHROW, abi::PROG_MALLOC_ENTER, None),
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

/// The prefixes a jemalloc build's names may have, and the markers of each: its extended
/// API, which no other allocator exports (tcmalloc has `nallocx` alone).
const PREFIXES: &[(&str, [&str; 2])] = &[
    ("", ["mallocx", "sdallocx"]),
    ("je_", ["je_mallocx", "je_sdallocx"]),
    ("_rjem_", ["_rjem_mallocx", "_rjem_sdallocx"]),
];

const MARKERS: &[&str] = &[
    "mallocx",
    "sdallocx",
    "je_mallocx",
    "je_sdallocx",
    "_rjem_mallocx",
    "_rjem_sdallocx",
];

/// jemalloc's internals by name (a static build's `.symtab`; its private names are
/// `je_`-prefixed, `_rjem_je_` in tikv-jemallocator's).
const INTERNAL_PREFIXES: &[&str] = &["je_", "_rjem_", "imalloc", "ifree", "isfree", "irealloc"];
const INTERNALS: &[&str] = &["malloc_default", "do_rallocx", "ixallocx_helper", "nallocx"];

impl Allocator for Jemalloc {
    fn name(&self) -> &'static str {
        "jemalloc"
    }

    /// `libjemalloc.so.2` (and any other soname version).
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name.starts_with(b"libjemalloc.so")
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        MARKERS
    }

    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        PREFIXES
            .iter()
            .find(|(_, m)| m.iter().all(|n| s.has(n)))
            .map(|(p, _)| *p)
    }

    /// `JEMALLOC_VERSION`, e.g. "5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c": the
    /// release, then the commits since it and the commit's hash.
    fn version(&self, data: &[u8]) -> Option<String> {
        let mut from = 0;
        while let Some(at) = data[from..].windows(2).position(|w| w == b"-g") {
            let g = from + at;
            from = g + 2;
            let hash = data.get(g + 2..g + 42)?;
            if !hash.iter().all(u8::is_ascii_hexdigit) {
                continue;
            }
            let start = data[..g].iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
            let text = std::str::from_utf8(&data[start..g + 42]).ok()?;
            if text.starts_with(|c: char| c.is_ascii_digit()) && text.matches('.').count() >= 2 {
                return Some(text.to_string());
            }
        }
        None
    }

    fn owns_function(&self, name: &str) -> bool {
        PROBES.iter().any(|p| p.symbol == name)
            || INTERNAL_PREFIXES.iter().any(|p| name.starts_with(p))
            || INTERNALS.contains(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_by_markers() {
        let s = |n: &[(&'static str, u64)]| Jemalloc.defined_in(&Symbols::from_pairs(n));
        assert_eq!(s(&[("mallocx", 1), ("sdallocx", 2)]), Some(""));
        assert_eq!(s(&[("je_mallocx", 1), ("je_sdallocx", 2)]), Some("je_"));
        assert_eq!(
            s(&[("_rjem_mallocx", 1), ("_rjem_sdallocx", 2)]),
            Some("_rjem_")
        );
        // tcmalloc's nallocx alone is not jemalloc.
        assert_eq!(s(&[("nallocx", 1)]), None);
    }

    #[test]
    fn version_string() {
        let data = b"\0xx\x005.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c\0-g";
        assert_eq!(
            Jemalloc.version(data).as_deref(),
            Some("5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c")
        );
        assert_eq!(Jemalloc.version(b"abc-gxyz"), None);
    }
}
