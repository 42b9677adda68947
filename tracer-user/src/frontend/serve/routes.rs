//! The endpoints: which path answers what, from the newest snapshot (`/metrics`, the index)
//! or from a profile of the running trace asked of the engine's task (the pprof endpoints,
//! the HTML report). Every refusal is a status with a one-line reason.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::auth::Token;
use super::message::{Request, Response};
use super::{metrics, pages, profiles};
use crate::engine::Snapshot;
use crate::export::folded::FoldedWeight;
use crate::export::pprof;
use crate::model::Profile;

/// The longest `?seconds=S` delta: a request holds a connection slot that long.
pub const MAX_SECONDS: u64 = 300;

/// A request for a profile of the running trace, answered by the engine's task.
pub type ProfileRequest = oneshot::Sender<Arc<Profile>>;

/// What the endpoints share.
pub struct State {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub profiles: mpsc::Sender<ProfileRequest>,
    /// Turns true when the trace ends: waiting requests are answered 503.
    pub stopping: watch::Receiver<bool>,
    pub token: Option<Token>,
    pub analyze: crate::analyze::Options,
    pub weight: FoldedWeight,
    pub top: usize,
    pub start_unix_secs: u64,
}

const STOPPING: &str = "the trace is ending (alloctrace was stopped or its target exited)";

pub async fn handle(req: &Request, st: &State) -> Response {
    if let Some(token) = &st.token {
        if let Err(refused) = token.check(req.authorization.as_deref()) {
            return Response::error(401, refused.reason())
                .with_header("WWW-Authenticate", "Bearer realm=\"alloctrace\"".into());
        }
    }
    let r = match req.path.as_str() {
        "/debug/pprof/allocs" => pprof_endpoint(req, st, "alloc_space").await,
        "/debug/pprof/heap" => pprof_endpoint(req, st, "inuse_space").await,
        "/metrics" => Ok(metrics_page(st)),
        "/debug/pprof" | "/debug/pprof/" => {
            let s = st.snapshots.borrow().clone();
            let page = pages::index(&s, alive, MAX_SECONDS);
            Ok(Response::ok("text/html; charset=utf-8", page.into_bytes()))
        }
        "/" => html_report(st).await,
        other => Err(Response::error(
            404,
            format!("no endpoint {other}: see /debug/pprof/"),
        )),
    };
    r.unwrap_or_else(|e| e)
}

/// Whether `pid` still runs (a zombie counts as gone: it allocates no more).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

fn metrics_page(st: &State) -> Response {
    let s = st.snapshots.borrow().clone();
    let text = metrics::render(&s, alive, metrics::own(st.start_unix_secs));
    Response::ok(
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    )
}

/// A profile of the running trace, from the engine's task.
async fn profile_now(st: &State) -> Result<Arc<Profile>, Response> {
    let (tx, rx) = oneshot::channel();
    st.profiles
        .send(tx)
        .await
        .map_err(|_| Response::error(503, STOPPING))?;
    rx.await.map_err(|_| Response::error(503, STOPPING))
}

/// `/debug/pprof/allocs` and `/debug/pprof/heap`: `?pid=N`, `?seconds=S`.
async fn pprof_endpoint(req: &Request, st: &State, shown: &str) -> Result<Response, Response> {
    let pid = match req.param("pid") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| Response::error(400, format!("pid={v:?} is not a process id")))?,
        ),
    };
    let seconds = match req.param("seconds") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(s) if (1..=MAX_SECONDS as i64).contains(&s) => Some(s as u64),
            Ok(_) | Err(_) => {
                return Err(Response::error(
                    400,
                    format!("seconds={v:?}: a delta lasts from 1 to {MAX_SECONDS} seconds"),
                ))
            }
        },
    };
    let unknown = |pid: u32| {
        Response::error(
            404,
            format!("no traced process with pid {pid} is running (it exited, or is not traced)"),
        )
    };
    let pick = |p: &Profile| -> Result<Profile, Response> {
        match pid {
            Some(pid) if !alive(pid) => Err(unknown(pid)),
            Some(pid) => profiles::of_pid(p, pid).ok_or_else(|| unknown(pid)),
            None => Ok(p.clone()),
        }
    };
    let first = pick(&*profile_now(st).await?)?;
    let profile = match seconds {
        None => first,
        Some(s) => {
            log::info!("delta profile: window of {s} s opened");
            let opened = std::time::Instant::now();
            let mut stopping = st.stopping.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                _ = stopping.wait_for(|&stop| stop) => return Err(Response::error(503, STOPPING)),
            }
            let last = profile_now(st).await?;
            let last = match pid {
                // Gone in the window: what it did until then.
                Some(pid) => profiles::of_pid(&last, pid).ok_or_else(|| unknown(pid))?,
                None => (*last).clone(),
            };
            let mut d = profiles::delta(&first, &last);
            // The snapshots' times move by intervals; the window is what was waited (its
            // counts are as of the drains at its ends, `--resolution` apart at most).
            d.duration = opened.elapsed();
            d
        }
    };
    let name = if shown == "inuse_space" {
        "heap"
    } else {
        "allocs"
    };
    let bytes = pprof::encode_showing(&profile, shown)
        .map_err(|e| Response::error(500, format!("cannot encode the profile: {e:#}")))?;
    Ok(Response::ok("application/octet-stream", bytes).with_header(
        "Content-Disposition",
        format!("attachment; filename=\"{name}\""),
    ))
}

/// `/`: the `--html` page of the running trace.
async fn html_report(st: &State) -> Result<Response, Response> {
    let p = profile_now(st).await?;
    let analysis = crate::analyze::analyze(&p, &st.analyze);
    let page = crate::export::html::render(&p, &analysis, st.weight, st.top)
        .map_err(|e| Response::error(500, format!("cannot render the report: {e:#}")))?;
    Ok(Response::ok("text/html; charset=utf-8", page.into_bytes()))
}
