//! The table of allocator entry points and how each is probed, and attaching it to a libc.
use std::collections::BTreeMap;
use std::fs;
use std::num::NonZeroU32;
use std::path::Path;

use alloctrace_common as abi;
use aya::programs::{uprobe::UProbeScope, ProgramError, UProbe};
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol};

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
    #[error("cannot attach {kind} to {symbol} in {path}: {source}")]
    Attach {
        kind: &'static str,
        symbol: &'static str,
        path: String,
        source: Box<ProgramError>,
    },
}

/// A symbol's entry as a file offset (what a uprobe is attached at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub file_offset: u64,
}

/// Resolves every probed symbol of `libc` to file offsets. glibc exports several names for one
/// function (memalign and aligned_alloc are one address in 2.36): each address is probed once,
/// under the first name of the table, or it would count every call twice.
pub fn resolve(libc: &Path) -> Result<Vec<(&'static ProbeSpec, Entry)>, ProbeError> {
    let path = libc.display().to_string();
    let data = fs::read(libc).map_err(|source| ProbeError::Read {
        path: path.clone(),
        source,
    })?;
    let elf = object::File::parse(&*data).map_err(|e| ProbeError::Elf {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        let Ok(name) = sym.name() else { continue };
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        if PROBES.iter().any(|p| p.symbol == name) {
            by_name.entry(name).or_insert(sym.address());
        }
    }
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for p in PROBES {
        let Some(&vaddr) = by_name.get(p.symbol) else {
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
        out.push((p, Entry { file_offset }));
    }
    Ok(out)
}

/// Which processes fire the probes.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    All,
    Pid(NonZeroU32),
}

/// Loads the programs and attaches them at `entries` of `libc`. Return probes go first: a
/// return seen without its entry is ignored, while an entry whose return probe was not yet
/// attached would leave a stale call state behind. Free goes last, after every block-producing
/// probe is in place. Returns how many were attached; dropping `ebpf` detaches them all
/// (slowly: each removal waits a kernel grace period, ~0.1 s here, serialized in the kernel).
pub fn attach(
    ebpf: &mut Ebpf,
    libc: &Path,
    entries: &[(&'static ProbeSpec, Entry)],
    scope: Scope,
) -> Result<usize, ProbeError> {
    let path = libc.display().to_string();
    let scope = match scope {
        Scope::All => UProbeScope::AllProcesses,
        Scope::Pid(pid) => UProbeScope::OneProcess(pid),
    };
    let mut names: Vec<&'static str> = entries.iter().map(|(p, _)| p.program).collect();
    names.push(abi::PROG_ALLOC_RETURN);
    names.sort_unstable();
    names.dedup();
    for name in &names {
        let prog: &mut UProbe = program(ebpf, name)?;
        prog.load().map_err(|source| ProbeError::Load {
            program: name,
            source: Box::new(source),
        })?;
    }
    let mut attached = 0;
    let order = entries
        .iter()
        .filter(|(p, _)| p.returns_block)
        .map(|e| (e, true))
        .chain(
            entries
                .iter()
                .filter(|(p, _)| p.returns_block)
                .map(|e| (e, false)),
        )
        .chain(
            entries
                .iter()
                .filter(|(p, _)| !p.returns_block)
                .map(|e| (e, false)),
        );
    for ((spec, entry), is_return) in order {
        let (name, kind) = if is_return {
            (abi::PROG_ALLOC_RETURN, "uretprobe")
        } else {
            (spec.program, "uprobe")
        };
        let prog: &mut UProbe = program(ebpf, name)?;
        prog.attach(entry.file_offset, libc, scope)
            .map_err(|source| ProbeError::Attach {
                kind,
                symbol: spec.symbol,
                path: path.clone(),
                source: Box::new(source),
            })?;
        attached += 1;
    }
    Ok(attached)
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
}
