//! The table of allocator entry points and how each is probed, and attaching it to a libc.
//! Where on each function the probes go is `placement`'s decision.
pub mod follow;
pub mod placement;
pub mod retarget;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::num::NonZeroU32;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use alloctrace_common as abi;
use aya::programs::{
    uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    ProgramError, UProbe,
};
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags};

use placement::{Mode, Placement};

use crate::model::TraceMode;

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

const fn spec(
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

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF shared object alloctrace can read: {reason}")]
    Elf { path: String, reason: String },
    #[error("{path} does not export {symbol}: is it really a libc?")]
    MissingSymbol { path: String, symbol: &'static str },
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("cannot load eBPF program {program}: {source}")]
    Load {
        program: &'static str,
        source: Box<ProgramError>,
    },
    #[error("{0}")]
    Mode(String),
    #[error(
        "cannot attach {kind} to {symbol} in {path}: {source}{}",
        attach_hint(source)
    )]
    Attach {
        kind: &'static str,
        symbol: &'static str,
        path: String,
        source: Box<ProgramError>,
    },
}

/// The likely cause of an attach refused with EINVAL on a function alloctrace could read:
/// another tracer's uprobe at the same address with a different reference-counter offset.
/// BCC 0.26's tools (memleak-bpfcc among them) set a garbage one (iovisor/bcc#5236).
fn attach_hint(e: &ProgramError) -> &'static str {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EINVAL) {
                return " (is another tracer probing the same function? The kernel refuses a \
                    second uprobe whose reference-counter offset differs, as BCC 0.26's tools \
                    set it: dmesg says \"ref_ctr_offset mismatch\"; stop that tracer first)";
            }
        }
        cur = err.source();
    }
    ""
}

/// Where a symbol's probes go, as a file offset (what a uprobe is attached at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The probed instruction: the function's entry plus `placement.offset`. The entry probe
    /// and, for functions that return a block, the return probe both go here: everything
    /// before it leaves `rsp` (so the return address at `[rsp]`) and the arguments untouched.
    pub file_offset: u64,
    /// The function's entry.
    pub function_offset: u64,
    pub placement: Placement,
}

/// Identifies a binary across attaches within a run: its build id, or else path and inode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BinaryKey {
    BuildId(Vec<u8>),
    File { path: PathBuf, dev: u64, ino: u64 },
}

type Resolved = Vec<(&'static ProbeSpec, Entry)>;

/// Decisions already made in this run, per binary and mode (system-wide attaches decode once).
fn cache() -> &'static Mutex<HashMap<(BinaryKey, Mode), Resolved>> {
    static CACHE: OnceLock<Mutex<HashMap<(BinaryKey, Mode), Resolved>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Resolves every probed symbol of `libc` to the file offsets its probes go to, placed as
/// `ALLOCTRACE_PROBE_AT` says (`auto` by default, see `placement`). glibc exports several
/// names for one function (memalign and aligned_alloc are one address in 2.36): each address
/// is probed once, under the first name of the table, or it would count every call twice.
pub fn resolve(libc: &Path) -> Result<Vec<(&'static ProbeSpec, Entry)>, ProbeError> {
    let mode = Mode::from_env().map_err(ProbeError::Mode)?;
    resolve_with(libc, mode)
}

pub fn resolve_with(libc: &Path, mode: Mode) -> Result<Resolved, ProbeError> {
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
    if let Some(hit) = cache.get(&(key.clone(), mode)) {
        log::info!("probe placement: {path}: decided already in this run");
        return Ok(hit.clone());
    }
    let out = resolve_elf(&path, &data, &elf, mode)?;
    cache.insert((key, mode), out.clone());
    Ok(out)
}

/// A function's bytes in the file, from its entry to its end (its symbol's size).
fn function_bytes(data: &[u8], file_offset: u64, size: u64) -> &[u8] {
    let start = (file_offset as usize).min(data.len());
    let end = (file_offset.saturating_add(size.max(1)) as usize).min(data.len());
    &data[start..end]
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
    mode: Mode,
) -> Result<Resolved, ProbeError> {
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        let Ok(name) = sym.name() else { continue };
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        if PROBES.iter().any(|p| p.symbol == name) {
            by_name.entry(name).or_insert((sym.address(), sym.size()));
        }
    }
    let path = path.to_string();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for p in PROBES {
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
        if seen.contains(&file_offset) {
            log::info!("{} is an alias of an already probed function", p.symbol);
            continue;
        }
        seen.push(file_offset);
        let code = function_bytes(data, file_offset, size);
        let placement = placement::place(code, vaddr, mode, &BTreeSet::new());
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
        .filter(|(_, _, e)| e.placement.offset > 0)
        .map(|(_, vaddr, e)| (*vaddr, vaddr + e.placement.offset))
        .collect();
    if !windows.is_empty() {
        let mut outside = BTreeSet::new();
        for (vaddr, bytes) in exec_segments(data, elf) {
            outside.extend(placement::branch_targets_in(bytes, vaddr, &windows));
        }
        if !outside.is_empty() {
            for (p, vaddr, e) in out.iter_mut().filter(|(_, _, e)| e.placement.offset > 0) {
                let size = by_name.get(p.symbol).map_or(0, |s| s.1);
                let code = function_bytes(data, e.function_offset, size);
                e.placement = placement::place(code, *vaddr, mode, &outside);
                e.file_offset = e.function_offset + e.placement.offset;
            }
        }
    }
    for (p, _, e) in &out {
        log::info!("probe placement: {} {}", p.symbol, e.placement);
    }
    Ok(out.into_iter().map(|(p, _, e)| (p, e)).collect())
}

/// Which processes fire the probes.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    All,
    Pid(NonZeroU32),
}

