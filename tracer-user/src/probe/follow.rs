//! `--follow-forks`: the processes the target starts (and theirs) traced each under its own
//! pid, as `strace -f` does.
//!
//! The target's uprobe_multi links fire in its own thread group only (the kernel checks
//! `same_thread_group` with the task the link's pid named), so every child needs a set of its
//! own, attached to its pid when the mmap watch's fork record says it exists: a copy of its
//! parent (fork) and one that shares its parent's address space (`CLONE_VM`, `vfork`) alike —
//! the parent's links do not run in the latter, and its own do not run in the parent, so
//! nothing counts twice. Between the fork and that attach the child's allocations are not
//! counted; no race-free way exists here (a link cannot be inherited, and holding the child
//! would mean signalling it): the window is measured per child and said at the end of the run.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::model::{TraceMode, Unseen};
use crate::probe::placement::Mode;
use crate::probe::{self, reprobe, Attached, ProbeSet, Programs, Scope};
use crate::process::mmap_watch::{ExecLog, ExecProbed, ExecSeen, Forked};
use crate::symbolize::Symbolizer;
use crate::target::exec_watch::{permitted_after_exec, NOT_PERMITTED};

use super::children::{Shared, Started};

/// A followed process's probes, and the descriptor that says when it exits.
struct Child {
    pidfd: OwnedFd,
    links: Vec<Attached>,
    /// The sets those probes are of.
    sets: Vec<ProbeSet>,
}

pub struct Follower {
    /// Shared with the main loop, which moves the target's own probes when the task they are
    /// on ends (`retarget`).
    ebpf: Arc<Mutex<Programs>>,
    mode: TraceMode,
    probe_at: Mode,
    start_ns: u64,
    children: HashMap<u32, Child>,
    /// The exec logs of the followed processes.
    logs: HashMap<u32, Arc<Mutex<ExecLog>>>,
    shared: Arc<Mutex<Shared>>,
    /// Probe sets of exited children, detached on their own thread (each link waits a kernel
    /// grace period; a child's links are released at once, sharing them).
    detach: Option<Detacher>,
    /// From each fork to its probes being in.
    windows: Vec<Duration>,
}

/// What `finish` hands back: the live processes' probes, the programs and figures.
pub struct Finished {
    ebpf: Arc<Mutex<Programs>>,
    /// The probes of the followed processes still alive at the end.
    pub live: Vec<Attached>,
    followed: usize,
    max_window: Option<Duration>,
    detach: Option<Detacher>,
}

type Detacher = (mpsc::Sender<Vec<Attached>>, JoinHandle<(usize, Duration)>);

impl Follower {
    pub fn new(
        ebpf: Arc<Mutex<Programs>>,
        sets: Vec<ProbeSet>,
        mode: TraceMode,
        probe_at: Mode,
        start_ns: u64,
    ) -> (Follower, Arc<Mutex<Shared>>) {
        let shared = Arc::new(Mutex::new(Shared {
            target_sets: sets,
            ..Shared::default()
        }));
        let (tx, rx) = mpsc::channel::<Vec<Attached>>();
        let detacher = std::thread::Builder::new()
            .name("alloctrace-detach-children".into())
            .spawn(move || {
                let (mut n, mut took) = (0, Duration::ZERO);
                for links in rx {
                    let t = Instant::now();
                    n += links.len();
                    probe::release_all(links);
                    took += t.elapsed();
                }
                (n, took)
            })
            .ok();
        let f = Follower {
            ebpf,
            mode,
            probe_at,
            start_ns,
            children: HashMap::new(),
            logs: HashMap::new(),
            shared: shared.clone(),
            detach: detacher.map(|h| (tx, h)),
            windows: Vec::new(),
        };
        (f, shared)
    }

