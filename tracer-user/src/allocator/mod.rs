//! The allocators alloctrace knows, as a registry: which files hold one (by name, or by the
//! symbols they define: `detect`), the entry points its probes go to, and which stack frames
//! are its own (never a hot spot's caller).
//!
//! Each allocator is one file here implementing [`Allocator`], listed once in [`REGISTRY`]
//! (after OpenTelemetry's eBPF profiler, whose `interpreter/` has one loader per runtime and a
//! list of them).
pub mod cxx;
mod detect;
pub mod glibc;
pub mod go;
pub mod jemalloc;
pub mod mimalloc;
pub mod musl;
#[cfg(test)]
pub(crate) mod real_files;
pub mod symbols;
pub mod tcmalloc;

#[allow(unused_imports)]
pub use detect::{defines_unknown_malloc, detect, version};
pub use symbols::Symbols;

use crate::model::Frame;

/// One allocator entry point.
pub struct ProbeSpec {
    pub symbol: &'static str,
    /// The entry program (its return is always `alloc_return`, except for free).
    pub program: &'static str,
    /// Whether the function returns a block, so it needs the return probe.
    pub returns_block: bool,
    /// Optional symbols may be absent from a build (musl has no pvalloc).
    pub required: bool,
    /// The alloc-only mode's program (an entry probe that counts the request); None when the
    /// function is not probed in that mode: it frees, or every request it serves goes through
    /// another probed function that counts it (glibc's reallocarray calls realloc; mimalloc's
    /// posix_memalign calls mi_malloc_aligned). Counting both would count one request twice:
    /// alloc-only mode has no return probe to tell nesting by.
    pub count: Option<&'static str>,
}

/// A function that returns a block, probed by `program` (full mode) and `count` (alloc-only).
pub(crate) const fn alloc(
    symbol: &'static str,
    program: &'static str,
    count: Option<&'static str>,
) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program,
        returns_block: true,
        required: false,
        count,
    }
}

/// A function that gives a block back (`ptr` in its first argument): free, sdallocx,
/// operator delete.
pub(crate) const fn release(symbol: &'static str) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program: alloctrace_common::PROG_FREE_ENTER,
        returns_block: false,
        required: false,
        count: None,
    }
}

impl ProbeSpec {
    /// The same entry point, one every build of its allocator has.
    pub(crate) const fn required(self) -> ProbeSpec {
        ProbeSpec {
            required: true,
            ..self
        }
    }
}

impl std::fmt::Debug for dyn Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What alloctrace needs to know of one allocator.
#[allow(dead_code)] // `markers`, `defined_in`, `version`: `detect`'s
pub trait Allocator: Sync {
    /// Its name, as messages, logs and the JSON report say it ("glibc", "jemalloc", ...).
    fn name(&self) -> &'static str;

    /// Whether the mapped file at `path` (bytes, as `/proc/PID/maps` names it, without
    /// ` (deleted)`) is, by its name, this allocator's library (unprefixed).
    fn holds(&self, path: &[u8]) -> bool;

    /// Its entry points and how each is probed, by their names without the prefix.
    fn probes(&self) -> &'static [ProbeSpec];

    /// The names `defined_in` looks up (`Symbols` keeps only those of a file's symbols).
    fn markers(&self) -> &'static [&'static str];

    /// Whether this allocator's code is in a file that defines `symbols` (an executable it is
    /// linked into, a library of another name, a prefixed build): the prefix of its names
    /// there ("" for the standard ones, `je_`, `_rjem_`).
    fn defined_in(&self, symbols: &Symbols) -> Option<&'static str>;

    /// Prefix for a file `holds` names: none, the library exports the standard names.
    fn symbol_prefix(&self) -> &'static str {
        ""
    }

    /// The section `version` reads.
    fn version_section(&self) -> &'static str {
        ".rodata"
    }

    /// Its version, where the file (`data`, its bytes) says it cheaply (a string in
    /// `.rodata`).
    fn version(&self, _data: &[u8]) -> Option<String> {
        None
    }

    /// Whether a function, by its (demangled) name, belongs to this allocator: its entry points
    /// and internals.
    fn owns_function(&self, name: &str) -> bool;
}

/// Every allocator alloctrace can probe; of two that hold the same file, the first is taken.
pub const REGISTRY: &[&dyn Allocator] = &[
    &glibc::Glibc,
    &musl::Musl,
    &jemalloc::Jemalloc,
    &tcmalloc::Tcmalloc,
    &mimalloc::Mimalloc,
    &go::Go,
];

/// One allocator found in one file: what `probe::resolve` probes there.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub allocator: &'static dyn Allocator,
    /// What the file's names of its entry points start with before the table's names
    /// (`je_malloc`, `_rjem_malloc`); "" for the standard names.
    pub prefix: &'static str,
}

