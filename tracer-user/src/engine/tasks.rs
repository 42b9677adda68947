//! Keeping one traced process's probes on a live task of it: the watch that moves them when
//! the task they are on ends (`probe::retarget`), and the losses and lines a move makes.
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::drain::Drainer;
use crate::model::TraceMode;
use crate::probe::retarget::Retarget;
use crate::probe::{self, Scope};

/// One traced process's probes and what keeps them on a live task of it (`retarget`).
pub(super) struct Tasks {
    /// The programs, shared with the event thread when it follows forks (it attaches the
    /// children's probes).
    pub(super) ebpf: Arc<Mutex<aya::Ebpf>>,
    pub(super) retarget: Option<Retarget>,
}

/// With one process traced, the watch that moves its probes when the task they are on ends;
/// without it (the kernel refused the watch), a warning: that end would lose everything after.
pub(super) fn retarget_for(
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
pub(super) fn task_ended(tasks: &mut Tasks, drainer: &mut Drainer) -> Result<()> {
    let Some(r) = tasks.retarget.as_mut() else {
        return Ok(());
    };
    let moved = r.move_probes(&mut tasks.ebpf.lock().unwrap_or_else(|e| e.into_inner()))?;
    match moved {
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
