//! The batch run, one front end over the engine: a line per process every interval, then the
//! final report and the output files; returns alloctrace's exit code.
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::ReportFormat;
use crate::config::Config;
use crate::engine::{Engine, Snapshot};
use crate::export::{self, output};
use crate::model::{Profile, TraceMode};
use crate::render;

/// Runs a trace and returns the process exit code.
pub fn run(cfg: Config) -> Result<i32> {
    let mut engine = Engine::start(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let ended = rt.block_on(async {
        let mut snapshots = engine.subscribe();
        loop {
            let ended = engine.advance().await?;
            // This front end drives the engine: the snapshot just published (if any) is the
            // one read, printed before the engine goes on (see `engine`'s comment).
            if snapshots.has_changed()? {
                print_interval(&snapshots.borrow_and_update(), engine.mode());
            }
            if let Some(ended) = ended {
                return Ok::<_, anyhow::Error>(ended);
            }
        }
    })?;
    let finished = engine.finish(ended)?;
    let outputs_written = write_outputs(&cfg, &finished.profile);
    let code = finished.close();
    // An output that could not be written makes the exit non-zero (its error is printed).
    Ok(if !outputs_written && code == 0 {
        1
    } else {
        code
    })
}

/// The interval's lines (`render`) and, when data was lost, the losses line.
fn print_interval(s: &Snapshot, mode: TraceMode) {
    let comm = |pid: u32| s.comm(pid);
    for line in render::interval_lines(s.previous.as_ref(), &s.sample, &comm, mode) {
        eprintln!("{line}");
    }
    if let Some(line) = render::losses_line(&s.losses) {
        eprintln!("{line}");
    }
}

/// Writes every requested output that can be written: one that fails (a full disk, a FIFO
/// nobody reads) gets its one-line error and does not keep the others from being written.
/// Returns whether all of them were. From here on SIGINT and SIGTERM end alloctrace at once
/// (the run is over; only an output can still take long).
fn write_outputs(cfg: &Config, profile: &Profile) -> bool {
    default_signals();
    let analysis = crate::analyze::analyze(profile, &cfg.analyze);
    let mut all_written = true;
    let mut write = |path: &Path, what: &str, bytes: Result<Vec<u8>>, say: bool| {
        let result = match bytes {
            Ok(bytes) => output::write_atomic(path, &bytes)
                .map_err(|e| format!("cannot write the {what} to {}: {e}", path.display())),
            Err(e) => Err(format!("cannot render the {what}: {e:#}")),
        };
        match result {
            Ok(()) if say => eprintln!("alloctrace: {what} written to {}", path.display()),
            Ok(()) => {}
            Err(line) => {
                eprintln!("alloctrace: error: {line}");
                all_written = false;
            }
        }
    };
    let options = export::Options {
        weight: cfg.weight,
        top: cfg.top,
    };
    for (format, path) in &cfg.files.0 {
        let bytes = format.render(profile, &analysis, &options, path);
        write(path, &format.what(profile), bytes, true);
    }
    let text = match cfg.report {
        ReportFormat::Text => render::render_report(profile, &analysis, cfg.top),
        ReportFormat::Json => export::json::to_json_with(profile, &analysis),
    };
    match &cfg.output {
        Some(path) => write(path, "report", Ok(text.into_bytes()), false),
        None => {
            if let Err(e) = write_stdout(&text) {
                eprintln!("alloctrace: error: {e:#}");
                all_written = false;
            }
        }
    }
    all_written
}

/// SIGINT and SIGTERM back to their default action (end the process). The engine's handlers
/// (tokio's, which only note a signal for a loop that has stopped) stay installed otherwise,
/// and a signal would be swallowed while an output blocks.
fn default_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_DFL is a valid disposition for these signals; no handler runs.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`alloctrace ... | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write the report"),
    }
}
