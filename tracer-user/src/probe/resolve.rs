//! Where each of an allocator's functions is probed in its file: symbols to file offsets, the
//! offset on each function `placement` decides, decided once per binary and mode in a run.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags};

use super::placement::{self, Mode};
use super::{Entry, ProbeError, ProbeSpec};
use crate::allocator::Found;

/// Identifies a binary across attaches within a run: its build id, or else path and inode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BinaryKey {
    BuildId(Vec<u8>),
    File { path: PathBuf, dev: u64, ino: u64 },
}

type Resolved = Vec<(&'static ProbeSpec, Entry)>;
type Decisions = HashMap<(BinaryKey, Found, Mode), Resolved>;

/// Decisions already made in this run, per binary and mode (system-wide attaches decode once).
fn cache() -> &'static Mutex<Decisions> {
    static CACHE: OnceLock<Mutex<Decisions>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Resolves every probed symbol of `libc` (the table of `found`, an allocator it holds) to the
/// file offsets its probes go to, placed as `mode` says (`ALLOCTRACE_PROBE_AT`, read into the
/// `Config`; see `placement`). glibc exports several names for one function (memalign and
/// aligned_alloc are one address in 2.36): each address is probed once, under the first name
/// of the table, or it would count every call twice.
pub fn resolve(libc: &Path, found: Found, mode: Mode) -> Result<Resolved, ProbeError> {
    let path = libc.display().to_string();
    let data = fs::read(libc).map_err(|source| ProbeError::Read {
        path: path.clone(),
        source,
    })?;
    let elf = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let key = match elf.build_id() {
        Ok(Some(id)) => BinaryKey::BuildId(id.to_vec()),
        _ => {
            let meta = fs::metadata(libc).map_err(|source| ProbeError::Read {
                path: path.clone(),
                source,
            })?;
            BinaryKey::File {
                path: libc.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
            }
        }
    };
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache.get(&(key.clone(), found, mode)) {
        log::info!("{path}: probe placement decided already in this run");
        return Ok(hit.clone());
    }
    let out = resolve_elf(&path, &data, &elf, found, mode)?;
    cache.insert((key, found, mode), out.clone());
    Ok(out)
}

/// A function's bytes in the file, from its entry to its end (its symbol's size).
fn function_bytes(data: &[u8], file_offset: u64, size: u64) -> &[u8] {
    let start = (file_offset as usize).min(data.len());
    let end = (file_offset.saturating_add(size.max(1)) as usize).min(data.len());
    &data[start..end]
}

/// How many of a function's arguments its probes read, full mode's and alloc-only mode's
/// programs both (placement decides one offset for the two).
fn args_read(p: &ProbeSpec) -> usize {
    let count = p.count.map_or(0, alloctrace_common::args_read);
    alloctrace_common::args_read(p.program).max(count)
}

/// Where a function that is one unconditional direct jump (after an `endbr64`) goes.
fn jump_target(code: &[u8], vaddr: u64) -> Option<u64> {
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    let skip = if code.starts_with(&ENDBR64) { 4 } else { 0 };
    let at = vaddr + skip as u64;
    match code.get(skip..)? {
        [0xe9, a, b, c, d, ..] => Some(
            at.wrapping_add(5)
                .wrapping_add(i32::from_le_bytes([*a, *b, *c, *d]) as u64),
        ),
        [0xeb, r, ..] => Some(at.wrapping_add(2).wrapping_add(*r as i8 as u64)),
        _ => None,
    }
}

/// Executable segments as `(vaddr, bytes in the file)`.
fn exec_segments<'d>(data: &'d [u8], elf: &object::File<'d>) -> Vec<(u64, &'d [u8])> {
    const PF_X: u32 = 1;
    elf.segments()
        .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
        .filter_map(|s| {
            let (off, len) = s.file_range();
            let bytes = data.get(off as usize..off.checked_add(len)? as usize)?;
            Some((s.address(), bytes))
        })
        .collect()
}

