//! The profile of a trace still running, for front ends that show it while it runs (the
//! daemon's endpoints, the live view): every site symbolized as of the last drain, nothing
//! detached, the trace going on afterwards. The batch run needs only the final one
//! (`finish`).
use std::time::Instant;

use anyhow::Result;

use super::{End, Ended, Engine};
use crate::model::Profile;
use crate::symbolize::sites::{modules_of, symbolize_sites};

impl Engine {
    /// The profile as of the last published snapshot: its samples, processes and losses, and
    /// every site (live and retired) with its counters, series and frames. Blocks still
    /// live are not aged per site (reading the in-flight table is the end's job): a site's
    /// live bytes and blocks are its counters' (allocated minus freed).
    ///
    /// Symbolizing costs what it costs at the end, less for addresses seen before (the
    /// symbolizer keeps them); `-v` logs it.
    pub fn profile_now(&mut self) -> Profile {
        let t = Instant::now();
        let snapshot = self.published.borrow().clone();
        let revoked = self
            .target_pid
            .filter(|_| self.exe.as_ref().is_some_and(|w| w.revoked));
        let mut followed_revoked: Vec<u32> = self
            .children
            .iter()
            .flat_map(|c| c.revoked())
            .copied()
            .collect();
        followed_revoked.extend(revoked);
        let shown = |pid: &u32| !followed_revoked.contains(pid);
        let mut raw = self.drainer.sites();
        raw.retain(|s| shown(&s.key.tgid));
        let (sites, seen, stacks_cut) =
            symbolize_sites(&self.symbolizer, raw, self.settings.sample_bytes, None);
        let modules = modules_of(&self.symbolizer, seen);
        let mut samples: Vec<_> = self.samples.iter().cloned().collect();
        for s in &mut samples {
            s.processes.retain(|pid, _| shown(pid));
        }
        log::info!(
            "profile of the running trace: {} sites in {:.1} ms",
            sites.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut losses = snapshot.losses;
        losses.stacks_cut = stacks_cut.sites;
        losses.stacks_cut_bytes = stacks_cut.bytes;
        Profile {
            target: self.target.clone(),
            mode: self.settings.mode,
            sample_bytes: self.settings.sample_bytes,
            start_unix_secs: self.start_unix_secs,
            duration: snapshot.sample.t,
            interval: self.settings.interval,
            resolution: self.settings.resolution,
            samples,
            processes: snapshot
                .processes
                .iter()
                .filter(|p| shown(&p.pid))
                .cloned()
                .collect(),
            sites,
            modules,
            losses,
            tracer: super::finish::own_cost(),
        }
    }

    /// Forgets the processes that exited (system-wide mode retires them from the kernel's
    /// tables at each interval): their totals, sites and blocks leave the next profiles and
    /// snapshots, their mappings the symbolizer. For a front end that runs for days (`serve`): what it keeps is then bounded
    /// by the processes running at once, not by every process the machine ever ran.
    pub fn forget_exited(&mut self) {
        let pids = self.drainer.forget_retired();
        for &pid in &pids {
            self.symbolizer.forget_process(pid);
        }
        if !pids.is_empty() {
            log::debug!("{} exited processes forgotten", pids.len());
        }
    }
}

impl Engine {
    /// Ends the trace now, at the front end's request (the live view's `q`): as if
    /// `--duration` ran out (a launched command goes on running, the exit code is 0). To be
    /// called between two `advance`s, instead of the next one; `finish` follows.
    pub fn stop(&mut self) -> Result<Ended> {
        self.end(End::Duration)
    }
}

impl Ended {
    /// Why the trace ended (a front end that shows it may keep its last view).
    pub fn end(&self) -> End {
        self.end
    }
}
