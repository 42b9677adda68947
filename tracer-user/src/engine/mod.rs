//! One trace: set up (`setup`), then, until the end condition, drain the kernel's counters at
//! every tick of the resolution (`--resolution`, into the processes' samples and the sites'
//! series) and, every interval, publish them as a plain-data `Snapshot`; at the end
//! (`finish`), the final `Profile` and the probes' detach. What is done with the results is a front end's
//! (`frontend/`): the engine prints only what it decides (the tracing line, exec decisions,
//! probes moved, the detach), never the intervals or the report.
//!
//! A front end drives the engine (`advance`, one interval per call) and reads the snapshots
//! through `subscribe()`, a `watch` channel. The batch run reads each one right after the
//! `advance` that published it, before the engine goes on: so every interval's line is printed
//! (a `watch` channel keeps only the newest), after that interval's exec checks and before the
//! next interval's lines. A front end that wants only the newest (a daemon's endpoint, a live
//! view) drives the engine from one task and reads the channel from others.
mod current;
mod events;
mod execs;
mod finish;
mod go_mode;
mod setup;
mod system;
mod tasks;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::drain::series::Series;
use crate::drain::{Drainer, ProcTotals};
use crate::model::{Losses, Process, Sample, Target, TraceMode};
use crate::probe::{children, follow, ProbeSet};
use crate::process::mmap_watch::MmapWatch;
use crate::symbolize::Symbolizer;
use crate::target::{self, launch};

/// Drains between intervals take at most 1/this of the time: one that takes longer (a program
/// with tens of thousands of sites) stretches their spacing past `--resolution`.
const DRAIN_SHARE: u32 = 100;

/// Why a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    TargetExited,
    Duration,
    Signal(i32),
    /// The target executed a program its user may not trace.
    Revoked,
}

/// What the trace counted at one interval: plain data, no BPF handles. The sites and their
/// symbols are made once, at the end (`Engine::finish`): symbolizing every interval's stacks
/// would cost more than the interval.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every process's cumulative counters; `t` is the time since the trace started.
    pub sample: Sample,
    /// The interval's start (the sample before; None for the first interval).
    pub previous: Option<Sample>,
    /// Every process counted so far (those retained after they exited too), by pid, with its
    /// command name and totals.
    pub processes: Vec<Process>,
    /// The data lost so far.
    pub losses: Losses,
}

impl Snapshot {
    /// The command name of `pid`, empty when unknown.
    pub fn comm(&self, pid: u32) -> String {
        self.processes
            .binary_search_by_key(&pid, |p| p.pid)
            .map(|i| self.processes[i].comm.clone())
            .unwrap_or_default()
    }
}

/// The trace has ended: handed to `Engine::finish`.
pub struct Ended {
    end: End,
    duration: Duration,
    processes: Vec<Process>,
}

/// The settings a trace reads after its set-up.
struct Settings {
    mode: TraceMode,
    sample_bytes: Option<u64>,
    interval: Duration,
    /// The drains' spacing; the interval is a whole number of them.
    resolution: Duration,
    duration: Option<Duration>,
    system_wide: bool,
    /// `--older`: the live blocks older than this are counted apart.
    older: Option<Duration>,
}

/// A trace in progress (see the module's comment).
pub struct Engine {
    settings: Settings,
    target: Target,
    target_pid: Option<u32>,
    /// The launched command (launch mode): reaped at the end for its exit code.
    held: Option<launch::Held>,
    drainer: Drainer,
    symbolizer: Arc<Symbolizer>,
    stop_events: Arc<AtomicBool>,
    events: JoinHandle<(Option<MmapWatch>, Option<follow::Follower>)>,
    tasks: tasks::Tasks,
    exe: Option<target::ExeWatch>,
    /// Woken by the event thread when the target executes a program.
    exec_wake: Arc<tokio::sync::Notify>,
    /// System-wide mode's sets, growing as new allocator files are mapped.
    system: Option<system::SystemSets>,
    children: Option<children::Children>,
    start: Instant,
    start_unix_secs: u64,
    /// Every drain's sample (bounded by merging, `Series`).
    samples: Series<Sample>,
    /// The last snapshot's sample: the start of the next interval.
    published_sample: Option<Sample>,
    published: watch::Sender<Arc<Snapshot>>,
    /// Made at the first `advance`, in the runtime that drives the engine.
    waits: Option<Waits>,
    /// Drain ticks since the last snapshot.
    drains: u64,
    /// The last drain between intervals: when it ended, and the CPU time drains take (a
    /// moving average: one drain preempted, or slow once, does not stretch the next ones).
    last_drain: Option<(Instant, Duration)>,
    /// Drain ticks let pass to keep drains within their share of the time.
    drains_skipped: u64,
    /// Snapshots published.
    ticks: u64,
    /// The system-wide sweep of exited processes, done when the engine goes on after an
    /// interval's snapshot was read (its log lines come after that interval's line).
    sweep_due: bool,
    /// The Go processes' GC cycles, read into each snapshot's processes.
    go_gc: Option<crate::golang::gc::Table>,
}