impl Found {
    /// The allocator's version in `path` (the file it was found in), where the file says it.
    pub fn version(&self, path: &std::path::Path) -> Option<String> {
        version(path, self.allocator)
    }
}

impl PartialEq for Found {
    fn eq(&self, other: &Found) -> bool {
        self.allocator.name() == other.allocator.name() && self.prefix == other.prefix
    }
}
impl Eq for Found {}
impl std::hash::Hash for Found {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.allocator.name(), self.prefix).hash(h);
    }
}

/// The allocator that `path` (a mapped file, as `Allocator::holds` takes it) holds, if any.
pub fn holder(path: &[u8]) -> Option<&'static dyn Allocator> {
    if !path.starts_with(b"/") {
        return None;
    }
    REGISTRY.iter().copied().find(|a| a.holds(path))
}

/// Functions that only pass a request on to the allocator, in a language's runtime rather than
/// in any allocator: C++'s operator new and delete (`cxx`), Rust's global allocator shims and
/// growth paths.
const WRAPPER_FUNCTIONS: &[&str] = &["operator new", "operator new[]"];
/// Name prefixes of those wrappers.
const WRAPPER_PREFIXES: &[&str] = &[
    "__rust_alloc",
    "__rust_realloc",
    "__rdl_",
    "__rg_",
    "alloc::alloc::",
    "alloc::raw_vec::",
    "operator new(",
    "operator new[](",
];

/// The one rule for "is this frame the allocator's": in a file an allocator holds (by its
/// module, so unsymbolized frames count too), a function of an allocator, or a language
/// runtime's wrapper around one. The analyzers skip such frames to find who asked for memory.
pub fn is_allocator_frame(f: &Frame) -> bool {
    let in_file = f.module.as_deref().is_some_and(|m| {
        let m = m.strip_suffix(" (deleted)").unwrap_or(m);
        REGISTRY.iter().any(|a| a.holds(m.as_bytes()))
    });
    in_file
        || f.function.as_deref().is_some_and(|name| {
            REGISTRY.iter().any(|a| a.owns_function(name))
                || WRAPPER_FUNCTIONS.contains(&name)
                || cxx::is_operator_new_or_delete(name)
                || WRAPPER_PREFIXES.iter().any(|p| name.starts_with(p))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, module: &str) -> Frame {
        Frame {
            function: function.map(Into::into),
            module: Some(module.into()),
            ..Default::default()
        }
    }

    #[test]
    fn allocator_frames() {
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        assert!(is_allocator_frame(&frame(None, libc)));
        assert!(is_allocator_frame(&frame(None, "/lib/libc-2.31.so")));
        assert!(is_allocator_frame(&frame(None, "/lib/ld-musl-x86_64.so.1")));
        assert!(is_allocator_frame(&frame(Some("__libc_malloc"), libc)));
        assert!(is_allocator_frame(&frame(Some("malloc"), "/usr/bin/prog")));
        assert!(is_allocator_frame(&frame(
            Some("__rust_alloc"),
            "/usr/bin/prog"
        )));
        assert!(is_allocator_frame(&frame(
            Some("alloc::raw_vec::finish_grow"),
            "/usr/bin/prog"
        )));
        assert!(is_allocator_frame(&frame(
            Some("_Znwm"),
            "/usr/lib/libstdc++.so.6"
        )));
        assert!(!is_allocator_frame(&frame(Some("parse"), "/usr/bin/prog")));
        // Every allocator's frames: by its library, and by name in a static or prefixed build.
        let je = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
        let tc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10";
        let mi = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0";
        let musl = "/usr/lib/x86_64-linux-musl/libc.so";
        for lib in [je, tc, mi, musl] {
            assert!(is_allocator_frame(&frame(None, lib)), "{lib}");
        }
        let prog = "/usr/bin/prog";
        for f in [
            "je_malloc_default",
            "_rjem_mallocx",
            "_rjem_je_arena_malloc_hard",
            "imalloc_body",
            "mallocx",
            "sdallocx",
            "tc_malloc",
            "tcmalloc::ThreadCache::FetchFromCentralCache",
            "mi_malloc_aligned",
            "_mi_malloc_generic",
            "__libc_malloc_impl",
            "_int_malloc",
            "operator delete(void*, unsigned long)",
            "_ZdlPvm",
            "operator new[](unsigned long)",
        ] {
            assert!(is_allocator_frame(&frame(Some(f), prog)), "{f}");
        }
        for f in ["main", "mix", "tcp_connect", "jemalloc_user"] {
            assert!(!is_allocator_frame(&frame(Some(f), prog)), "{f}");
        }
        // A library whose name merely starts with "libc" is not libc.
        assert!(!is_allocator_frame(&frame(None, "/usr/lib/libcrypto.so.3")));
    }
}
