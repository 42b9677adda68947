//! The tables of the final text report: processes, top sites with their stacks, hot spots,
//! patterns and lifetimes, advice.
use std::fmt::Write as _;

use crate::analyze::advice::Advice;
use crate::analyze::histogram::ns_range_text;
use crate::analyze::hotspots::{frame_line, site_name, Hotspots};
use crate::analyze::patterns::pattern_detail;
use crate::analyze::{processes_by_bytes, Analysis, GroupBy, SortBy};
use crate::model::Profile;
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count, fmt_ns, percent};

/// Frames of a site's stack shown in the final report.
const MAX_FRAMES: usize = 12;

/// The allocators the processes were counted through, each file once (`glibc in
/// /usr/lib/x86_64-linux-gnu/libc.so.6`), with how many processes used it when several were
/// traced; None when no process names one (files from before it was told).
pub(super) fn allocators_line(p: &Profile, multi: bool) -> Option<String> {
    let mut uses: Vec<(String, usize)> = Vec::new();
    for x in &p.processes {
        for a in &x.allocators {
            let name = format!("{} in {}", a.name, a.path);
            match uses.iter_mut().find(|(n, _)| *n == name) {
                Some((_, n)) => *n += 1,
                None => uses.push((name, 1)),
            }
        }
    }
    if uses.is_empty() {
        return None;
    }
    let parts: Vec<String> = uses
        .into_iter()
        .map(|(name, n)| match (multi, n) {
            (false, _) => name,
            (true, 1) => format!("{name} (1 process)"),
            (true, n) => format!("{name} ({n} processes)"),
        })
        .collect();
    Some(parts.join(", "))
}

