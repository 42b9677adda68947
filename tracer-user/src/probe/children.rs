//! `--follow-forks`, the main loop's side: what the event thread's `Follower` shares with it
//! (`Shared`), each followed process's execs said (as the target's are), the losses and
//! allocators the follower noted handed over, and the end of the run awaited until every
//! followed process has exited.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ProbeSet;
use crate::model::Unseen;
use crate::process::mmap_watch::ExecLog;

/// What the event thread's follower tells the main loop.
#[derive(Default)]
pub struct Shared {
    /// Followed processes not yet exited.
    pub live: usize,
    /// Looks at the watch's records so far: the run may end only after a look that began
    /// once the target had exited (a fork just before is then known).
    pub looks: u64,
    /// Processes followed since the main loop last asked, with their exec logs.
    pub started: Vec<Started>,
    /// Processes that could not be followed, for the report.
    pub unseen: Vec<(u32, Unseen)>,
    /// Processes that ran a program their user may not trace: their probes come off.
    pub revoke: Vec<u32>,
    /// From fork to probes, for each process followed since the main loop last asked: counted
    /// as losses there (the loss table is the main loop's).
    pub late: Vec<Duration>,
    /// From exec to the new program's probes, for each exec of a followed process that
    /// needed sets not attached yet, since the main loop last asked.
    pub exec_late: Vec<Duration>,
    /// The sets attached for the target, which a child it starts gets (the main loop adds
    /// those its execs bring).
    pub target_sets: Vec<ProbeSet>,
    /// The allocators each followed process was probed through, for the report.
    pub allocators: HashMap<u32, Vec<ProbeSet>>,
}

/// A process followed: its pid, its exec log, and its parent's program (its own until it execs).
pub struct Started {
    pub pid: u32,
    pub log: Arc<Mutex<ExecLog>>,
    pub program: String,
}

/// Resolves once the followed processes have all exited, the target being gone already:
/// after two looks at the watch (a fork just before the target's exit is known by then).
pub async fn all_exited(shared: &Arc<Mutex<Shared>>) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let since = lock().looks;
    loop {
        {
            let s = lock();
            if s.looks >= since + 2 && s.live == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The main loop's side: each followed process's execs decided and said (as the target's
/// are), and what went unseen, for the report.
pub struct Children {
    shared: Arc<Mutex<Shared>>,
    start_ns: u64,
    watches: Vec<crate::target::ExeWatch>,
    /// Followed processes that ran a program their user may not trace.
    revoked: HashSet<u32>,
}

impl Children {
    pub fn new(shared: Arc<Mutex<Shared>>, start_ns: u64) -> Children {
        Children {
            shared,
            start_ns,
            watches: Vec::new(),
            revoked: HashSet::new(),
        }
    }

    /// The followed processes that ran a program their user may not trace: nothing of them
    /// may be shown.
    pub fn revoked(&self) -> &HashSet<u32> {
        &self.revoked
    }

    pub fn shared(&self) -> &Arc<Mutex<Shared>> {
        &self.shared
    }

    /// How late the probes of the processes followed since the last call went in.
    pub fn take_late(&self) -> Vec<Duration> {
        std::mem::take(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()).late)
    }

    /// How late the probes of the followed processes' new programs went in after their
    /// execs, since the last call.
    pub fn take_exec_late(&self) -> Vec<Duration> {
        std::mem::take(
            &mut self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .exec_late,
        )
    }

    /// The target's sets grew (its exec brought new ones): children it starts from now on
    /// get them.
    pub fn set_target_sets(&self, sets: &[ProbeSet]) {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .target_sets = sets.to_vec();
    }

    /// The allocators each followed process was probed through.
    pub fn allocators(&self) -> HashMap<u32, Vec<crate::model::AllocatorUse>> {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.allocators
            .iter()
            .map(|(pid, sets)| (*pid, sets.iter().map(ProbeSet::allocator_use).collect()))
            .collect()
    }

    /// Lines to print for the execs of followed processes since the last call.
    pub fn check(&mut self, last: bool) -> Vec<String> {
        let started = std::mem::take(
            &mut self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .started,
        );
        for st in started {
            let mut w = crate::target::ExeWatch::new(st.pid, Some(st.log), self.start_ns);
            w.started_with(st.program);
            self.watches.push(w);
        }
        let lines = self
            .watches
            .iter_mut()
            .flat_map(|w| w.check(last))
            .collect();
        let newly: Vec<u32> = self
            .watches
            .iter()
            .filter(|w| w.revoked && !self.revoked.contains(&w.pid()))
            .map(|w| w.pid())
            .collect();
        if !newly.is_empty() {
            self.revoked.extend(&newly);
            self.shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .revoke
                .extend(newly);
        }
        lines
    }

    /// Every followed process whose allocations went unseen, and from when.
    pub fn unseen(self) -> Vec<(Unseen, u32)> {
        let mut out: Vec<(Unseen, u32)> =
            std::mem::take(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()).unseen)
                .into_iter()
                .map(|(pid, u)| (u, pid))
                .collect();
        out.extend(self.watches.into_iter().filter_map(|w| {
            let pid = w.pid();
            Some((w.unseen?, pid))
        }));
        out
    }
}
