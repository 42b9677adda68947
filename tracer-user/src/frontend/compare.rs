//! `alloctrace compare BEFORE.json AFTER.json`: what changed between two runs (the guide's
//! "validating improvements"), in total and per allocation site.
//!
//! Sites are matched across runs by their stacks' frame *names* (`Frame::name`, innermost
//! first, joined with `;`), never by addresses or stack ids, which ASLR and the kernel's stack
//! hashing change from run to run; pids are ignored too. Sites of one run with the same names
//! (the same function calling the allocator from two lines, or the same stack in several
//! processes) are summed. Unnamed frames go by `module+0xoffset`, which is stable across runs.
//!
//! Live bytes are compared only where both runs measured them: an alloc-only run (no frees
//! traced; `null` in its JSON) shows "-" and "not measured in alloc-only mode", never a number.
//!
//! [`compare`] is pure; [`render`] turns its result into text; [`run`] reads the two files, each
//! parsed as it is read and at most [`MAX_REPORT_BYTES`] of it (a device or FIFO named by
//! mistake ends the read there, not the machine's memory).
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::model::{Counters, Profile, TraceMode};
use crate::numfmt::{fmt_bytes, fmt_bytes_f};

/// The most `compare` reads of one report: 2 GiB, well above any report alloctrace writes
/// (131k distinct stacks make 181 MB; version 1 made 1.2 GB of them).
pub const MAX_REPORT_BYTES: u64 = 2 << 30;

/// Changes within this fraction (of the larger value) read as "unchanged".
const UNCHANGED_WITHIN: f64 = 0.01;

/// What one run measured for one site (or in total).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measures {
    pub allocs: u64,
    pub bytes: u64,
    /// None when the run did not trace frees (alloc-only mode).
    pub live_bytes: Option<u64>,
    /// Bytes allocated per second of the run; None when the run lasted no time.
    pub rate: Option<f64>,
}

impl Measures {
    fn new(c: &Counters, duration: Duration, mode: TraceMode) -> Measures {
        let secs = duration.as_secs_f64();
        Measures {
            allocs: c.allocs,
            bytes: c.bytes,
            live_bytes: mode.sees_frees().then(|| c.live_bytes()),
            rate: (secs > 0.0).then(|| c.bytes as f64 / secs),
        }
    }
}

/// One site in either run or both.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteChange {
    /// The frames' names, innermost first (joined with `;`, the matching key).
    pub frames: Vec<String>,
    pub before: Option<Measures>,
    pub after: Option<Measures>,
}

impl SiteChange {
    #[cfg(test)]
    pub fn key(&self) -> String {
        self.frames.join(";")
    }
}

/// One run, as the header names it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub target: String,
    pub duration: Duration,
    pub mode: TraceMode,
}

/// Everything `render` shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub before: RunInfo,
    pub after: RunInfo,
    pub total_before: Measures,
    pub total_after: Measures,
    /// Sites in both runs, by bytes before (largest first).
    pub matched: Vec<SiteChange>,
    /// Sites only in BEFORE, by bytes before.
    pub disappeared: Vec<SiteChange>,
    /// Sites only in AFTER, by bytes after.
    pub appeared: Vec<SiteChange>,
}

/// Every site of `p` summed by its frames' names.
/// A hash map: stacks of one program share long prefixes of names, which made a sorted map's
/// comparisons most of a 131k-site comparison's time; the lists are sorted afterwards.
fn sites_by_names(p: &Profile) -> HashMap<Vec<String>, Counters> {
    let mut out: HashMap<Vec<String>, Counters> = HashMap::new();
    for s in &p.sites {
        let names = s.frames.iter().map(|f| f.name()).collect();
        out.entry(names).or_default().add(&s.counters);
    }
    out
}

fn by_bytes_desc(list: &mut [SiteChange], pick: impl Fn(&SiteChange) -> Option<Measures>) {
    let bytes = |s: &SiteChange| pick(s).map_or(0, |m| m.bytes);
    list.sort_by(|a, b| {
        bytes(b)
            .cmp(&bytes(a))
            .then_with(|| a.frames.cmp(&b.frames))
    });
}

