//! `--plot FILE.svg|png` and `--html FILE.html` on a real run of `workloads/phases.c` (three
//! phases and a leak from named functions, `--interval 200ms`), read back and checked against
//! the JSON report of the same run and the workload's ground truth: the plot's lines have one
//! vertex per sample, placed linearly by the report's numbers; the page's site table holds
//! exactly the ground-truth counts; the page fetches nothing; headless Chromium renders it with
//! the plots, the table and a flame graph whose script ran.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
//! Chromium is required (`cargo xtask test` installs it); without it the tests fail saying how
//! to install it.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

mod html;
mod plot;

const PHASE_INTERVAL: &str = "200ms";
/// Every allocating function of phases.c.
const FUNCTIONS: &[&str] = &[
    "small_frequent_phase",
    "large_infrequent_phase",
    "burst_phase",
    "leaky_growth",
];

/// The plot's line colours (tracer-user/src/export/plot.rs): bytes/s, allocations/s, live.
const BYTES_COLOR: [u8; 3] = [0xd6, 0x27, 0x28];
const OBJECTS_COLOR: [u8; 3] = [0x1f, 0x77, 0xb4];
const LIVE_COLOR: [u8; 3] = [0x2c, 0xa0, 0x2c];
/// The `--plot` PNG's size.
const PLOT_SIZE: (u32, u32) = (1200, 1250);
/// The browser window of the HTML screenshot.
const WINDOW: (u32, u32) = (1280, 4000);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

// =============================================================================================
// Helpers
// =============================================================================================

/// `phases` under alloctrace with `--interval 200ms --top 20` and `extra` options; asserts it
/// exited 0 and counted every site exactly.
fn run_phases(extra: &[&OsStr], scratch: Scratch) -> Launched {
    let mut args: Vec<&OsStr> = vec![OsStr::new("--top"), OsStr::new("20")];
    args.extend_from_slice(extra);
    let run = launch_every(PHASE_INTERVAL, "phases", &[], &args, scratch);
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    run
}

fn read(path: &Path, context: &str) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("alloctrace wrote no {}: {e}\n{context}", path.display()))
}

fn read_text(path: &Path, context: &str) -> String {
    String::from_utf8(read(path, context))
        .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
}

/// The value of attribute `name` in the start tag `tag` (text from after the tag name).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let i = tag.find(&pat)? + pat.len();
    let end = tag[i..].find('"')?;
    Some(&tag[i..i + end])
}

fn attr_u64(tag: &str, name: &str) -> u64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {}", excerpt(tag, 600)))
}

/// The vertices of every `<polyline>` stroked in `color`, in document order.
fn polylines(svg: &str, color: [u8; 3]) -> Vec<Vec<(f64, f64)>> {
    let stroke = format!("#{:02X}{:02X}{:02X}", color[0], color[1], color[2]);
    svg.split("<polyline")
        .skip(1)
        .map(|t| &t[..t.find('>').unwrap_or(t.len())])
        .filter(|t| attr(t, "stroke").is_some_and(|s| s.eq_ignore_ascii_case(&stroke)))
        .map(|t| {
            attr(t, "points")
                .unwrap_or_else(|| panic!("a polyline without points: {t}"))
                .split_whitespace()
                .map(|xy| {
                    let (x, y) = xy.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        })
        .collect()
}

/// Asserts that pixel coordinates `px` are an affine image of `values` (within rounding to
/// whole pixels), increasing with them when `increasing`, else decreasing (SVG y grows
/// downwards).
fn assert_affine(what: &str, values: &[f64], px: &[f64], increasing: bool) {
    assert_eq!(values.len(), px.len(), "{what}: one vertex per value");
    let (lo, hi) = values.iter().enumerate().fold((0, 0), |(lo, hi), (i, &v)| {
        (
            if v < values[lo] { i } else { lo },
            if v > values[hi] { i } else { hi },
        )
    });
    if values[hi] == values[lo] {
        assert!(
            px.iter().all(|&p| (p - px[0]).abs() <= 1.0),
            "{what}: equal values at different positions: {px:?}"
        );
        return;
    }
    let slope = (px[hi] - px[lo]) / (values[hi] - values[lo]);
    assert!(
        if increasing { slope > 0.0 } else { slope < 0.0 },
        "{what}: the line goes the wrong way: values {values:?}, pixels {px:?}"
    );
    for (i, (&v, &p)) in values.iter().zip(px).enumerate() {
        let want = px[lo] + (v - values[lo]) * slope;
        assert!(
            (p - want).abs() <= 1.5,
            "{what}: vertex {i} (value {v}) is at {p}, not {want:.1}: values {values:?}, pixels {px:?}"
        );
    }
}

/// `analysis.rate.series[]` of the JSON report.
fn rate_series(r: &Report) -> &[Value] {
    r.json["analysis"]["rate"]["series"]
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "the report has no analysis.rate.series:\n{}",
                excerpt(&r.text, 3000)
            )
        })
}

fn f64_of(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is {v}, not a number"))
}

