//! `alloctrace compare BEFORE.json AFTER.json`: what changed between two runs (the guide's
//! "validating improvements"), in total and per allocation site.
//!
//! Sites are matched across runs by their stacks' frame *names* (`Frame::name`, innermost
//! first, joined with `;`), never by addresses or stack ids, which ASLR and the kernel's stack
//! hashing change from run to run; pids are ignored too. Sites of one run with the same names
//! (the same function calling the allocator from two lines, or the same stack in several
//! processes) are summed. Unnamed frames go by `module+0xoffset`, which is stable across runs.
//!
//! [`compare`] is pure; [`render`] turns its result into text; [`run`] reads the two files.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::model::{Counters, Profile};
use crate::report::{fmt_bytes, fmt_bytes_f};

/// Changes within this fraction (of the larger value) read as "unchanged".
const UNCHANGED_WITHIN: f64 = 0.01;

/// What one run measured for one site (or in total).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measures {
    pub allocs: u64,
    pub bytes: u64,
    pub live_bytes: u64,
    /// Bytes allocated per second of the run; None when the run lasted no time.
    pub rate: Option<f64>,
}

impl Measures {
    fn new(c: &Counters, duration: Duration) -> Measures {
        let secs = duration.as_secs_f64();
        Measures {
            allocs: c.allocs,
            bytes: c.bytes,
            live_bytes: c.live_bytes(),
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
fn sites_by_names(p: &Profile) -> BTreeMap<Vec<String>, Counters> {
    let mut out: BTreeMap<Vec<String>, Counters> = BTreeMap::new();
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
        let b = Some(Measures::new(&bc, before.duration));
        let a = a_sites
            .remove(&frames)
            .map(|ac| Measures::new(&ac, after.duration));
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
            after: Some(Measures::new(&ac, after.duration)),
        })
        .collect();
    by_bytes_desc(&mut matched, |s| s.before);
    by_bytes_desc(&mut disappeared, |s| s.before);
    by_bytes_desc(&mut appeared, |s| s.after);
    Comparison {
        before: RunInfo {
            target: before.target.to_string(),
            duration: before.duration,
        },
        after: RunInfo {
            target: after.target.to_string(),
            duration: after.duration,
        },
        total_before: Measures::new(&before.total(), before.duration),
        total_after: Measures::new(&after.total(), after.duration),
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
        (
            "live bytes",
            cell(b, &|m| fmt_bytes(m.live_bytes)),
            cell(a, &|m| fmt_bytes(m.live_bytes)),
            change(
                b.map_or(0, |m| m.live_bytes) as f64,
                a.map_or(0, |m| m.live_bytes) as f64,
                "less",
            ),
        ),
    ];
    for (label, before, after, what) in rows {
        let _ = writeln!(
            out,
            "{indent}{:<26}({before} -> {after})",
            format!("{label}: {what}"),
        );
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
        "before: {} ({})\nafter:  {} ({})",
        c.before.target,
        fmt_secs(c.before.duration),
        c.after.target,
        fmt_secs(c.after.duration)
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

fn read_profile(path: &Path) -> anyhow::Result<Profile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::export::json::from_json(&text).with_context(|| {
        format!(
            "{} is not an alloctrace JSON report (--report json)",
            path.display()
        )
    })
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
    use crate::analyze::rate::tests::c;
    use crate::model::{Frame, Losses, Site, Target};

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
            samples: vec![],
            processes: vec![crate::model::Process {
                pid,
                comm: "prog".into(),
                counters: total,
                unknown_frees: 0,
                unseen: None,
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
        assert_eq!(cmp.total_before.live_bytes, 100);
        assert_eq!(cmp.total_after.live_bytes, 10);
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
}
