//! System-wide mode's sets: every allocator file some process maps is probed for all
//! processes, those mapped at the start and those first mapped later (the mmap watch's
//! records, passed on by the event thread to a thread of their own: reading a new file's
//! symbols must not hold up the draining), and each process's allocators are known for the
//! report from the files it was seen to map.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use crate::model::{AllocatorUse, TraceMode, Unseen};
use crate::probe::placement::Mode;
use crate::probe::{self, Attached, ProbeSet, Programs, Scope};
use crate::process::procmaps::Mapping;
use crate::target::allocators_of;

type FileId = (u64, u64);

/// Shared by the event thread (which adds) and the main loop (which reads).
#[derive(Clone)]
pub(super) struct SystemSets {
    inner: Arc<Mutex<Inner>>,
    /// New files to detect and probe, for the prober thread.
    new_files: mpsc::Sender<(u32, u64, Mapping)>,
}

struct Inner {
    mode: TraceMode,
    probe_at: Mode,
    /// Every file looked at, allocator or not: each is detected once.
    considered: HashSet<FileId>,
    sets: Vec<ProbeSet>,
    /// The files each process was seen to map executable.
    uses: HashMap<u32, HashSet<FileId>>,
    /// The path of the first file each process was seen to map (its program), for a process
    /// with no allocator to name after it exited.
    first_file: HashMap<u32, String>,
    /// From each late set's first mapping to its probes, not yet counted as a loss.
    late: Vec<Duration>,
    /// The late sets' probes (`take_links` at the end).
    links: Vec<Attached>,
}

