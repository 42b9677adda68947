//! uprobe_multi links (kernel ≥ 6.6): one link per program and file, all the offsets that
//! program serves there, instead of one perf-event uprobe per function. A perf event's close
//! waits a kernel grace period under the kernel's `event_mutex` (~0.1 s each here, serialized:
//! 64 probes took 1.5 s to detach); a link's release unregisters all its offsets and waits one
//! synchronization, without that mutex, so links released from several threads at once share
//! their grace periods (`release_all`).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya_obj::generated::{bpf_attach_type, BPF_F_UPROBE_MULTI_RETURN};

use super::prog_load::{attr, link_create, Programs};
use super::{ProbeError, Scope};

/// One uprobe_multi link: a program on offsets of one file. Closing it (drop) detaches it.
#[derive(Debug)]
pub struct Attached {
    _link: OwnedFd,
    points: usize,
}

impl Attached {
    /// The probe points (offsets) it attaches.
    pub fn points(&self) -> usize {
        self.points
    }
}

/// What one link attaches.
pub struct LinkSpec<'a> {
    pub program: &'static str,
    pub path: &'a Path,
    /// File offsets, each once.
    pub offsets: Vec<u64>,
    /// A return probe (`BPF_F_UPROBE_MULTI_RETURN`).
    pub ret: bool,
    /// The function of its first offset, for messages.
    pub symbol: &'static str,
}

/// Creates the link `spec` says, for the processes of `scope`.
pub fn attach(
    programs: &Programs,
    spec: &LinkSpec<'_>,
    scope: Scope,
) -> Result<Attached, ProbeError> {
    let kind = if spec.ret { "uretprobe" } else { "uprobe" };
    let failed = |source: io::Error| ProbeError::Attach {
        kind,
        symbol: spec.symbol,
        path: spec.path.display().to_string(),
        source,
    };
    let path = CString::new(spec.path.as_os_str().as_bytes())
        .map_err(|_| failed(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let prog = programs.fd(spec.program)?;
    let mut a = attr();
    // SAFETY: writes to plain integer fields of the LINK_CREATE member of a zeroed union.
    let lc = unsafe { &mut a.link_create };
    lc.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    lc.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
    // SAFETY: as above, the uprobe_multi member of the link's union.
    let um = unsafe { &mut lc.__bindgen_anon_3.uprobe_multi };
    um.path = path.as_ptr() as u64;
    um.offsets = spec.offsets.as_ptr() as u64;
    um.cnt = spec.offsets.len() as u32;
    um.flags = if spec.ret {
        BPF_F_UPROBE_MULTI_RETURN
    } else {
        0
    };
    um.pid = match scope {
        Scope::All | Scope::Only(_) => 0,
        Scope::Pid(pid) => pid.get(),
    };
    // The programs count a hit of a probe whose cookie is not 0 only in that process
    // (tracer-ebpf's `alloc::traced`).
    let cookies: Vec<u64> = match scope {
        Scope::Only(pid) => vec![u64::from(pid.get()); spec.offsets.len()],
        _ => Vec::new(),
    };
    if !cookies.is_empty() {
        um.cookies = cookies.as_ptr() as u64;
    }
    let link = link_create(&mut a).map_err(failed)?;
    Ok(Attached {
        _link: link,
        points: spec.offsets.len(),
    })
}

/// The most links released at once, each on a thread of its own: their grace periods
/// overlap (measured here, glibc's 9 links: 81–89 ms at once, 460–570 ms one after another).
const RELEASE_THREADS: usize = 16;

/// Detaches `links`, several at once, and returns once every one is off.
pub fn release_all(links: Vec<Attached>) {
    if links.len() <= 1 {
        drop(links);
        return;
    }
    let per = links.len().div_ceil(RELEASE_THREADS);
    let mut links = links;
    std::thread::scope(|s| {
        while !links.is_empty() {
            let chunk: Vec<Attached> = links.drain(..per.min(links.len())).collect();
            // A thread that cannot start leaves its links to be dropped here, in turn.
            let spawned = std::thread::Builder::new()
                .name("alloctrace-detach".into())
                .spawn_scoped(s, move || drop(chunk));
            drop(spawned);
        }
    });
}
