//! HTTP/1.1 messages as the endpoints see them: a request parsed from its head (request
//! line, the headers read, the query percent-decoded), refused with a status and a reason
//! when it is not one they serve; a response as status, type, body and extra headers.

/// A request, as the endpoints see it.
#[derive(Debug, Default)]
pub struct Request {
    pub head_only: bool,
    pub path: String,
    /// The query's parameters in order, percent-decoded.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
}

impl Request {
    /// The last value of parameter `key` (as Go's `FormValue` takes the first: a client sends
    /// one).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status, type, body, extra headers.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status: 200,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// An error: its one-line reason as the body.
    pub fn error(status: u16, reason: impl std::fmt::Display) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("alloctrace: {reason}\n").into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// The request line and the headers the endpoints read; refuses what they do not serve.
pub fn parse_head(head: &[u8]) -> Result<Request, (u16, String)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, format!("malformed request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((505, format!("{version} is not served: HTTP/1.1 only")));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err((
                405,
                format!("method {method} not allowed: GET or HEAD only"),
            ))
        }
    };
    let mut req = Request {
        head_only,
        ..Request::default()
    };
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Err((400, format!("malformed header line {h:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            req.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return Err((413, "requests here carry no body".into()));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err((400, format!("request target {target:?} is not a path")));
    }
    req.path = percent_decode(path).ok_or((400, format!("bad escape in {path:?}")))?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || (400, format!("bad escape in the query {query:?}"));
        let k = percent_decode(&k.replace('+', " ")).ok_or_else(bad)?;
        let v = percent_decode(&v.replace('+', " ")).ok_or_else(bad)?;
        req.query.push((k, v));
    }
    Ok(req)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_headers_and_query() {
        let r = parse_head(
            b"GET /debug/pprof/heap?pid=42&seconds=2&x=a%20b HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t",
        )
        .unwrap();
        assert_eq!(r.path, "/debug/pprof/heap");
        assert_eq!(r.param("pid"), Some("42"));
        assert_eq!(r.param("seconds"), Some("2"));
        assert_eq!(r.param("x"), Some("a b"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert!(!r.head_only);
    }

    #[test]
    fn refusals_have_their_status() {
        let status = |h: &[u8]| parse_head(h).err().map(|e| e.0);
        assert_eq!(status(b"POST / HTTP/1.1"), Some(405));
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 5"), Some(413));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked"),
            Some(413)
        );
        assert_eq!(status(b"GET / HTTP/2"), Some(505));
        assert_eq!(status(b"GET /"), Some(400));
        assert_eq!(status(b"GET /?a=%zz HTTP/1.1"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nbroken"), Some(400));
        assert!(
            parse_head(b"HEAD / HTTP/1.0\r\nContent-Length: 0")
                .unwrap()
                .head_only
        );
    }
}