/// A decoded PNG as RGB rows.
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn decode(bytes: &[u8], what: &str) -> Image {
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = dec
            .read_info()
            .unwrap_or_else(|e| panic!("{what} is not a PNG: {e}"));
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader
            .next_frame(&mut buf)
            .unwrap_or_else(|e| panic!("{what} does not decode: {e}"));
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks(channels)
            .map(|c| match channels {
                1 | 2 => [c[0]; 3],
                _ => [c[0], c[1], c[2]],
            })
            .collect();
        Image {
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    fn count(&self, f: impl Fn(&[u8; 3]) -> bool) -> usize {
        self.rgb.iter().filter(|p| f(p)).count()
    }

    fn count_rows(&self, rows: std::ops::Range<u32>, f: impl Fn(&[u8; 3]) -> bool) -> usize {
        let w = self.width as usize;
        self.rgb[rows.start as usize * w..rows.end as usize * w]
            .iter()
            .filter(|p| f(p))
            .count()
    }

    /// Asserts the image is not blank: a fair share of non-white pixels, several colours.
    fn assert_not_blank(&self, what: &str) {
        let inked = self.count(|p| p.iter().any(|&c| c < 240));
        let total = self.rgb.len();
        assert!(
            inked * 100 > total,
            "{what} is (nearly) blank: {inked} of {total} pixels are not white"
        );
        let colours: std::collections::BTreeSet<[u8; 3]> = self.rgb.iter().copied().collect();
        assert!(
            colours.len() > 20,
            "{what} has only {} colours",
            colours.len()
        );
    }
}

fn is(color: [u8; 3]) -> impl Fn(&[u8; 3]) -> bool {
    move |p| *p == color
}

/// Chromium, or a failure saying how to install it.
fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    assert!(
        path.is_file(),
        "{CHROMIUM} is missing: the HTML report is checked in headless Chromium. Install it with \
         `apt-get update && apt-get install -y --no-install-recommends chromium` (on Debian; \
         `cargo xtask test` does this itself)"
    );
    path
}

/// Runs headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=...`) and a fresh
/// profile, without network side channels; returns its stdout. Panics if it fails or hangs.
fn run_chromium(page: &Path, args: &[String], scratch: &Scratch, name: &str) -> String {
    let profile = scratch.path(&format!("chromium-profile-{name}"));
    std::fs::create_dir_all(&profile).expect("create the Chromium profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Let the page's and the flame graph's scripts run before the DOM or pixels are taken.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let (out, out_thread) = Lines::collect(child.stdout.take().unwrap());
    let (err, err_thread) = Lines::collect(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, CHROMIUM_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let status = status.unwrap_or_else(|| {
        panic!(
            "chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}\n{}",
            excerpt(&err.text(), 4000)
        )
    });
    assert!(
        status.success(),
        "chromium {args:?} failed ({status})\n{}",
        excerpt(&err.text(), 4000)
    );
    out.text()
}

/// Asserts no `src`, `href`, `url(` or `@import` of `text` points to the network: the only
/// `http://`s a page may hold are namespace names (xmlns), comments and script strings.
fn assert_no_network_fetch(text: &str, what: &str) {
    let mut bad = Vec::new();
    for scheme in ["http://", "https://", "//"] {
        for (i, _) in text.match_indices(scheme) {
            let before = &text[..i];
            let before = before
                .strip_suffix("&quot;")
                .or_else(|| before.strip_suffix('"'))
                .or_else(|| before.strip_suffix('\''))
                .unwrap_or(before)
                .trim_end();
            let lower = before.to_ascii_lowercase();
            if ["src=", "href=", "url(", "@import", "action=", "srcset="]
                .iter()
                .any(|k| lower.ends_with(k))
            {
                bad.push(excerpt(
                    &text[i.saturating_sub(60)..(i + 80).min(text.len())],
                    200,
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what} fetches from the network:\n{}",
        bad.join("\n")
    );
}

/// The content of the element whose start tag holds `id="ID"`, up to the end of the
/// `<section>` it is in or starts (a rough cut, enough to count what is inside).
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id=\"{id}\" in:\n{}", excerpt(html, 3000)));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

/// A script appended to a copy of the page to use the flame graph as a reader would: click the
/// `leaky_growth` frame (zoom), click "Reset Zoom", search `burst_phase`; it records what
/// happened, and every error the flame graph's document raised, in `body[data-probe]`.
const PROBE: &str = r#"<script>
window.addEventListener("load", function () {
  var out = {errors: []};
  try {
    var f = document.getElementById("flamegraph-frame");
    var w = f.contentWindow, d = f.contentDocument;
    w.addEventListener("error", function (e) { out.errors.push(String(e.message)); });
    var click = function (el) { el.dispatchEvent(new w.MouseEvent("click", {bubbles: true, cancelable: true})); };
    var gs = d.getElementById("frames").getElementsByTagName("g"), target = null;
    for (var i = 0; i < gs.length; i++) {
      var t = gs[i].getElementsByTagName("title")[0];
      if (t && t.textContent.indexOf("leaky_growth ") === 0) target = gs[i];
    }
    var rect = target.getElementsByTagName("rect")[0];
    out.before = parseFloat(rect.getAttribute("width"));
    click(target);
    out.zoomed = parseFloat(rect.getAttribute("width"));
    out.unzoom_shown = !d.getElementById("unzoom").classList.contains("hide");
    click(d.getElementById("unzoom"));
    out.reset = parseFloat(rect.getAttribute("width"));
    w.search("burst_phase");
    out.matched = d.getElementById("matched").textContent;
    out.search_button = d.getElementById("search").textContent;
  } catch (e) {
    out.errors.push("probe: " + e);
  }
  document.body.setAttribute("data-probe", JSON.stringify(out));
});
</script>
"#;

/// The `<tr class="site" ...>` rows of the top-sites table, as their start tags.
fn site_rows(html: &str) -> Vec<&str> {
    section(html, "top-sites")
        .split("<tr class=\"site\"")
        .skip(1)
        .map(|t| &t[..t.find("</tr>").unwrap_or(t.len())])
        .collect()
}
