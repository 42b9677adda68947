//! A trace's end: the event thread's last look, the exec and children decisions, the processes
//! retained (exited ones too) or taken out (revoked), the final `Profile` with its symbolized
//! sites, the probes' detach (while the front end writes its outputs) and the exit code.
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::events::feed_mappings;
use super::{End, Ended, Engine};
use crate::drain::live_blocks::{monotonic_ns, AgeBasis};
use crate::model::{Counters, Losses, Process, Profile, TracerCost, Unseen};
use crate::symbolize::sites::{modules_of, symbolize_sites};
use crate::target::launch;

/// A finished trace: its profile, and what is still undone (the probes' detach, the launched
/// command's reaping) until `close`.
pub struct Finished {
    pub profile: Profile,
    end: End,
    held: Option<launch::Held>,
    detach: JoinHandle<Option<String>>,
}

impl Engine {
    /// Ends the trace once `advance` has returned its end: decides every exec and child up to
    /// the last record (saying so), builds the final profile and starts the probes' detach.
    pub fn finish(self, ended: Ended) -> Result<Finished> {
        let Engine {
            settings,
            target,
            target_pid,
            held,
            mut drainer,
            symbolizer,
            stop_events,
            events,
            mut tasks,
            mut exe,
            system,
            mut children,
            start_unix_secs,
            start,
            mut samples,
            ..
        } = self;
        stop_events.store(true, Ordering::Relaxed);
        // Whatever the watch recorded since the thread's last look reaches the symbolizer
        // (ahead of the requests below: one channel, in order).
        let (watch, follower) = events.join().unwrap_or_default();
        if let Some(mut w) = watch {
            feed_mappings(&mut w, &symbolizer, None);
        }
        let followed = follower.map(|f| f.finish());
        // Processes followed after the final drain count too.
        super::count_late(&mut drainer, children.as_ref())?;
        let mut gaps = children
            .as_ref()
            .map(|c| c.take_exec_late())
            .unwrap_or_default();
        gaps.extend(system.iter().flat_map(|s| s.take_late()));
        super::execs::count_exec_late(&mut drainer, &gaps)?;
        if let Some(line) = followed.as_ref().and_then(|f| f.window_line()) {
            eprintln!("{line}");
        }
        // Every exec, up to the last record, is decided and said before the report.
        if let Some(w) = exe.as_mut() {
            super::execs::reprobe_target(w, &mut tasks, &mut drainer, children.as_ref())?;
            for line in w.check(true) {
                eprintln!("{line}");
            }
        }
        for line in children.as_mut().map(|c| c.check(true)).unwrap_or_default() {
            eprintln!("{line}");
        }
        // The probes come off (nothing is attached after the execs above) while the sites are
        // symbolized and the outputs written, not after: each link's release waits a kernel
        // grace period (released at once, they share them), and an output that waits (a
        // FIFO's reader) must not keep every probe of a system-wide run in every process's
        // allocator meanwhile.
        let mut links = std::mem::take(&mut tasks.loose);
        links.extend(
            tasks
                .retarget
                .as_mut()
                .map(|r| r.take_probes())
                .unwrap_or_default(),
        );
        links.extend(system.iter().flat_map(|s| s.take_links()));
        let mut followed = followed;
        links.extend(
            followed
                .as_mut()
                .map(|f| std::mem::take(&mut f.live))
                .unwrap_or_default(),
        );
        let go_gc = {
            let start_ns = monotonic_ns()
                .saturating_sub(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            let programs = tasks.ebpf.lock().unwrap_or_else(|e| e.into_inner());
            crate::golang::gc::read(&programs.ebpf, start_ns)
        };
        let kept_ebpf = tasks.ebpf;
        let detach = std::thread::Builder::new()
            .name("alloctrace-detach".into())
            .spawn(move || {
                let t = Instant::now();
                let n = links.len();
                crate::probe::release_all(links);
                log::info!(
                    "{n} probe links detached in {:.1} ms",
                    t.elapsed().as_secs_f64() * 1e3
                );
                drop(kept_ebpf);
                followed.and_then(|f| f.detach_all())
            })
            .context("cannot start the detach thread")?;
        // A target that ran a program its user may not trace: nothing of it is shown.
        let mut revoked: HashSet<u32> = target_pid
            .filter(|_| exe.as_ref().is_some_and(|w| w.revoked))
            .into_iter()
            .collect();
        revoked.extend(children.iter().flat_map(|c| c.revoked()));
        for s in samples.iter_mut() {
            s.processes.retain(|pid, _| !revoked.contains(pid));
        }
        let mut unseen: Vec<(Unseen, u32)> = exe
            .and_then(|w| w.unseen)
            .zip(target_pid)
            .into_iter()
            .collect();
        unseen.extend(children.map(|c| c.unseen()).unwrap_or_default());
        unseen.extend(system.iter().flat_map(|s| s.unprobed()));

        let mut profile = Profile {
            target,
            mode: settings.mode,
            sample_bytes: settings.sample_bytes,
            start_unix_secs,
            duration: ended.duration,
            interval: settings.interval,
            resolution: settings.resolution,
            samples: samples.into_vec(),
            processes: unseen.into_iter().map(Some).fold(
                ended
                    .processes
                    .into_iter()
                    .filter(|p| !revoked.contains(&p.pid))
                    .collect(),
                with_unseen,
            ),
            sites: vec![],
            losses: drainer.losses(),
            modules: vec![],
            tracer: None,
        };
        crate::golang::gc::annotate(&mut profile.processes, go_gc);
        // Timed for `cargo xtask bench` (the drain + symbolize cost of many distinct stacks).
        let t0 = Instant::now();
        let mut raw = drainer.sites();
        raw.retain(|s| !revoked.contains(&s.key.tgid));
        // Each site's blocks never freed, with their birth times (only full mode tracks
        // blocks), aged as at the trace's end (when the probes stopped), counted from its
        // start on the kernel's clock (`Instant`'s, on Linux).
        let t_live = Instant::now();
        let ages = if settings.mode.sees_frees() {
            let start_ns = monotonic_ns()
                .saturating_sub(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            let end_ns =
                start_ns + u64::try_from(ended.duration.as_nanos()).unwrap_or(u64::MAX / 2);
            match drainer.read_live(&mut raw, end_ns) {
                Ok(()) => Some(AgeBasis {
                    start_ns,
                    older: settings.older,
                }),
                Err(e) => {
                    eprintln!("alloctrace: {e}: the report has no live blocks per site");
                    None
                }
            }
        } else {
            None
        };
        log::info!(
            "in-flight table read in {:.1} ms",
            t_live.elapsed().as_secs_f64() * 1e3
        );
        let drained = t0.elapsed();
        let t1 = Instant::now();
        let (sites, seen, stacks_cut) =
            symbolize_sites(&symbolizer, raw, settings.sample_bytes, ages);
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
                stacks_cut: stacks_cut.sites,
                stacks_cut_bytes: stacks_cut.bytes,
                ..profile.losses
            },
            ..profile
        };
        Ok(Finished {
            profile,
            end: ended.end,
            held,
            detach,
        })
    }
}

