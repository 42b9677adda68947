//! Probing a process's allocators: one `ProbeSet` per allocator in a file it uses (`sets`
//! finds them), resolving where on each of its functions the probes go (`resolve`, with
//! `placement` deciding the offset), and attaching them (`attach`); `reprobe` finds a new
//! program's sets after an exec; `follow` (with `children`) and `retarget` move them between
//! processes and tasks. The table of entry points is the allocator's (`crate::allocator`).
pub mod attach;
pub mod children;
pub mod follow;
pub mod placement;
pub mod prog_load;
pub mod reprobe;
pub mod resolve;
pub mod retarget;
pub mod sets;
pub mod uprobe_multi;

use std::num::NonZeroU32;

use placement::Placement;

pub use crate::allocator::ProbeSpec;
pub use attach::{attach, attach_into, attach_loaded};
pub use prog_load::Programs;
pub use resolve::resolve;
pub use uprobe_multi::{release_all, Attached};

use std::path::{Path, PathBuf};

use crate::allocator::Found;

/// One allocator in one file, resolved: what a process is probed through. A process is probed
/// through one set per allocator file it uses (its libc, a jemalloc it links or preloads, its
/// own executable when an allocator is linked in).
#[derive(Clone)]
pub struct ProbeSet {
    /// A path alloctrace can open that leads to that very file (through `/proc/PID/root`,
    /// `/proc/PID/map_files`, or a descriptor held open).
    pub path: PathBuf,
    /// The file as the process names it, for messages and the report.
    pub shown: String,
    /// (device, inode) of the file: one set per file and allocator.
    pub file: (u64, u64),
    pub found: Found,
    pub entries: Vec<(&'static ProbeSpec, Entry)>,
    /// The allocator's version, where the file says it (for the report).
    pub version: Option<String>,
}

impl std::fmt::Debug for ProbeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} probes)", self.describe(), self.entries.len())
    }
}

impl ProbeSet {
    /// Resolves the probes of `found` in the file at `path` (see `resolve`).
    pub fn resolve(
        path: &Path,
        shown: String,
        file: (u64, u64),
        found: Found,
        mode: placement::Mode,
    ) -> Result<ProbeSet, ProbeError> {
        let entries = resolve(path, found, mode)?;
        Ok(ProbeSet {
            version: found.version(path),
            path: path.to_path_buf(),
            shown,
            file,
            found,
            entries,
        })
    }

    /// The allocator's name, with its prefix when it has one (`jemalloc (je_)`).
    pub fn name(&self) -> String {
        match self.found.prefix {
            "" => self.found.allocator.name().to_string(),
            p => format!("{} ({p})", self.found.allocator.name()),
        }
    }

    /// `glibc in /usr/lib/x86_64-linux-gnu/libc.so.6`, as the start-up and exec lines say it.
    pub fn describe(&self) -> String {
        format!("{} in {}", self.name(), self.shown)
    }

    /// Whether this set probes the same allocator in the same file as `other`.
    pub fn same(&self, other: &ProbeSet) -> bool {
        self.file == other.file && self.found == other.found
    }

    /// The report's record of it.
    pub fn allocator_use(&self) -> crate::model::AllocatorUse {
        crate::model::AllocatorUse {
            name: self.found.allocator.name().to_string(),
            path: self.shown.clone(),
            version: self.version.clone(),
        }
    }
}

/// The sets described for a line: `jemalloc in A, glibc in B`.
pub fn describe_sets(sets: &[ProbeSet]) -> String {
    let v: Vec<String> = sets.iter().map(ProbeSet::describe).collect();
    v.join(", ")
}

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
    #[error("cannot load eBPF program {program}: {source}; the verifier's last words:\n{log}")]
    Load {
        program: &'static str,
        source: std::io::Error,
        log: String,
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
        source: std::io::Error,
    },
}

/// The likely cause of an attach refused with EINVAL on a function alloctrace could read:
/// another tracer's uprobe at the same address with a different reference-counter offset.
/// BCC 0.26's tools (memleak-bpfcc among them) set a garbage one (iovisor/bcc#5236).
fn attach_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EINVAL) {
        return " (is another tracer probing the same function? The kernel refuses a second \
            uprobe whose reference-counter offset differs, as BCC 0.26's tools set it: dmesg \
            says \"ref_ctr_offset mismatch\"; stop that tracer first)";
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

/// Which processes fire the probes.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    All,
    /// The thread group of this pid, filtered by the kernel (its breakpoints only in its
    /// memory).
    Pid(NonZeroU32),
    /// This process only, its probes in every process that maps the file and the others'
    /// hits dropped by the programs (the link's cookie): for a process whose main thread has
    /// exited, which a link with a pid cannot reach (see `target::check_process`).
    Only(NonZeroU32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einval_at_attach_names_the_other_tracer_as_likely_cause() {
        let err = std::io::Error::from_raw_os_error;
        assert!(attach_hint(&err(libc::EINVAL)).contains("ref_ctr_offset mismatch"));
        assert_eq!(attach_hint(&err(libc::ENOENT)), "");
    }
}
