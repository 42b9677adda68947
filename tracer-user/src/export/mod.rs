//! Exporters: pure functions of a drained `Profile` (and its `Analysis`) to the bytes of one
//! output file each, behind one `Exporter` interface, and the registry of them (`FORMATS`);
//! a front end writes their bytes atomically (`output`).
//!
//! A new format is one file here, which implements `Exporter` (its option, help, checks and
//! bytes), plus one line in `FORMATS`: its `--NAME FILE` option, its validation and its writing
//! all come from the registry (`Files`). The `--output` report (text or JSON, or stdout) is not
//! in the registry: it is always made, and is not a file that is "written to".
pub mod flamegraph;
pub mod folded;
pub mod html;
pub mod json;
pub mod leak_plot;
pub mod output;
pub mod plot;
pub mod pprof;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::analyze::Analysis;
use crate::export::folded::FoldedWeight;
use crate::model::Profile;

/// Every format, in the order their options are listed and their files are written.
pub static FORMATS: &[&dyn Exporter] = &[
    &folded::Folded,
    &flamegraph::Flamegraph,
    &pprof::Pprof,
    &plot::Plot,
    &html::Html,
];

/// What the user asked of the files beyond which ones: read by the formats that need it.
/// (Plain values, not the `Config`: config imports the formats' option types.)
pub struct Options {
    /// The weight of the folded stacks and the flame graph (`--weight`).
    pub weight: FoldedWeight,
    /// How many sites a listing shows (`--top`).
    pub top: usize,
}

/// One output format.
pub trait Exporter: Sync {
    /// Its command-line option (`--NAME FILE`), which says where its file goes.
    fn option(&self) -> &'static str;
    /// The option's line in `--help`.
    fn help(&self) -> &'static str;
    /// Whether its stacks weigh what `--weight` says (`--weight live` then needs frees).
    fn weighted(&self) -> bool {
        false
    }
    /// Why a file of this name cannot be written in this format, said before tracing starts.
    fn check_path(&self, _path: &Path) -> Result<(), String> {
        Ok(())
    }
    /// What the file holds, as said in its "… written to" line and its errors.
    fn what(&self, p: &Profile) -> String;
    /// The file's bytes (`path` is where they go: a format may follow its extension).
    fn render(&self, p: &Profile, a: &Analysis, o: &Options, path: &Path) -> Result<Vec<u8>>;
}

/// The files asked for on the command line, each with its format, in `FORMATS` order. Its
/// options are made from the registry (`clap::Args` by hand), so a format brings its own.
#[derive(Clone, Default)]
pub struct Files(pub Vec<(&'static dyn Exporter, PathBuf)>);

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(e, p)| (e.option(), p)))
            .finish()
    }
}

impl clap::FromArgMatches for Files {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Files(
            FORMATS
                .iter()
                .filter_map(|&f| m.get_one::<PathBuf>(f.option()).map(|p| (f, p.clone())))
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Files {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        FORMATS.iter().fold(cmd, |cmd, f| {
            cmd.arg(
                clap::Arg::new(f.option())
                    .long(f.option())
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .global(true)
                    .help(f.help()),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::FORMATS;

    #[test]
    fn every_format_has_its_own_option() {
        let mut options: Vec<_> = FORMATS.iter().map(|f| f.option()).collect();
        options.sort_unstable();
        options.dedup();
        assert_eq!(options.len(), FORMATS.len());
    }

    /// Each format's option, given on the command line in any order, reaches the `Config` with
    /// its path, in the registry's order (the order the files are written).
    #[test]
    fn every_format_gets_its_path_from_its_option() {
        let dir = std::env::temp_dir();
        let name = |f: &str| {
            if f == "plot" {
                "x.svg".to_string()
            } else {
                format!("x.{f}")
            }
        };
        let argv =
            std::iter::once("alloctrace".to_string()).chain(FORMATS.iter().rev().flat_map(|f| {
                [
                    format!("--{}", f.option()),
                    dir.join(name(f.option())).display().to_string(),
                ]
            }));
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let cfg = crate::config::validate(cli).unwrap();
        let got: Vec<_> = cfg
            .files
            .0
            .iter()
            .map(|(f, p)| (f.option(), p.clone()))
            .collect();
        let want: Vec<_> = FORMATS
            .iter()
            .map(|f| (f.option(), dir.join(name(f.option()))))
            .collect::<Vec<(&str, PathBuf)>>();
        assert_eq!(got, want);
    }
}