/// What an interval waits for besides the tick.
struct Waits {
    tick: tokio::time::Interval,
    sigint: Signal,
    sigterm: Signal,
    deadline: Pin<Box<dyn Future<Output = ()>>>,
    exited: Pin<Box<dyn Future<Output = Result<()>>>>,
}

impl Waits {
    fn new(e: &Engine) -> Result<Waits> {
        let start = tokio::time::Instant::from_std(e.start);
        let step = e.settings.resolution;
        let mut tick = tokio::time::interval_at(start + step, step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let duration = e.settings.duration;
        let deadline = Box::pin(async move {
            match duration {
                Some(d) => tokio::time::sleep_until(start + d).await,
                None => std::future::pending().await,
            }
        });
        let followed = e.children.as_ref().map(|c| c.shared().clone());
        let target_pid = e.target_pid;
        let exited = Box::pin(async move {
            match target_pid {
                Some(pid) => {
                    wait_exit(pid).await?;
                    // As `strace -f`: the run ends when the followed processes have ended too.
                    if let Some(shared) = &followed {
                        children::all_exited(shared).await;
                    }
                    Ok::<(), anyhow::Error>(())
                }
                None => std::future::pending().await,
            }
        });
        Ok(Waits {
            tick,
            sigint: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            sigterm: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            deadline,
            exited,
        })
    }
}

/// What woke an interval.
enum Wake {
    TaskEnded,
    Exec,
    /// A drain's tick (the interval's end every `per_interval` of them).
    Tick,
    End(End),
}

impl Engine {
    /// The mode the trace runs in: the one asked for, or alloc-only for a Go target.
    pub fn mode(&self) -> crate::model::TraceMode {
        self.settings.mode
    }

