//! The target's execs, decided on the main loop as soon as the event thread sees one: its new
//! program's allocators resolved again (`probe::reprobe`), the sets not yet attached for it
//! attached where its other probes are (`Tasks::add_sets`), the delay counted as a loss; then
//! each exec said (`ExeWatch`).
use std::time::Duration;

use anyhow::Result;

use super::tasks::Tasks;
use crate::drain::Drainer;
use crate::probe::{children, reprobe, ProbeSet};
use crate::process::mmap_watch::ExecProbed;
use crate::target::exec_watch::{permitted_after_exec, NOT_PERMITTED};
use crate::target::{monotonic_ns, ExeWatch};

/// Decides every exec of the target not decided yet (see the module's comment).
pub(super) fn reprobe_target(
    exe: &mut ExeWatch,
    tasks: &mut Tasks,
    drainer: &mut Drainer,
    children: Option<&children::Children>,
) -> Result<()> {
    let pid = exe.pid();
    let log = exe.log();
    let undecided = log.lock().unwrap_or_else(|e| e.into_inner()).undecided();
    let n = undecided.len();
    let mut grew = false;
    for (i, e) in undecided.into_iter().enumerate() {
        let current = i + 1 == n;
        let probed = if !permitted_after_exec(pid, e.exe.as_deref(), current) {
            // The watch revokes it: no probes go in.
            ExecProbed::Unseen(NOT_PERMITTED.into())
        } else {
            let t0 = std::time::Instant::now();
            let decided = reprobe::decide(pid, &e, current, &tasks.sets, tasks.probe_at);
            log::info!(
                "pid {pid}: exec {:.1} ms ago decided in {:.1} ms",
                Duration::from_nanos(monotonic_ns().saturating_sub(e.time)).as_secs_f64() * 1e3,
                t0.elapsed().as_secs_f64() * 1e3
            );
            match decided {
                reprobe::Decision::Unseen(reason) => ExecProbed::Unseen(reason),
                reprobe::Decision::Sets { all, new } => {
                    let sets = all.iter().map(ProbeSet::describe).collect();
                    if let Some(reason) = super::go_mode::refused_in(&new, tasks.mode) {
                        ExecProbed::Unseen(reason)
                    } else if new.is_empty() {
                        ExecProbed::Through {
                            sets,
                            late_us: None,
                        }
                    } else {
                        match tasks.add_sets(new) {
                            Ok(()) => {
                                grew = true;
                                let gap =
                                    Duration::from_nanos(monotonic_ns().saturating_sub(e.time));
                                let us = count_exec_late(drainer, &[gap])?;
                                ExecProbed::Through {
                                    sets,
                                    late_us: Some(us),
                                }
                            }
                            Err(err) => ExecProbed::Unseen(format!(
                                "its new allocators' probes could not be attached ({err})"
                            )),
                        }
                    }
                }
            }
        };
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = l.execs.iter_mut().find(|x| x.time == e.time) {
            x.probed = Some(probed);
        }
    }
    if grew {
        if let Some(c) = children {
            c.set_target_sets(&tasks.sets);
        }
    }
    Ok(())
}

/// Counts programs (or, system-wide, allocator files) probed after their exec (or mapping) as
/// losses, with the time each took; returns the microseconds added.
pub(super) fn count_exec_late(drainer: &mut Drainer, gaps: &[Duration]) -> Result<u64> {
    if gaps.is_empty() {
        return Ok(0);
    }
    let us: u64 = gaps
        .iter()
        .map(|w| u64::try_from(w.as_micros()).unwrap_or(u64::MAX).max(1))
        .fold(0, u64::saturating_add);
    drainer.add_loss(alloctrace_common::loss::EXEC_LATE, gaps.len() as u64)?;
    drainer.add_loss(alloctrace_common::loss::EXEC_GAP_US, us)?;
    Ok(us)
}
