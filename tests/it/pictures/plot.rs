//! `--plot` as SVG and as PNG: the report's series drawn exactly.
use std::ffi::OsStr;

use crate::support::*;

use super::*;

/// `--plot x.svg`: one line per panel with one vertex per sample (rates: per sample with a
/// preceding period), placed affinely by the report's own series; the title names the target,
/// the duration and the sample count of the report; the legends the report's peaks.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn svg_plot_draws_the_reports_series() {
    let scratch = Scratch::new();
    let svg_path = scratch.path("plot.svg");
    let run = run_phases(&[OsStr::new("--plot"), svg_path.as_os_str()], scratch);
    let context = run.finished.describe();
    let svg = read_text(&svg_path, &context);
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        !svg.contains("no data"),
        "a panel says no data:\n{}",
        excerpt(&svg, 3000)
    );

    let r = &run.report;
    let series = rate_series(r);
    assert_eq!(
        series.len(),
        r.samples().len(),
        "analysis.rate.series has one point per sample"
    );
    assert!(
        series.len() >= 100,
        "a 3.6 s run drained every 20 ms has at least 100 samples"
    );

    // Drained every --resolution (20 ms by default, which divides the interval).
    let title = format!(
        "phases — {:.1} s, {} samples every 20ms",
        f64_of(&r.json["duration"], "duration"),
        r.samples().len()
    );
    assert!(
        svg.contains(&title),
        "no title {title:?} in:\n{}",
        excerpt(&svg, 3000)
    );

    let t: Vec<f64> = series.iter().map(|p| f64_of(&p["t"], "series.t")).collect();
    let live: Vec<f64> = series
        .iter()
        .map(|p| f64_of(&p["live_bytes"], "series.live_bytes"))
        .collect();
    let rated = |key: &str| -> (Vec<f64>, Vec<f64>) {
        series
            .iter()
            .filter(|p| !p[key].is_null())
            .map(|p| (f64_of(&p["t"], "series.t"), f64_of(&p[key], key)))
            .unzip()
    };
    for (what, color, ts, values) in [
        ("live bytes", LIVE_COLOR, t.clone(), live.clone()),
        {
            let (ts, v) = rated("alloc_rate");
            ("bytes/s", BYTES_COLOR, ts, v)
        },
        {
            let (ts, v) = rated("object_rate");
            ("allocations/s", OBJECTS_COLOR, ts, v)
        },
    ] {
        let lines = polylines(&svg, color);
        assert_eq!(
            lines.len(),
            1,
            "{what}: expected one line of colour {color:02x?}, found {}",
            lines.len()
        );
        let line = &lines[0];
        assert_eq!(
            line.len(),
            values.len(),
            "{what}: the line has {} vertices, the report {} points",
            line.len(),
            values.len()
        );
        let xs: Vec<f64> = line.iter().map(|p| p.0).collect();
        let ys: Vec<f64> = line.iter().map(|p| p.1).collect();
        assert_affine(&format!("{what} (x)"), &ts, &xs, true);
        assert_affine(&format!("{what} (y)"), &values, &ys, false);
    }
    // The leak makes the live heap end near its top, and the legends quote the report's peaks.
    let peak = &r.json["analysis"]["rate"]["overall"];
    for (key, label) in [
        ("peak_alloc_rate", "bytes/s: "),
        ("peak_object_rate", "allocations/s: "),
    ] {
        let at = f64_of(&peak[key]["at"], key);
        let legend = svg
            .split('>')
            .find(|s| s.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no legend {label:?} in:\n{}", excerpt(&svg, 3000)));
        assert!(
            legend.contains(&format!(" at {at:.1} s")),
            "legend {legend:?} does not quote the report's {key} at {at}"
        );
    }
}

/// `--plot x.png`: a PNG of the documented size, not blank, with the three lines drawn and
/// readable (rasterized) text in the title band.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn png_plot_decodes_and_shows_the_lines() {
    let scratch = Scratch::new();
    let png_path = scratch.path("plot.png");
    let run = run_phases(&[OsStr::new("--plot"), png_path.as_os_str()], scratch);
    let context = run.finished.describe();
    let img = Image::decode(&read(&png_path, &context), "the --plot PNG");
    assert_eq!((img.width, img.height), PLOT_SIZE, "the --plot PNG's size");
    img.assert_not_blank("the --plot PNG");
    for (what, c) in [
        ("bytes/s", BYTES_COLOR),
        ("allocations/s", OBJECTS_COLOR),
        ("live bytes", LIVE_COLOR),
    ] {
        let n = img.count(is(c));
        assert!(n > 300, "the {what} line ({c:02x?}) covers only {n} pixels");
    }
    let dark = img.count_rows(0..40, |p| p.iter().map(|&c| c as u32).sum::<u32>() < 200);
    assert!(
        dark > 300,
        "the title band has {dark} dark pixels: no text was rasterized"
    );
}