    fn programs(&self) -> std::sync::MutexGuard<'_, Programs> {
        self.ebpf.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look: new processes get their probes, exited ones lose theirs. `execs` are the
    /// processes seen to exec in this look.
    pub fn look(&mut self, forks: Vec<Forked>, execs: &[u32], sym: &Symbolizer) {
        for f in forks {
            if let Some(log) = f.log.clone() {
                self.logs.insert(f.pid, log.clone());
                let program = std::fs::read_link(format!("/proc/{}/exe", f.ppid))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| comm_of(f.ppid));
                self.lock().started.push(Started {
                    pid: f.pid,
                    log,
                    program,
                });
            }
            self.start(f, sym);
        }
        for pid in execs {
            self.exec(*pid);
        }
        let revoke = std::mem::take(&mut self.lock().revoke);
        for pid in revoke {
            if let Some(child) = self.children.remove(&pid) {
                if let Some((tx, _)) = &self.detach {
                    let _ = tx.send(child.links);
                }
            }
        }
        self.reap();
        let live = self.children.len();
        let mut s = self.lock();
        s.live = live;
        s.looks += 1;
    }

    fn start(&mut self, f: Forked, sym: &Symbolizer) {
        // A copy of its parent, or one sharing its memory: probed through its parent's sets.
        let sets = match self.children.get(&f.ppid) {
            Some(parent) => parent.sets.clone(),
            None => self.lock().target_sets.clone(),
        };
        self.attach(f.pid, sets, Some(f.time), sym);
    }

    /// A followed process executed a program: its allocators are resolved again, and the
    /// sets not attached for it yet attached; each exec of its log is decided for the main
    /// loop to say.
    fn exec(&mut self, pid: u32) {
        let Some(log) = self.logs.get(&pid).cloned() else {
            return;
        };
        let undecided = log.lock().unwrap_or_else(|e| e.into_inner()).undecided();
        let n = undecided.len();
        for (i, e) in undecided.into_iter().enumerate() {
            let current = i + 1 == n;
            let probed = if !permitted_after_exec(pid, e.exe.as_deref(), current) {
                // The main loop's ExeWatch revokes it: no probes go in.
                ExecProbed::Unseen(NOT_PERMITTED.into())
            } else {
                self.exec_sets(pid, &e, current)
            };
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(x) = l.execs.iter_mut().find(|x| x.time == e.time) {
                x.probed = Some(probed);
            }
        }
    }

    fn exec_sets(&mut self, pid: u32, e: &ExecSeen, current: bool) -> ExecProbed {
        let have = self
            .children
            .get(&pid)
            .map(|c| c.sets.clone())
            .unwrap_or_default();
        let (all, new) = match reprobe::decide(pid, e, current, &have, self.probe_at) {
            reprobe::Decision::Unseen(reason) => return ExecProbed::Unseen(reason),
            reprobe::Decision::Sets { all, new } => (all, new),
        };
        // Go frees by collection: a full trace would count its allocations as all live.
        if self.mode == TraceMode::Full {
            let go = crate::allocator::go::NAME;
            if let Some(s) = new.iter().find(|s| s.found.allocator.name() == go) {
                return ExecProbed::Unseen(crate::allocator::go::refused_in_full_mode(&s.shown));
            }
        }
        let describe = all.iter().map(ProbeSet::describe).collect();
        if new.is_empty() {
            return ExecProbed::Through {
                sets: describe,
                late_us: None,
            };
        }
        let Some(nz) = std::num::NonZeroU32::new(pid) else {
            return ExecProbed::Unseen("pid 0".into());
        };
        let attached = probe::attach_loaded(&mut self.programs(), &new, Scope::Pid(nz), self.mode);
        match attached {
            Ok(links) => {
                if let Some(c) = self.children.get_mut(&pid) {
                    c.links.extend(links);
                    c.sets.extend(new.iter().cloned());
                }
                self.lock().allocators.entry(pid).or_default().extend(new);
            }
            Err(err) => {
                return ExecProbed::Unseen(format!(
                    "its probes could not be attached ({})",
                    chain(&err)
                ))
            }
        }
        let late = Duration::from_nanos(crate::target::monotonic_ns().saturating_sub(e.time));
        self.lock().exec_late.push(late);
        ExecProbed::Through {
            sets: describe,
            late_us: Some(u64::try_from(late.as_micros()).unwrap_or(u64::MAX).max(1)),
        }
    }

    /// Attaches `sets` for `pid`, from its fork; false when it could not (said, and marked
    /// unseen).
    fn attach(
        &mut self,
        pid: u32,
        sets: Vec<ProbeSet>,
        forked_at: Option<u64>,
        sym: &Symbolizer,
    ) -> bool {
        // From its fork, or (a CLONE_VM child) from its exec, when it left its parent's probes.
        let unseen = |reason: String| Unseen {
            since: Duration::from_nanos(
                forked_at
                    .unwrap_or_else(crate::target::monotonic_ns)
                    .saturating_sub(self.start_ns),
            ),
            program: String::new(),
            reason,
        };
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            let u = unseen("it exited before alloctrace could attach its probes".into());
            eprintln!(
                "alloctrace: pid {pid}: {}: its allocations are unseen",
                u.reason
            );
            self.lock().unseen.push((pid, u));
            return false;
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let Some(nz) = std::num::NonZeroU32::new(pid) else {
            return false;
        };
        let attached = probe::attach_loaded(&mut self.programs(), &sets, Scope::Pid(nz), self.mode);
        match attached {
            Ok(links) => {
                if let Some(t) = forked_at {
                    let w = Duration::from_nanos(crate::target::monotonic_ns().saturating_sub(t));
                    log::info!("pid {pid}: probes attached {w:?} after its fork");
                    self.windows.push(w);
                    self.lock().late.push(w);
                }
                sym.note_process(pid);
                self.lock()
                    .allocators
                    .entry(pid)
                    .or_default()
                    .extend(sets.iter().cloned());
                self.children.insert(pid, Child { pidfd, links, sets });
                true
            }
            Err(e) => {
                // It may have exited meanwhile: not a failure of the run.
                let u = unseen(format!("its probes could not be attached ({})", chain(&e)));
                eprintln!(
                    "alloctrace: pid {pid}: {}: its allocations are unseen",
                    u.reason
                );
                self.lock().unseen.push((pid, u));
                false
            }
        }
    }

    /// Children whose pidfd turned readable (exited) lose their probes, off this thread.
    fn reap(&mut self) {
        let exited: Vec<u32> = self
            .children
            .iter()
            .filter(|(_, c)| {
                let mut p = libc::pollfd {
                    fd: c.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a zero timeout never blocks.
                unsafe { libc::poll(&mut p, 1, 0) == 1 }
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in exited {
            self.logs.remove(&pid);
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            if let Some((tx, _)) = &self.detach {
                let _ = tx.send(child.links);
            }
        }
    }

    /// Ends following; the processes still alive keep their probes until `detach_all`.
    pub fn finish(mut self) -> Finished {
        Finished {
            followed: self.windows.len(),
            max_window: self.windows.iter().max().copied(),
            detach: self.detach.take(),
            live: self.children.drain().flat_map(|(_, c)| c.links).collect(),
            ebpf: self.ebpf,
        }
    }
}

impl Finished {
    /// How late the followed processes' probes went in, said before the report.
    pub fn window_line(&self) -> Option<String> {
        let w = self.max_window?;
        Some(format!(
            "alloctrace: followed {} started processes; their probes went in at most {:.1} ms \
             after their fork (allocations made before are not counted)",
            self.followed,
            w.as_secs_f64() * 1e3
        ))
    }

    /// Waits for the exited processes' probes to be off (detached on their own thread during
    /// the run; the live ones' are `live`, taken out by the caller) and says how long those
    /// took: each link waits a kernel grace period.
    pub fn detach_all(mut self) -> Option<String> {
        drop(self.ebpf);
        let (tx, h) = self.detach.take()?;
        drop(tx);
        let (n, took) = h.join().ok()?;
        (n > 0).then(|| {
            format!(
                "alloctrace: the {n} probes of exited followed processes took {:.2} s to \
                 detach (in the background)",
                took.as_secs_f64()
            )
        })
    }
}

pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
