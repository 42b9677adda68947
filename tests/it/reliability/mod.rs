//! Faults, bad input, load and loss: the target is never harmed, nothing is lost silently.
//!
//! Covered elsewhere and not repeated here: SIGINT of a --pid run with an exact final report
//! (modes.rs `sigint_ends_the_run_with_a_final_report`), a missing output directory and bad
//! option values (errors.rs `bad_option_values_are_errors`), threads counted exactly at small
//! scale (modes.rs `threads_are_counted_exactly`), two processes in system-wide mode (modes.rs
//! `system_wide_sees_two_processes_separately`).
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use crate::support::*;

mod binaries;
mod endings;
mod exec_target;
mod full_maps;
mod instances;
mod limits;
mod load;
mod namespaces;
mod output_paths;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The ids of the BPF programs process `pid` holds open (the `prog_id:` of its fdinfo).
fn prog_ids_of(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}")) {
        let Ok(e) = e else { continue };
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("prog_id:") {
                ids.push(v.trim().parse().expect("a numeric prog_id"));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a BPF program with this id is still loaded in the kernel (BPF_PROG_GET_FD_BY_ID).
fn prog_loaded(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut attr = [0u32; 32];
    attr[0] = id;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from a valid, zero-tailed buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor bpf(2) just returned to us.
        unsafe { libc::close(fd as libc::c_int) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "BPF_PROG_GET_FD_BY_ID({id}) failed oddly: {err}"
    );
    false
}

/// Trace-event uprobes aya created for alloctrace process `pid` (named `aya_<pid>_...`), in
/// whichever tracefs is mounted. aya uses the uprobe PMU when the kernel has one, so there
/// are normally none at any time; without a mounted tracefs there can be none.
fn uprobe_events_of(pid: u32) -> Vec<String> {
    let tag = format!("aya_{pid}_");
    [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .flat_map(|t| {
        t.lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
    .collect()
}

/// Other alloctrace processes on the machine (a system-wide one installs its probes in every
/// process, ours included).
fn other_alloctraces(except: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != except)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim_end() == "alloctrace")
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `limit`; true as soon as it holds.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ticker's ground truth for `rounds` rounds: tick_alloc makes 8 blocks of 64 bytes a round.
fn ticker_truth_ok(truth: &GroundTruth, rounds: u64) {
    let t = truth.site("tick_alloc").counters;
    assert_eq!(
        t,
        Counters {
            allocs: 8 * rounds,
            bytes: 512 * rounds,
            frees: 8 * rounds,
            freed_bytes: 512 * rounds
        },
        "the ticker's own ground truth\n{}",
        truth.text
    );
}

/// Every tick line 0..rounds appears once, in order.
fn assert_all_ticks(stdout: &str, rounds: u64) {
    let ticks: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert_eq!(
        ticks,
        (0..rounds).collect::<Vec<_>>(),
        "the target's ticks\n{stdout}"
    );
}