/// A process's allocators' names for the processes table (`jemalloc+glibc`), `-` for none.
fn allocator_names(x: &crate::model::Process) -> String {
    let mut names: Vec<&str> = Vec::new();
    for a in &x.allocators {
        if !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    if names.is_empty() {
        "-".into()
    } else {
        names.join("+")
    }
}

/// A frees/live cell: the value in full mode, `-` when frees were not traced.
pub(super) fn if_traced(sees_frees: bool, v: String) -> String {
    if sees_frees {
        v
    } else {
        "-".to_string()
    }
}

pub(super) fn render_processes(out: &mut String, p: &Profile, top: usize) {
    let sees_frees = p.mode.sees_frees();
    let procs = processes_by_bytes(p);
    let shown = procs.len().min(top);
    let _ = writeln!(
        out,
        "\nProcesses by bytes allocated ({shown} of {}):",
        procs.len()
    );
    // A process whose allocations went unseen after an exec: its counters stop there.
    let name = |x: &crate::model::Process| match x.unseen {
        Some(_) => format!("{} (unseen)", x.comm),
        None => x.comm.clone(),
    };
    let comm_w = procs
        .iter()
        .take(shown)
        .map(|x| name(x).chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    // Files from before the allocators were told name none: no column then.
    let told = p.processes.iter().any(|x| !x.allocators.is_empty());
    let col = |v: String| {
        if told {
            format!("  {v}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "  {:>7}  {:<comm_w$}  {:>7}  {:>10}  {:>7}  {:>10}  {:>9}{}",
        "PID",
        "COMM",
        "ALLOCS",
        "BYTES",
        "FREES",
        "LIVE BYTES",
        "LIVE OBJS",
        col("ALLOCATORS".into())
    );
    for x in procs.iter().take(shown) {
        let c = &x.counters;
        let _ = writeln!(
            out,
            "  {:>7}  {:<comm_w$}  {:>7}  {:>10}  {:>7}  {:>10}  {:>9}{}",
            x.pid,
            name(x),
            fmt_count(c.allocs),
            fmt_bytes(c.bytes),
            if_traced(sees_frees, fmt_count(c.frees)),
            if_traced(sees_frees, fmt_bytes(c.live_bytes())),
            if_traced(sees_frees, fmt_count(c.live_objects())),
            col(allocator_names(x)),
        );
    }
    if procs.len() > shown {
        let _ = writeln!(out, "  … and {} more processes", procs.len() - shown);
    }
}

pub(super) fn render_sites(out: &mut String, p: &Profile, top: usize, multi: bool) {
    let sees_frees = p.mode.sees_frees();
    let sites = p.sites_by_bytes();
    if sites.is_empty() {
        let _ = writeln!(out, "\nAllocation sites: none recorded");
        return;
    }
    let whole = p.share_base();
    let shown = sites.len().min(top);
    let _ = writeln!(
        out,
        "\nTop {shown} allocation sites by bytes (of {}):",
        sites.len()
    );
    let rank_w = shown.to_string().len().max(2);
    let pid_col = |v: &dyn std::fmt::Display| {
        if multi {
            format!("{v:>7}  ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "  {:>rank_w$}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  {:>9}  {:>7}  {}SITE",
        "#",
        "BYTES",
        "SHARE",
        "ALLOCS",
        "AVG",
        "LIVE BYTES",
        "LIVE OBJS",
        "FREES",
        pid_col(&"PID"),
    );
    let indent = " ".repeat(2 + rank_w + 4);
    for (i, s) in sites.iter().take(shown).enumerate() {
        let c = &s.counters;
        let _ = writeln!(
            out,
            "  {:>rank_w$}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  {:>9}  {:>7}  {}{}",
            i + 1,
            fmt_bytes(c.bytes),
            percent(c.bytes, whole),
            fmt_count(c.allocs),
            fmt_bytes_f(c.bytes as f64 / c.allocs as f64),
            if_traced(sees_frees, fmt_bytes(c.live_bytes())),
            if_traced(sees_frees, fmt_count(c.live_objects())),
            if_traced(sees_frees, fmt_count(c.frees)),
            pid_col(&s.pid),
            site_name(s),
        );
        for f in s.frames.iter().take(MAX_FRAMES) {
            let _ = writeln!(out, "{indent}{}", frame_line(f));
        }
        if s.frames.len() > MAX_FRAMES {
            let n = s.frames.len() - MAX_FRAMES;
            let _ = writeln!(
                out,
                "{indent}… {n} more frame{}",
                if n == 1 { "" } else { "s" }
            );
        }
        if i + 1 < shown {
            out.push('\n');
        }
    }
    if sites.len() > shown {
        let _ = writeln!(out, "\n  … and {} more sites (--top)", sites.len() - shown);
    }
}

fn fmt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}s"))
}

pub(super) fn render_hotspots(out: &mut String, h: &Hotspots, multi: bool, sees_frees: bool) {
    if h.top.is_empty() {
        return;
    }
    let (by, what) = match h.group_by {
        GroupBy::Function => ("function", "FUNCTION"),
        GroupBy::Stack => ("stack", "SITE"),
    };
    let sort = match h.sort {
        SortBy::Bytes => "bytes",
        SortBy::Count => "allocations",
        SortBy::Live => "live bytes",
    };
    let _ = writeln!(
        out,
        "\nHot spots by {by}, by {sort} ({} of {}):",
        h.top.len(),
        h.groups
    );
    let rank_w = h.top.len().to_string().len().max(2);
    let pid_col = |v: &dyn std::fmt::Display| {
        if multi {
            format!("{v:>7}  ")
        } else {
            String::new()
        }
    };
    let _ =
        writeln!(
        out,
        "  {:>rank_w$}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  {:>7}  {:>7}  {:>7}  {:>5}  {}{what}",
        "#", "BYTES", "SHARE", "ALLOCS", "AVG", "LIVE BYTES", "FIRST", "LAST", "ACTIVE", "SITES",
        pid_col(&"PID"),
    );
    for (i, x) in h.top.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>rank_w$}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  {:>7}  {:>7}  {:>7}  {:>5}  {}{}",
            i + 1,
            fmt_bytes(x.bytes),
            format!("{:.1}%", x.share * 100.0),
            fmt_count(x.allocs),
            fmt_bytes_f(x.avg_size),
            if_traced(sees_frees, fmt_bytes(x.live_bytes)),
            fmt_secs(x.first_seen),
            fmt_secs(x.last_seen),
            fmt_secs(x.active),
            x.sites,
            pid_col(&x.pid),
            x.name,
        );
    }
}

pub(super) fn render_patterns(
    out: &mut String,
    a: &Analysis,
    top: usize,
    multi: bool,
    sees_frees: bool,
) {
    let patterns = &a.patterns;
    let shown = patterns.len().min(top);
    if shown == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\nPatterns of the top {shown} sites (sizes and lifetimes are log2 bucket bounds):"
    );
    for (i, x) in patterns.iter().take(shown).enumerate() {
        let pid = if multi {
            format!("pid {} ", x.pid)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:>2}. {pid}{}: {} ({})",
            i + 1,
            x.site,
            x.class,
            x.reason
        );
        let line = pattern_detail(x);
        let _ = writeln!(out, "      {line}");
        let lifetimes = a
            .lifetimes
            .iter()
            .find(|l| (l.pid, l.stack_id) == (x.pid, x.stack_id))
            .map(|l| &l.lifetimes);
        match lifetimes {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "      lifetimes of {} freed: median {}, p90 {}, {:.0}% under {}",
                    fmt_count(l.freed),
                    ns_range_text(l.median_ns),
                    ns_range_text(l.p90_ns),
                    l.short_lived_share * 100.0,
                    fmt_ns(l.short_lived_below_ns)
                );
            }
            None if !sees_frees => {
                let _ = writeln!(out, "      lifetimes: not traced (alloc-only mode)");
            }
            None => {
                let _ = writeln!(out, "      lifetimes: no block freed");
            }
        }
    }
}

pub(super) fn render_advice(out: &mut String, advice: &[Advice], top: usize, multi: bool) {
    if advice.is_empty() {
        let _ = writeln!(out, "\nAdvice: none (no site's numbers met a rule)");
        return;
    }
    let shown = advice.len().min(top.max(1));
    let _ = writeln!(out, "\nAdvice:");
    for x in advice.iter().take(shown) {
        let pid = if multi {
            format!("pid {} ", x.pid)
        } else {
            String::new()
        };
        let _ = writeln!(out, "  [{}] {pid}{}: {}", x.kind, x.site, x.evidence);
        let _ = writeln!(out, "      → {}", x.suggestion);
    }
    if advice.len() > shown {
        let _ = writeln!(
            out,
            "  … and {} more (--top, or --report json)",
            advice.len() - shown
        );
    }
}