/// Compares two runs (see the module documentation for how sites are matched).
pub fn compare(before: &Profile, after: &Profile) -> Comparison {
    let b_sites = sites_by_names(before);
    let mut a_sites = sites_by_names(after);
    let mut matched = Vec::new();
    let mut disappeared = Vec::new();
    for (frames, bc) in b_sites {
        let b = Some(Measures::new(&bc, before.duration, before.mode));
        let a = a_sites
            .remove(&frames)
            .map(|ac| Measures::new(&ac, after.duration, after.mode));
        let change = SiteChange {
            frames,
            before: b,
            after: a,
        };
        if a.is_some() {
            matched.push(change);
        } else {
            disappeared.push(change);
        }
    }
    let mut appeared: Vec<SiteChange> = a_sites
        .into_iter()
        .map(|(frames, ac)| SiteChange {
            frames,
            before: None,
            after: Some(Measures::new(&ac, after.duration, after.mode)),
        })
        .collect();
    by_bytes_desc(&mut matched, |s| s.before);
    by_bytes_desc(&mut disappeared, |s| s.before);
    by_bytes_desc(&mut appeared, |s| s.after);
    Comparison {
        before: RunInfo {
            target: before.target.to_string(),
            duration: before.duration,
            mode: before.mode,
        },
        after: RunInfo {
            target: after.target.to_string(),
            duration: after.duration,
            mode: after.mode,
        },
        total_before: Measures::new(&before.total(), before.duration, before.mode),
        total_after: Measures::new(&after.total(), after.duration, after.mode),
        matched,
        disappeared,
        appeared,
    }
}

/// The change from `before` to `after` in words: "unchanged" (within 1%), "2.0x more",
/// "10.0x fewer" (`less` replaces "fewer" for quantities that are not counts), "new" (0 -> N),
/// "gone" (N -> 0). Two decimals below 1.1x, so a 5% change does not read as "1.0x".
pub fn change(before: f64, after: f64, less: &str) -> String {
    if !(before.is_finite() && after.is_finite()) {
        return "n/a".into();
    }
    match (before > 0.0, after > 0.0) {
        (false, false) => return "unchanged".into(),
        (false, true) => return "new".into(),
        (true, false) => return "gone".into(),
        (true, true) => {}
    }
    if (after - before).abs() <= UNCHANGED_WITHIN * before.max(after) {
        return "unchanged".into();
    }
    let ratio = after / before;
    let (factor, word) = if ratio > 1.0 {
        (ratio, "more")
    } else {
        (1.0 / ratio, less)
    };
    if factor < 1.1 {
        format!("{factor:.2}x {word}")
    } else {
        format!("{factor:.1}x {word}")
    }
}

fn opt_change(before: Option<f64>, after: Option<f64>, less: &str) -> String {
    match (before, after) {
        (Some(b), Some(a)) => change(b, a, less),
        _ => "n/a".into(),
    }
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |v| format!("{}/s", fmt_bytes_f(v)))
}

/// Counts are exact (`12,345`): a comparison is read for small differences too.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The four measure lines of one site or of the totals, indented by `indent`.
fn measure_lines(out: &mut String, indent: &str, b: Option<Measures>, a: Option<Measures>) {
    let cell = |m: Option<Measures>, f: &dyn Fn(Measures) -> String| m.map_or("-".into(), f);
    let rows: [(&str, String, String, String); 4] = [
        (
            "allocations",
            cell(b, &|m| thousands(m.allocs)),
            cell(a, &|m| thousands(m.allocs)),
            change(
                b.map_or(0, |m| m.allocs) as f64,
                a.map_or(0, |m| m.allocs) as f64,
                "fewer",
            ),
        ),
        (
            "bytes",
            cell(b, &|m| fmt_bytes(m.bytes)),
            cell(a, &|m| fmt_bytes(m.bytes)),
            change(
                b.map_or(0, |m| m.bytes) as f64,
                a.map_or(0, |m| m.bytes) as f64,
                "less",
            ),
        ),
        (
            "alloc rate",
            cell(b, &|m| fmt_rate(m.rate)),
            cell(a, &|m| fmt_rate(m.rate)),
            opt_change(
                b.map_or(Some(0.0), |m| m.rate),
                a.map_or(Some(0.0), |m| m.rate),
                "less",
            ),
        ),
        live_row(b, a),
    ];
    for (label, before, after, what) in rows {
        let _ = writeln!(
            out,
            "{indent}{:<25} ({before} -> {after})",
            format!("{label}: {what}"),
        );
    }
}

