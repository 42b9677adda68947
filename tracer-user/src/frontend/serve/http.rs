//! A small HTTP/1.1 server on tokio's TCP listener, as much as the endpoints need: GET and
//! HEAD without a body, one request per connection (`Connection: close`), bounded: at most
//! `MAX_CONNECTIONS` at once (more are answered 503 at once), the request head within
//! `MAX_HEAD` bytes and `HEAD_TIMEOUT`, the response within its endpoint's time. Hand-written
//! rather than hyper/axum: the surface is a request line and three headers, and a dependency
//! tree of that size would dwarf it.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::message::{parse_head, Response};
use super::routes::{self, State};

/// Connections served at once; more wait in no queue: they get a 503.
pub const MAX_CONNECTIONS: usize = 32;
/// The request line and headers: Go's net/http allows 1 MiB; a scraper sends a few hundred
/// bytes.
const MAX_HEAD: usize = 16 * 1024;
/// To send the request line and headers (slow clients do not hold a slot longer).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// To write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the task is aborted, each served by its own task.
pub async fn serve(listener: TcpListener, state: Arc<State>, slots: Arc<Semaphore>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, mostly: wait for some to close rather than spin.
                log::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let state = state.clone();
                tokio::spawn(async move {
                    connection(stream, &state).await;
                    drop(slot);
                });
            }
            Err(_) => {
                let busy = Response::error(
                    503,
                    format!("busy: {MAX_CONNECTIONS} requests in progress, retry later"),
                );
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    write_response(&mut stream, &busy, false),
                )
                .await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, state: &State) {
    let (response, head_only) =
        match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(head)) => match parse_head(&head) {
                Ok(req) => (routes::handle(&req, state).await, req.head_only),
                Err((status, why)) => (Response::error(status, why), false),
            },
            Ok(Err(HeadError::Closed)) => return,
            Ok(Err(HeadError::Bad(status, why))) => (Response::error(status, why), false),
            Err(_) => (
                Response::error(408, format!("no complete request within {HEAD_TIMEOUT:?}")),
                false,
            ),
        };
    let _ = tokio::time::timeout(
        WRITE_TIMEOUT,
        write_response(&mut stream, &response, head_only),
    )
    .await;
}

enum HeadError {
    /// The client went away (or sent nothing).
    Closed,
    Bad(u16, String),
}

/// The bytes up to the blank line ending the head.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(from + end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::Bad(
                431,
                format!("request head over {MAX_HEAD} bytes"),
            ));
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

async fn write_response(
    stream: &mut TcpStream,
    r: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&r.body).await?;
    }
    stream.shutdown().await
}
