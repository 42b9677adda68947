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
use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    bench::{argv, Outcome, Run},
    cmd::{self, which},
};

/// BCC memleak, found able to attach here.
pub(crate) struct Bcc {
    /// /usr/sbin/memleak-bpfcc.
    stock: Memleak,
    /// The copy with free's uprobe moved (`moved_memleak`), if it could be made and checked.
    moved: Option<Memleak>,
    /// Reads memleak's stack map after each run, and lists its uprobes.
    bpftool: PathBuf,
}

impl Bcc {
    /// Whether the copy with free's uprobe moved is there to run too.
    pub(crate) fn has_moved(&self) -> bool {
        self.moved.is_some()
    }
}

/// A memleak script and the file offsets of the uprobes it attaches (`bpftool perf`): every
/// run checks they are all there before the workload's loop starts.
struct Memleak {
    script: PathBuf,
    probes: Vec<u64>,
}

/// What BCC memleak recorded in one run, read once the workload's loop is over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// Stacks in memleak's stack map: one per distinct allocation stack it recorded.
    pub(crate) stacks: u64,
    /// Of those, the stacks with a frame in the workload's executable.
    pub(crate) from_exe: u64,
    /// Entries ("N bytes in M allocations from stack") in memleak's periodic output, which
    /// lists allocations still live and older than 500 ms at each 1 s tick.
    pub(crate) printed: u64,
}

/// How long memleak is given to attach its probes once it says "Attaching to pid" (it prints
/// that when its program is compiled, then attaches them, within 0.1 s here).
const ATTACH_GRACE: Duration = Duration::from_secs(1);

/// BCC memleak's report interval in the runs, in seconds: a report while the loop runs.
const MEMLEAK_INTERVAL: &str = "1";

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

/// Headers for BCC, which compiles memleak's program at start-up against the running kernel's
/// headers, at /lib/modules/$(uname -r)/build (and `source` beside it). A custom kernel often
/// has none: then Debian's newest installed /usr/src/linux-headers-*-amd64 (installed with
/// apt-get if there are none) are linked there, their -common directory as `source`. An
/// existing link or directory is never replaced. Returns the note for the results: which
/// headers memleak's program is compiled against.
fn bcc_headers() -> std::result::Result<String, String> {
    // Another version's headers do for memleak: the note says why.
    let why_fine = |headers: &Path, release: &str| {
        format!(
            "Headers of another kernel than the running one ({release}) are fine for memleak: \
             its program only reads pt_regs and calls BPF helpers, whose layout is the same in \
             every version on x86-64 (headers: {})",
            headers.display()
        )
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("cannot read the kernel's release: {e}"))?
        .trim()
        .to_string();
    let dir = Path::new("/lib/modules").join(&release);
    let build = dir.join("build");
    if build.symlink_metadata().is_ok() {
        let target = fs::canonicalize(&build).map_err(|e| {
            format!(
                "{} is there but does not resolve ({e}); the bench leaves it as it is",
                build.display()
            )
        })?;
        let mut note = format!(
            "BCC memleak: its program is compiled against the headers at {} → {} (in place \
             before the bench ran)",
            build.display(),
            target.display()
        );
        if !target.to_string_lossy().contains(&release) {
            let _ = write!(note, ". {}", why_fine(&target, &release));
        }
        return Ok(note);
    }
    if std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "the running kernel {release} has no headers ({} is missing) and the bench only \
             knows Debian's amd64 headers to stand in for them",
            build.display()
        ));
    }
    eprintln!(
        "xtask: bench: the running kernel {release} has no headers ({} is missing), which BCC \
         compiles memleak's program against: linking Debian's amd64 headers there",
        build.display()
    );
    let (headers, how) = match installed_headers() {
        Some(h) => (h, "installed before the bench ran"),
        None => {
            install_headers()?;
            let h = installed_headers().ok_or(
                "apt-get installed the headers, but there is no /usr/src/linux-headers-*-amd64 \
                 with its -common directory",
            )?;
            (h, "installed by the bench with apt-get")
        }
    };
    let link = |target: &Path, link: &Path| {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("cannot link {} → {}: {e}", link.display(), target.display()))
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    link(&headers.build, &build)?;
    let source = dir.join("source");
    let source_note = if source.symlink_metadata().is_ok() {
        format!(
            "{} was there already and is left as it is",
            source.display()
        )
    } else {
        link(&headers.common, &source)?;
        format!("{} → {}", source.display(), headers.common.display())
    };
    eprintln!(
        "xtask: bench: linked {} → {} ({how}); {source_note}",
        build.display(),
        headers.build.display()
    );
    Ok(format!(
        "BCC memleak: the running kernel ({release}) has no headers, which BCC compiles \
         memleak's program against; the bench linked {} → {} ({how}); {source_note}. {}",
        build.display(),
        headers.build.display(),
        why_fine(&headers.build, &release)
    ))
}