impl Finished {
    /// Waits for the probes to be off (saying so) and for the launched command; returns the
    /// exit code: the command's, 128 + the signal that ended the trace, or 0.
    pub fn close(self) -> i32 {
        if let Ok(Some(line)) = self.detach.join() {
            eprintln!("{line}");
        }
        match (self.held, self.end) {
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
        }
    }
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
                    allocators: Vec::new(),
                    go: None,
                },
            );
        }
    }
    procs
}

/// alloctrace's own use so far (`getrusage(RUSAGE_SELF)`: every thread, live or ended; not the
/// command it launched, a child), or None if the kernel will not say.
pub(super) fn own_cost() -> Option<TracerCost> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::with_unseen;
    use crate::model::{Counters, Process, Unseen};

    fn process(pid: u32, comm: &str) -> Process {
        Process {
            pid,
            comm: comm.to_string(),
            counters: Counters::default(),
            unknown_frees: 0,
            unseen: None,
            allocators: Vec::new(),
            go: None,
        }
    }

    fn unseen(program: &str) -> Unseen {
        Unseen {
            since: Duration::from_millis(5),
            program: program.to_string(),
            reason: "static".to_string(),
        }
    }

    #[test]
    fn an_unseen_process_already_counted_is_marked() {
        let procs = vec![process(10, "a"), process(20, "b")];
        let out = with_unseen(procs, Some((unseen("/bin/x"), 20)));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].unseen, Some(unseen("/bin/x")));
        assert_eq!(out[1].comm, "b");
    }

    #[test]
    fn an_unseen_process_never_counted_is_listed_in_pid_order_with_the_kernels_comm() {
        let procs = vec![process(10, "a"), process(30, "c")];
        let out = with_unseen(procs, Some((unseen("/opt/a-very-long-program-name"), 20)));
        let pids: Vec<u32> = out.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [10, 20, 30]);
        assert_eq!(out[1].comm, "a-very-long-pro");
        assert_eq!(out[1].counters, Counters::default());
    }
}
