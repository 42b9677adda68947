//! One bench run under memleak: attached to the waiting workload, released, and its stack map
//! read afterwards (a run in which memleak saw nothing of the workload is left out).
use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;

use super::attach::{
    attach_failed, multiset_diff, stop, uprobe_offsets, Bcc, Memleak, ATTACH_GRACE, ATTACH_PAUSE,
    ATTACH_TRIES,
};
use crate::bench::outcome::{Outcome, Run, Seen};
use crate::bench::workloads::argv;

/// BCC memleak's report interval in the runs, in seconds: a report while the loop runs.
const MEMLEAK_INTERVAL: &str = "1";

/// The address ranges at which `pid`'s executable is mapped (its code among them).
fn exe_ranges(pid: u32) -> Vec<std::ops::Range<u64>> {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return Vec::new();
    };
    let exe = exe.to_string_lossy().into_owned();
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            // "start-end perms offset dev inode   path"
            let f: Vec<&str> = l.splitn(6, ' ').collect();
            if f.get(5)?.trim() != exe {
                return None;
            }
            let (a, b) = f[0].split_once('-')?;
            Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
        })
        .collect()
}

/// BPF_MAP_TYPE_STACK_TRACE, as /proc/PID/fdinfo shows map types.
const STACK_TRACE_MAP: &str = "7";

/// The stacks BCC memleak (`pid`) recorded: its one stack-trace map (found among its file
/// descriptors), dumped with bpftool; each stack as its non-zero frame addresses.
fn memleak_stacks(bpftool: &Path, pid: u32) -> Result<Vec<Vec<u64>>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let info = fs::read_to_string(e?.path()).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        if field("map_type:") == Some(STACK_TRACE_MAP) {
            ids.extend(field("map_id:").map(str::to_string));
        }
    }
    ensure!(
        ids.len() == 1,
        "BCC memleak (pid {pid}) holds {} stack-trace maps, not one",
        ids.len()
    );
    let dump = cmd::output(Command::new(bpftool).args(["map", "dump", "id", &ids[0]]))
        .with_context(|| format!("bpftool map dump id {} failed", ids[0]))?;
    Ok(parse_stack_dump(&dump))
}

/// The values of a stack-trace map as `bpftool map dump` prints them without BTF: `key:` and
/// `value:`, each followed by hex bytes over one or more lines, then `Found N elements`; a
/// value is 8-byte little-endian frame addresses, zero past the stack's last frame.
fn parse_stack_dump(dump: &str) -> Vec<Vec<u64>> {
    let frames = |bytes: &[u8]| -> Vec<u64> {
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .filter(|a| *a != 0)
            .collect()
    };
    let mut stacks = Vec::new();
    let mut value: Option<Vec<u8>> = None;
    for w in dump.split_whitespace() {
        match w {
            "key:" | "Found" => stacks.extend(value.take().map(|v| frames(&v))),
            "value:" => value = Some(Vec::new()),
            _ => {
                if let (Some(v), Ok(b)) = (value.as_mut(), u8::from_str_radix(w, 16)) {
                    v.push(b);
                }
            }
        }
    }
    stacks.extend(value.map(|v| frames(&v)));
    stacks
}

/// BCC memleak on the workload (`moved`: its copy with free's uprobe moved), tried up to
/// ATTACH_TRIES times if memleak does not attach all its uprobes (see ATTACH_TRIES). Left out
/// of the medians if it never does, or if memleak recorded no allocation stack with a frame in
/// the workload's executable (the cost of a tracer that saw nothing).
pub(crate) fn run_memleak(
    bcc: &Bcc,
    exe: &Path,
    n: &str,
    out_file: &Path,
    moved: bool,
) -> Result<Outcome> {
    let memleak = if moved {
        bcc.moved
            .as_ref()
            .expect("filtered out without the moved copy")
    } else {
        &bcc.stock
    };
    for tries in 1..=ATTACH_TRIES {
        let Some(run) = run_memleak_once(&bcc.bpftool, memleak, exe, n, out_file)? else {
            eprintln!(
                "xtask: bench: {} did not attach all its uprobes to {} (try {tries} of \
                 {ATTACH_TRIES})",
                memleak.script.display(),
                exe.display()
            );
            sleep(ATTACH_PAUSE);
            continue;
        };
        let seen = run.seen.expect("memleak runs record what it saw");
        if seen.from_exe == 0 {
            return Ok(Err(format!(
                "memleak saw nothing of the workload (its stack map held {} stacks, none with \
                 a frame in the workload's executable; it printed {} outstanding stacks)",
                seen.stacks, seen.printed
            )));
        }
        return Ok(Ok(run));
    }
    Ok(Err(attach_failed(&format!(
        "bpftool perf did not list its {} uprobes",
        memleak.probes.len()
    ))))
}

