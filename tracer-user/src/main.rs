//! alloctrace: where a program allocates, how fast, in which patterns, and what never dies.
mod cli;
mod config;
mod drain;
mod export;
mod loader;
mod model;
mod output;
mod probes;
mod procmaps;
mod report;
mod spawn;
mod symbolize;
mod target;

fn main() {}