/// Debian's amd64 kernel headers: `build` = /usr/src/linux-headers-VERSION-amd64, `common` =
/// /usr/src/linux-headers-VERSION-common (what its Makefile includes).
struct Headers {
    build: PathBuf,
    common: PathBuf,
}

/// The newest installed /usr/src/linux-headers-VERSION-amd64 (neither -rt nor -cloud) whose
/// -common directory is installed too.
fn installed_headers() -> Option<Headers> {
    let src = Path::new("/usr/src");
    fs::read_dir(src)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let version = name
                .strip_prefix("linux-headers-")?
                .strip_suffix("-amd64")?;
            if version.ends_with("-rt") || version.ends_with("-cloud") {
                return None;
            }
            let h = Headers {
                build: src.join(&name),
                common: src.join(format!("linux-headers-{version}-common")),
            };
            (h.build.is_dir() && h.common.is_dir()).then(|| (version_key(version), h))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, h)| h)
}

/// The numbers of a Debian kernel version, in order, to compare versions: "6.1.0-53" → [6, 1,
/// 0, 53], "6.12.107+deb12" → [6, 12, 107, 12].
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The headers package to install: the one Debian's `linux-headers-amd64` meta-package depends
/// on (the distribution's current kernel), else the newest `linux-headers-6.*-amd64` that apt
/// knows (neither -rt nor -cloud).
fn headers_package() -> Option<String> {
    let depends = cmd::output(Command::new("apt-cache").args(["depends", "linux-headers-amd64"]));
    let current = depends.as_deref().and_then(|d| {
        d.lines().find_map(|l| {
            let p = l.trim().strip_prefix("Depends:")?.trim();
            (p.starts_with("linux-headers-") && p.ends_with("-amd64")).then(|| p.to_string())
        })
    });
    current.or_else(|| {
        let found = cmd::output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            r"^linux-headers-6\..*-amd64$",
        ]))?;
        found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| !p.ends_with("-rt-amd64") && !p.ends_with("-cloud-amd64"))
            .max_by_key(|p| version_key(p))
            .map(str::to_string)
    })
}

/// Installs `headers_package()` with apt-get (after refreshing apt's lists if the first try
/// fails: stale lists name .debs the mirror no longer has).
fn install_headers() -> std::result::Result<(), String> {
    let pkg = headers_package().ok_or(
        "the running kernel has no headers and apt-cache knows no linux-headers-amd64 nor any \
         linux-headers-6.*-amd64 package",
    )?;
    eprintln!("xtask: bench: installing {pkg} with apt-get, for BCC memleak");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", &pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut out = install()?;
    if !out.status.success() {
        eprintln!("xtask: bench: apt-get install {pkg} failed: apt-get update, then again");
        let _ = Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        out = install()?;
    }
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "the running kernel has no headers and `apt-get install {pkg}` failed ({}: {})",
        out.status,
        err.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
    ))
}

/// BCC detaches its uprobes through tracefs: mounted on /sys/kernel/tracing if it is not.
/// The note for the results, if it had to be (or could not be).
fn tracefs() -> Option<String> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("uprobe_events").exists() {
        return None;
    }
    eprintln!(
        "xtask: bench: mounting tracefs on {} (BCC detaches its uprobes through it)",
        dir.display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if mounted && dir.join("uprobe_events").exists() {
        Some(format!(
            "BCC memleak: tracefs was not mounted; the bench mounted it on {} (BCC detaches \
             its uprobes through it)",
            dir.display()
        ))
    } else {
        eprintln!("xtask: bench: tracefs could not be mounted: memleak may leave uprobes behind");
        Some(format!(
            "BCC memleak: tracefs is not mounted and `mount -t tracefs nodev {}` failed: \
             memleak may leave uprobes behind",
            dir.display()
        ))
    }
}

