//! memleak attached and checked: its uprobes listed by `bpftool perf` and compared with what
//! it should attach, retried after a pause while another tracer holds the same addresses.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::cmd;

/// BCC memleak, found able to attach here.
pub(crate) struct Bcc {
    /// /usr/sbin/memleak-bpfcc.
    pub(super) stock: Memleak,
    /// The copy with free's uprobe moved (`moved_memleak`), if it could be made and checked.
    pub(super) moved: Option<Memleak>,
    /// Reads memleak's stack map after each run, and lists its uprobes.
    pub(super) bpftool: PathBuf,
}

impl Bcc {
    /// Whether the copy with free's uprobe moved is there to run too.
    pub(crate) fn has_moved(&self) -> bool {
        self.moved.is_some()
    }
}

/// A memleak script and the file offsets of the uprobes it attaches (`bpftool perf`): every
/// run checks they are all there before the workload's loop starts.
pub(super) struct Memleak {
    pub(super) script: PathBuf,
    pub(super) probes: Vec<u64>,
}

/// How long memleak is given to attach its probes once it says "Attaching to pid" (it prints
/// that when its program is compiled, then attaches them, within 0.1 s here).
pub(super) const ATTACH_GRACE: Duration = Duration::from_secs(1);

/// Runs `script` (BCC memleak or its moved copy) on a `sleep` until it has attached, and
/// returns the file offsets of its uprobes (entry probes, not uretprobes) as `bpftool perf`
/// lists them. memleak compiles its program first (a few seconds), which fails without
/// kernel headers, prints "Attaching to pid", then attaches. Tried ATTACH_TRIES times if it
/// compiles but fails to attach.
pub(super) fn memleak_attach(
    script: &Path,
    bpftool: &Path,
    scratch: &Path,
) -> std::result::Result<Vec<u64>, (bool, String)> {
    let mut tries = 1;
    loop {
        match memleak_attach_once(script, bpftool, scratch) {
            Err((true, why)) if tries < ATTACH_TRIES => {
                eprintln!(
                    "xtask: bench: {} did not attach ({why}); trying again",
                    script.display()
                );
                tries += 1;
                sleep(ATTACH_PAUSE);
            }
            result => return result,
        }
    }
}

/// Why memleak is left out when it compiled its program but did not attach its uprobes.
pub(super) fn attach_failed(why: &str) -> String {
    format!(
        "it compiled its program but did not attach its uprobes in {ATTACH_TRIES} tries \
         ({why}); BCC 0.26 gives its uprobes a garbage ref_ctr_offset (iovisor/bcc issue \
         5236), which the kernel refuses where another tracer probes the same function \
         (dmesg: `ref_ctr_offset mismatch`): is another tracer running?"
    )
}

/// How many times memleak is started before the bench gives up on it attaching. BCC 0.26's
/// Python passes libbcc's bpf_attach_uprobe no `ref_ctr_offset` (it gets a garbage value:
/// iovisor/bcc issue 5236), and the kernel refuses a uprobe whose ref_ctr_offset differs from
/// that of another tracer's uprobe at the same place ("ref_ctr_offset mismatch" in dmesg):
/// memleak fails to attach while another tracer probes the same function.
pub(super) const ATTACH_TRIES: usize = 5;

/// The pause between two tries: another tracer's run may be over by then.
pub(super) const ATTACH_PAUSE: Duration = Duration::from_secs(5);

/// One try of `memleak_attach`; an error says whether memleak compiled its program and failed
/// only to attach (worth another try).
fn memleak_attach_once(
    script: &Path,
    bpftool: &Path,
    scratch: &Path,
) -> std::result::Result<Vec<u64>, (bool, String)> {
    let out_path = scratch.join("memleak-check.out");
    let err_path = scratch.join("memleak-check.err");
    let file = |p: &Path| {
        fs::File::create(p).map_err(|e| (false, format!("cannot create {}: {e}", p.display())))
    };
    let (out, err) = (file(&out_path)?, file(&err_path)?);
    let mut sleeper = Command::new("sleep")
        .arg("300")
        .spawn()
        .map_err(|e| (false, format!("cannot run sleep: {e}")))?;
    let result = match Command::new(script)
        .args(["-p", &sleeper.id().to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Err(e) => Err((false, format!("cannot run {}: {e}", script.display()))),
        Ok(mut m) => {
            let started = Instant::now();
            let attached = loop {
                if fs::read_to_string(&out_path).is_ok_and(|t| t.contains("Attaching to pid")) {
                    break true;
                }
                if m.try_wait().ok().flatten().is_some()
                    || started.elapsed() > Duration::from_secs(120)
                {
                    break false;
                }
                sleep(Duration::from_millis(100));
            };
            let probes = if attached {
                sleep(ATTACH_GRACE);
                uprobe_offsets(bpftool, m.id())
            } else {
                Vec::new()
            };
            // Still running once it has attached everything: it exits on an attach error.
            let alive = m.try_wait().is_ok_and(|s| s.is_none());
            stop(&mut m);
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            let why = err
                .lines()
                .find(|l| l.contains("kernel headers") || l.starts_with("Exception"))
                .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| l.trim().to_string());
            if !attached {
                Err((
                    false,
                    why.unwrap_or_else(|| "it did not attach within 120 s".into()),
                ))
            } else if !alive || probes.is_empty() {
                Err((
                    true,
                    why.unwrap_or_else(|| {
                        "it said it was attaching, but `bpftool perf` lists no uprobe of it".into()
                    }),
                ))
            } else {
                Ok(probes)
            }
        }
    };
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    result
}

/// Stops BCC memleak as Ctrl-C does (SIGINT: BCC detaches its probes on the way out), or kills
/// it if it is still there 10 s later (SIGINT ignored, as in a background job).
pub(super) fn stop(m: &mut Child) {
    // SAFETY: plain kill(2) of our own child, not yet waited for (its pid is still ours).
    unsafe { libc::kill(m.id() as i32, libc::SIGINT) };
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_secs(10) {
        if m.try_wait().ok().flatten().is_some() {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = m.kill();
    let _ = m.wait();
}

/// The file offsets of `pid`'s uprobes (not uretprobes) in `bpftool perf`'s listing, lines
/// such as `pid 123  fd 12: prog_id 45  uprobe  filename /usr/lib/.../libc.so.6  offset 626416`.
pub(super) fn uprobe_offsets(bpftool: &Path, pid: u32) -> Vec<u64> {
    let listing = cmd::output(Command::new(bpftool).arg("perf")).unwrap_or_default();
    let pid = pid.to_string();
    listing
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() != Some(&"pid") || w.get(1) != Some(&pid.as_str()) {
                return None;
            }
            if !w.contains(&"uprobe") {
                return None;
            }
            let at = w.iter().position(|x| *x == "offset")?;
            w.get(at + 1)?.parse().ok()
        })
        .collect()
}

/// What is in `a` and not in `b`, and in `b` and not in `a`, counting repeats.
pub(super) fn multiset_diff(a: &[u64], b: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let mut only_b = b.to_vec();
    let mut only_a = Vec::new();
    for x in a {
        match only_b.iter().position(|y| y == x) {
            Some(i) => {
                only_b.swap_remove(i);
            }
            None => only_a.push(*x),
        }
    }
    (only_a, only_b)
}