fn resolve_elf(
    path: &str,
    data: &[u8],
    elf: &object::File<'_>,
    found: Found,
    mode: Mode,
) -> Result<Resolved, ProbeError> {
    let probes = found.allocator.probes();
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        let Ok(name) = sym.name() else { continue };
        // The table's names are unprefixed (a jemalloc built with a prefix exports je_malloc).
        let Some(name) = name.strip_prefix(found.prefix) else {
            continue;
        };
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        if probes.iter().any(|p| p.symbol == name) {
            by_name.entry(name).or_insert((sym.address(), sym.size()));
        }
    }
    if probes.iter().any(|p| !by_name.contains_key(p.symbol)) {
        go_functions(path, elf, probes, &mut by_name)?;
    }
    let path = path.to_string();
    let probed: BTreeSet<u64> = by_name.values().map(|&(vaddr, _)| vaddr).collect();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for p in probes {
        let Some(&(vaddr, size)) = by_name.get(p.symbol) else {
            if p.required {
                return Err(ProbeError::MissingSymbol {
                    path,
                    symbol: p.symbol,
                });
            }
            log::info!("{path} has no {}: not probed", p.symbol);
            continue;
        };
        let file_offset = elf
            .segments()
            .find_map(|s| {
                let (start, size) = (s.address(), s.size());
                (vaddr >= start && vaddr < start + size).then(|| vaddr - start + s.file_range().0)
            })
            .ok_or_else(|| ProbeError::Elf {
                path: path.clone(),
                reason: format!("{} at {vaddr:#x} is in no segment", p.symbol),
            })?;
        // A stub that only jumps to another probed function (jemalloc's operator new[] to
        // operator new) is seen there, with the caller's return address still on the stack:
        // probing both would count its calls twice in alloc-only mode.
        let code = function_bytes(data, file_offset, size);
        if jump_target(code, vaddr).is_some_and(|t| t != vaddr && probed.contains(&t)) {
            log::info!(
                "{} only jumps to another probed function: probed there",
                p.symbol
            );
            continue;
        }
        if seen.contains(&file_offset) {
            log::info!("{} is an alias of an already probed function", p.symbol);
            continue;
        }
        seen.push(file_offset);
        let placement = if placed_by_go_rule(p) {
            match go_placement(&path, elf, p.symbol, code) {
                Ok(placement) => placement,
                Err(e) if !p.required => {
                    log::warn!("{e}");
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            placement::place(code, vaddr, mode, &BTreeSet::new(), args_read(p))
        };
        out.push((
            p,
            vaddr,
            Entry {
                file_offset: file_offset + placement.offset,
                function_offset: file_offset,
                placement,
            },
        ));
    }
    // A probe moved past the entry must not be the target of a branch from anywhere else in
    // the binary either (a cold part of the function jumping back, another function's tail
    // jump): one linear sweep of the code checks every moved probe at once.
    let windows: Vec<(u64, u64)> = out
        .iter()
        .filter(|(p, _, e)| e.placement.offset > 0 && !placed_by_go_rule(p))
        .map(|(_, vaddr, e)| (*vaddr, vaddr + e.placement.offset))
        .collect();
    if !windows.is_empty() {
        let mut outside = BTreeSet::new();
        for (vaddr, bytes) in exec_segments(data, elf) {
            outside.extend(placement::branch_targets_in(bytes, vaddr, &windows));
        }
        if !outside.is_empty() {
            let moved = |(p, _, e): &&mut (&ProbeSpec, u64, Entry)| {
                e.placement.offset > 0 && !placed_by_go_rule(p)
            };
            for (p, vaddr, e) in out.iter_mut().filter(moved) {
                let size = by_name.get(p.symbol).map_or(0, |s| s.1);
                let code = function_bytes(data, e.function_offset, size);
                e.placement = placement::place(code, *vaddr, mode, &outside, args_read(p));
                e.file_offset = e.function_offset + e.placement.offset;
            }
        }
    }
    for (p, _, e) in &out {
        log::info!("probe placement: {} {}", p.symbol, e.placement);
    }
    Ok(out.into_iter().map(|(p, _, e)| (p, e)).collect())
}

/// Go's probe goes on its stack check's branch, whatever the placement mode: its program
/// tells a pass that will go through `runtime.morestack` (and come back to the entry) by the
/// flags that branch reads, so it counts each call once. Nothing branches into a Go function's
/// prologue but its own morestack path, which returns to the entry.
fn placed_by_go_rule(p: &ProbeSpec) -> bool {
    matches!(
        p.program,
        alloctrace_common::PROG_GO_MALLOCGC_COUNT | alloctrace_common::PROG_GO_GC_COUNT
    )
}

/// The functions of `probes` that a Go binary stripped of `.symtab` names in its function
/// table (`.gopclntab`), into `by_name`; nothing for a binary without one. A table alloctrace
/// cannot read is an error naming why (its Go version).
fn go_functions<'a>(
    path: &str,
    elf: &object::File<'_>,
    probes: &'a [ProbeSpec],
    by_name: &mut BTreeMap<&'a str, (u64, u64)>,
) -> Result<(), ProbeError> {
    let Some(functions) = crate::golang::pclntab::of_elf(elf) else {
        return Ok(());
    };
    let functions = functions.map_err(|e| ProbeError::Mode(format!("{path}: {e}")))?;
    for p in probes {
        if let Some(found) = functions.find(p.symbol) {
            by_name.entry(p.symbol).or_insert(found);
        }
    }
    Ok(())
}