/// Runs `script` (BCC memleak or its moved copy) on a `sleep` until it has attached, and
/// returns the file offsets of its uprobes (entry probes, not uretprobes) as `bpftool perf`
/// lists them. memleak compiles its program first (a few seconds), which fails without
/// kernel headers, prints "Attaching to pid", then attaches. Tried ATTACH_TRIES times if it
/// compiles but fails to attach.
fn memleak_attach(
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
fn attach_failed(why: &str) -> String {
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
const ATTACH_TRIES: usize = 5;

/// The pause between two tries: another tracer's run may be over by then.
const ATTACH_PAUSE: Duration = Duration::from_secs(5);

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
fn stop(m: &mut Child) {
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
fn uprobe_offsets(bpftool: &Path, pid: u32) -> Vec<u64> {
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

/// BCC 0.26 memleak's attach call for free (at its entry): what the moved copy changes.
const FREE_ATTACH: &str = r#"sym="free", fn_name="free_enter","#;

/// alloctrace's placement line for free (`free +3 ...`) and its offset.
fn free_placement(placements: &[String]) -> Option<(&str, u64)> {
    placements.iter().find_map(|p| {
        let rest = p.strip_prefix("free +")?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some((p.as_str(), rest[..digits].parse().ok()?))
    })
}

/// What is in `a` and not in `b`, and in `b` and not in `a`, counting repeats.
fn multiset_diff(a: &[u64], b: &[u64]) -> (Vec<u64>, Vec<u64>) {
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

/// BCC memleak with its free uprobe at alloctrace's placement for free, free+N (Debian 12's
/// glibc: +3, the emulated `je` past `test rdi,rdi`, which the kernel would single-step): a
/// copy of the stock script, in `scratch`, whose free attach call gets BCC's `sym_off=N`
/// (memleak reads the pointer from rdi, which the `test` leaves as it is). Checked with
/// `bpftool perf`: the copy's uprobes must be the stock script's (`stock_probes`) with exactly
/// one moved, by N. Returns the copy and the note for the results.
fn moved_memleak(
    stock: &Path,
    bpftool: &Path,
    scratch: &Path,
    placements: &[String],
    stock_probes: &[u64],
) -> std::result::Result<(Memleak, String), String> {
    let (placement, off) =
        free_placement(placements).ok_or("alloctrace -v printed no `free +N` placement")?;
    if off == 0 {
        return Err(format!(
            "alloctrace probes free at its entry on this libc, as memleak does ({placement}): \
             nothing to move"
        ));
    }
    let text =
        fs::read_to_string(stock).map_err(|e| format!("cannot read {}: {e}", stock.display()))?;
    let found = text.matches(FREE_ATTACH).count();
    if found != 1 {
        return Err(format!(
            "{} has {found} `{FREE_ATTACH}` where BCC 0.26's has one, its free attach call: \
             not rewritten (and not run unmodified under this name)",
            stock.display()
        ));
    }
    let moved = scratch.join("memleak-free-moved");
    let rewritten = text.replacen(
        FREE_ATTACH,
        &format!(r#"sym="free", sym_off={off}, fn_name="free_enter","#),
        1,
    );
    fs::write(&moved, rewritten).map_err(|e| format!("cannot write {}: {e}", moved.display()))?;
    fs::set_permissions(&moved, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", moved.display()))?;
    let probes = memleak_attach(&moved, bpftool, scratch).map_err(|(_, why)| {
        format!(
            "the rewritten copy {} did not attach: {why}",
            moved.display()
        )
    })?;
    let (gone, new) = multiset_diff(stock_probes, &probes);
    match (gone.as_slice(), new.as_slice()) {
        ([s], [m]) if *m == s + off => {
            eprintln!(
                "xtask: bench: BCC memleak (free moved): free's uprobe at {m:#x}, the stock \
                 script's at {s:#x}"
            );
            let note = format!(
                "BCC memleak (free moved): {} copied at bench time to {} with `sym_off={off}` on \
                 its free attach call, so its free uprobe is at free+{off} (alloctrace's \
                 placement: {placement}); `bpftool perf` showed it at file offset {m:#x} where \
                 the stock script's is at {s:#x}, and its {} other probes where the stock \
                 script's are",
                stock.display(),
                moved.display(),
                probes.len() - 1
            );
            Ok((
                Memleak {
                    script: moved,
                    probes,
                },
                note,
            ))
        }
        _ => Err(format!(
            "`bpftool perf` does not show the copy's uprobes as the stock script's with one \
             moved by {off} (only the stock script's: {gone:x?}; only the copy's: {new:x?})"
        )),
    }
}

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

    #[test]
    fn debian_kernel_versions_order() {
        assert!(version_key("6.1.0-56") > version_key("6.1.0-53"));
        assert!(version_key("6.12.107+deb12") > version_key("6.1.0-56"));
    }

    #[test]
    fn free_placement_and_moved_probe() {
        let placements = vec![
            "malloc +0 `push r12` (emulated: first instruction)".to_string(),
            "free +3 `je 98FB8h` (emulated), past `test rdi,rdi`".to_string(),
        ];
        assert_eq!(free_placement(&placements).map(|(_, o)| o), Some(3));
        let stock = [0x98930, 0x996e0, 0x99650, 0x99650, 0x98ef0];
        let moved = [0x98930, 0x99650, 0x996e0, 0x98ef3, 0x99650];
        assert_eq!(
            multiset_diff(&stock, &moved),
            (vec![0x98ef0], vec![0x98ef3])
        );
    }
}