/// One run of BCC memleak on the workload: the workload waits (BENCH_WAIT) until memleak,
/// attached to its pid, has had time to attach its probes (it prints "Attaching to pid" first,
/// then attaches; ATTACH_GRACE is left) and `bpftool perf` lists them all, then runs its loop;
/// then memleak's stack map is read (what it saw: `Seen`) and memleak is stopped. memleak
/// reports every MEMLEAK_INTERVAL. None, the workload killed before its loop, if memleak did
/// not attach all its uprobes.
fn run_memleak_once(
    bpftool: &Path,
    memleak: &Memleak,
    exe: &Path,
    n: &str,
    out_file: &Path,
) -> Result<Option<Run>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let script = &memleak.script;
    let start = Instant::now();
    let a = argv(exe);
    let mut w = Command::new(&a[0])
        .args(&a[1..])
        .arg(n)
        .arg(out_file)
        .env("BENCH_WAIT", "1")
        .env("PYTHONMALLOC", "malloc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let abandon = |w: &mut Child| {
        let _ = w.kill();
        let _ = w.wait();
    };
    let mut wout = BufReader::new(w.stdout.take().context("no stdout")?);
    let mut line = String::new();
    wout.read_line(&mut line)?;
    if line.trim() != "ready" {
        abandon(&mut w);
        bail!("{} said {line:?}, not ready", exe.display());
    }
    let ranges = exe_ranges(w.id());
    if ranges.is_empty() {
        abandon(&mut w);
        bail!(
            "cannot find where {} is mapped in its process",
            exe.display()
        );
    }
    let mut m = match Command::new(script)
        .args(["-p", &w.id().to_string(), MEMLEAK_INTERVAL])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(m) => m,
        Err(e) => {
            abandon(&mut w);
            bail!("cannot run {}: {e}", script.display());
        }
    };
    let mut mout = BufReader::new(m.stdout.take().context("no stdout")?);
    loop {
        line.clear();
        if mout.read_line(&mut line).unwrap_or(0) == 0 {
            // It ended before attaching (its errors are in the set-up check's log).
            abandon(&mut w);
            stop(&mut m);
            return Ok(None);
        }
        if line.contains("Attaching to pid") {
            break;
        }
    }
    // Its reports, kept to count the stacks it printed.
    let reports = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = mout.read_to_string(&mut all);
        all
    });
    sleep(ATTACH_GRACE);
    let (missing, _) = multiset_diff(&memleak.probes, &uprobe_offsets(bpftool, m.id()));
    if !missing.is_empty() {
        abandon(&mut w);
        stop(&mut m);
        let _ = reports.join();
        return Ok(None);
    }
    w.stdin.take().context("no stdin")?.write_all(b"g")?;
    let status = w.wait()?;
    let stacks = memleak_stacks(bpftool, m.id());
    stop(&mut m);
    let reports = reports.join().unwrap_or_default();
    ensure!(
        status.success(),
        "{} under memleak: {status}",
        exe.display()
    );
    let stacks = stacks?;
    let seen = Seen {
        stacks: stacks.len() as u64,
        from_exe: stacks
            .iter()
            .filter(|s| s.iter().any(|ip| ranges.iter().any(|r| r.contains(ip))))
            .count() as u64,
        printed: reports.matches("allocations from stack").count() as u64,
    };
    let text = fs::read_to_string(out_file)
        .with_context(|| format!("no {} from {}", out_file.display(), exe.display()))?;
    let field = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .with_context(|| format!("no `{key}` in {}:\n{text}", out_file.display()))
    };
    Ok(Some(Run {
        loop_ns: field("elapsed_ns ")?,
        events: field("events ")?,
        wall_s: start.elapsed().as_secs_f64(),
        counted: None,
        own: None,
        seen: Some(seen),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_dump_values_become_frames() {
        // As bpftool 7.1 prints a BPF_STACK_TRACE map (values shortened to two frames).
        let dump = "key:\nad 27 00 00\nvalue:\nce d1 d8 c6 39 56 00 00  4a 52 90 41 ce 7f 00 00\n\
                    00 00 00 00 00 00 00 00\nkey:\n01 00 00 00\nvalue:\n\
                    10 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00\nFound 2 elements\n";
        assert_eq!(
            parse_stack_dump(dump),
            vec![vec![0x5639_c6d8_d1ce, 0x7fce_4190_524a], vec![0x10]]
        );
        assert!(parse_stack_dump("Found 0 elements\n").is_empty());
    }
}
