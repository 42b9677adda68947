//! Keeps one traced process's probes on it when its main thread ends (`--pid` and launch
//! mode).
//!
//! A uprobe_multi link attached with a pid holds the thread group's leader task the pid named
//! then (the kernel looks the pid up as a thread-group id: a link on another thread's id is
//! refused). Its breakpoints go into that task's address space; its programs run in any task
//! of the same thread group (`same_thread_group`, kernel/trace/bpf_trace.c). So:
//! - the main thread calls `pthread_exit` while other threads run: the leader stays a zombie,
//!   the breakpoints stay in the address space, and the links go on firing in every other
//!   thread: nothing to do, nothing lost (tested: `threads_signals::main_thread_exit_*`);
//! - another thread calls `execve`: it takes over the pid, the old leader's task (the links'
//!   task) is released, and the new program's address space never gets the breakpoints.
//!
//! So the leader is watched (a dummy perf event on it: readable-hung-up the moment it exits),
//! and from its end on its pid is looked at every few milliseconds: when it names a live task
//! again, an exec took it over, and every set is linked again on the pid, the old links taken
//! out first (the old leader shares the thread group's signal struct: in the new program, at a
//! breakpoint the new links put in, they would run too, and every call would count twice). What
//! the process allocated between the old leader's end and the new links was not seen: each move
//! and the time it took are counted as losses (`retargets`, `retarget_gap_us`), never silent.
//!
//! (With perf-event uprobes, the kernel's filter compared the current mm with the attach-time
//! task's: a main thread's `pthread_exit` lost everything after it too, and the probes were
//! moved to another thread; links need no move there.)
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::kmaps::shared_array::SharedMapping;
use crate::model::TraceMode;
use crate::probe::{self, Attached, ProbeError, ProbeSet, Programs, Scope};
use crate::process::mmap_watch::{
    perf_event_open, PerfEventAttr, PERF_ATTR_SIZE_VER5, PERF_COUNT_SW_DUMMY, PERF_TYPE_SOFTWARE,
};

/// A dummy perf event on one task. With a ring mapped (its control page alone), `poll` says
/// `POLLHUP` once the task has exited, and the kernel wakes pollers then; without one it
/// would say `POLLHUP` from the start.
pub struct TaskWatch {
    fd: OwnedFd,
    _ring: SharedMapping,
}

impl AsRawFd for TaskWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl TaskWatch {
    pub fn open(tid: u32) -> io::Result<TaskWatch> {
        let tid = i32::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let attr = PerfEventAttr {
            type_: PERF_TYPE_SOFTWARE,
            size: PERF_ATTR_SIZE_VER5,
            config: PERF_COUNT_SW_DUMMY,
            ..PerfEventAttr::default()
        };
        let fd = perf_event_open(&attr, tid, -1)?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let ring = SharedMapping::map(fd.as_fd(), page)?;
        Ok(TaskWatch { fd, _ring: ring })
    }
}

/// One move of the probes: linked again on the pid another thread's exec took over.
pub struct Moved {
    pub pid: u32,
    /// From the moment alloctrace learned the old leader ended to the new links.
    pub gap: Duration,
}

pub struct Retarget {
    tgid: u32,
    task: u32,
    /// The watch on `task`, until `ended` registers it with the runtime (there is none yet
    /// when the probes are first attached).
    unregistered: Option<TaskWatch>,
    watch: Option<Rc<AsyncFd<TaskWatch>>>,
    /// The process's sets, each path a descriptor of `files` (`/proc/self/fd/N`).
    sets: Vec<ProbeSet>,
    files: Vec<std::fs::File>,
    mode: TraceMode,
    probes: Vec<Attached>,
    /// Since when the task the links were attached through has ended, while its pid does not
    /// name a live task again.
    leader_gone: Option<Instant>,
}

/// `sets` with each file opened and its path made the descriptor's: attached again through a
/// descriptor held from now on, the path may lead through /proc/TGID/root, which a zombie main
/// thread no longer has.
pub(crate) fn held_open(sets: Vec<ProbeSet>) -> io::Result<(Vec<ProbeSet>, Vec<std::fs::File>)> {
    let mut files = Vec::with_capacity(sets.len());
    let mut out = Vec::with_capacity(sets.len());
    for mut set in sets {
        let file = std::fs::File::open(&set.path)?;
        set.path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        files.push(file);
        out.push(set);
    }
    Ok((out, files))
}

impl Retarget {
    /// Watches (`watch`) `tgid`'s task the `probes` of `sets` (`held_open`, through `files`)
    /// were attached to (the pid itself).
    pub fn new(
        tgid: u32,
        sets: Vec<ProbeSet>,
        files: Vec<std::fs::File>,
        watch: TaskWatch,
        mode: TraceMode,
        probes: Vec<Attached>,
    ) -> Retarget {
        Retarget {
            tgid,
            task: tgid,
            unregistered: Some(watch),
            watch: None,
            sets,
            files,
            mode,
            probes,
            leader_gone: None,
        }
    }

    /// The probes, for the end to detach (with the others, at once).
    pub fn take_probes(&mut self) -> Vec<Attached> {
        std::mem::take(&mut self.probes)
    }