/// Loads the programs and attaches them at `entries` of `libc`, each function's entry and return
/// probes at the one offset `placement` chose for it (a return probe only needs the return
/// address at `[rsp]`, which the instructions placement may skip leave there; two breakpoints,
/// one of them single-stepped at the entry, would cost more than the one). Return probes go
/// first: a return seen without its entry is ignored, while an entry whose return probe was not yet
/// attached would leave a stale call state behind. Then the entries of the functions that give
/// blocks back (free, the realloc family), then the others (`entry_rank`): a block is tracked
/// only once every probe that can release it is in. The other way round, a block tracked
/// before free's or realloc's probe was in would stay in the in-flight table after its real
/// release, a phantom live block, and glibc hands the same address back again and again (a
/// target allocating while alloctrace attached piled them up); this way such a release is seen
/// as one of a block allocated before tracing (an unknown free). Returns the probes attached
/// (`retarget` moves them to another task); dropping `ebpf` detaches them all (slowly: each
/// removal waits a kernel grace period, ~0.1 s here, serialized in the kernel).
///
/// In alloc-only mode each function gets its counting entry program only (see
/// `count_program`), and functions without one (free, reallocarray) are not probed.
pub fn attach(
    ebpf: &mut Ebpf,
    libc: &Path,
    entries: &[(&'static ProbeSpec, Entry)],
    scope: Scope,
    mode: TraceMode,
) -> Result<Vec<Attached>, ProbeError> {
    if std::env::var_os(FLOOR_ENV).is_some_and(|v| v == "1") {
        set_floor(ebpf)?;
    }
    if mode == TraceMode::AllocOnly {
        let names = entries
            .iter()
            .filter_map(|(spec, _)| count_program(spec.program))
            .collect();
        load_programs(ebpf, names)?;
    } else {
        let mut names: Vec<&'static str> = entries.iter().map(|(p, _)| p.program).collect();
        names.push(abi::PROG_ALLOC_RETURN);
        load_programs(ebpf, names)?;
    }
    attach_loaded(ebpf, libc, entries, scope, mode)
}

/// One attached probe: its program and link, to detach it alone (`retarget`).
#[derive(Debug)]
pub struct Attached {
    program: &'static str,
    link: UProbeLinkId,
}

/// Attaches the programs `attach` loaded, in its order, again (to another task).
pub fn attach_loaded(
    ebpf: &mut Ebpf,
    libc: &Path,
    entries: &[(&'static ProbeSpec, Entry)],
    scope: Scope,
    mode: TraceMode,
) -> Result<Vec<Attached>, ProbeError> {
    let mut attached = Vec::new();
    attach_into(ebpf, libc, entries, scope, mode, &mut attached)?;
    Ok(attached)
}

/// As `attach_loaded`, into `attached`: on an error, what was attached before it is there
/// (for the caller to take out: probes left on a task that lives would count twice).
pub fn attach_into(
    ebpf: &mut Ebpf,
    libc: &Path,
    entries: &[(&'static ProbeSpec, Entry)],
    scope: Scope,
    mode: TraceMode,
    attached: &mut Vec<Attached>,
) -> Result<(), ProbeError> {
    let path = libc.display().to_string();
    let scope = match scope {
        Scope::All => UProbeScope::AllProcesses,
        Scope::Pid(pid) => UProbeScope::OneProcess(pid),
    };
    if mode == TraceMode::AllocOnly {
        return attach_counting(ebpf, libc, entries, scope, attached);
    }
    let mut entry_order: Vec<_> = entries.iter().collect();
    entry_order.sort_by_key(|(p, _)| entry_rank(p));
    let order = entries
        .iter()
        .filter(|(p, _)| p.returns_block)
        .map(|e| (e, true))
        .chain(entry_order.into_iter().map(|e| (e, false)));
    for ((spec, entry), is_return) in order {
        let (name, kind) = if is_return {
            (abi::PROG_ALLOC_RETURN, "uretprobe")
        } else {
            (spec.program, "uprobe")
        };
        let prog: &mut UProbe = program(ebpf, name)?;
        let link = prog
            .attach(entry.file_offset, libc, scope)
            .map_err(|source| ProbeError::Attach {
                kind,
                symbol: spec.symbol,
                path: path.clone(),
                source: Box::new(source),
            })?;
        attached.push(Attached {
            program: name,
            link,
        });
    }
    Ok(())
}

/// Takes `probes` out of their programs, as links that detach when dropped: the caller
/// decides where that slow part (a kernel grace period per probe) is waited for.
pub fn take_links(ebpf: &mut Ebpf, probes: Vec<Attached>) -> Vec<UProbeLink> {
    probes
        .into_iter()
        .filter_map(|a| program(ebpf, a.program).ok()?.take_link(a.link).ok())
        .collect()
}

/// When a function's entry probe goes in, full mode (see `attach`): the functions that give
/// blocks back before those that only make them.
fn entry_rank(spec: &ProbeSpec) -> u8 {
    match spec.program {
        abi::PROG_FREE_ENTER => 0,
        abi::PROG_REALLOC_ENTER | abi::PROG_REALLOCARRAY_ENTER => 1,
        _ => 2,
    }
}

/// The alloc-only mode's program for a full-mode entry program, if the function is probed
/// at all in that mode: reallocarray calls realloc, which counts it, and free counts nothing.
pub fn count_program(entry_program: &str) -> Option<&'static str> {
    Some(match entry_program {
        abi::PROG_MALLOC_ENTER => abi::PROG_MALLOC_COUNT,
        abi::PROG_CALLOC_ENTER => abi::PROG_CALLOC_COUNT,
        abi::PROG_REALLOC_ENTER => abi::PROG_REALLOC_COUNT,
        abi::PROG_POSIX_MEMALIGN_ENTER => abi::PROG_POSIX_MEMALIGN_COUNT,
        abi::PROG_ALIGNED_ALLOC_ENTER => abi::PROG_ALIGNED_ALLOC_COUNT,
        abi::PROG_VALLOC_ENTER => abi::PROG_VALLOC_COUNT,
        _ => return None,
    })
}

/// Alloc-only mode: one counting entry probe per function, at the placed offset.
fn attach_counting(
    ebpf: &mut Ebpf,
    libc: &Path,
    entries: &[(&'static ProbeSpec, Entry)],
    scope: UProbeScope,
    attached: &mut Vec<Attached>,
) -> Result<(), ProbeError> {
    let counted: Vec<(&ProbeSpec, &Entry, &'static str)> = entries
        .iter()
        .filter_map(|(spec, e)| count_program(spec.program).map(|prog| (*spec, e, prog)))
        .collect();
    for (spec, entry, name) in &counted {
        let prog: &mut UProbe = program(ebpf, name)?;
        let link = prog
            .attach(entry.file_offset, libc, scope)
            .map_err(|source| ProbeError::Attach {
                kind: "uprobe",
                symbol: spec.symbol,
                path: libc.display().to_string(),
                source: Box::new(source),
            })?;
        attached.push(Attached {
            program: name,
            link,
        });
    }
    Ok(())
}

/// `cargo xtask bench` only: with `ALLOCTRACE_BENCH_FLOOR=1` the probes are attached where they
/// would be but their programs return at once (the CONTROL_STOPPED switch, set before attaching):
/// the cost of the probe points themselves, with nothing counted.
pub const FLOOR_ENV: &str = "ALLOCTRACE_BENCH_FLOOR";

fn set_floor(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(abi::MAP_CONTROL).ok_or_else(|| {
        ProbeError::Mode(format!("the eBPF object has no map {}", abi::MAP_CONTROL))
    })?;
    let mut control: aya::maps::Array<&mut aya::maps::MapData, u32> = map
        .try_into()
        .map_err(|e| ProbeError::Mode(format!("{}: {e}", abi::MAP_CONTROL)))?;
    control
        .set(abi::CONTROL_STOPPED, 1, 0)
        .map_err(|e| ProbeError::Mode(format!("{}: {e}", abi::MAP_CONTROL)))?;
    log::warn!("{FLOOR_ENV}=1: probes attached, counting nothing (benchmark floor)");
    Ok(())
}

/// Loads the named programs, on as many threads as there are CPUs: the kernel's verifier
/// takes most of alloctrace's start-up (0.02–0.3 s per program here, 1.6 s for full mode's
/// nine one after another), and separate loads verify in parallel.
fn load_programs(ebpf: &mut Ebpf, mut names: Vec<&'static str>) -> Result<(), ProbeError> {
    names.sort_unstable();
    names.dedup();
    let mut progs: Vec<(&'static str, &mut UProbe)> = Vec::with_capacity(names.len());
    for (name, prog) in ebpf.programs_mut() {
        if let (Ok(i), Ok(uprobe)) = (names.binary_search(&name), prog.try_into()) {
            progs.push((names[i], uprobe));
        }
    }
    if let Some(missing) = names.iter().find(|n| !progs.iter().any(|(p, _)| p == *n)) {
        return Err(ProbeError::MissingProgram(missing));
    }
    // Name order, so that of two failures the same one is reported from run to run.
    progs.sort_unstable_by_key(|(name, _)| *name);
    let mut results: Vec<Option<Result<(), ProgramError>>> = progs.iter().map(|_| None).collect();
    let queue = Mutex::new(progs.iter_mut().zip(results.iter_mut()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads.min(names.len()) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(((_, prog), result)) = next else {
                    break;
                };
                *result = Some(prog.load());
            });
        }
    });
    for ((name, _), result) in progs.iter().zip(results) {
        if let Some(Err(source)) = result {
            return Err(ProbeError::Load {
                program: name,
                source: Box::new(source),
            });
        }
    }
    // How close each program came to the verifier's limit (a million instructions walked):
    // start-up time follows it, and a program near it may not load on another kernel or
    // compiler. A test keeps every program well below it. Asked of the kernel (a syscall per
    // program) only when it will be printed.
    if log::log_enabled!(log::Level::Debug) {
        for (name, prog) in &progs {
            let info = prog.info().ok();
            if let Some(n) = info.and_then(|i| i.verified_instruction_count()) {
                log::debug!("program {name}: the verifier walked {n} instructions");
            }
        }
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(ProbeError::MissingProgram(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einval_at_attach_names_the_other_tracer_as_likely_cause() {
        let err = |code| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open",
                io_error: std::io::Error::from_raw_os_error(code),
            })
        };
        assert!(attach_hint(&err(libc::EINVAL)).contains("ref_ctr_offset mismatch"));
        assert_eq!(attach_hint(&err(libc::ENOENT)), "");
    }

    #[test]
    fn system_libc_resolves_every_required_symbol_once() {
        let libc = crate::target::own_libc().unwrap();
        let entries = resolve(&libc).unwrap();
        for p in PROBES.iter().filter(|p| p.required) {
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
        let libc = crate::target::own_libc().unwrap();
        let auto = resolve_with(&libc, Mode::Auto).unwrap();
        for (p, e) in &auto {
            eprintln!("{} {}", p.symbol, e.placement);
            assert_eq!(e.file_offset, e.function_offset + e.placement.offset);
            if e.placement.offset > 0 {
                assert!(e.placement.emulated, "{} {}", p.symbol, e.placement);
            }
        }
        let entry = resolve_with(&libc, Mode::Entry).unwrap();
        assert!(entry
            .iter()
            .all(|(_, e)| e.file_offset == e.function_offset));
        // Cached: the same decisions again.
        let again = resolve_with(&libc, Mode::Auto).unwrap();
        assert!(again.iter().map(|(_, e)| e).eq(auto.iter().map(|(_, e)| e)));
    }
}
