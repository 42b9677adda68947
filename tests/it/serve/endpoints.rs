//! The pprof endpoints read by `go tool pprof`, exact against the ground truth; bad requests
//! and the token refused with clear errors; SIGTERM during a request.
use std::time::Duration;

use super::*;

/// allocs: site_alpha's 48-byte blocks all freed, site_beta's 1000-byte ones all live.
fn assert_sites(by_leaf: &BTreeMap<String, Vec<u64>>, truth: &GroundTruth, raw: &str) {
    for f in ["site_alpha", "site_beta"] {
        let t = truth.site(f).counters;
        let want = vec![
            t.allocs,
            t.bytes,
            t.allocs - t.frees,
            t.bytes - t.freed_bytes,
        ];
        assert_eq!(
            by_leaf.get(f),
            Some(&want),
            "{f} in go tool pprof -raw:\n{raw}"
        );
    }
}

/// `go tool pprof -raw` fetches `/debug/pprof/allocs?pid=N` and `/debug/pprof/heap?pid=N`:
/// every site's allocations, bytes and in-use values equal the workload's ground truth;
/// `heap` shows in-use space first, as Go's. A `?seconds=2` delta holds exactly what the
/// workload did in its window (300 blocks of site_alpha; nothing of site_beta, which
/// allocated only before).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_pprof_reads_allocs_heap_and_a_delta_exactly() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let mut t = serve_sites(&scratch);
    let pid = t.w.pid();
    t.command("a 1000");
    t.command("b 20");
    let truth = t.truth_now();
    await_allocs(&t.s.addr, pid, truth.total().allocs);
    let pprof_dir = scratch.path("pprof");
    std::fs::create_dir_all(&pprof_dir).unwrap();

    let url = |path: &str| format!("http://{}{path}", t.s.addr);
    let raw = go_pprof(
        &pprof_dir,
        &["-raw", &url(&format!("/debug/pprof/allocs?pid={pid}"))],
    );
    assert!(
        raw.contains(
            "alloc_objects/count alloc_space/bytes[dflt] inuse_objects/count inuse_space/bytes"
        ),
        "allocs shows alloc_space first:\n{raw}"
    );
    assert_sites(&raw_by_leaf(&raw), &truth, &raw);
    let raw = go_pprof(
        &pprof_dir,
        &["-raw", &url(&format!("/debug/pprof/heap?pid={pid}"))],
    );
    assert_sites(&raw_by_leaf(&raw), &truth, &raw);
    let top = go_pprof(
        &pprof_dir,
        &["-top", &url(&format!("/debug/pprof/heap?pid={pid}"))],
    );
    assert!(
        top.contains("Type: inuse_space"),
        "heap shows in-use first:\n{top}"
    );
    assert!(top.contains("site_beta"), "{top}");

    let delta_url = url(&format!("/debug/pprof/allocs?pid={pid}&seconds=2"));
    let delta = go_pprof_command(&pprof_dir, &["-raw", &delta_url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run go tool pprof");
    await_stderr(&t.s.tracer, "delta profile: window of 2 s opened");
    t.command("a 300");
    let out = delta.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof {delta_url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let by_leaf = raw_by_leaf(&raw);
    assert_eq!(
        by_leaf.get("site_alpha"),
        Some(&vec![300, 300 * 48, 0, 0]),
        "the window's allocations:\n{raw}"
    );
    assert_eq!(
        by_leaf.get("site_beta"),
        None,
        "site_beta allocated before the window:\n{raw}"
    );
    let after = t.truth_now();
    assert_eq!(
        after.site("site_alpha").counters.allocs,
        truth.site("site_alpha").counters.allocs + 300
    );
    t.finish();
}

/// Refusals, each a status and a one-line reason: an unknown or exited pid (404), `seconds=-1`
/// and a huge `seconds` (400), a pid that is not a number, an unknown path, a POST, a body,
/// a 33rd connection at once (503);
/// a non-loopback `--listen` without `--allow-remote` and an output file (alloctrace refuses
/// to start); with
/// `--auth-token-file`, a missing or wrong token (401) and the right one (200).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn bad_requests_get_clear_errors() {
    alloctrace_bin();
    let refused = run_alloctrace(&["serve", "--pid", "1", "--listen", "0.0.0.0:0"], &[]);
    refused.assert_code(1);
    refused.assert_one_line_error(&[
        "--listen 0.0.0.0:0",
        "not a loopback address",
        "--allow-remote",
    ]);

    let scratch = Scratch::new();
    let mut t = serve_sites(&scratch);
    let pid = t.w.pid();
    t.command("a 10");
    await_allocs(&t.s.addr, pid, 10);
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("/debug/pprof/allocs?pid={gone}"),
            404,
            "no traced process with pid",
        ),
        (
            "/debug/pprof/heap?pid=1".into(),
            404,
            "no traced process with pid 1 ",
        ),
        (
            format!("/debug/pprof/allocs?pid={pid}&seconds=-1"),
            400,
            "seconds=\"-1\": a delta lasts from 1 to 300 seconds",
        ),
        (
            "/debug/pprof/allocs?seconds=99999999999".into(),
            400,
            "a delta lasts from 1 to 300 seconds",
        ),
        (
            "/debug/pprof/allocs?seconds=0".into(),
            400,
            "a delta lasts from 1 to 300 seconds",
        ),
        (
            "/debug/pprof/heap?pid=abc".into(),
            400,
            "pid=\"abc\" is not a process id",
        ),
        ("/nope".into(), 404, "no endpoint /nope"),
    ];
    for (path, status, says) in &cases {
        let (got, body) = get(&t.s.addr, path, &[]);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            (got, body.lines().count()),
            (*status, 1),
            "GET {path}: {body}"
        );
        assert!(
            body.starts_with("alloctrace: ") && body.contains(says),
            "GET {path}: {body}"
        );
    }
    let (status, body) = request(&t.s.addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 405, "{body}");
    let (status, body) = request(
        &t.s.addr,
        "GET /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert_eq!(status, 413, "{body}");
    // 32 connections at most: the 33rd is answered 503 at once; a slot freed serves again.
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(&t.s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = get(&t.s.addr, "/metrics", &[]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy: 32 requests in progress"), "{body}");
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&t.s.addr, "/metrics", &[]).0, 200);
    let (status, body) = get(&t.s.addr, "/debug/pprof/", &[]);
    let page = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("/debug/pprof/allocs?pid={pid}")),
        "{page}"
    );
    let (status, body) = get(&t.s.addr, "/", &[]);
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("site_alpha"),
        "the HTML report names the site"
    );
    drop(t.s);

    let token = scratch.path("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    t.s = serve(&[
        "--pid",
        &pid.to_string(),
        "--auth-token-file",
        token.to_str().unwrap(),
    ]);
    let (status, body) = get(&t.s.addr, "/metrics", &[]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("requires a bearer token"));
    let (status, body) = get(
        &t.s.addr,
        "/debug/pprof/allocs",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("invalid bearer token"));
    let (status, body) = get(
        &t.s.addr,
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("# TYPE alloctrace_allocations_total counter"));
    t.finish();
}

