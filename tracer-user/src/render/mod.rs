//! Human-readable output: the per-interval lines printed while tracing ([`interval`]) and the
//! final text report ([`report`], its tables in [`sections`], its leak section in [`leaks`]). Pure functions over the model;
//! the caller decides where the text goes.
mod interval;
mod leaks;
mod report;
mod sections;

pub use interval::{interval_lines, losses_line};
pub use report::render_report;
// Other modules' tests may render a whole report from a profile alone.
#[cfg(test)]
#[allow(unused_imports)]
pub use report::render_text;