/// The live-bytes row: compared only when every run the site is in measured them (a site
/// absent from a run counts as 0 there, as in the other rows).
fn live_row(b: Option<Measures>, a: Option<Measures>) -> (&'static str, String, String, String) {
    let cell = |m: Option<Measures>| {
        m.and_then(|m| m.live_bytes)
            .map_or_else(|| "-".to_string(), fmt_bytes)
    };
    let measured = [b, a].iter().flatten().all(|m| m.live_bytes.is_some());
    let what = if measured {
        let live = |m: Option<Measures>| m.and_then(|m| m.live_bytes).unwrap_or(0) as f64;
        change(live(b), live(a), "less")
    } else {
        "not measured in alloc-only mode".into()
    };
    ("live bytes", cell(b), cell(a), what)
}

/// How the header names a run: its target, duration, and mode when not the default.
fn run_line(r: &RunInfo) -> String {
    match r.mode {
        TraceMode::Full => format!("{} ({})", r.target, fmt_secs(r.duration)),
        TraceMode::AllocOnly => format!(
            "{} ({}, alloc-only: frees and live bytes not measured)",
            r.target,
            fmt_secs(r.duration)
        ),
    }
}

fn site_title(s: &SiteChange) -> String {
    if s.frames.is_empty() {
        "(no frames)".into()
    } else {
        s.frames.join(" <- ")
    }
}

fn site_section(out: &mut String, title: &str, sites: &[SiteChange]) {
    if sites.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for s in sites {
        let _ = writeln!(out, "  {}", site_title(s));
        measure_lines(out, "    ", s.before, s.after);
    }
}

/// The comparison as text: header, totals, then matched, disappeared and appeared sites.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "before: {}\nafter:  {}",
        run_line(&c.before),
        run_line(&c.after)
    );
    let _ = writeln!(out, "\ntotal:");
    measure_lines(&mut out, "  ", Some(c.total_before), Some(c.total_after));
    let _ = writeln!(
        out,
        "\nsites are matched by their stacks' function names, innermost first; {} in both runs, {} disappeared, {} appeared",
        c.matched.len(),
        c.disappeared.len(),
        c.appeared.len()
    );
    site_section(&mut out, "sites in both runs, by bytes before", &c.matched);
    site_section(&mut out, "sites that disappeared", &c.disappeared);
    site_section(&mut out, "sites that appeared", &c.appeared);
    out
}