/// SIGTERM while a `?seconds=30` delta is waiting: the request is answered 503 with its
/// reason, alloctrace exits (128 + SIGTERM) within seconds with its probes removed (no int3
/// left at malloc in the target), and the target goes on allocating.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigterm_during_a_request_ends_cleanly() {
    alloctrace_bin();
    let mut w = Workload::start("serve_sites", &[], &[]);
    let pid = w.pid();
    let malloc_at = w.malloc_at();
    let original = byte_at(pid, malloc_at);
    let mut s = serve(&["--pid", &pid.to_string()]);
    assert_eq!(
        byte_at(pid, malloc_at),
        0xcc,
        "no int3 at malloc while traced: the check proves nothing"
    );
    let addr = s.addr.clone();
    let path = format!("/debug/pprof/allocs?pid={pid}&seconds=30");
    let pending = std::thread::spawn(move || get(&addr, &path, &[]));
    await_stderr(&s.tracer, "delta profile: window of 30 s opened");
    let t = Instant::now();
    s.tracer.signal(libc::SIGTERM);
    let (status, body) = pending.join().unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the trace is ending"), "{body}");
    let finished = s.tracer.wait(Duration::from_secs(20));
    finished.assert_code(128 + libc::SIGTERM);
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(
        byte_at(pid, malloc_at),
        original,
        "the malloc probe stayed in the target"
    );
    let mut n = 0;
    command(&mut w, "a 5", &mut n);
    w.close_stdin();
    w.wait_code(0);
}
