//! The page's first sections: the run's summary and, with several processes, their table.
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::cells::{bytes_cell, kv, peak_text, thousands, traced};
use crate::analyze::{processes_by_bytes, Analysis};
use crate::export::flamegraph::xml_escape as esc;
use crate::model::Profile;
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count_f};

pub(super) fn summary(out: &mut String, p: &Profile, a: &Analysis) {
    let t = p.total();
    let r = &a.rate.overall;
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<table class=\"kv\">\n");
    kv(out, "summary-target", "Target", &esc(&p.target.to_string()));
    let started = UNIX_EPOCH + Duration::from_secs(p.start_unix_secs);
    kv(
        out,
        "summary-start",
        "Started",
        &humantime::format_rfc3339_seconds(started).to_string(),
    );
    kv(
        out,
        "summary-duration",
        "Duration",
        &format!(
            "<span data-seconds=\"{}\">{:.2} s</span> ({} sample{} every {})",
            p.duration.as_secs_f64(),
            p.duration.as_secs_f64(),
            p.samples.len(),
            if p.samples.len() == 1 { "" } else { "s" },
            humantime::format_duration(p.drain_step())
        ),
    );
    if p.is_multi_process() {
        kv(
            out,
            "summary-processes",
            "Processes",
            &p.processes.len().to_string(),
        );
    }
    let avg = if t.allocs > 0 {
        format!(" (avg {})", fmt_bytes_f(t.bytes as f64 / t.allocs as f64))
    } else {
        String::new()
    };
    kv(
        out,
        "summary-allocated",
        "Total allocated",
        &format!(
            "<span data-bytes=\"{}\" data-allocs=\"{}\">{} in {} allocations</span>{avg}",
            t.bytes,
            t.allocs,
            bytes_cell(t.bytes),
            thousands(t.allocs)
        ),
    );
    kv(
        out,
        "summary-freed",
        "Total freed",
        &format!(
            "<span data-bytes=\"{}\" data-frees=\"{}\">{} in {} frees</span>",
            t.freed_bytes,
            t.frees,
            bytes_cell(t.freed_bytes),
            thousands(t.frees)
        ),
    );
    let avg_or_na = |v: Option<f64>, fmt: fn(f64) -> String| match v {
        Some(v) => format!("avg {}/s", fmt(v)),
        None => "n/a (zero duration)".to_string(),
    };
    kv(
        out,
        "summary-alloc-rate",
        "Alloc rate",
        &format!(
            "{}{}",
            avg_or_na(r.avg_alloc_rate, fmt_bytes_f),
            peak_text(r.peak_alloc_rate, fmt_bytes_f)
        ),
    );
    kv(
        out,
        "summary-object-rate",
        "Object rate",
        &format!(
            "{}{}",
            avg_or_na(r.avg_object_rate, fmt_count_f),
            peak_text(r.peak_object_rate, fmt_count_f)
        ),
    );
    let peak_live = r
        .peak_live_bytes
        .map(|pk| {
            format!(
                " (peak live {} at {:.1} s)",
                fmt_bytes(pk.value as u64),
                pk.at
            )
        })
        .unwrap_or_default();
    let live = if p.mode.sees_frees() {
        format!(
            "<span data-bytes=\"{}\" data-objects=\"{}\">{} in {} objects</span>{peak_live}",
            r.live_bytes_end,
            r.live_objects_end,
            bytes_cell(r.live_bytes_end),
            thousands(r.live_objects_end)
        )
    } else {
        "not traced (alloc-only mode)".to_string()
    };
    kv(out, "summary-live", "Live at end", &live);
    if !p.mode.sees_frees() {
        kv(
            out,
            "summary-mode",
            "Mode",
            "alloc-only: entry probes only; frees, live bytes and lifetimes not traced",
        );
    }
    if let Some(n) = p.sample_bytes {
        kv(
            out,
            "summary-sampling",
            "Sampling",
            &format!(
                "one allocation per {} on average: per-site numbers are estimates, totals exact",
                esc(&fmt_bytes(n))
            ),
        );
    }
    let unknown: u64 = p.processes.iter().map(|x| x.unknown_frees).sum();
    if unknown > 0 {
        kv(
            out,
            "summary-unknown-frees",
            "Unknown frees",
            &format!(
                "{} (blocks allocated before tracing started)",
                thousands(unknown)
            ),
        );
    }
    let losses = p.losses.nonzero();
    let lost = if losses.is_empty() {
        "none".to_string()
    } else {
        losses
            .iter()
            .map(|(name, n, hint)| {
                format!(
                    "<span class=\"loss\">{}: {}</span> ({})",
                    esc(name),
                    thousands(*n),
                    esc(hint)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    kv(out, "summary-losses", "Lost data", &lost);
    if let Some(t) = &p.tracer {
        kv(
            out,
            "summary-tracer",
            "Tracer cost",
            &format!(
                "{:.2}s CPU (loading the programs included), peak RSS {}",
                t.cpu_time.as_secs_f64(),
                esc(&fmt_bytes(t.peak_rss_bytes))
            ),
        );
    }
    out.push_str("</table>\n</section>\n");
}

pub(super) fn processes(out: &mut String, p: &Profile) {
    if !p.is_multi_process() {
        return;
    }
    let procs = processes_by_bytes(p);
    out.push_str(
        "<section id=\"processes\">\n<h2>Processes</h2>\n<table class=\"data\">\n\
         <tr><th class=\"num\">PID</th><th>Command</th><th class=\"num\">Allocations</th>\
         <th class=\"num\">Bytes</th><th class=\"num\">Live bytes</th><th class=\"num\">Unknown frees</th></tr>\n",
    );
    for x in procs {
        let c = &x.counters;
        let _ = writeln!(
            out,
            "<tr data-pid=\"{}\"><td class=\"num\">{}</td><td class=\"fn\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            x.pid,
            x.pid,
            esc(&x.comm),
            thousands(c.allocs),
            bytes_cell(c.bytes),
            traced(p, bytes_cell(c.live_bytes())),
            thousands(x.unknown_frees)
        );
    }
    out.push_str("</table>\n</section>\n");
}
