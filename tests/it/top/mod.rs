//! `alloctrace top`, the live view, driven in a real terminal (tmux): against
//! workloads/live_sites.c, whose four sites each lead under one sort key, the workload's
//! process and sites appear and their counts grow, every sort key puts its own site first,
//! `q` and SIGTERM end alloctrace with the terminal given back as it was (the alternate
//! screen left, the cursor shown, the line discipline out of raw mode) and the probes gone
//! from the still-running workload; a target that exits leaves its final numbers (equal to
//! its ground truth) on the screen until `q`.
mod go;
mod tmux;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tmux::{cell, first_row, Tmux};

use crate::support::*;

/// Allocations per second of the workload's `top_fast`.
const RATE: &str = "20000";
/// Longest the view may take to show something it should.
const SHOW: Duration = Duration::from_secs(30);

/// What the workload says about itself before it allocates: its pid and where malloc is.
struct Info {
    pid: u32,
    malloc_at: u64,
}

fn read_info(path: &Path) -> Info {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        if let (Some(pid), Some(at)) = (value("pid "), value("malloc_at ")) {
            return Info {
                pid: pid.parse().expect("a pid"),
                malloc_at: u64::from_str_radix(at.trim_start_matches("0x"), 16)
                    .expect("malloc_at is hex"),
            };
        }
        assert!(
            start.elapsed() < SHOW,
            "the workload wrote no info to {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until malloc in `pid` no longer starts with an int3: the probes are gone.
fn assert_probe_gone(info: &Info) {
    let start = Instant::now();
    while byte_at(info.pid, info.malloc_at) == 0xcc {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "5 s after alloctrace top ended, malloc ({:#x}) in the still-running workload {} \
             still starts with an int3: a uprobe stayed installed",
            info.malloc_at,
            info.pid
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The terminal is as it was: the normal screen, the cursor shown, not in raw mode.
fn assert_terminal_restored(t: &Tmux, screen: &str) {
    assert_eq!(t.var("alternate_on"), "0", "still on the alternate screen");
    assert_eq!(t.var("cursor_flag"), "1", "the cursor is still hidden");
    let stty = t.stty();
    let modes: Vec<&str> = stty.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            modes.contains(&mode),
            "the terminal is left without {mode:?} (raw mode): {stty}"
        );
    }
    assert!(
        !screen.contains("FUNCTION"),
        "the view is still on the screen:\n{screen}"
    );
}

/// The number in `column` of the workload's row in the process table.
fn proc_cell(screen: &str, pid: u32, column: &str) -> Option<u64> {
    cell(screen, "COMMAND", column, &format!(" {pid} "))?
        .parse()
        .ok()
}

/// The number in `column` of site `function`'s row.
fn site_cell(screen: &str, function: &str, column: &str) -> Option<u64> {
    cell(screen, "FUNCTION", column, function)?.parse().ok()
}

/// Rows for the workload's process and its sites appear, and their counts grow.
fn assert_rows_appear_and_grow(t: &Tmux, pid: u32) {
    let first = t.wait_for(
        "no row for the workload's process and its top_fast site",
        SHOW,
        |s| proc_cell(s, pid, "ALLOCS").is_some() && site_cell(s, "top_fast", "ALLOCS").is_some(),
    );
    let (procs0, fast0) = (
        proc_cell(&first, pid, "ALLOCS").unwrap(),
        site_cell(&first, "top_fast", "ALLOCS").unwrap(),
    );
    let later = t.wait_for("the counts did not grow", SHOW, |s| {
        proc_cell(s, pid, "ALLOCS").is_some_and(|n| n > procs0)
            && site_cell(s, "top_fast", "ALLOCS").is_some_and(|n| n > fast0)
    });
    for site in ["top_big", "top_keep"] {
        assert!(
            site_cell(&later, site, "ALLOCS").is_some_and(|n| n > 0),
            "no row for site {site}:\n{later}"
        );
    }
}

/// Every sort key puts its own site first and says so in the table's title.
fn assert_sort_keys(t: &Tmux) {
    for (key, name, site) in [
        ("c", "count", "top_early"),
        ("b", "bytes", "top_big"),
        ("l", "live", "top_keep"),
        ("r", "rate", "top_fast"),
        ("c", "count", "top_early"),
    ] {
        t.send_keys(key);
        t.wait_for(
            &format!("key {key} did not put {site} first (sort by {name})"),
            Duration::from_secs(5),
            |s| {
                s.contains(&format!("), by {name} "))
                    && first_row(s, "FUNCTION").as_deref() == Some(site)
            },
        );
    }
}

/// `alloctrace top -- live_sites`: the rows appear and grow, the keys sort, `q` ends
/// alloctrace with exit code 0, the terminal restored and the probes gone from the workload,
/// which goes on running.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn top_launch_shows_the_workload_sorts_and_q_restores_the_terminal() {
    let bin = alloctrace_bin();
    let scratch = Scratch::new();
    let info_path = scratch.path("info");
    let command = format!(
        "GROUND_TRUTH={truth} {bin} top --interval 500ms -- {wl} 60 {RATE} {info}; \
         echo alloctrace exited $?; sleep 600",
        truth = scratch.path("truth").display(),
        bin = bin.display(),
        wl = workload("live_sites").display(),
        info = info_path.display(),
    );
    let t = Tmux::start(&command, 200, 50);
    let info = read_info(&info_path);
    let _kill = KillOnDrop(info.pid);
    assert_rows_appear_and_grow(&t, info.pid);
    assert_eq!(
        t.var("alternate_on"),
        "1",
        "the view is not on the alternate screen"
    );
    assert_eq!(
        byte_at(info.pid, info.malloc_at),
        0xcc,
        "no int3 at malloc while traced: the probe check below proves nothing"
    );
    assert_sort_keys(&t);

    t.send_keys("q");
    let screen = t.wait_for("q did not end alloctrace", SHOW, |s| {
        s.contains("alloctrace exited")
    });
    assert!(
        screen.contains("alloctrace exited 0"),
        "q must end alloctrace with 0:\n{screen}"
    );
    assert_terminal_restored(&t, &screen);
    assert!(
        Path::new(&format!("/proc/{}", info.pid)).exists(),
        "the workload did not outlive alloctrace: the probe check proves nothing"
    );
    assert_probe_gone(&info);
}

/// A launched workload that exits by itself: the view stays with the final numbers, each
/// site's allocations equal to the workload's ground truth, until `q`; alloctrace then exits
/// with the workload's exit code (0) and the terminal restored.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn top_keeps_the_final_view_when_the_target_exits() {
    let bin = alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth");
    let command = format!(
        "GROUND_TRUTH={truth} {bin} top --interval 500ms -- {wl} 2 {RATE} {info}; \
         echo alloctrace exited $?; sleep 600",
        truth = truth_path.display(),
        bin = bin.display(),
        wl = workload("live_sites").display(),
        info = scratch.path("info").display(),
    );
    let t = Tmux::start(&command, 200, 50);
    let screen = t.wait_for(
        "the view did not say the program exited",
        RUN_TIMEOUT,
        |s| s.contains("the traced program exited; q quits"),
    );
    let truth = GroundTruth::read(&truth_path, &screen);
    assert_eq!(truth.sites.len(), 4, "{}", truth.text);
    for site in &truth.sites {
        assert_eq!(
            site_cell(&screen, &site.function, "ALLOCS"),
            Some(site.counters.allocs),
            "site {}'s final count differs from the ground truth:\n{screen}",
            site.function
        );
    }
    assert_eq!(t.var("alternate_on"), "1", "the final view is not shown");
    t.send_keys("q");
    let screen = t.wait_for("q did not end alloctrace", SHOW, |s| {
        s.contains("alloctrace exited")
    });
    assert!(
        screen.contains("alloctrace exited 0"),
        "alloctrace must exit with the workload's code:\n{screen}"
    );
    assert_terminal_restored(&t, &screen);
}