/// The placement of a Go runtime function's probe (see `placed_by_go_rule`), once the
/// binary's Go version is one alloctrace supports (`go::check_version`).
fn go_placement(
    path: &str,
    elf: &object::File<'_>,
    symbol: &str,
    code: &[u8],
) -> Result<placement::Placement, ProbeError> {
    use crate::allocator::go;
    use object::ObjectSection;
    let version = elf
        .section_by_name(".go.buildinfo")
        .and_then(|s| s.data().ok())
        .and_then(go::buildinfo_version);
    let refuse = |reason: String| ProbeError::Mode(format!("{path}: {reason}"));
    go::check_version(version.as_deref()).map_err(refuse)?;
    let offset = go::stack_check_branch(code).ok_or_else(|| {
        refuse(format!(
            "{symbol} does not start with Go's stack check (cmp against g.stackguard0, then \
             jbe): not probed"
        ))
    })?;
    Ok(placement::Placement {
        offset,
        probed: "jbe (to runtime.morestack)".into(),
        emulated: true,
        why: placement::Why::Past(vec!["Go's stack check".into()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(allocator: &'static dyn crate::allocator::Allocator) -> Found {
        Found {
            allocator,
            prefix: "",
        }
    }

    #[test]
    fn a_jump_stub_is_followed() {
        // jmp rel32 (+0x10 from the next instruction), after an endbr64; jmp rel8 backwards.
        let stub = [0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x10, 0, 0, 0];
        assert_eq!(jump_target(&stub, 0x1000), Some(0x1000 + 9 + 0x10));
        assert_eq!(jump_target(&[0xeb, 0xfe], 0x2000), Some(0x2000));
        assert_eq!(jump_target(&[0x55, 0xe9, 0, 0, 0, 0], 0x2000), None);
    }

    #[test]
    fn system_libc_resolves_every_required_symbol_once() {
        let (libc, alloc) = crate::target::own_libc().unwrap();
        let alloc = found(alloc);
        let entries = resolve(&libc, alloc, Mode::Auto).unwrap();
        for p in alloc.allocator.probes().iter().filter(|p| p.required) {
            assert!(
                entries.iter().any(|(e, _)| e.symbol == p.symbol),
                "{} missing",
                p.symbol
            );
        }
        let mut offsets: Vec<u64> = entries.iter().map(|(_, e)| e.file_offset).collect();
        let n = offsets.len();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), n, "an address is probed twice");
    }

    /// On the system libc every probe moved past its entry lands on an instruction the kernel
    /// emulates, and `entry` mode keeps every probe at its function's entry.
    #[test]
    fn placement_of_the_system_libc() {
        let (libc, alloc) = crate::target::own_libc().unwrap();
        let alloc = found(alloc);
        let auto = resolve(&libc, alloc, Mode::Auto).unwrap();
        for (p, e) in &auto {
            eprintln!("{} {}", p.symbol, e.placement);
            assert_eq!(e.file_offset, e.function_offset + e.placement.offset);
            if e.placement.offset > 0 {
                assert!(e.placement.emulated, "{} {}", p.symbol, e.placement);
            }
        }
        let entry = resolve(&libc, alloc, Mode::Entry).unwrap();
        assert!(entry
            .iter()
            .all(|(_, e)| e.file_offset == e.function_offset));
        // Cached: the same decisions again.
        let again = resolve(&libc, alloc, Mode::Auto).unwrap();
        assert!(again.iter().map(|(_, e)| e).eq(auto.iter().map(|(_, e)| e)));
    }

    /// Every required symbol resolves, no address is probed twice, and the placement figures
    /// (probes moved past the entry onto an emulated instruction vs left at it).
    #[test]
    fn every_allocator_resolves_in_its_files() {
        let dir = crate::allocator::real_files::built();
        let files: Vec<PathBuf> = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-musl/libc.so",
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
        ]
        .iter()
        .map(PathBuf::from)
        .chain(["glibc_static", "musl_static", "je_static", "rjem_static"].map(|e| dir.join(e)))
        .collect();
        for file in files {
            for found in crate::allocator::detect(&file).unwrap() {
                let entries = resolve(&file, found, Mode::Auto).unwrap();
                // Debian's libraries: the functions the disassembly was checked on.
                let expected: &[&str] = match file.file_name().and_then(|n| n.to_str()) {
                    Some("libjemalloc.so.2") => &[
                        "malloc",
                        "calloc",
                        "realloc",
                        "free",
                        "posix_memalign",
                        "aligned_alloc",
                        "memalign",
                        "valloc",
                        "mallocx",
                        "rallocx",
                        "xallocx",
                        "sdallocx",
                        "dallocx",
                        "_Znwm",
                        "_ZdlPvm",
                        "_ZnwmSt11align_val_t",
                    ],
                    Some(n) if n.starts_with("libtcmalloc") => &[
                        "tc_malloc",
                        "tc_calloc",
                        "tc_realloc",
                        "tc_free",
                        "tc_memalign",
                        "tc_posix_memalign",
                        "tc_new",
                        "tc_new_aligned",
                        "tc_free_sized",
                    ],
                    Some("libmimalloc.so.2") => &[
                        "mi_malloc",
                        "mi_calloc",
                        "mi_realloc",
                        "mi_free",
                        "mi_malloc_aligned",
                        "mi_zalloc_aligned",
                        "mi_realloc_aligned",
                        "mi_new",
                        "mi_free_size",
                    ],
                    Some("libc.so") => &["malloc", "calloc", "realloc", "free", "aligned_alloc"],
                    _ => &[],
                };
                for sym in expected {
                    assert!(
                        entries.iter().any(|(e, _)| e.symbol == *sym),
                        "{}: {sym} not probed",
                        file.display()
                    );
                }
                for p in found.allocator.probes().iter().filter(|p| p.required) {
                    assert!(
                        entries.iter().any(|(e, _)| e.symbol == p.symbol),
                        "{}: {} missing",
                        file.display(),
                        p.symbol
                    );
                }
                let mut offsets: Vec<u64> = entries.iter().map(|(_, e)| e.file_offset).collect();
                let n = offsets.len();
                offsets.sort_unstable();
                offsets.dedup();
                assert_eq!(
                    offsets.len(),
                    n,
                    "{}: an address probed twice",
                    file.display()
                );
                let moved = entries
                    .iter()
                    .filter(|(_, e)| e.placement.offset > 0)
                    .count();
                let emulated = entries.iter().filter(|(_, e)| e.placement.emulated).count();
                for (p, e) in &entries {
                    if e.placement.offset > 0 {
                        assert!(e.placement.emulated, "{} {}", p.symbol, e.placement);
                    }
                    if !e.placement.emulated {
                        eprintln!("  {} {}", p.symbol, e.placement);
                    }
                }
                eprintln!(
                    "{} {}{}: {n} probes, {moved} moved past the entry, {emulated} emulated, {} \
                     single-stepped",
                    file.display(),
                    found.prefix,
                    found.allocator.name(),
                    n - emulated
                );
            }
        }
    }
}
