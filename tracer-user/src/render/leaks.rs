//! The final text report's leak section: per site, the blocks still allocated at the end with
//! their ages (or, with `--older`, those older than it), and the leak analyzer's confidence.
use std::fmt::Write as _;

use crate::analyze::histogram::{bucket_range, ns_range_text};
use crate::analyze::hotspots::site_name;
use crate::analyze::leaks::{live_sites, LeakCandidate};
use crate::analyze::Analysis;
use crate::model::{Profile, Site};
use crate::numfmt::{fmt_bytes, fmt_count, fmt_ns, percent};

/// `128 ms–256 ms: 10.2k, 256 ms–512 ms: 20.1k`: the non-empty log2 age buckets.
pub fn age_buckets_text(hist: &[u64]) -> String {
    hist.iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| format!("{}: {}", ns_range_text(bucket_range(i)), fmt_count(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn candidate<'a>(a: &'a Analysis, s: &Site) -> Option<&'a LeakCandidate> {
    a.leaks
        .iter()
        .find(|c| (c.pid, c.stack_id) == (s.pid, s.stack_id))
}

/// Nothing when no site's live blocks were read (alloc-only mode, an older file).
pub(super) fn render_leaks(out: &mut String, p: &Profile, a: &Analysis, top: usize, multi: bool) {
    if !p.sites.iter().any(|s| s.live.is_some()) {
        return;
    }
    let older = a.options.older;
    let sampled = if p.sample_bytes.is_some() {
        "; sampled blocks only"
    } else {
        ""
    };
    let sites: Vec<&Site> = live_sites(p, older)
        .into_iter()
        .filter(|s| match older {
            Some(_) => s
                .live
                .as_ref()
                .and_then(|l| l.older)
                .is_some_and(|o| o.blocks > 0),
            None => true,
        })
        .collect();
    let at = p
        .sites
        .iter()
        .filter_map(|s| s.live.as_ref())
        .map(|l| l.at.as_secs_f64())
        .fold(0.0, f64::max);
    let title = match older {
        Some(d) => format!(
            "Blocks never freed older than {}",
            fmt_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        ),
        None => "Blocks never freed".to_string(),
    };
    if sites.is_empty() {
        let _ = writeln!(out, "\n{title}: none (at {at:.2}s{sampled})");
        return;
    }
    let shown = sites.len().min(top);
    let _ = writeln!(
        out,
        "\n{title}, by bytes ({shown} of {} sites; ages at {at:.2}s{sampled}):",
        sites.len()
    );
    let pid_col = |v: &dyn std::fmt::Display| {
        if multi {
            format!("{v:>7}  ")
        } else {
            String::new()
        }
    };
    let rank_w = shown.to_string().len().max(2);
    let _ = writeln!(
        out,
        "  {:>rank_w$}  {:>8}  {:>10}  {:>9}  {:>9}  {:>6}  {:>10}  {}SITE",
        "#",
        "BLOCKS",
        "BYTES",
        "OLDEST",
        "MEDIAN",
        "FREED",
        "LEAK",
        pid_col(&"PID"),
    );
    let indent = " ".repeat(2 + rank_w + 4);
    for (i, s) in sites.iter().take(shown).enumerate() {
        let Some(l) = &s.live else { continue };
        let (blocks, bytes) = match l.older {
            Some(o) if older.is_some() => (o.blocks, o.bytes),
            _ => (l.blocks, l.bytes),
        };
        let c = &s.counters;
        let _ = writeln!(
            out,
            "  {:>rank_w$}  {:>8}  {:>10}  {:>9}  {:>9}  {:>6}  {:>10}  {}{}",
            i + 1,
            fmt_count(blocks),
            fmt_bytes(bytes),
            fmt_ns(l.oldest_ns),
            fmt_ns(l.median_ns),
            percent(c.frees, c.allocs),
            candidate(a, s).map_or("-".to_string(), |c| c.confidence.to_string()),
            pid_col(&s.pid),
            site_name(s),
        );
        if older.is_some() {
            let _ = writeln!(
                out,
                "{indent}of {} blocks ({}) never freed",
                fmt_count(l.blocks),
                fmt_bytes(l.bytes)
            );
        }
        let _ = writeln!(out, "{indent}ages: {}", age_buckets_text(&l.age_hist));
    }
    if sites.len() > shown {
        let _ = writeln!(out, "  … and {} more sites (--top)", sites.len() - shown);
    }
}