/// `alloctrace top --pid N`, ended by SIGTERM: the rows appear and grow, alloctrace exits
/// with 128 + SIGTERM, the terminal restored and the probes gone from the workload.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn top_pid_ends_on_sigterm_with_the_terminal_restored() {
    let bin = alloctrace_bin();
    let scratch = Scratch::new();
    let info_path = scratch.path("info");
    let mut child = Command::new(workload("live_sites"))
        .args(["60", RATE])
        .arg(&info_path)
        .env("GROUND_TRUTH", scratch.path("truth"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start live_sites");
    let info = read_info(&info_path);
    let original = byte_at(info.pid, info.malloc_at);
    assert_ne!(original, 0xcc, "malloc starts with an int3 before we trace");
    let command = format!(
        "{bin} top --interval 500ms --pid {pid}; echo alloctrace exited $?; sleep 600",
        bin = bin.display(),
        pid = info.pid,
    );
    let t = Tmux::start(&command, 200, 50);
    assert_rows_appear_and_grow(&t, info.pid);
    let tracer = child_named(t.var("pane_pid").parse().expect("a pid"), "alloctrace");
    // SAFETY: kill sends a signal to a pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(tracer as i32, libc::SIGTERM) }, 0);
    let screen = t.wait_for("SIGTERM did not end alloctrace", SHOW, |s| {
        s.contains("alloctrace exited")
    });
    assert!(
        screen.contains(&format!("alloctrace exited {}", 128 + libc::SIGTERM)),
        "SIGTERM must end alloctrace with 128 + 15:\n{screen}"
    );
    assert_terminal_restored(&t, &screen);
    assert_eq!(
        child.try_wait().expect("wait for live_sites"),
        None,
        "the workload did not outlive alloctrace: the probe check proves nothing"
    );
    assert_probe_gone(&info);
    assert_eq!(byte_at(info.pid, info.malloc_at), original);
    let _ = child.kill();
    let _ = child.wait();
}

/// Standard output not a terminal: one clear line, a non-zero exit, nothing traced.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn top_refuses_an_output_that_is_not_a_terminal() {
    let finished = run_alloctrace(&["top", "--", "/bin/true"], &[]);
    assert_ne!(finished.code(), 0, "{}", finished.describe());
    finished.assert_one_line_error(&["terminal"]);
}

/// The child of `parent` whose command name is `comm`, waiting for it to appear.
fn child_named(parent: u32, comm: &str) -> u32 {
    let start = Instant::now();
    loop {
        let found = std::fs::read_dir("/proc")
            .expect("list /proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // comm is in parentheses; the parent's pid is the second field after it.
                let Some((name, rest)) = stat.split_once(") ") else {
                    return false;
                };
                name.ends_with(&format!("({comm}"))
                    && rest.split_whitespace().nth(1) == Some(&parent.to_string())
            });
        if let Some(p) = found {
            return p;
        }
        assert!(start.elapsed() < SHOW, "no {comm} child of {parent}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the (launched) workload when the test ends, however it ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill sends a signal to a pid; no memory is involved.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
