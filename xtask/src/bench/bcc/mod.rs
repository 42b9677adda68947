//! BCC memleak as a bench configuration: set-up, attach checks, runs, and a copy of memleak
//! with free's probe moved.
//!
//! memleak does not run here as installed. BCC compiles its program at start-up against the
//! running kernel's headers, which this custom kernel lacks, so Debian's are linked in their
//! place (`bcc_headers`). BCC 0.26 gives its uprobes a garbage ref_ctr_offset
//! (iovisor/bcc#5236), and the kernel refuses a uprobe whose ref_ctr_offset differs from that
//! of another at the same address: while memleak runs, other tracers cannot probe where it
//! does, and it cannot attach where another tracer still is; hence every attach is checked
//! with `bpftool perf` and retried after a pause. A run in which memleak saw nothing of the
//! workload would time a tracer doing nothing, so its stack map is read after each run. The
//! moved copy puts free's probe where alloctrace's placement puts it, so that the two
//! tracers' costs are compared at the same probe points.
//!
//! Set-up here (`bcc`); the kernel headers in headers.rs, attaching and checking in attach.rs,
//! the moved copy in moved.rs, the runs in run.rs.
use std::path::Path;

use crate::cmd::which;

use attach::{attach_failed, memleak_attach, Memleak};
use headers::{bcc_headers, tracefs};
use moved::moved_memleak;

mod attach;
mod headers;
mod moved;
mod run;

pub(crate) use attach::Bcc;
pub(crate) use run::run_memleak;

/// BCC memleak, stock and with free's uprobe moved, set up and checked; None where it cannot
/// run, with the reason in `notes` (what was set up for it goes there too).
pub(crate) fn bcc(scratch: &Path, placements: &[String], notes: &mut Vec<String>) -> Option<Bcc> {
    let Some(stock) = which("memleak-bpfcc") else {
        notes.push("BCC memleak: not installed (apt-get install bpfcc-tools)".into());
        return None;
    };
    let left_out = |notes: &mut Vec<String>, why: String| {
        eprintln!("xtask: bench: BCC memleak left out: {why}");
        notes.push(format!("BCC memleak: left out: {why}"));
    };
    let Some(bpftool) = which("bpftool") else {
        left_out(
            notes,
            "bpftool is not installed (apt-get install bpftool): the bench reads memleak's \
             stack map with it, to tell whether memleak saw the workload"
                .into(),
        );
        return None;
    };
    match bcc_headers() {
        Ok(note) => notes.push(note),
        Err(why) => {
            left_out(notes, why);
            return None;
        }
    }
    notes.extend(tracefs());
    let stock_probes = match memleak_attach(&stock, &bpftool, scratch) {
        Ok(p) => p,
        Err((false, why)) => {
            left_out(
                notes,
                format!(
                    "it cannot run on this kernel ({why}; BCC compiles its program against \
                     the running kernel's headers)"
                ),
            );
            return None;
        }
        Err((true, why)) => {
            left_out(notes, attach_failed(&why));
            return None;
        }
    };
    let moved = match moved_memleak(&stock, &bpftool, scratch, placements, &stock_probes) {
        Ok((moved, note)) => {
            notes.push(note);
            Some(moved)
        }
        Err(why) => {
            eprintln!("xtask: bench: BCC memleak (free moved) left out: {why}");
            notes.push(format!("BCC memleak (free moved): left out: {why}"));
            None
        }
    };
    Some(Bcc {
        stock: Memleak {
            script: stock,
            probes: stock_probes,
        },
        moved,
        bpftool,
    })
}
