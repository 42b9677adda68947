//! Loading the probe programs and attaching them to allocators' files (a process's sets), in the order that
//! keeps every tracked block's release seen; alloc-only mode's counting probes; the bench floor.
use std::path::Path;
use std::sync::Mutex;

use alloctrace_common as abi;
use aya::programs::{
    uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    ProgramError, UProbe,
};
use aya::Ebpf;

use super::{Entry, ProbeError, ProbeSet, ProbeSpec, Scope};
use crate::model::TraceMode;

/// Loads the programs and attaches them at the entries of every set, each function's entry and
/// return probes at the one offset `placement` chose for it (a return probe only needs the
/// return address at `[rsp]`, which the instructions placement may skip leave there; two
/// breakpoints, one of them single-stepped at the entry, would cost more than the one). Return
/// probes go first: a return seen without its entry is ignored, while an entry whose return
/// probe was not yet attached would leave a stale call state behind. Then the entries of the
/// functions that give blocks back (free, the realloc family), then the others (`entry_rank`):
/// a block is tracked only once every probe that can release it is in. The other way round, a
/// block tracked before free's or realloc's probe was in would stay in the in-flight table
/// after its real release, a phantom live block, and glibc hands the same address back again
/// and again (a target allocating while alloctrace attached piled them up); this way such a
/// release is seen as one of a block allocated before tracing (an unknown free). The order
/// holds across the sets, not only within each: a block of one allocator may be released
/// through another's free (a preloaded allocator's and libc's). Returns the probes attached
/// (`retarget` moves them to another task); dropping `ebpf` detaches them all (slowly: each
/// removal waits a kernel grace period, ~0.1 s here, serialized in the kernel).
///
/// In alloc-only mode each function gets its counting entry program only (see
/// `count_program`), and functions without one (free, reallocarray) are not probed. With
/// `floor` (`ALLOCTRACE_BENCH_FLOOR=1`, read into the `Config`) they count nothing (`set_floor`).
pub fn attach(
    ebpf: &mut Ebpf,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
    floor: bool,
) -> Result<Vec<Attached>, ProbeError> {
    if floor {
        set_floor(ebpf)?;
    }
    attach_loaded(ebpf, sets, scope, mode)
}

/// The programs the sets' probes run in `mode`.
fn programs_of(sets: &[ProbeSet], mode: TraceMode) -> Vec<&'static str> {
    let specs = sets.iter().flat_map(|s| s.entries.iter().map(|(p, _)| *p));
    if mode == TraceMode::AllocOnly {
        specs.filter_map(count_program).collect()
    } else {
        let mut names: Vec<&'static str> = specs.map(|p| p.program).collect();
        if !names.is_empty() {
            names.push(abi::PROG_ALLOC_RETURN);
        }
        names
    }
}

/// One attached probe: its program and link, to detach it alone (`retarget`).
#[derive(Debug)]
pub struct Attached {
    program: &'static str,
    link: UProbeLinkId,
}

/// Attaches the sets' probes in `attach`'s order, loading the programs not loaded yet (a set
/// found later, after an exec, may need one the first did not).
pub fn attach_loaded(
    ebpf: &mut Ebpf,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
) -> Result<Vec<Attached>, ProbeError> {
    let mut attached = Vec::new();
    attach_into(ebpf, sets, scope, mode, &mut attached)?;
    Ok(attached)
}

/// As `attach_loaded`, into `attached`: on an error, what was attached before it is there
/// (for the caller to take out: probes left on a task that lives would count twice).
pub fn attach_into(
    ebpf: &mut Ebpf,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
    attached: &mut Vec<Attached>,
) -> Result<(), ProbeError> {
    load_programs(ebpf, programs_of(sets, mode))?;
    let scope = match scope {
        Scope::All => UProbeScope::AllProcesses,
        Scope::Pid(pid) => UProbeScope::OneProcess(pid),
    };
    if mode == TraceMode::AllocOnly {
        return attach_counting(ebpf, sets, scope, attached);
    }
    let all = || {
        sets.iter()
            .flat_map(|s| s.entries.iter().map(move |e| (s.path.as_path(), e)))
    };
    let mut entry_order: Vec<_> = all().collect();
    entry_order.sort_by_key(|(_, (p, _))| entry_rank(p));
    let order = all()
        .filter(|(_, (p, _))| p.returns_block)
        .map(|e| (e, true))
        .chain(entry_order.into_iter().map(|e| (e, false)));
    for ((path, (spec, entry)), is_return) in order {
        let (name, kind) = if is_return {
            (abi::PROG_ALLOC_RETURN, "uretprobe")
        } else {
            (spec.program, "uprobe")
        };
        attached.push(attach_one(ebpf, name, kind, spec, entry, path, scope)?);
    }
    Ok(())
}

/// Attaches program `name` (loaded) as a `kind` probe at `entry` of the file at `path`, for
/// `spec`'s function.
fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    kind: &'static str,
    spec: &ProbeSpec,
    entry: &Entry,
    path: &Path,
    scope: UProbeScope,
) -> Result<Attached, ProbeError> {
    let prog: &mut UProbe = program(ebpf, name)?;
    let link = prog
        .attach(entry.file_offset, path, scope)
        .map_err(|source| ProbeError::Attach {
            kind,
            symbol: spec.symbol,
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
    Ok(Attached {
        program: name,
        link,
    })
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
        abi::PROG_REALLOC_ENTER | abi::PROG_REALLOCARRAY_ENTER | abi::PROG_XALLOCX_ENTER => 1,
        _ => 2,
    }
}

/// The alloc-only mode's program for a function, if it is probed at all in that mode: its
/// allocator's table says (`ProbeSpec::count`): free counts nothing, and a function whose
/// requests all go through another probed one (glibc's reallocarray calls realloc) is left to
/// that one.
pub fn count_program(spec: &ProbeSpec) -> Option<&'static str> {
    spec.count
}

/// Alloc-only mode: one counting entry probe per function, at the placed offset.
fn attach_counting(
    ebpf: &mut Ebpf,
    sets: &[ProbeSet],
    scope: UProbeScope,
    attached: &mut Vec<Attached>,
) -> Result<(), ProbeError> {
    for set in sets {
        let counted: Vec<(&ProbeSpec, &Entry, &'static str)> = set
            .entries
            .iter()
            .filter_map(|(spec, e)| count_program(spec).map(|prog| (*spec, e, prog)))
            .collect();
        for (spec, entry, name) in counted {
            attached.push(attach_one(
                ebpf, name, "uprobe", spec, entry, &set.path, scope,
            )?);
        }
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
    let mut known = Vec::with_capacity(names.len());
    for (name, prog) in ebpf.programs_mut() {
        if let (Ok(i), Ok(uprobe)) = (names.binary_search(&name), prog.try_into()) {
            known.push(names[i]);
            // Loaded already (by an earlier attach of this run).
            let uprobe: &mut UProbe = uprobe;
            if uprobe.fd().is_err() {
                progs.push((names[i], uprobe));
            }
        }
    }
    if let Some(missing) = names.iter().find(|n| !known.contains(n)) {
        return Err(ProbeError::MissingProgram(missing));
    }
    if progs.is_empty() {
        return Ok(());
    }
    // Name order, so that of two failures the same one is reported from run to run.
    progs.sort_unstable_by_key(|(name, _)| *name);
    let mut results: Vec<Option<Result<(), ProgramError>>> = progs.iter().map(|_| None).collect();
    let n = progs.len();
    let queue = Mutex::new(progs.iter_mut().zip(results.iter_mut()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
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
