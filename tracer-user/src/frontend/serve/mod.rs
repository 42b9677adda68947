//! `alloctrace serve`, the daemon front end: traces until stopped (SIGINT, SIGTERM: the
//! engine's end, probes removed) and serves the running trace over HTTP for the tools a fleet
//! already has: Go-style `/debug/pprof/*` profiles (`go tool pprof`, Parca, Pyroscope),
//! `/metrics` for Prometheus, and the HTML report at `/`.
//!
//! One task drives the engine (it is not Sync) and answers the endpoints' requests for a
//! profile of the running trace between its steps; the endpoints read the snapshots
//! themselves (`/metrics`).
mod auth;
mod http;
mod message;
mod metrics;
mod options;
mod pages;
mod profiles;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, watch, Semaphore};

pub use options::Options;

use crate::config::Config;
use crate::engine::{Ended, Engine};

/// How long requests still in progress at the end get to be answered (503, or their
/// profile) before the probes are detached.
const GRACE: Duration = Duration::from_secs(1);

/// What the engine's task does next.
enum Step {
    Profile(routes::ProfileRequest),
    Advanced(Result<Option<Ended>>),
}

/// Traces and serves until the trace ends; returns the process exit code.
pub fn run(cfg: Config, opts: Options) -> Result<i32> {
    let checked = opts.check().map_err(anyhow::Error::msg)?;
    if !cfg.files.0.is_empty() || cfg.output.is_some() {
        bail!(
            "serve writes no files (-o, --html, --pprof, ...): its report is served at / and its \
             profiles at /debug/pprof/"
        );
    }
    // Bound before tracing: a port in use fails before any probe goes in.
    let listener = std::net::TcpListener::bind(checked.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", checked.listen))?;
    listener
        .set_nonblocking(true)
        .context("cannot set up the listening socket")?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let mut engine = Engine::start(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let ended = rt.block_on(async {
        let listener =
            tokio::net::TcpListener::from_std(listener).context("cannot listen (tokio)")?;
        let (profiles, mut requests) = mpsc::channel::<routes::ProfileRequest>(64);
        let (stop, stopping) = watch::channel(false);
        let start_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let state = Arc::new(routes::State {
            snapshots: engine.subscribe(),
            profiles,
            stopping,
            token: checked.token,
            analyze: cfg.analyze.clone(),
            weight: cfg.weight,
            top: cfg.top,
            start_unix_secs,
        });
        let slots = Arc::new(Semaphore::new(http::MAX_CONNECTIONS));
        let server = tokio::spawn(http::serve(listener, state, slots.clone()));
        if let Some(w) = &checked.warning {
            eprintln!("{w}");
        }
        eprintln!(
            "alloctrace: serving http://{addr}/ (/debug/pprof/allocs, /debug/pprof/heap, \
             /metrics, /debug/pprof/, /)"
        );
        let ended = loop {
            // The engine's step is cancelled when a request comes first: it waits only at its
            // wake-ups (ticks, signals, exits), each of which stays armed for the next call.
            let step = tokio::select! {
                biased;
                Some(req) = requests.recv() => Step::Profile(req),
                r = engine.advance() => Step::Advanced(r),
            };
            match step {
                Step::Profile(first) => {
                    let p = Arc::new(engine.profile_now());
                    let _ = first.send(p.clone());
                    // Requests that came meanwhile share it.
                    while let Ok(more) = requests.try_recv() {
                        let _ = more.send(p.clone());
                    }
                }
                Step::Advanced(r) => {
                    if let Some(ended) = r? {
                        break ended;
                    }
                    // Exited processes leave the endpoints, and alloctrace's memory.
                    engine.forget_exited();
                }
            }
        };
        let _ = stop.send(true);
        server.abort();
        drop(requests);
        let all = u32::try_from(http::MAX_CONNECTIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(GRACE, slots.acquire_many(all)).await;
        Ok::<_, anyhow::Error>(ended)
    })?;
    let finished = engine.finish(ended)?;
    Ok(finished.close())
}
