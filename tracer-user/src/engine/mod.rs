//! One tracing session: resolve the target, attach, drain every interval until the end
//! condition, then detach, symbolize and hand the profile to the reports.
use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloctrace_common::{self as abi, Event};
use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ReportFormat;
use crate::config::{Config, TargetSpec};
use crate::drain::{self, Drainer, ProcTotals, RawSite};
use crate::export;
use crate::probe::follow;
use crate::kmaps::loader::{self, Sizes};
use crate::process::mmap_watch::MmapWatch;
use crate::model::{
    Counters, Losses, Module, Process, Profile, Sample, Site, Target, TraceMode, TracerCost, Unseen,
};
use crate::export::output;
use crate::probe::{self, Scope};
use crate::render;
use crate::probe::retarget::Retarget;
use crate::drain::sampling;
use crate::symbolize::site_merge;
use crate::target::launch;
use crate::symbolize::Symbolizer;
use crate::target;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    TargetExited,
    Duration,
    Signal(i32),
    /// The target executed a program its user may not trace.
    Revoked,
}

/// Runs a session and returns the process exit code.
pub fn run(cfg: Config) -> Result<i32> {
    target::check_privileges()?;
    if matches!(cfg.target, TargetSpec::System) {
        target::check_system_wide()?;
    }
    target::check_kernel()?;

    let mut mmap_watch;
    // The thread a --pid target is read and attached through (see check_process).
    let mut via = None;
    let (libc, scope, mut held, model_target) = match &cfg.target {
        TargetSpec::Pid(pid) => {
            let tid = target::check_process(*pid)?;
            target::check_may_trace(*pid)?;
            via = Some(tid);
            let via = tid;
            let libc = target::libc_of_pid(via)?;
            let nz = NonZeroU32::new(via).context("pid 0")?;
            // Its execs (and the mappings of the programs it runs) are recorded as they
            // happen: one that execs and exits between two looks is not missed.
            mmap_watch = match MmapWatch::open(Some(via)) {
                Ok(mut w) => {
                    // Followed children's mappings are needed as well.
                    if !cfg.follow_forks {
                        w.only(*pid);
                    }
                    Some(w)
                }
                Err(e) => {
                    log::warn!(
                        "cannot record the process's execs and mappings as they are made \
                         ({e}); an exec is noticed at the next interval only"
                    );
                    None
                }
            };
            (libc, Scope::Pid(nz), None, Target::Pid { pid: *pid })
        }
        TargetSpec::Command(argv) => {
            let exe = target::resolve_command(&argv[0])?;
            let libc = target::own_libc()?;
            // Forked before any thread of ours exists; it waits for the probes.
            let held = launch::hold(&exe, argv)?;
            let nz = NonZeroU32::new(held.pid).context("fork returned pid 0")?;
            // Before the exec: the command's every executable mapping, from the exec's own
            // on, is recorded as it is made, so a command that exits before its maps can be
            // read still symbolizes.
            mmap_watch = match MmapWatch::open(Some(held.pid)) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "cannot record the command's mappings as they are made ({e}); \
                         a short-lived command's frames may print as bare addresses"
                    );
                    None
                }
            };
            // The report shows the arguments as text: bytes that are not UTF-8 print as U+FFFD.
            let t = Target::Command {
                argv: argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                pid: held.pid,
            };
            (libc, Scope::Pid(nz), Some(held), t)
        }
        TargetSpec::System => {
            // As for a command: processes that exit before their maps are read still
            // symbolize.
            mmap_watch = match MmapWatch::open(None) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!(
                        "cannot record mappings as they are made ({e}); short-lived \
                         processes' frames may print as bare addresses"
                    );
                    None
                }
            };
            (target::own_libc()?, Scope::All, None, Target::System)
        }
    };
    let target_pid = match &model_target {
        Target::Pid { pid } | Target::Command { pid, .. } => Some(*pid),
        Target::System => None,
    };

    // Which program each exec of the target brings, and whether it maps the probed libc.
    let exec_log = match (mmap_watch.as_mut(), target_pid) {
        (Some(w), Some(pid)) => Some(w.track_execs(pid, target::file_id(&libc))),
        _ => None,
    };
    if cfg.follow_forks {
        match mmap_watch.as_mut() {
            Some(w) => w.follow_forks(),
            None => anyhow::bail!(
                "--follow-forks needs the kernel's fork records (a perf event on the target), \
                 which could not be opened (see the warning above)"
            ),
        }
    }

    let entries = probe::resolve(&libc)?;
    let mut ebpf = loader::load(&Sizes {
        max_stacks: cfg.max_stacks,
        max_live: cfg.max_live,
        sample_bytes: cfg.sample_bytes.unwrap_or(0),
        // Must match the probes' scope (the process, not the thread attached through): the
        // programs take the tgid as given. Following forks, the probes fire in several
        // processes: 0 has the programs ask the kernel, as in system-wide mode.
        target_tgid: if cfg.follow_forks {
            0
        } else {
            target_pid.unwrap_or(0)
        },
    })?;
    let probes_in = match probe::attach(&mut ebpf, &libc, &entries, scope, cfg.mode) {
        Ok(p) => p,
        Err(e) => match cfg.target {
            TargetSpec::Pid(pid) if target::exited_during_start(pid, &e) => {
                return Err(target::TargetError::ExitedWhileStarting(pid).into())
            }
            _ => return Err(e.into()),
        },
    };
    let attached = probes_in.len();
    // Following forks, the event thread owns the programs (it attaches children's probes):
    // the probes are not moved when the task they are on ends (not done yet).
    let retarget = if cfg.follow_forks {
        None
    } else {
        retarget_for(scope, &libc, &entries, cfg.mode, probes_in)
    };
    let mut drainer = Drainer::take(
        &mut ebpf,
        cfg.max_samples,
        alloctrace_common::live::slots(cfg.max_live),
        alloctrace_common::sites::slots(cfg.max_stacks),
    )?;
    let symbolizer = Arc::new(Symbolizer::new());
    if let Some(pid) = target_pid.filter(|_| held.is_none()) {
        symbolizer.note_process_now(pid);
    }
    if let (Some(pid), Some(tid)) = (target_pid, via.filter(|&t| Some(t) != target_pid)) {
        // Once the main thread has exited, the process's maps read as empty through its pid:
        // a live thread's are the process's.
        if let Ok(maps) = crate::process::procmaps::ProcessMaps::read(tid) {
            symbolizer.add_mappings(pid, maps.mappings().to_vec());
        }
    }
    let stop_events = Arc::new(AtomicBool::new(false));
    let ring = drain::take_events(&mut ebpf)?;
    // Following, the probe sets of new processes are attached from the event thread, which
    // reads their fork records: it owns the eBPF object until the run ends.
    let (mut kept_ebpf, follower, mut children) = if cfg.follow_forks {
        let start_ns = target::monotonic_ns();
        let (f, shared) =
            follow::Follower::new(ebpf, libc.clone(), entries.clone(), cfg.mode, start_ns);
        let c = follow::Children::new(shared, libc.clone(), start_ns);
        (None, Some(f), Some(c))
    } else {
        (Some(ebpf), None, None)
    };
    let events_thread = {
        let (sym, stop) = (symbolizer.clone(), stop_events.clone());
        std::thread::Builder::new()
            .name("alloctrace-events".into())
            .spawn(move || watch_events(ring, mmap_watch, follower, &sym, &stop))
            .context("cannot start the event thread")?
    };

    // Before the target can go on (and exec) once it is told we are tracing.
    let mut exe =
        target_pid.map(|pid| target::ExeWatch::new(pid, &libc, exec_log, target::monotonic_ns()));
    eprintln!(
        "alloctrace: tracing {model_target}: {} probes on {}{}",
        attached,
        libc.display(),
        if cfg.duration.is_some() || target_pid.is_none() {
            ""
        } else {
            " (Ctrl-C to stop)"
        }
    );
    if let Some(h) = held.as_mut() {
        h.release()?;
    }
    let start = Instant::now();
    let start_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let mut samples = VecDeque::new();
    let end = rt.block_on(watch(
        &cfg,
        &mut drainer,
        target_pid,
        start,
        &mut samples,
        &mut exe,
        &mut children,
        Tasks {
            ebpf: kept_ebpf.as_mut(),
            retarget,
        },
    ))?;

    let duration = start.elapsed();
    // Stop counting before the final drain, so the final numbers are a consistent end state;
    // the (slow) detach waits until the report is out.
    drainer.stop_probes()?;
    let (last, procs) = drainer.sample(duration);
    if end != End::Revoked {
        print_interval(samples.back(), &last, &procs, &drainer, cfg.mode);
    }
    push_sample(&mut samples, last, cfg.max_samples);
    stop_events.store(true, Ordering::Relaxed);
    // Whatever the watch recorded since the thread's last look reaches the symbolizer
    // (ahead of the requests below: one channel, in order).
    let (watch, follower) = events_thread.join().unwrap_or_default();
    if let Some(mut w) = watch {
        feed_mappings(&mut w, &symbolizer);
    }
    let followed = follower.map(|f| f.finish());
    if let Some(line) = followed.as_ref().and_then(|f| f.window_line()) {
        eprintln!("{line}");
    }
    // Every exec, up to the last record, is decided and said before the report.
    for line in exe.as_mut().map(|w| w.check(true)).unwrap_or_default() {
        eprintln!("{line}");
    }
    for line in children.as_mut().map(|c| c.check(true)).unwrap_or_default() {
        eprintln!("{line}");
    }
    // A target that ran a program its user may not trace: nothing of it is shown.
    let mut revoked: std::collections::HashSet<u32> = target_pid
        .filter(|_| exe.as_ref().is_some_and(|w| w.revoked))
        .into_iter()
        .collect();
    revoked.extend(children.iter().flat_map(|c| c.revoked()));
    for s in &mut samples {
        s.processes.retain(|pid, _| !revoked.contains(pid));
    }
    let mut unseen: Vec<(Unseen, u32)> = exe
        .and_then(|w| w.unseen)
        .zip(target_pid)
        .into_iter()
        .collect();
    unseen.extend(children.map(|c| c.unseen()).unwrap_or_default());

    let profile = Profile {
        target: model_target,
        mode: cfg.mode,
        sample_bytes: cfg.sample_bytes,
        start_unix_secs,
        duration,
        interval: cfg.interval,
        samples: samples.into(),
        processes: unseen.into_iter().map(Some).fold(
            procs
                .into_iter()
                .filter(|(pid, _)| !revoked.contains(pid))
                .map(|(pid, p)| Process {
                    pid,
                    comm: p.comm,
                    counters: p.counters,
                    unknown_frees: p.unknown_frees,
                    unseen: None,
                })
                .collect(),
            with_unseen,
        ),
        sites: vec![],
        losses: drainer.losses(),
        modules: vec![],
        tracer: None,
    };
    // Timed for `cargo xtask bench` (the drain + symbolize cost of many distinct stacks).
    let t0 = Instant::now();
    let mut raw = drainer.sites();
    raw.retain(|s| !revoked.contains(&s.key.tgid));
    let drained = t0.elapsed();
    let t1 = Instant::now();
    let (sites, seen, stacks_cut) = symbolize_sites(&symbolizer, raw, cfg.sample_bytes);
    let modules = modules_of(&symbolizer, seen);
    log::info!(
        "final drain: {} sites in {:.1} ms; symbolized in {:.1} ms",
        sites.len(),
        drained.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    let (slots, lanes, spread_left) = drainer.site_slots();
    log::info!(
        "site table: {slots} slots in use, {lanes} of them lanes past the first \
         (room for {spread_left} more)"
    );
    let profile = Profile {
        sites,
        modules,
        tracer: own_cost(),
        losses: Losses {
            stacks_cut,
            ..profile.losses
        },
        ..profile
    };
    // The probes come off while the outputs are written, not after: detaching takes ~1.5 s
    // (a grace period per probe), which would delay the report, and an output that waits
    // (a FIFO's reader) must not keep every probe of a system-wide run in every process's
    // allocator meanwhile.
    let detach = std::thread::Builder::new()
        .name("alloctrace-detach".into())
        .spawn(move || {
            drop(kept_ebpf);
            followed.and_then(|f| f.detach_all())
        })
        .context("cannot start the detach thread")?;
    let outputs_written = write_outputs(&cfg, &profile);
    if let Ok(Some(line)) = detach.join() {
        eprintln!("{line}");
    }

    let code = match (held, end) {
        (Some(h), End::TargetExited) => h.reap(),
        (Some(h), End::Signal(sig)) => {
            // The command got the same Ctrl-C from the terminal: give it a moment to finish.
            let deadline = Instant::now() + Duration::from_millis(500);
            loop {
                if let Some(code) = h.try_reap() {
                    break code;
                }
                if Instant::now() > deadline {
                    break 128 + sig;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        (Some(h), End::Duration | End::Revoked) => h.try_reap().unwrap_or(0),
        (None, End::Signal(sig)) => 128 + sig,
        (None, _) => 0,
    };
    // An output that could not be written makes the exit non-zero (its error is printed).
    Ok(if !outputs_written && code == 0 {
        1
    } else {
        code
    })
}

/// Marks the process whose allocations went unseen after an exec; one never seen to allocate
/// is listed all the same, or the report would show nothing of it rather than say why.
fn with_unseen(mut procs: Vec<Process>, unseen: Option<(Unseen, u32)>) -> Vec<Process> {
    let Some((unseen, pid)) = unseen else {
        return procs;
    };
    match procs.binary_search_by_key(&pid, |p| p.pid) {
        Ok(i) => procs[i].unseen = Some(unseen),
        Err(i) => {
            let comm = unseen.program.rsplit('/').next().unwrap_or_default();
            procs.insert(
                i,
                Process {
                    pid,
                    // As the kernel shortens it.
                    comm: comm.chars().take(15).collect(),
                    counters: Counters::default(),
                    unknown_frees: 0,
                    unseen: Some(unseen),
                },
            );
        }
    }
    procs
}

fn push_sample(samples: &mut VecDeque<Sample>, s: Sample, max: usize) {
    if samples.len() >= max.max(1) {
        samples.pop_front();
    }
    samples.push_back(s);
}

fn print_interval(
    prev: Option<&Sample>,
    cur: &Sample,
    procs: &BTreeMap<u32, ProcTotals>,
    drainer: &Drainer,
    mode: TraceMode,
) {
    let comm = |pid: u32| procs.get(&pid).map(|p| p.comm.clone()).unwrap_or_default();
    for line in render::interval_lines(prev, cur, &comm, mode) {
        eprintln!("{line}");
    }
    if let Some(line) = render::losses_line(&drainer.losses()) {
        eprintln!("{line}");
    }
}

/// One traced process's probes and what keeps them on a live task of it (`retarget`).
struct Tasks<'a> {
    /// None while following forks (the event thread has the programs).
    ebpf: Option<&'a mut aya::Ebpf>,
    retarget: Option<Retarget>,
}

/// With one process traced, the watch that moves its probes when the task they are on ends;
/// without it (the kernel refused the watch), a warning: that end would lose everything after.
fn retarget_for(
    scope: Scope,
    libc: &std::path::Path,
    entries: &[(&'static probe::ProbeSpec, probe::Entry)],
    mode: TraceMode,
    attached: Vec<probe::Attached>,
) -> Option<Retarget> {
    let Scope::Pid(pid) = scope else {
        return None;
    };
    match Retarget::new(pid.get(), libc, entries.to_vec(), mode, attached) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!(
                "cannot watch the traced thread ({e}): if the main thread ends before the \
                 process (pthread_exit, another thread's exec), nothing after is seen"
            );
            None
        }
    }
}

/// The task the probes are on ended: moves them (see `retarget`) and counts the move and its
/// gap as losses; with no live task left (the process is exiting) stops watching.
fn task_ended(tasks: &mut Tasks<'_>, drainer: &mut Drainer) -> Result<()> {
    let (Some(r), Some(ebpf)) = (tasks.retarget.as_mut(), tasks.ebpf.as_deref_mut()) else {
        return Ok(());
    };
    match r.move_probes(ebpf)? {
        Some(m) => {
            drainer.add_loss(alloctrace_common::loss::RETARGETS, 1)?;
            let us = u64::try_from(m.gap.as_micros()).unwrap_or(u64::MAX).max(1);
            drainer.add_loss(alloctrace_common::loss::RETARGET_GAP_US, us)?;
            match m.to {
                Some(to) => eprintln!(
                    "alloctrace: probes moved from thread {} (ended) to thread {to} in {:.2} \
                     ms: allocations in between were not seen",
                    m.from,
                    m.gap.as_secs_f64() * 1e3
                ),
                None => {
                    eprintln!(
                        "alloctrace: thread {} (the probes' target) ended, and every other \
                         thread ended before the probes were on it ({:.2} ms): their \
                         allocations after its end were not seen",
                        m.from,
                        m.gap.as_secs_f64() * 1e3
                    );
                    tasks.retarget = None;
                }
            }
        }
        None => tasks.retarget = None,
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    cfg: &Config,
    drainer: &mut Drainer,
    target_pid: Option<u32>,
    start: Instant,
    samples: &mut VecDeque<Sample>,
    exe: &mut Option<target::ExeWatch>,
    children: &mut Option<follow::Children>,
    mut tasks: Tasks<'_>,
) -> Result<End> {
    let first = tokio::time::Instant::from_std(start) + cfg.interval;
    let mut tick = tokio::time::interval_at(first, cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let deadline = async {
        match cfg.duration {
            Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(start) + d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let followed = children.as_ref().map(|c| c.shared().clone());
    let exited = async {
        match target_pid {
            Some(pid) => {
                wait_exit(pid).await?;
                // As `strace -f`: the run ends when the followed processes have ended too.
                if let Some(shared) = &followed {
                    follow::all_exited(shared).await;
                }
                Ok::<(), anyhow::Error>(())
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    let system_wide = matches!(cfg.target, TargetSpec::System);
    let mut ticks = 0u64;
    loop {
        let ended = tasks.retarget.as_mut().map(Retarget::ended);
        let task_end = async {
            match ended {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // First: the gap it ends is lost data, and grows while the others run.
            biased;
            _ = task_end => task_ended(&mut tasks, drainer)?,
            _ = tick.tick() => {
                let t = start.elapsed();
                let (mut s, procs) = drainer.sample(t);
                // Before the interval's line: a target that may no longer be traced shows
                // nothing more.
                for line in exe.as_mut().map(|w| w.check(false)).unwrap_or_default() {
                    eprintln!("{line}");
                }
                if exe.as_ref().is_some_and(|w| w.revoked) {
                    return Ok(End::Revoked);
                }
                for line in children.as_mut().map(|c| c.check(false)).unwrap_or_default() {
                    eprintln!("{line}");
                }
                for pid in children.iter().flat_map(|c| c.revoked()) {
                    s.processes.remove(pid);
                }
                print_interval(samples.back(), &s, &procs, drainer, cfg.mode);
                push_sample(samples, s, cfg.max_samples);
                if system_wide {
                    drainer.retire_dead();
                    ticks += 1;
                    if ticks.is_multiple_of(10) {
                        drainer.sweep_live();
                    }
                }
            }
            _ = sigint.recv() => return Ok(End::Signal(libc::SIGINT)),
            _ = sigterm.recv() => return Ok(End::Signal(libc::SIGTERM)),
            _ = &mut deadline => return Ok(End::Duration),
            r = &mut exited => { r?; return Ok(End::TargetExited) }
        }
    }
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

/// Reads the kernel's rare notifications (new process, new stack) and has the symbolizer
/// snapshot that process's mappings while it still lives; passes on the mappings the watch
/// records. Returns the watch, for a last look once the run is over.
fn watch_events(
    mut ring: RingBuf<MapData>,
    mut mmaps: Option<MmapWatch>,
    mut follower: Option<follow::Follower>,
    sym: &Symbolizer,
    stop: &AtomicBool,
) -> (Option<MmapWatch>, Option<follow::Follower>) {
    let mut said_unfollowed = false;
    let mut pfds = vec![libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    pfds.extend(mmaps.iter().flat_map(|w| w.fds()).map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a valid array of pfds.len() pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        // A perf event whose task has exited stays readable-hung-up forever: stop polling it
        // (a negative fd is ignored) rather than spin; it is still read below.
        for p in &mut pfds[1..] {
            if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                p.fd = -1;
            }
        }
        // Mappings first: a new stack's note may find the process gone already.
        if let Some(w) = mmaps.as_mut() {
            feed_mappings(w, sym);
            let forks = w.take_forks();
            match follower.as_mut() {
                Some(f) => f.look(forks, &w.take_execs(), sym),
                None => {
                    if let Some(fk) = forks.first().filter(|_| !said_unfollowed) {
                        said_unfollowed = true;
                        eprintln!(
                            "alloctrace: pid {} ({}) started pid {}, which is not traced \
                             (--follow-forks traces children)",
                            fk.ppid,
                            follow::comm_of(fk.ppid),
                            fk.pid
                        );
                    }
                }
            }
        }
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the kernel wrote an `Event` (repr(C), plain data) into this record.
                let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                sym.note_process(ev.tgid);
            }
        }
    }
    (mmaps, follower)
}

fn feed_mappings(w: &mut MmapWatch, sym: &Symbolizer) {
    for (pid, mappings) in w.drain() {
        sym.add_mappings(pid, mappings);
    }
}

/// A binary some frame of a process falls in, and one address inside it (for its build id).
type ModulesSeen = BTreeMap<(u32, Arc<str>), u64>;

/// Symbolized sites, the binaries their frames fall in, and how many sites' stacks were cut;
/// with sampling (`sample_bytes`), their counters, size histograms and series are scaled to
/// estimates (`sampling::estimate`). Each distinct address of a process is symbolized once;
/// its frame is shared by every stack it appears in (the names are `Arc<str>`s).
///
/// The kernel keeps only frames inside executable mappings; as a second guard, a stack is
/// cut here too at its first frame outside every executable mapping the symbolizer knows of
/// the process, so no other value reaches a report. Sites left with the same frames are
/// merged (`site_merge`).
fn symbolize_sites(
    sym: &Symbolizer,
    raw: Vec<RawSite>,
    sample_bytes: Option<u64>,
) -> (Vec<Site>, ModulesSeen, u64) {
    let mut by_pid: BTreeMap<u32, Vec<RawSite>> = BTreeMap::new();
    for s in raw {
        by_pid.entry(s.key.tgid).or_default().push(s);
    }
    let mut sites = Vec::new();
    let mut cut = Vec::new();
    let mut modules = ModulesSeen::new();
    for (pid, raws) in by_pid {
        let mut addrs: Vec<u64> = raws.iter().flat_map(|s| s.ips.iter().copied()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let frames: std::collections::HashMap<u64, _> = addrs
            .iter()
            .copied()
            .zip(sym.symbolize(pid, &addrs))
            .collect();
        for r in raws {
            let in_code = r
                .ips
                .iter()
                .take_while(|a| frames[*a].module.is_some())
                .count();
            let kept: Vec<_> = r.ips[..in_code].iter().map(|a| frames[a].clone()).collect();
            for f in &kept {
                if let Some(m) = &f.module {
                    modules.entry((pid, m.clone())).or_insert(f.addr);
                }
            }
            cut.push(r.cut != abi::stack_cut::NONE || in_code < r.ips.len());
            let st = &r.stats;
            sites.push(Site {
                pid,
                stack_id: r.key.hash,
                frames: kept,
                counters: Counters {
                    allocs: st.allocs(),
                    bytes: st.bytes,
                    frees: st.frees(),
                    freed_bytes: st.freed_bytes,
                },
                size_hist: st.size_hist.to_vec(),
                life_hist: st.life_hist.to_vec(),
                series: r.series,
                sampled: None,
            });
        }
    }
    let (sites, n_cut) = site_merge::merge(sites, &cut);
    let sites = match sample_bytes {
        Some(mean) => sites
            .into_iter()
            .map(|s| sampling::estimate(s, mean))
            .collect(),
        None => sites,
    };
    (sites, modules, n_cut)
}

/// One `Module` per process and binary the sites' frames fall in, with its build id (asked of
/// the symbolizer through any address inside it).
fn modules_of(sym: &Symbolizer, seen: ModulesSeen) -> Vec<Module> {
    seen.into_iter()
        .map(|((pid, path), addr)| Module {
            pid,
            path: path.to_string(),
            build_id: sym
                .build_id(pid, addr)
                .map(|id| id.iter().map(|b| format!("{b:02x}")).collect()),
        })
        .collect()
}

/// alloctrace's own use so far (`getrusage(RUSAGE_SELF)`: every thread, live or ended; not the
/// command it launched, a child), or None if the kernel will not say.
fn own_cost() -> Option<TracerCost> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: filled by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(TracerCost {
        cpu_time: tv(ru.ru_utime) + tv(ru.ru_stime),
        // Linux counts ru_maxrss in KiB.
        peak_rss_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
    })
}

/// Writes every requested output that can be written: one that fails (a full disk, a FIFO
/// nobody reads) gets its one-line error and does not keep the others from being written.
/// Returns whether all of them were. From here on SIGINT and SIGTERM end alloctrace at once
/// (the run is over; only an output can still take long).
fn write_outputs(cfg: &Config, profile: &Profile) -> bool {
    default_signals();
    let analysis = crate::analyze::analyze(profile, &cfg.analyze);
    let mut all_written = true;
    let mut write = |path: &std::path::Path, what: &str, bytes: Result<Vec<u8>>, say: bool| {
        let result = match bytes {
            Ok(bytes) => output::write_atomic(path, &bytes)
                .map_err(|e| format!("cannot write the {what} to {}: {e}", path.display())),
            Err(e) => Err(format!("cannot render the {what}: {e:#}")),
        };
        match result {
            Ok(()) if say => eprintln!("alloctrace: {what} written to {}", path.display()),
            Ok(()) => {}
            Err(line) => {
                eprintln!("alloctrace: error: {line}");
                all_written = false;
            }
        }
    };
    if let Some(path) = &cfg.folded {
        let text = export::folded::folded(profile, cfg.weight);
        // The folded format has no room to say the values are estimates: said here instead.
        let what = match profile.sample_bytes {
            Some(n) => format!("folded stacks (values are estimates: --sample-bytes {n})"),
            None => "folded stacks".to_string(),
        };
        write(path, &what, Ok(text.into_bytes()), true);
    }
    if let Some(path) = &cfg.flamegraph {
        let svg = export::flamegraph::svg(profile, cfg.weight);
        write(path, "flame graph", svg.map(String::into_bytes), true);
    }
    if let Some(path) = &cfg.pprof {
        write(path, "pprof profile", export::pprof::encode(profile), true);
    }
    if let Some((path, format)) = &cfg.plot {
        let plot = export::plot::render(profile, &analysis, *format);
        write(path, "plot", plot, true);
    }
    if let Some(path) = &cfg.html {
        let html = export::html::render(profile, &analysis, cfg.weight, cfg.top);
        write(path, "HTML report", html.map(String::into_bytes), true);
    }
    let text = match cfg.report {
        ReportFormat::Text => render::render_report(profile, &analysis, cfg.top),
        ReportFormat::Json => export::json::to_json_with(profile, &analysis),
    };
    match &cfg.output {
        Some(path) => write(path, "report", Ok(text.into_bytes()), false),
        None => {
            if let Err(e) = write_stdout(&text) {
                eprintln!("alloctrace: error: {e:#}");
                all_written = false;
            }
        }
    }
    all_written
}

/// SIGINT and SIGTERM back to their default action (end the process). The watch's handlers
/// (tokio's, which only note a signal for a loop that has stopped) stay installed otherwise,
/// and a signal would be swallowed while an output blocks.
fn default_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_DFL is a valid disposition for these signals; no handler runs.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`alloctrace ... | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write the report"),
    }
}
