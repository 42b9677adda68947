//! Keeping one traced process's probes on a live task of it: the watch that moves them when
//! the task they are on ends (`probe::retarget`), and the losses and lines a move makes.
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::drain::Drainer;
use crate::model::TraceMode;
use crate::probe::retarget::{self, Retarget};
use crate::probe::{self, ProbeSet, Scope};

/// One traced process's probes and what keeps them on a live task of it (`retarget`).
pub(super) struct Tasks {
    /// The programs, shared with the event thread when it follows forks (it attaches the
    /// children's probes).
    pub(super) ebpf: Arc<Mutex<probe::Programs>>,
    pub(super) retarget: Option<Retarget>,
    /// The sets attached for the target (its programs' allocators, the first and those its
    /// execs brought); in system-wide mode every set attached.
    pub(super) sets: Vec<ProbeSet>,
    pub(super) scope: Scope,
    pub(super) mode: TraceMode,
    pub(super) probe_at: crate::probe::placement::Mode,
    /// Probes not moved by `retarget`: system-wide mode's, or those attached without it (the
    /// kernel refused its watch).
    pub(super) loose: Vec<probe::Attached>,
}

impl Tasks {
    /// Attaches `new` sets for the target (its new program's allocators), on the task its
    /// other probes are on.
    pub(super) fn add_sets(&mut self, new: Vec<ProbeSet>) -> Result<(), probe::ProbeError> {
        if new.is_empty() {
            return Ok(());
        }
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        match self.retarget.as_mut() {
            Some(r) => r.add(&mut ebpf, new.clone())?,
            None => {
                let mut attached = Vec::new();
                let r = probe::attach_into(&mut ebpf, &new, self.scope, self.mode, &mut attached);
                self.loose.extend(attached);
                r?;
            }
        }
        self.sets.extend(new);
        Ok(())
    }
}

/// With one process traced, the watch that moves its probes when the task they are on ends;
/// without it (the kernel refused the watch), a warning: that end would lose everything after.
/// The probes not handed to it come back, to be kept.
pub(super) fn retarget_for(
    scope: Scope,
    sets: &[ProbeSet],
    mode: TraceMode,
    attached: Vec<probe::Attached>,
) -> (Option<Retarget>, Vec<probe::Attached>) {
    let Scope::Pid(pid) = scope else {
        return (None, attached);
    };
    // Opened before the probes are handed over: a refusal leaves them ours.
    let (sets, files) = match retarget::held_open(sets.to_vec()) {
        Ok(x) => x,
        Err(e) => return (None, refused(e, attached)),
    };
    match retarget::TaskWatch::open(pid.get()) {
        Ok(w) => (
            Some(Retarget::new(pid.get(), sets, files, w, mode, attached)),
            Vec::new(),
        ),
        Err(e) => (None, refused(e, attached)),
    }
}

fn refused(e: std::io::Error, attached: Vec<probe::Attached>) -> Vec<probe::Attached> {
    log::warn!(
        "cannot watch the traced thread ({e}): if the main thread ends before the process \
         (pthread_exit, another thread's exec), nothing after is seen"
    );
    attached
}

/// The task the probes were linked through ended, or its pid was taken over: moves them if
/// they must be (see `retarget`) and counts the move and its gap as losses.
pub(super) fn task_ended(tasks: &mut Tasks, drainer: &mut Drainer) -> Result<()> {
    let Some(r) = tasks.retarget.as_mut() else {
        return Ok(());
    };
    let moved = r.move_probes(&mut tasks.ebpf.lock().unwrap_or_else(|e| e.into_inner()))?;
    if let Some(m) = moved {
        drainer.add_loss(alloctrace_common::loss::RETARGETS, 1)?;
        let us = u64::try_from(m.gap.as_micros()).unwrap_or(u64::MAX).max(1);
        drainer.add_loss(alloctrace_common::loss::RETARGET_GAP_US, us)?;
        eprintln!(
            "alloctrace: probes moved to pid {}'s new program (another thread's exec) in \
             {:.2} ms: allocations in between were not seen",
            m.pid,
            m.gap.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
