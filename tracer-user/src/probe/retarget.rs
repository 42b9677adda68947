//! Keeps one traced process's probes on a live task of it (`--pid` and launch mode).
//!
//! A uprobe attached with a pid fires in every thread of that task's address space: the
//! kernel's filter compares the current mm with `event->hw.target->mm`, the target being the
//! one task the pid named at attach time. When that task ends, nothing matches any more and
//! every allocation is lost, though the process lives on:
//! - the main thread calls `pthread_exit` while other threads run: it stays a zombie without an
//!   mm (a new perf event on it is refused);
//! - another thread calls `execve`: it takes over the pid, the old main thread's task (the
//!   probes' target) is released, and the new program's mm never gets the breakpoints.
//!
//! So the target task is watched (a dummy perf event on it: readable-hung-up the moment it
//! exits), and when it ends every probe is attached again to a live task of the process — the
//! pid itself after an exec — before the old ones are taken out (their removal waits kernel
//! grace periods: done on a thread of its own, off the path of the next allocation). What the
//! process allocated between the end and the new attach was not seen: each move and the time
//! it took are counted as losses (`retargets`, `retarget_gap_us`), never silent.
//!
//! Why not probes on two tasks at once, so that one's end leaves the other's in place: each
//! perf event is a consumer of its own on the uprobe, and the kernel runs the programs once per
//! consumer whose filter matches — two live targets would count every call twice.
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

/// One move of the probes.
pub struct Moved {
    pub from: u32,
    /// None when every task tried ended before its probes were in (the threads finished
    /// meanwhile): what they allocated after `from` ended was not seen either.
    pub to: Option<u32>,
    /// From the moment alloctrace learned the old task ended to the new probes' attach.
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

    /// A future that resolves when the task the probes are on ends (owns what it waits on,
    /// so the caller can move the probes in the same `select!`).
    pub fn ended(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        if let Some(w) = self.unregistered.take() {
            match register(w) {
                Ok(w) => self.watch = Some(Rc::new(w)),
                Err(e) => log::warn!("cannot watch the traced thread: {e}"),
            }
        }
        let watch = self.watch.clone();
        async move {
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

    /// The probes' task ended: attaches every probe to a live task of the process, then
    /// takes the old ones out in the background. None when no task of the process lives (it
    /// is exiting: the run's end comes from its pidfd); a move with no new task when the
    /// live tasks tried all ended first (a loss all the same).
    pub fn move_probes(&mut self, ebpf: &mut Programs) -> Result<Option<Moved>, ProbeError> {
        let since = Instant::now();
        let from = self.task;
        // A chosen task may end before its probes are in (it was being killed by an exec or
        // an exit_group): choose again, a few times.
        let mut tried = false;
        for _ in 0..8 {
            let Some(tid) = live_task(self.tgid) else {
                break;
            };
            tried = true;
            // Which task `tid` names: during an exec the main thread's pid passes from the
            // old main thread to the exec'ing thread, and a probe or watch opened across that
            // could be on the other one.
            let Some(started) = start_time(self.tgid, tid) else {
                continue;
            };
            // Watched before the attach: an end right after it is not missed.
            let Ok(watch) = TaskWatch::open(tid) else {
                continue;
            };
            let pid = tid.try_into().map_err(|_| bad_tid(tid))?;
            let mut new = Vec::new();
            if let Err(e) =
                probe::attach_into(ebpf, &self.sets, Scope::Pid(pid), self.mode, &mut new)
            {
                // What went in goes out: the pid may name a live task by now (an exec
                // hands the exec'ing thread the main thread's pid), where those probes and
                // the next attempt's would both count every call.
                drop_later(new);
                if task_lives(self.tgid, tid) {
                    return Err(e);
                }
                continue;
            }
            if start_time(self.tgid, tid) != Some(started) || !task_lives(self.tgid, tid) {
                drop_later(new);
                continue;
            }
            let gap = since.elapsed();
            let old = std::mem::replace(&mut self.probes, new);
            // The old probes match no task any more meanwhile.
            drop_later(old);
            self.task = tid;
            self.unregistered = Some(watch);
            self.watch = None;
            return Ok(Some(Moved {
                from,
                to: Some(tid),
                gap,
            }));
        }
        Ok(tried.then(|| Moved {
            from,
            to: None,
            gap: since.elapsed(),
        }))
    }
}

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

/// The task's start time (field 22 of stat): tells two tasks that held one id apart.
fn start_time(tgid: u32, tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the name start at the third (state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// A live task of process `tgid` to attach to: the pid itself when it lives (after another
/// thread's exec it is that thread, running the new program), else any thread that is
/// neither a zombie nor on its way out (exiting, or killed by an exec or exit_group in
/// progress: SIGKILL pending).
fn live_task(tgid: u32) -> Option<u32> {
    if task_lives(tgid, tgid) {
        return Some(tgid);
    }
    let dir = std::fs::read_dir(format!("/proc/{tgid}/task")).ok()?;
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.into_iter().find(|&t| task_lives(tgid, t))
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
