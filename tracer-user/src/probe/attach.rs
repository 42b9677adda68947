//! Loading the probe programs and attaching them to allocators' files (a process's sets) as
//! uprobe_multi links, in the order that keeps every tracked block's release seen; alloc-only
//! mode's counting probes; the bench floor.
use alloctrace_common as abi;

use super::prog_load::Programs;
use super::uprobe_multi::{self, Attached, LinkSpec};
use super::{ProbeError, ProbeSet, ProbeSpec, Scope};
use crate::model::TraceMode;

/// Loads the programs and attaches them at the entries of every set, each function's entry and
/// return probes at the one offset `placement` chose for it (a return probe only needs the
/// return address at `[rsp]`, which the instructions placement may skip leave there; two
/// breakpoints, one of them single-stepped at the entry, would cost more than the one).
///
/// One uprobe_multi link per program and file (`links`): every offset that program serves in
/// that file, attached in one syscall. The links go in this order, across all the sets:
/// the return program's first (a return seen without its entry is ignored, while an entry whose
/// return probe was not yet attached would leave a stale call state behind); then the entry
/// programs of the functions that give blocks back (free, then the realloc family), then the
/// others (`entry_rank`). A link's syscall returns once all its offsets are in, and each
/// program belongs to one rank, so a block is tracked only once every probe that can release
/// it is in. The other way round, a block tracked before free's or realloc's probe was in would
/// stay in the in-flight table after its real release, a phantom live block, and glibc hands
/// the same address back again and again (a target allocating while alloctrace attached piled
/// them up); this way such a release is seen as one of a block allocated before tracing (an
/// unknown free). The order holds across the sets, not only within each: a block of one
/// allocator may be released through another's free (a preloaded allocator's and libc's).
/// Returns the links (dropping one detaches it; `uprobe_multi::release_all` detaches many
/// at once).
///
/// In alloc-only mode each function gets its counting entry program only (see
/// `count_program`), and functions without one (free, reallocarray) are not probed. With
/// `floor` (`ALLOCTRACE_BENCH_FLOOR=1`, read into the `Config`) they count nothing (`set_floor`).
pub fn attach(
    programs: &mut Programs,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
    floor: bool,
) -> Result<Vec<Attached>, ProbeError> {
    if floor {
        set_floor(&mut programs.ebpf)?;
    }
    attach_loaded(programs, sets, scope, mode)
}

/// The programs the sets' probes run in `mode`.
fn programs_of(sets: &[ProbeSet], mode: TraceMode) -> Vec<&'static str> {
    links(sets, mode).iter().map(|l| l.program).collect()
}

/// Attaches the sets' probes in `attach`'s order, loading the programs not loaded yet (a set
/// found later, after an exec, may need one the first did not).
pub fn attach_loaded(
    programs: &mut Programs,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
) -> Result<Vec<Attached>, ProbeError> {
    let mut attached = Vec::new();
    attach_into(programs, sets, scope, mode, &mut attached)?;
    Ok(attached)
}