impl SystemSets {
    /// `sets` were attached at the start, found in the files `uses` lists per process.
    pub(super) fn new(
        ebpf: Arc<Mutex<Programs>>,
        mode: TraceMode,
        probe_at: Mode,
        sets: Vec<ProbeSet>,
        uses: HashMap<u32, Vec<FileId>>,
    ) -> SystemSets {
        let considered = uses.values().flatten().copied().collect();
        let uses = uses
            .into_iter()
            .map(|(pid, ids)| (pid, ids.into_iter().collect()))
            .collect();
        let inner = Arc::new(Mutex::new(Inner {
            mode,
            probe_at,
            considered,
            sets,
            uses,
            first_file: HashMap::new(),
            late: Vec::new(),
            links: Vec::new(),
        }));
        let (tx, rx) = mpsc::channel::<(u32, u64, Mapping)>();
        // The programs held weakly: their drop at the end detaches every probe.
        let (shared, ebpf) = (inner.clone(), Arc::downgrade(&ebpf));
        let spawned = std::thread::Builder::new()
            .name("alloctrace-new-allocators".into())
            .spawn(move || {
                for (pid, time, m) in rx {
                    probe_new(&shared, &ebpf, pid, time, &m);
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the thread that probes new allocator files ({e})");
        }
        SystemSets {
            inner,
            new_files: tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Process `pid` mapped `m` executable at `time` (CLOCK_MONOTONIC ns): a file not looked at
    /// before is detected, and its allocators (if any) probed for every process from now on.
    pub(super) fn mapped(&self, pid: u32, time: u64, m: &Mapping) {
        if !m.is_file() {
            return;
        }
        let id = m.binary_id();
        {
            let mut inner = self.lock();
            inner.uses.entry(pid).or_default().insert(id);
            inner
                .first_file
                .entry(pid)
                .or_insert_with(|| m.path.clone());
            if !inner.considered.insert(id) {
                return;
            }
        }
        let _ = self.new_files.send((pid, time, m.clone()));
    }

    /// The probes of the sets found during the run, for the end to detach (with the others, at
    /// once).
    pub(super) fn take_links(&self) -> Vec<Attached> {
        std::mem::take(&mut self.lock().links)
    }

    /// How late the sets found since the last call went in.
    pub(super) fn take_late(&self) -> Vec<Duration> {
        std::mem::take(&mut self.lock().late)
    }

    /// The processes seen to map code none of which holds a probed allocator (a stripped
    /// static binary, an allocator alloctrace does not know): their allocations were unseen
    /// from the start. Each is said in one line, and marked in the report.
    pub(super) fn unprobed(&self) -> Vec<(Unseen, u32)> {
        let inner = self.lock();
        let probed: HashSet<FileId> = inner.sets.iter().map(|s| s.file).collect();
        let mut out: Vec<(Unseen, u32)> = inner
            .uses
            .iter()
            .filter(|(_, files)| !files.is_empty() && files.is_disjoint(&probed))
            .map(|(&pid, _)| {
                let exe = PathBuf::from(format!("/proc/{pid}/exe"));
                let alive = std::fs::read_link(&exe).ok();
                let program = alive
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or_else(|| inner.first_file.get(&pid).cloned())
                    .unwrap_or_else(|| "?".into());
                let reason =
                    probe::sets::no_allocator_reason(alive.is_some().then_some(exe.as_path()), &[]);
                let unseen = Unseen {
                    since: Duration::ZERO,
                    program,
                    reason,
                };
                (unseen, pid)
            })
            .collect();
        out.sort_by_key(|(_, pid)| *pid);
        for (u, pid) in &out {
            eprintln!(
                "alloctrace: pid {pid} ({}): its allocator cannot be probed: {}; its \
                 allocations are unseen",
                u.program, u.reason
            );
        }
        out
    }

    /// The allocators of the files `pid` was seen to map.
    pub(super) fn allocators_of(&self, pid: u32) -> Vec<AllocatorUse> {
        let inner = self.lock();
        let Some(ids) = inner.uses.get(&pid) else {
            return Vec::new();
        };
        inner
            .sets
            .iter()
            .filter(|s| ids.contains(&s.file))
            .map(ProbeSet::allocator_use)
            .collect()
    }
}

/// Detects the allocators of a file process `pid` first mapped at `time` (CLOCK_MONOTONIC ns)
/// and probes them for every process from now on; the delay is a loss (`exec_late`).
fn probe_new(inner: &Mutex<Inner>, ebpf: &Weak<Mutex<Programs>>, pid: u32, time: u64, m: &Mapping) {
    let lock = || inner.lock().unwrap_or_else(|e| e.into_inner());
    let (mode, probe_at) = {
        let i = lock();
        (i.mode, i.probe_at)
    };
    let mut found = probe::sets::sets_of(&[allocators_of::mapping_file(pid, m)], probe_at);
    for f in &found.failures {
        eprintln!("alloctrace: warning: pid {pid}: {f}; skipped");
    }
    found.sets = super::go_mode::skip_go_in_full_mode(found.sets, mode, &format!("pid {pid}"));
    if found.sets.is_empty() {
        return;
    }
    // The run is over.
    let Some(ebpf) = ebpf.upgrade() else { return };
    let attached = {
        let mut ebpf = ebpf.lock().unwrap_or_else(|e| e.into_inner());
        probe::attach_loaded(&mut ebpf, &found.sets, Scope::All, mode)
    };
    drop(ebpf);
    let gap = Duration::from_nanos(crate::target::monotonic_ns().saturating_sub(time));
    match attached {
        Ok(links) => {
            eprintln!(
                "alloctrace: pid {pid} mapped {}: probed from now on, {:.2} ms after (its \
                 allocations in between were not seen)",
                probe::describe_sets(&found.sets),
                gap.as_secs_f64() * 1e3
            );
            let mut inner = lock();
            inner.late.push(gap);
            inner.links.extend(links);
            inner.sets.extend(found.sets);
        }
        Err(e) => eprintln!(
            "alloctrace: warning: pid {pid} mapped {}, which could not be probed: {e}",
            probe::describe_sets(&found.sets)
        ),
    }
}