    /// The snapshots, each published when its interval is drained. A receiver started now
    /// sees the next one as changed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// Runs the trace up to its next interval and publishes that interval's snapshot, or up to
    /// its end: then the final snapshot is published (not when the target was revoked: it
    /// shows nothing more) and the end is returned. Not to be called again after the end.
    pub async fn advance(&mut self) -> Result<Option<Ended>> {
        if std::mem::take(&mut self.sweep_due) {
            self.drainer.retire_dead();
            self.ticks += 1;
            if self.ticks.is_multiple_of(10) {
                self.drainer.sweep_live();
            }
        }
        if self.waits.is_none() {
            self.waits = Some(Waits::new(self)?);
        }
        loop {
            let Some(w) = self.waits.as_mut() else {
                unreachable!("made above")
            };
            let ended = self.tasks.retarget.as_mut().map(|r| r.ended());
            let task_end = async {
                match ended {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            let exec_wake = self.exec_wake.clone();
            let wake = tokio::select! {
                // First: the gap it ends is lost data, and grows while the others run.
                biased;
                _ = task_end => Wake::TaskEnded,
                // So is the time before an exec'd program's new allocators are probed.
                _ = exec_wake.notified() => Wake::Exec,
                _ = w.tick.tick() => Wake::Tick,
                _ = w.sigint.recv() => Wake::End(End::Signal(libc::SIGINT)),
                _ = w.sigterm.recv() => Wake::End(End::Signal(libc::SIGTERM)),
                _ = &mut w.deadline => Wake::End(End::Duration),
                r = &mut w.exited => { r?; Wake::End(End::TargetExited) }
            };
            match wake {
                Wake::TaskEnded => tasks::task_ended(&mut self.tasks, &mut self.drainer)?,
                Wake::Exec => {
                    if self.execs(false)? {
                        return self.end(End::Revoked).map(Some);
                    }
                }
                Wake::Tick => {
                    self.drains += 1;
                    if self.drains >= self.per_interval() {
                        self.drains = 0;
                        return self.interval();
                    }
                    match self.last_drain {
                        Some((at, took)) if at.elapsed() < took * DRAIN_SHARE => {
                            if self.drains_skipped == 0 {
                                log::info!(
                                    "a drain takes {:.2} ms: drains every {:.0} ms or more, \
                                     not every {:?}",
                                    took.as_secs_f64() * 1e3,
                                    (took * DRAIN_SHARE).as_secs_f64() * 1e3,
                                    self.settings.resolution
                                );
                            }
                            self.drains_skipped += 1;
                        }
                        _ => self.drain(),
                    }
                }
                Wake::End(end) => return self.end(end).map(Some),
            }
        }
    }

    /// Decides and says the execs of the target and of the followed processes seen since
    /// the last call (their new programs probed); true when the target may no longer be
    /// traced.
    fn execs(&mut self, last: bool) -> Result<bool> {
        if let Some(w) = self.exe.as_mut() {
            execs::reprobe_target(
                w,
                &mut self.tasks,
                &mut self.drainer,
                self.children.as_ref(),
            )?;
            for line in w.check(last) {
                eprintln!("{line}");
            }
            if w.revoked {
                return Ok(true);
            }
        }
        let children = self.children.as_mut();
        for line in children.map(|c| c.check(last)).unwrap_or_default() {
            eprintln!("{line}");
        }
        Ok(false)
    }

    /// Drains per interval (the settings make the interval a whole number of them).
    fn per_interval(&self) -> u64 {
        let step = self.settings.resolution.as_nanos().max(1);
        (self.settings.interval.as_nanos() / step).max(1) as u64
    }

    /// A drain between intervals: into the samples and the sites' series only. Cheap: the
    /// site table is read in place and only the sites that moved cost more; no process's
    /// name is read.
    fn drain(&mut self) {
        let cpu0 = thread_cpu();
        let t = self.start.elapsed();
        let (s, _) = self.drainer.sample(t, false);
        self.samples.push(s);
        let took = thread_cpu().saturating_sub(cpu0);
        // From zero: the first drains also scan the whole site table for the sites new since
        // (a cost that comes once per new site, which letting drains pass would not spare).
        let avg = self.last_drain.map_or(Duration::ZERO, |(_, avg)| avg);
        let avg = (avg * 7 + took) / 8;
        self.last_drain = Some((Instant::now(), avg));
    }

    /// One interval: drains, decides the execs seen since, publishes.
    fn interval(&mut self) -> Result<Option<Ended>> {
        self.count_late()?;
        let t = self.start.elapsed();
        let (mut s, procs) = self.drainer.sample(t, true);
        // Before the interval's line: a target that may no longer be traced shows nothing
        // more.
        if self.execs(false)? {
            return self.end(End::Revoked).map(Some);
        }
        for pid in self.children.iter().flat_map(|c| c.revoked()) {
            s.processes.remove(pid);
        }
        let procs = self.processes_of(procs);
        self.publish(s, procs);
        self.sweep_due = self.settings.system_wide;
        Ok(None)
    }

    /// The end: the final drain, published as the last snapshot.
    fn end(&mut self, end: End) -> Result<Ended> {
        let duration = self.start.elapsed();
        // Stop counting before the final drain, so the final numbers are a consistent end
        // state; the (slow) detach waits until the report is out.
        self.drainer.stop_probes()?;
        self.count_late()?;
        let (last, procs) = self.drainer.sample(duration, true);
        let processes = self.processes_of(procs);
        if end == End::Revoked {
            self.samples.push(last);
        } else {
            self.publish(last, processes.clone());
        }
        Ok(Ended {
            end,
            duration,
            processes,
        })
    }

    fn publish(&mut self, sample: Sample, processes: Vec<Process>) {
        let snapshot = Snapshot {
            previous: self.published_sample.replace(sample.clone()),
            sample: sample.clone(),
            processes,
            losses: self.drainer.losses(),
        };
        self.published.send_replace(Arc::new(snapshot));
        self.samples.push(sample);
    }
}

impl Engine {
    /// Counts the late probes since the last call: followed processes' after their fork,
    /// followed processes' new programs' after their exec, system-wide new allocator files'
    /// after their first mapping (the target's own execs are counted as they are decided).
    fn count_late(&mut self) -> Result<()> {
        count_late(&mut self.drainer, self.children.as_ref())?;
        let mut gaps = self
            .children
            .as_ref()
            .map(|c| c.take_exec_late())
            .unwrap_or_default();
        gaps.extend(self.system.iter().flat_map(|s| s.take_late()));
        execs::count_exec_late(&mut self.drainer, &gaps)?;
        Ok(())
    }

    /// The kernel's per-process totals as the model's processes, by pid, each with the
    /// allocators it was probed through.
    fn processes_of(&self, procs: BTreeMap<u32, ProcTotals>) -> Vec<Process> {
        let followed = self
            .children
            .as_ref()
            .map(|c| c.allocators())
            .unwrap_or_default();
        let mut out = processes_of(procs);
        for p in &mut out {
            p.allocators = if Some(p.pid) == self.target_pid {
                self.tasks
                    .sets
                    .iter()
                    .map(ProbeSet::allocator_use)
                    .collect()
            } else if let Some(a) = followed.get(&p.pid) {
                a.clone()
            } else if let Some(sys) = &self.system {
                sys.allocators_of(p.pid)
            } else {
                Vec::new()
            };
        }
        if let Some(t) = &self.go_gc {
            t.annotate(&mut out);
        }
        out
    }
}

/// Counts the followed processes whose probes went in after their fork since the last call
/// (their allocations in between were not seen) as losses, with the time it took.
fn count_late(drainer: &mut Drainer, children: Option<&children::Children>) -> Result<()> {
    let late = children.map(|c| c.take_late()).unwrap_or_default();
    if late.is_empty() {
        return Ok(());
    }
    let us: u64 = late
        .iter()
        .map(|w| u64::try_from(w.as_micros()).unwrap_or(u64::MAX).max(1))
        .fold(0, u64::saturating_add);
    drainer.add_loss(alloctrace_common::loss::FOLLOW_LATE, late.len() as u64)?;
    drainer.add_loss(alloctrace_common::loss::FOLLOW_GAP_US, us)
}

/// The kernel's per-process totals as the model's processes, by pid.
fn processes_of(procs: BTreeMap<u32, ProcTotals>) -> Vec<Process> {
    procs
        .into_iter()
        .map(|(pid, p)| Process {
            pid,
            comm: p.comm,
            counters: p.counters,
            unknown_frees: p.unknown_frees,
            unseen: None,
            allocators: Vec::new(),
            go: None,
        })
        .collect()
}

/// The CPU time the calling thread has used: what a drain costs, whatever else runs.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, a local here.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resolves when `pid` exits (a pidfd turns readable), whether or not it is our child.
async fn wait_exit(pid: u32) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        // Already gone.
        return Ok(());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as long as it lives,
    // and the AsyncFd owns it.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("cannot watch the target's exit")?;
    let _ = afd
        .readable()
        .await
        .context("waiting for the target's exit")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{processes_of, Snapshot};
    use crate::drain::ProcTotals;

    #[test]
    fn a_snapshot_names_its_processes_and_not_others() {
        let mut procs = BTreeMap::new();
        for (pid, comm) in [(30, "c"), (10, "a")] {
            let p = ProcTotals {
                comm: comm.to_string(),
                ..ProcTotals::default()
            };
            procs.insert(pid, p);
        }
        let s = Snapshot {
            processes: processes_of(procs),
            ..Snapshot::default()
        };
        assert_eq!(
            (s.comm(10), s.comm(30), s.comm(20)),
            ("a".into(), "c".into(), "".into())
        );
    }
}