/// As `attach_loaded`, into `attached`: on an error, what was attached before it is there
/// (for the caller to take out: probes left on a task that lives would count twice).
pub fn attach_into(
    programs: &mut Programs,
    sets: &[ProbeSet],
    scope: Scope,
    mode: TraceMode,
    attached: &mut Vec<Attached>,
) -> Result<(), ProbeError> {
    programs.load(programs_of(sets, mode))?;
    let t = std::time::Instant::now();
    let specs = links(sets, mode);
    for spec in &specs {
        attached.push(uprobe_multi::attach(programs, spec, scope)?);
    }
    log::info!(
        "{} links attached in {:.1} ms",
        specs.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// The links of `sets` in `mode`, in the order they go in (see `attach`).
fn links(sets: &[ProbeSet], mode: TraceMode) -> Vec<LinkSpec<'_>> {
    // (rank, set index, link): the set index keeps one file's links apart from another's and
    // the order stable from run to run.
    let mut out: Vec<(u8, usize, LinkSpec<'_>)> = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        for (spec, e) in &set.entries {
            let mut wanted = Vec::with_capacity(2);
            if mode == TraceMode::AllocOnly {
                wanted.extend(count_program(spec).map(|p| (1, p, false)));
            } else {
                if spec.returns_block {
                    wanted.push((0, abi::PROG_ALLOC_RETURN, true));
                }
                wanted.push((1 + entry_rank(spec), spec.program, false));
            }
            for (rank, program, ret) in wanted {
                let same = |(r, j, l): &&mut (u8, usize, LinkSpec<'_>)| {
                    *r == rank && *j == i && l.program == program && l.ret == ret
                };
                match out.iter_mut().find(same) {
                    Some((_, _, l)) if l.offsets.contains(&e.file_offset) => {}
                    Some((_, _, l)) => l.offsets.push(e.file_offset),
                    None => out.push((
                        rank,
                        i,
                        LinkSpec {
                            program,
                            path: &set.path,
                            offsets: vec![e.file_offset],
                            ret,
                            symbol: spec.symbol,
                        },
                    )),
                }
            }
        }
    }
    out.sort_by_key(|(rank, i, _)| (*rank, *i));
    out.into_iter().map(|(_, _, l)| l).collect()
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

/// `cargo xtask bench` only: with `ALLOCTRACE_BENCH_FLOOR=1` the probes are attached where they
/// would be but their programs return at once (the CONTROL_STOPPED switch, set before attaching):
/// the cost of the probe points themselves, with nothing counted.
pub const FLOOR_ENV: &str = "ALLOCTRACE_BENCH_FLOOR";

fn set_floor(ebpf: &mut aya::Ebpf) -> Result<(), ProbeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{glibc, Found, REGISTRY};
    use crate::probe::placement::{Placement, Why};
    use crate::probe::Entry;

    /// A glibc set at `path` whose every function is probed at `base + its index`, `malloc`
    /// and `valloc` (in full mode two functions sharing no program) included.
    fn set(path: &str, base: u64) -> ProbeSet {
        let entries = glibc::PROBES
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let at = base + i as u64;
                let placement = Placement {
                    offset: 0,
                    probed: String::new(),
                    emulated: true,
                    why: Why::Asked,
                };
                let e = Entry {
                    file_offset: at,
                    function_offset: at,
                    placement,
                };
                (spec, e)
            })
            .collect();
        ProbeSet {
            version: None,
            path: path.into(),
            shown: path.into(),
            file: (1, base),
            found: Found {
                allocator: REGISTRY[0],
                prefix: "",
            },
            entries,
        }
    }

    /// Full mode, two files: the return links of both first, then free's, then the realloc
    /// family's, then the rest; one link per program and file, each function's offset once.
    #[test]
    fn links_go_in_release_safe_order_one_per_program_and_file() {
        let sets = [set("/a", 100), set("/b", 200)];
        let links = links(&sets, TraceMode::Full);
        let rank = |l: &LinkSpec<'_>| match (l.ret, l.program) {
            (true, _) => 0,
            (false, abi::PROG_FREE_ENTER) => 1,
            (false, p) => {
                let spec = glibc::PROBES.iter().find(|s| s.program == p).unwrap();
                1 + entry_rank(spec)
            }
        };
        let ranks: Vec<u8> = links.iter().map(rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        assert_eq!(ranks[0], 0);
        assert_eq!(ranks[1], 0, "each file's return link before any entry");
        let returns: Vec<_> = links.iter().filter(|l| l.ret).collect();
        assert_eq!(returns.len(), 2);
        let returning = glibc::PROBES.iter().filter(|s| s.returns_block).count();
        assert!(returns.iter().all(|l| l.offsets.len() == returning));
        // Every probed function's entry once, in its file's links.
        for (set, path) in sets.iter().zip(["/a", "/b"]) {
            let mut entries: Vec<u64> = links
                .iter()
                .filter(|l| !l.ret && l.path == std::path::Path::new(path))
                .flat_map(|l| l.offsets.iter().copied())
                .collect();
            entries.sort_unstable();
            let mut want: Vec<u64> = set.entries.iter().map(|(_, e)| e.file_offset).collect();
            want.sort_unstable();
            assert_eq!(entries, want, "{path}");
        }
        let mut keys: Vec<_> = links.iter().map(|l| (l.path, l.program, l.ret)).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "one link per program, file and kind");
    }

    /// Alloc-only mode: counting entry links only, none for the functions without a counting
    /// program (free, reallocarray).
    #[test]
    fn alloc_only_links_are_the_counting_programs() {
        let sets = [set("/a", 100)];
        let links = links(&sets, TraceMode::AllocOnly);
        assert!(links.iter().all(|l| !l.ret));
        let counted = glibc::PROBES.iter().filter(|s| s.count.is_some()).count();
        assert_eq!(
            links.iter().map(|l| l.offsets.len()).sum::<usize>(),
            counted
        );
        assert!(links
            .iter()
            .all(|l| glibc::PROBES.iter().any(|s| s.count == Some(l.program))));
    }
}
