//! The event thread of a trace: the kernel's rare notifications (a new process, a new stack)
//! and the mappings, execs and forks the mmap watch records, passed on to the symbolizer and
//! (following forks) to the follower as they happen.
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alloctrace_common::Event;
use aya::maps::{MapData, RingBuf};

use super::system::SystemSets;
use crate::probe::follow;
use crate::process::mmap_watch::MmapWatch;
use crate::symbolize::Symbolizer;
use crate::unwind::cfi::feed::Feed;

/// What the event thread acts on besides the symbolizer.
pub(super) struct EventsCtx {
    /// Following forks: attaches the children's probes (and their new programs').
    pub follower: Option<follow::Follower>,
    /// System-wide: probes allocator files as they are first mapped.
    pub system: Option<SystemSets>,
    /// The traced process, whose execs wake the main loop (`exec_wake`) to probe its new
    /// program at once.
    pub target: Option<u32>,
    pub exec_wake: Arc<tokio::sync::Notify>,
    /// DWARF unwinding: the loader of new files' unwind tables.
    pub cfi: Option<Feed>,
}

/// Reads the kernel's rare notifications (new process, new stack) and has the symbolizer
/// snapshot that process's mappings while it still lives; passes on the mappings the watch
/// records. Returns the watch, for a last look once the run is over.
pub(super) fn watch_events(
    mut ring: RingBuf<MapData>,
    mut mmaps: Option<MmapWatch>,
    ctx: EventsCtx,
    sym: &Symbolizer,
    stop: &AtomicBool,
) -> (Option<MmapWatch>, Option<follow::Follower>) {
    let EventsCtx {
        mut follower,
        system,
        target,
        exec_wake,
        mut cfi,
    } = ctx;
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
            feed_mappings(w, sym, cfi.as_mut());
            if let Some(sys) = &system {
                for (time, pid, m) in w.take_files() {
                    sys.mapped(pid, time, &m);
                }
            }
            let forks = w.take_forks();
            let execs = w.take_execs();
            if target.is_some_and(|t| execs.contains(&t)) {
                exec_wake.notify_one();
            }
            match follower.as_mut() {
                Some(f) => f.look(forks, &execs, sym),
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

pub(super) fn feed_mappings(w: &mut MmapWatch, sym: &Symbolizer, cfi: Option<&mut Feed>) {
    let mut cfi = cfi;
    for (pid, mappings) in w.drain() {
        if let Some(c) = cfi.as_deref_mut() {
            c.mapped(pid, &mappings);
        }
        sym.add_mappings(pid, mappings);
    }
}