    /// Attaches `sets` (found after an exec) to the task the others are on, moved with them
    /// from now on.
    pub fn add(&mut self, ebpf: &mut Programs, sets: Vec<ProbeSet>) -> Result<(), ProbeError> {
        let (sets, files) = held_open(sets).map_err(|source| ProbeError::Read {
            path: "an allocator's file".into(),
            source,
        })?;
        let pid = self.task.try_into().map_err(|_| bad_tid(self.task))?;
        let mut new = Vec::new();
        if let Err(e) = probe::attach_into(ebpf, &sets, Scope::Pid(pid), self.mode, &mut new) {
            drop_later(new);
            return Err(e);
        }
        self.probes.extend(new);
        self.sets.extend(sets);
        self.files.extend(files);
        Ok(())
    }

    /// A future that resolves when the probes must be looked at (owns what it waits on, so
    /// the caller can move them in the same `select!`): the task they were attached through
    /// ended, or, once it has, its pid names a live task again (another thread's exec).
    pub fn ended(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        if let Some(w) = self.unregistered.take() {
            match register(w) {
                Ok(w) => self.watch = Some(Rc::new(w)),
                Err(e) => log::warn!("cannot watch the traced thread: {e}"),
            }
        }
        let watch = self.watch.clone();
        let (tgid, gone) = (self.tgid, self.leader_gone);
        async move {
            if gone.is_some() {
                // No event says a pid was taken over: looked at every few milliseconds, one
                // small /proc read each, until it is or the process is gone.
                loop {
                    tokio::time::sleep(RELOOK).await;
                    if task_lives(tgid, tgid) {
                        return;
                    }
                    if !std::path::Path::new(&format!("/proc/{tgid}")).exists() {
                        return std::future::pending().await;
                    }
                }
            }
            let Some(watch) = watch else {
                return std::future::pending().await;
            };
            loop {
                // An error is the reactor's: taken as an end, and the move finds out.
                let Ok(mut guard) = watch.readable().await else {
                    return;
                };
                if hung_up(watch.get_ref()) {
                    return;
                }
                guard.clear_ready();
            }
        }
    }

    /// `ended` resolved. The links stay while the pid names the ended task (a zombie main
    /// thread: they go on firing in the other threads); once the pid names a live task again
    /// (another thread's exec took it over), the old links come out first (they could fire
    /// in the new program too, where the new ones put breakpoints: every call would count
    /// twice), then every set is linked again on the pid. None when nothing was moved.
    pub fn move_probes(&mut self, ebpf: &mut Programs) -> Result<Option<Moved>, ProbeError> {
        let since = *self.leader_gone.get_or_insert_with(Instant::now);
        if !task_lives(self.tgid, self.tgid) {
            return Ok(None);
        }
        let tid = self.tgid;
        // Watched before the attach: an end right after it is not missed.
        let watch = TaskWatch::open(tid).ok();
        probe::release_all(std::mem::take(&mut self.probes));
        let pid = tid.try_into().map_err(|_| bad_tid(tid))?;
        let mut new = Vec::new();
        let linked = probe::attach_into(ebpf, &self.sets, Scope::Pid(pid), self.mode, &mut new);
        self.probes = new;
        self.leader_gone = None;
        let gap = since.elapsed();
        match linked {
            Ok(()) => {
                // Without a watch (the task ended already) the next look finds out.
                self.unregistered = watch;
                self.watch = None;
                Ok(Some(Moved { pid: tid, gap }))
            }
            // Ended again meanwhile: looked at again, the gap still running.
            Err(_) if !task_lives(self.tgid, tid) => {
                self.leader_gone = Some(since);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// How often the pid of an ended main thread is looked at.
const RELOOK: Duration = Duration::from_millis(5);

fn register(w: TaskWatch) -> io::Result<AsyncFd<TaskWatch>> {
    // SAFETY: the TaskWatch owns its descriptor and keeps it open and unchanged for as long
    // as it lives, and the AsyncFd owns the TaskWatch.
    unsafe { AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Whether the watched task has exited (a wake-up for anything else says no).
fn hung_up(w: &TaskWatch) -> bool {
    let mut p = libc::pollfd {
        fd: w.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Detaches `links` on a thread of their own: each removal waits a kernel grace period,
/// which the draining thread must not.
fn drop_later(links: Vec<Attached>) {
    if links.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("alloctrace-detach".into())
        .spawn(move || probe::release_all(links));
}

fn bad_tid(tid: u32) -> ProbeError {
    ProbeError::Mode(format!("thread id {tid} out of range"))
}

/// The task's state is neither zombie nor dead, it is not exiting (PF_EXITING in its flags,
/// field 9 of stat), and no SIGKILL is pending for it (how exec and exit_group end the other
/// threads).
fn task_lives(tgid: u32, tid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat")) else {
        return false;
    };
    // The command name may hold spaces and parentheses: fields follow its last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(state), Some(flags)) = (fields.first(), fields.get(6)) else {
        return false;
    };
    if matches!(*state, "Z" | "X" | "x") {
        return false;
    }
    if flags.parse::<u64>().map_or(true, |f| f & PF_EXITING != 0) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/status")) else {
        return false;
    };
    let pending = status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .fold(0, |a, b| a | b);
    pending & SIGKILL_BIT == 0
}
