//! Exporters: pure functions of a drained `Profile` (and its `Analysis`) to the bytes of one
//! output file each, behind one `Exporter` interface, and the registry of them (`FORMATS`);
//! a front end writes their bytes atomically (`output`).
//!
//! A new format is one file here, one line in `FORMATS` and its command-line option. The
//! `--output` report (text or JSON, or stdout) is not in the registry: it is always made, and
//! is not a file that is "written to".
pub mod flamegraph;
pub mod folded;
pub mod html;
pub mod json;
pub mod output;
pub mod plot;
pub mod pprof;

use anyhow::Result;

use crate::analyze::Analysis;
use crate::export::folded::FoldedWeight;
use crate::export::plot::PlotFormat;
use crate::model::Profile;

/// What the user asked of the files beyond which ones: read by the formats that need it.
/// (Plain values, not the `Config`: config imports the formats' option types.)
pub struct Options {
    /// The weight of the folded stacks and the flame graph (`--folded-weight`).
    pub weight: FoldedWeight,
    /// How many sites a listing shows (`--top`).
    pub top: usize,
    /// The picture `--plot`'s file name asks for (unused without `--plot`).
    pub plot: PlotFormat,
}

/// One output format.
pub trait Exporter: Sync {
    /// Its command-line option (`--NAME PATH`), which says where its file goes.
    fn option(&self) -> &'static str;
    /// What the file holds, as said in its "… written to" line and its errors.
    fn what(&self, p: &Profile) -> String;
    /// The file's bytes.
    fn render(&self, p: &Profile, a: &Analysis, o: &Options) -> Result<Vec<u8>>;
}

/// Every format, in the order their files are written.
pub static FORMATS: &[&dyn Exporter] = &[&Folded, &Flamegraph, &Pprof, &Plot, &Html];

struct Folded;
impl Exporter for Folded {
    fn option(&self) -> &'static str {
        "folded"
    }
    fn what(&self, p: &Profile) -> String {
        // The folded format has no room to say the values are estimates: said here instead.
        match p.sample_bytes {
            Some(n) => format!("folded stacks (values are estimates: --sample-bytes {n})"),
            None => "folded stacks".to_string(),
        }
    }
    fn render(&self, p: &Profile, _: &Analysis, o: &Options) -> Result<Vec<u8>> {
        Ok(folded::folded(p, o.weight).into_bytes())
    }
}

struct Flamegraph;
impl Exporter for Flamegraph {
    fn option(&self) -> &'static str {
        "flamegraph"
    }
    fn what(&self, _: &Profile) -> String {
        "flame graph".to_string()
    }
    fn render(&self, p: &Profile, _: &Analysis, o: &Options) -> Result<Vec<u8>> {
        flamegraph::svg(p, o.weight).map(String::into_bytes)
    }
}

struct Pprof;
impl Exporter for Pprof {
    fn option(&self) -> &'static str {
        "pprof"
    }
    fn what(&self, _: &Profile) -> String {
        "pprof profile".to_string()
    }
    fn render(&self, p: &Profile, _: &Analysis, _: &Options) -> Result<Vec<u8>> {
        pprof::encode(p)
    }
}

struct Plot;
impl Exporter for Plot {
    fn option(&self) -> &'static str {
        "plot"
    }
    fn what(&self, _: &Profile) -> String {
        "plot".to_string()
    }
    fn render(&self, p: &Profile, a: &Analysis, o: &Options) -> Result<Vec<u8>> {
        plot::render(p, a, o.plot)
    }
}

struct Html;
impl Exporter for Html {
    fn option(&self) -> &'static str {
        "html"
    }
    fn what(&self, _: &Profile) -> String {
        "HTML report".to_string()
    }
    fn render(&self, p: &Profile, a: &Analysis, o: &Options) -> Result<Vec<u8>> {
        html::render(p, a, o.weight, o.top).map(String::into_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::FORMATS;

    #[test]
    fn every_format_has_its_own_option() {
        let mut options: Vec<_> = FORMATS.iter().map(|f| f.option()).collect();
        options.sort_unstable();
        options.dedup();
        assert_eq!(options.len(), FORMATS.len());
    }
}
