//! The allocators alloctrace knows, as a registry: which mapping of a process holds one, the
//! entry points its probes go to, and which stack frames are its own (never a hot spot's caller).
//!
//! Each allocator is one file here implementing [`Allocator`], listed once in [`REGISTRY`]
//! (after OpenTelemetry's eBPF profiler, whose `interpreter/` has one loader per runtime and a
//! list of them). glibc's is the only one today; one for jemalloc, tcmalloc, mimalloc, musl or
//! Go is a file beside it and a line in the registry.
pub mod glibc;

use crate::model::Frame;
use crate::process::procmaps::MapsLine;

/// One allocator entry point.
pub struct ProbeSpec {
    pub symbol: &'static str,
    /// The entry program (its return is always `alloc_return`, except for free).
    pub program: &'static str,
    /// Whether the function returns a block, so it needs the return probe.
    pub returns_block: bool,
    /// Optional symbols may be absent from a libc (musl has no pvalloc).
    pub required: bool,
}

pub(crate) const fn spec(
    symbol: &'static str,
    program: &'static str,
    returns_block: bool,
    required: bool,
) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program,
        returns_block,
        required,
    }
}

impl std::fmt::Debug for dyn Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What alloctrace needs to know of one allocator.
pub trait Allocator: Sync {
    /// Its name, as messages and logs say it.
    fn name(&self) -> &'static str;

    /// Whether the mapped file at `path` (bytes, as `/proc/PID/maps` names it, without
    /// ` (deleted)`) holds this allocator: the file its probes go on.
    fn holds(&self, path: &[u8]) -> bool;

    /// Its entry points and how each is probed.
    fn probes(&self) -> &'static [ProbeSpec];

    /// What its exported symbols' names start with before the table's names (memleak's
    /// `--symbols-prefix`: a jemalloc built with `--with-jemalloc-prefix=je_` exports
    /// `je_malloc`); none for a libc.
    fn symbol_prefix(&self) -> &'static str {
        ""
    }

    /// Whether a function, by its (demangled) name, belongs to this allocator: its entry points
    /// and internals.
    fn owns_function(&self, name: &str) -> bool;
}

/// Every allocator alloctrace can probe; of two that hold the same file, the first is taken.
pub const REGISTRY: &[&dyn Allocator] = &[&glibc::Glibc];

/// One allocator found in one file: what `probe::resolve` probes there.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub allocator: &'static dyn Allocator,
    /// What the file's names of its entry points start with before the table's names
    /// (`je_malloc`, `_rjem_malloc`); "" for the standard names.
    pub prefix: &'static str,
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

/// The allocators the ELF file at `path` holds, each with the prefix of its names: by the
/// file's name (a libc), or by the symbols it defines (an allocator linked into an executable,
/// a prefixed build). Empty when it holds none.
#[allow(dead_code)] // used by the engine once every process's allocators are detected (issue 20)
pub fn detect(path: &std::path::Path) -> std::io::Result<Vec<Found>> {
    use std::os::unix::ffi::OsStrExt;
    Ok(holder(path.as_os_str().as_bytes())
        .map(|allocator| Found {
            allocator,
            prefix: allocator.symbol_prefix(),
        })
        .into_iter()
        .collect())
}

/// The first mapping in a maps file (its bytes) of a file some allocator holds, and that
/// allocator.
pub fn in_maps(maps: &[u8]) -> Option<(&'static dyn Allocator, MapsLine<'_>)> {
    MapsLine::all(maps).find_map(|line| Some((holder(line.path)?, line)))
}

/// The allocator that `path` (a mapped file, as `Allocator::holds` takes it) holds, if any.
pub fn holder(path: &[u8]) -> Option<&'static dyn Allocator> {
    if !path.starts_with(b"/") {
        return None;
    }
    REGISTRY.iter().copied().find(|a| a.holds(path))
}

/// Functions that only pass a request on to the allocator, in a language's runtime rather than
/// in any allocator: C++'s operator new, Rust's global allocator shims and growth paths.
const WRAPPER_FUNCTIONS: &[&str] = &["operator new", "operator new[]", "_Znwm", "_Znam"];
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
        // A library whose name merely starts with "libc" is not libc.
        assert!(!is_allocator_frame(&frame(None, "/usr/lib/libcrypto.so.3")));
    }

    #[test]
    fn the_first_mapping_of_the_allocator_is_found() {
        let maps = b"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/prog\n\
            7f00-7f10 r--p 00000000 fe:01 42 /usr/lib/libcrypt.so.1\n\
            7f10-7f20 r--p 00000000 fe:01 43 /tmp/x\xff y/libc.so.6 (deleted)\n\
            7f20-7f30 r-xp 00001000 fe:01 43 /tmp/x\xff y/libc.so.6 (deleted)\n";
        let (_, line) = in_maps(maps).unwrap();
        assert_eq!((line.range, line.deleted), ("7f10-7f20", true));
        assert_eq!(line.path, b"/tmp/x\xff y/libc.so.6");
        assert!(in_maps(b"7f00-7f10 r--p 00000000 00:00 0 [heap]\n").is_none());
    }
}
