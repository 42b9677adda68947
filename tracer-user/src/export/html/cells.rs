//! Table cells of the HTML page: exact numbers with their human form, and the key-value rows
//! of the summary.
use std::fmt::Write as _;

use crate::analyze::rate::Peak;
use crate::export::flamegraph::xml_escape as esc;
use crate::model::Profile;
use crate::numfmt::fmt_bytes;

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An exact byte count and its human form: `1,280,000 B <span>(1.2 MiB)</span>`.
pub(super) fn bytes_cell(n: u64) -> String {
    if n < 1024 {
        format!("{} B", thousands(n))
    } else {
        format!(
            "{} B <span class=\"h\">({})</span>",
            thousands(n),
            fmt_bytes(n)
        )
    }
}

pub(super) fn peak_text(p: Option<Peak>, fmt: fn(f64) -> String) -> String {
    p.map(|p| format!(", peak {}/s at {:.1} s", fmt(p.value), p.at))
        .unwrap_or_default()
}

pub(super) fn kv(out: &mut String, id: &str, name: &str, value_html: &str) {
    let _ = writeln!(
        out,
        "<tr id=\"{id}\"><th>{}</th><td>{value_html}</td></tr>",
        esc(name)
    );
}

/// A frees/live cell: `-` in alloc-only mode, which does not trace frees.
pub(super) fn traced(p: &Profile, cell: String) -> String {
    if p.mode.sees_frees() {
        cell
    } else {
        "-".to_string()
    }
}
