//! Which allocators an ELF file holds: by its name (a known library: cheap), else by the
//! symbols it defines (an executable with an allocator linked in, a library of another name,
//! a prefixed build), read piecewise (`object`'s `ReadCache`: the headers and symbol tables
//! only, so a large file costs only those). Not a memory map: a file truncated while mapped
//! would fault (SIGBUS) in alloctrace, where a short read is an error. Decided once per file
//! (device and inode) in a run.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use object::read::ReadCache;
use object::{Object, ObjectSection};

use super::{Allocator, Found, Symbols, REGISTRY};

/// What a file holds: the allocators found, and whether it defines a `malloc` none of them
/// claims (an allocator alloctrace does not know: chromium's PartitionAlloc).
#[derive(Clone, Debug, Default)]
struct Detected {
    found: Vec<Found>,
    unknown_malloc: bool,
}

type Cache = HashMap<(u64, u64), Detected>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The allocators the ELF file at `path` holds, each with the prefix of its names, in
/// `REGISTRY` order: by the file's name (a known library: that allocator, unprefixed), else by
/// the symbols it defines (`.dynsym` and `.symtab`). Several when several are linked in (a
/// static executable with jemalloc and glibc's malloc both). Empty when it holds none, or is
/// not an ELF file.
pub fn detect(path: &Path) -> io::Result<Vec<Found>> {
    Ok(detected(path)?.found)
}

/// Whether the ELF file at `path` defines its own `malloc` that is no allocator's `detect`
/// knows (chromium's PartitionAlloc, a program's own): its allocations cannot be counted,
/// which a caller says rather than report a silent zero.
pub fn defines_unknown_malloc(path: &Path) -> io::Result<bool> {
    Ok(detected(path)?.unknown_malloc)
}

fn detected(path: &Path) -> io::Result<Detected> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let key = (meta.dev(), meta.ino());
    if let Some(hit) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let found = detect_uncached(path, &file)?;
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, found.clone());
    Ok(found)
}

fn detect_uncached(path: &Path, file: &File) -> io::Result<Detected> {
    let by_name: Vec<Found> = REGISTRY
        .iter()
        .filter(|a| a.holds(path.as_os_str().as_bytes()))
        .map(|&allocator| Found {
            allocator,
            prefix: allocator.symbol_prefix(),
        })
        .collect();
    if !by_name.is_empty() {
        return Ok(Detected {
            found: by_name,
            unknown_malloc: false,
        });
    }
    let data = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&data) else {
        return Ok(Detected::default());
    };
    let wanted: HashSet<&'static str> = REGISTRY
        .iter()
        .flat_map(|a| a.markers().iter().copied())
        .chain(["malloc"])
        .collect();
    let mut symbols = Symbols::of_elf(&elf, &wanted);
    // A Go binary stripped of .symtab still names its functions in .gopclntab.
    if !symbols.has(super::go::MALLOCGC) {
        symbols.add_go_functions(&elf, &wanted);
    }
    let found: Vec<Found> = REGISTRY
        .iter()
        .filter_map(|&allocator| {
            let prefix = allocator.defined_in(&symbols)?;
            Some(Found { allocator, prefix })
        })
        .collect();
    let unknown_malloc = symbols.has("malloc") && !found.iter().any(|f| f.prefix.is_empty());
    Ok(Detected {
        found,
        unknown_malloc,
    })
}

/// The version of `allocator` in the file at `path`, where its read-only data says it
/// (`Allocator::version`); None when it does not, or the file cannot be read.
pub fn version(path: &Path, allocator: &dyn Allocator) -> Option<String> {
    let file = File::open(path).ok()?;
    let data = ReadCache::new(&file);
    let elf = object::File::parse(&data).ok()?;
    let section = elf
        .section_by_name(allocator.version_section())?
        .data()
        .ok()?;
    allocator.version(section)
}