/// A reader that fails once more than `left` bytes come through it, and says so.
struct Capped<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the cap tells a file of exactly the cap from a longer one.
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let take = buf.len().min(room);
        let n = self.inner.read(&mut buf[..take])?;
        if n as u64 > self.left {
            self.over = true;
            return Err(io::Error::other("past the size cap"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Parses the report `r` reads (named `name` in errors), reading at most `cap` bytes of it.
fn parse_capped(r: impl Read, name: &str, cap: u64) -> anyhow::Result<Profile> {
    let mut capped = Capped {
        inner: r,
        left: cap,
        over: false,
    };
    match crate::export::json::from_reader(&mut capped) {
        Ok(p) => Ok(p),
        Err(_) if capped.over => anyhow::bail!(
            "{name} is larger than {}, the most compare reads of a report: not an alloctrace \
             JSON report",
            fmt_bytes(cap)
        ),
        Err(e) if e.is_io() => Err(e).with_context(|| format!("cannot read {name}")),
        Err(e) => Err(e)
            .with_context(|| format!("{name} is not an alloctrace JSON report (--report json)")),
    }
}

fn read_profile(path: &Path) -> anyhow::Result<Profile> {
    let name = path.display().to_string();
    // O_NONBLOCK: opening a FIFO nobody writes to returns at once (and reads end-of-file)
    // instead of waiting for a writer; it is cleared before reading.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot read {name}"))?;
    // SAFETY: F_GETFL/F_SETFL on a descriptor `file` owns and keeps open; no memory is passed.
    let cleared = unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot read {name}"));
    }
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {name}"))?;
    if meta.is_file() && meta.len() > MAX_REPORT_BYTES {
        anyhow::bail!(
            "{name} is {}, larger than {}, the most compare reads of a report: not an \
             alloctrace JSON report",
            fmt_bytes(meta.len()),
            fmt_bytes(MAX_REPORT_BYTES)
        );
    }
    parse_capped(file, &name, MAX_REPORT_BYTES)
}

/// Reads both `--report json` files and renders their comparison.
pub fn run(before: &Path, after: &Path) -> anyhow::Result<String> {
    let b = read_profile(before)?;
    let a = read_profile(after)?;
    Ok(render(&compare(&b, &a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, Losses, Site, Target};
    use crate::testkit::c;

    fn frame(name: &str, addr: u64) -> Frame {
        Frame {
            addr,
            function: Some(name.into()),
            ..Default::default()
        }
    }

    fn site(pid: u32, stack_id: u64, names: &[&str], counters: Counters) -> Site {
        Site {
            pid,
            stack_id,
            // Addresses differ per pid, as ASLR makes them differ between runs.
            frames: names
                .iter()
                .enumerate()
                .map(|(i, n)| frame(n, u64::from(pid) << 20 | i as u64))
                .collect(),
            counters,
            size_hist: vec![],
            life_hist: vec![],
            series: vec![],
            sampled: None,
            live: None,
        }
    }

    fn profile(pid: u32, secs: u64, sites: Vec<Site>) -> Profile {
        let mut total = Counters::default();
        for s in &sites {
            total.add(&s.counters);
        }
        Profile {
            target: Target::Command {
                argv: vec!["./prog".into()],
                pid,
            },
            mode: crate::model::TraceMode::Full,
            start_unix_secs: 0,
            duration: Duration::from_secs(secs),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(100),
            samples: vec![],
            processes: vec![crate::model::Process {
                pid,
                comm: "prog".into(),
                counters: total,
                unknown_frees: 0,
                unseen: None,
                allocators: Vec::new(),
                go: None,
            }],
            sites,
            losses: Losses::default(),
            modules: vec![],
            sample_bytes: None,
            tracer: None,
        }
    }

    #[test]
    fn exact_counts() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn change_words() {
        assert_eq!(change(10.0, 1.0, "fewer"), "10.0x fewer");
        assert_eq!(change(1.0, 2.0, "less"), "2.0x more");
        assert_eq!(change(100.0, 100.5, "fewer"), "unchanged");
        assert_eq!(change(100.0, 99.0, "fewer"), "unchanged");
        assert_eq!(change(100.0, 105.0, "less"), "1.05x more");
        assert_eq!(change(105.0, 100.0, "less"), "1.05x less");
        assert_eq!(change(0.0, 5.0, "fewer"), "new");
        assert_eq!(change(5.0, 0.0, "fewer"), "gone");
        assert_eq!(change(0.0, 0.0, "fewer"), "unchanged");
        assert_eq!(change(1.0, f64::NAN, "fewer"), "n/a");
        assert_eq!(opt_change(None, Some(1.0), "less"), "n/a");
    }

    /// Sites match by names across different pids and addresses; equal names in one run are
    /// summed; sorted by bytes before; the vanished and the new are listed apart.
    #[test]
    fn matches_by_names() {
        let before = profile(
            7,
            2,
            vec![
                site(7, 1, &["small", "main"], c(1000, 64_000, 1000, 64_000)),
                site(7, 2, &["big", "main"], c(4, 4 << 20, 4, 4 << 20)),
                site(7, 3, &["small", "main"], c(1000, 64_000, 1000, 64_000)),
                site(7, 4, &["old", "main"], c(10, 100, 0, 0)),
            ],
        );
        let after = profile(
            9,
            2,
            vec![
                site(9, 11, &["big", "main"], c(4, 4 << 20, 4, 4 << 20)),
                site(9, 12, &["small", "main"], c(200, 12_800, 200, 12_800)),
                site(9, 13, &["fresh", "main"], c(1, 10, 0, 0)),
            ],
        );
        let cmp = compare(&before, &after);
        let keys = |l: &[SiteChange]| l.iter().map(SiteChange::key).collect::<Vec<_>>();
        assert_eq!(keys(&cmp.matched), ["big;main", "small;main"]);
        assert_eq!(keys(&cmp.disappeared), ["old;main"]);
        assert_eq!(keys(&cmp.appeared), ["fresh;main"]);
        let small = &cmp.matched[1];
        assert_eq!(small.before.unwrap().allocs, 2000);
        assert_eq!(small.before.unwrap().rate, Some(64_000.0));
        assert_eq!(small.after.unwrap().allocs, 200);
        assert_eq!(cmp.total_before.live_bytes, Some(100));
        assert_eq!(cmp.total_after.live_bytes, Some(10));
    }

    #[test]
    fn renders_a_small_case() {
        let before = profile(
            7,
            2,
            vec![
                site(7, 1, &["small", "main"], c(2000, 128_000, 2000, 128_000)),
                site(7, 2, &["leak", "main"], c(10, 1000, 0, 0)),
            ],
        );
        let after = profile(
            9,
            4,
            vec![
                site(9, 1, &["small", "main"], c(200, 12_800, 200, 12_800)),
                site(9, 3, &["fresh", "main"], c(1, 2048, 1, 2048)),
            ],
        );
        let want = "\
before: ./prog (2.00s)
after:  ./prog (4.00s)

total:
  allocations: 10.0x fewer  (2,010 -> 201)
  bytes: 8.7x less          (126.0 KiB -> 14.5 KiB)
  alloc rate: 17.4x less    (63.0 KiB/s -> 3.6 KiB/s)
  live bytes: gone          (1000 B -> 0 B)

sites are matched by their stacks' function names, innermost first; 1 in both runs, 1 disappeared, 1 appeared

sites in both runs, by bytes before:
  small <- main
    allocations: 10.0x fewer  (2,000 -> 200)
    bytes: 10.0x less         (125.0 KiB -> 12.5 KiB)
    alloc rate: 20.0x less    (62.5 KiB/s -> 3.1 KiB/s)
    live bytes: unchanged     (0 B -> 0 B)

sites that disappeared:
  leak <- main
    allocations: gone         (10 -> -)
    bytes: gone               (1000 B -> -)
    alloc rate: gone          (500 B/s -> -)
    live bytes: gone          (1000 B -> -)

sites that appeared:
  fresh <- main
    allocations: new          (- -> 1)
    bytes: new                (- -> 2.0 KiB)
    alloc rate: new           (- -> 512 B/s)
    live bytes: unchanged     (- -> 0 B)
";
        assert_eq!(render(&compare(&before, &after)), want);
    }

    #[test]
    fn zero_duration_and_empty_runs() {
        let before = profile(1, 0, vec![site(1, 1, &["f"], c(1, 8, 0, 0))]);
        let after = profile(2, 0, vec![]);
        let cmp = compare(&before, &after);
        assert_eq!(cmp.total_before.rate, None);
        let text = render(&cmp);
        assert!(
            text.contains("  alloc rate: n/a           (- -> -)\n"),
            "{text}"
        );
        assert!(
            text.contains("  allocations: gone         (1 -> 0)\n"),
            "{text}"
        );
        let same = render(&compare(&after, &after));
        assert!(
            same.contains("0 in both runs, 0 disappeared, 0 appeared"),
            "{same}"
        );
        assert!(same.contains("allocations: unchanged"), "{same}");
    }

    #[test]
    fn run_names_the_bad_file() {
        let dir = std::env::temp_dir().join(format!("alloctrace-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        let bad = dir.join("bad.json");
        std::fs::write(&good, crate::export::json::to_json(&profile(1, 1, vec![]))).unwrap();
        std::fs::write(&bad, "{}").unwrap();
        let err = format!("{:#}", run(&good, &bad).unwrap_err());
        assert!(
            err.contains("bad.json") && err.contains("not an alloctrace JSON report"),
            "{err}"
        );
        let err = format!("{:#}", run(&dir.join("missing.json"), &good).unwrap_err());
        assert!(err.contains("missing.json"), "{err}");
        assert!(run(&good, &good)
            .unwrap()
            .contains("allocations: unchanged"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn alloc_only(p: Profile) -> Profile {
        Profile {
            mode: crate::model::TraceMode::AllocOnly,
            ..p
        }
    }

    /// The lines of `text` about live bytes.
    fn live_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.trim_start().starts_with("live bytes"))
            .collect()
    }

    /// Alloc-only runs trace no frees: their live bytes are not measured, and no number (such
    /// as all the bytes ever allocated) may stand for them, in total or per site.
    #[test]
    fn alloc_only_runs_have_no_live_bytes() {
        // Alloc-only counters have no frees: live would read as every byte allocated.
        let before = alloc_only(profile(
            7,
            2,
            vec![
                site(7, 1, &["small", "main"], c(2000, 180 << 40, 0, 0)),
                site(7, 2, &["old", "main"], c(10, 1000, 0, 0)),
            ],
        ));
        let after = alloc_only(profile(
            9,
            2,
            vec![
                site(9, 1, &["small", "main"], c(200, 12_800, 0, 0)),
                site(9, 3, &["fresh", "main"], c(1, 2048, 0, 0)),
            ],
        ));
        let cmp = compare(&before, &after);
        assert_eq!(
            (cmp.total_before.live_bytes, cmp.total_after.live_bytes),
            (None, None)
        );
        let text = render(&cmp);
        let live = live_lines(&text);
        assert_eq!(live.len(), 4, "{text}");
        for l in live {
            assert_eq!(
                l.trim(),
                "live bytes: not measured in alloc-only mode (- -> -)",
                "{text}"
            );
        }
        assert!(text.starts_with(
            "before: ./prog (2.00s, alloc-only: frees and live bytes not measured)\n\
             after:  ./prog (2.00s, alloc-only: frees and live bytes not measured)\n"
        ));
    }

    /// A full run against an alloc-only one: the full run's live bytes are shown, the other
    /// side is "-", and no change is claimed.
    #[test]
    fn full_against_alloc_only() {
        let full = profile(7, 2, vec![site(7, 1, &["f", "main"], c(10, 1000, 4, 400))]);
        let quick = alloc_only(profile(
            9,
            2,
            vec![site(9, 1, &["f", "main"], c(10, 1000, 0, 0))],
        ));
        for (b, a, want) in [
            (&full, &quick, "(600 B -> -)"),
            (&quick, &full, "(- -> 600 B)"),
        ] {
            let text = render(&compare(b, a));
            let live = live_lines(&text);
            assert_eq!(live.len(), 2, "{text}");
            for l in live {
                assert_eq!(
                    l.trim(),
                    format!("live bytes: not measured in alloc-only mode {want}"),
                    "{text}"
                );
            }
            assert!(text.contains("allocations: unchanged"), "{text}");
        }
    }

    /// The same through the JSON files, where alloc-only live fields are `null`.
    #[test]
    fn alloc_only_reports_through_json() {
        let dir =
            std::env::temp_dir().join(format!("alloctrace-compare-ao-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("quick.json");
        let p = alloc_only(profile(
            1,
            1,
            vec![site(1, 1, &["f"], c(3, 300 << 40, 0, 0))],
        ));
        let text = crate::export::json::to_json(&p);
        assert!(text.contains(r#""live_bytes":null"#), "{text}");
        std::fs::write(&path, text).unwrap();
        let out = run(&path, &path).unwrap();
        for l in live_lines(&out) {
            assert!(
                l.ends_with("not measured in alloc-only mode (- -> -)"),
                "{out}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Reading stops at the cap, with the cap named; a report of exactly the cap reads.
    #[test]
    fn reads_at_most_the_cap() {
        let err = format!(
            "{:#}",
            parse_capped(io::repeat(b' '), "/some/fifo", 1 << 20).unwrap_err()
        );
        assert_eq!(
            err,
            "/some/fifo is larger than 1.0 MiB, the most compare reads of a report: not an \
             alloctrace JSON report"
        );
        let text = crate::export::json::to_json(&profile(1, 1, vec![]));
        let len = text.len() as u64;
        assert!(parse_capped(text.as_bytes(), "r.json", len).is_ok());
        let err = format!(
            "{:#}",
            parse_capped(text.as_bytes(), "r.json", len - 1).unwrap_err()
        );
        assert!(err.contains("r.json is larger than"), "{err}");
    }

    /// Endless zeros are refused at the first byte, in one line.
    #[test]
    fn dev_zero_is_refused_at_once() {
        let t0 = std::time::Instant::now();
        let zero = Path::new("/dev/zero");
        let err = format!("{:#}", run(zero, zero).unwrap_err());
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            err.starts_with("/dev/zero is not an alloctrace JSON report (--report json): "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
