//! The C library's allocator: glibc's malloc family, in `libc.so.6` (or an older `libc-2.x.so`).
//! musl's libc (`libc.so`, `ld-musl-*.so.1`) is taken for it too: it exports the same entry
//! points (those it lacks, like pvalloc, are optional).
use alloctrace_common as abi;

use super::{spec, Allocator, ProbeSpec};

pub struct Glibc;

pub const PROBES: &[ProbeSpec] = &[
    spec("malloc", abi::PROG_MALLOC_ENTER, true, true),
    spec("calloc", abi::PROG_CALLOC_ENTER, true, true),
    spec("realloc", abi::PROG_REALLOC_ENTER, true, true),
    spec("reallocarray", abi::PROG_REALLOCARRAY_ENTER, true, false),
    spec(
        "posix_memalign",
        abi::PROG_POSIX_MEMALIGN_ENTER,
        true,
        false,
    ),
    spec("aligned_alloc", abi::PROG_ALIGNED_ALLOC_ENTER, true, false),
    spec("memalign", abi::PROG_ALIGNED_ALLOC_ENTER, true, false),
    spec("valloc", abi::PROG_VALLOC_ENTER, true, false),
    spec("pvalloc", abi::PROG_VALLOC_ENTER, true, false),
    spec("free", abi::PROG_FREE_ENTER, false, true),
];

/// Name prefixes of glibc's allocator internals (`__libc_malloc`, `__libc_calloc`, ...).
const INTERNAL_PREFIXES: &[&str] = &["__libc_"];

impl Allocator for Glibc {
    fn name(&self) -> &'static str {
        "glibc"
    }

    /// Whether a mapped file is the C library (glibc's `libc.so.6`, older `libc-2.x.so`, musl's
    /// `libc.so`/`ld-musl-*.so.1`).
    fn holds(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        name == b"libc.so.6"
            || name == b"libc.so"
            || (name.starts_with(b"libc-") && name.ends_with(b".so"))
            || (name.starts_with(b"ld-musl-") && name.ends_with(b".so.1"))
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
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
        assert!(is_libc(b"/lib/ld-musl-x86_64.so.1"));
        assert!(is_libc(b"/tmp/x\xff/libc.so.6"));
        assert!(!is_libc(b"/usr/lib/libcrypt.so.1"));
        assert!(!is_libc(b"/usr/lib/libc++.so.1"));
    }
}
