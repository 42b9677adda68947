//! Debian's unmodified redis-server, which allocates through libjemalloc.so.2, traced with
//! `--pid` while redis-benchmark sends it SET, GET and LPUSH requests: its allocations and frees
//! counted (at least a floor per command redis itself says it processed), jemalloc named among
//! its allocators, and its busiest sites attributed to redis's own functions, not to jemalloc's
//! or libc's.
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";
/// Requests per redis-benchmark test (three tests: set, get, lpush).
const REQUESTS: u64 = 10_000;

/// Allocations every command makes, at the least, in redis 7.0 (Debian 12's): reading a
/// command allocates its argv array (`processMultibulkBuffer`: `c->argv = zmalloc(..)`, freed
/// with the command) and one string object per argument (`createStringObject`: an embedded
/// string, one `zmalloc`, for the short arguments redis-benchmark sends), and every command
/// sent here has at least two arguments. Measured with bpftrace on libjemalloc.so.2's own
/// entry points for 60,000 requests: 282,184 malloc, 162 calloc, 857 realloc calls (4.7 per
/// request), 99.4% of them from `zmalloc`.
const ALLOCS_PER_COMMAND: u64 = 3;
/// Frees every command makes, at the least: its argv array and the object of its name
/// (`freeClientArgv`; the key's object too, whose name the database copies).
const FREES_PER_COMMAND: u64 = 2;
/// The sites holding this share of the process's allocations must each be a redis function's.
const TOP_SHARE: f64 = 0.9;
/// redis's allocation wrappers (zmalloc.c), the immediate callers of jemalloc's entry points.
const REDIS_ALLOCATING: &[&str] = &[
    "zmalloc",
    "zmalloc_usable",
    "ztrymalloc",
    "ztrymalloc_usable",
    "zcalloc",
    "zcalloc_num",
    "zcalloc_usable",
    "ztrycalloc",
    "ztrycalloc_usable",
    "zrealloc",
    "zrealloc_usable",
    "ztryrealloc",
    "ztryrealloc_usable",
    "zstrdup",
];

/// A redis-server of the test's own on a free loopback port, persisting nothing, in a temporary
/// directory. Dropped (on every path out of the test, panics included), it is killed and reaped.
struct Redis {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: Scratch,
}

impl Redis {
    fn start() -> Redis {
        assert!(
            Path::new(REDIS_SERVER).is_file() && Path::new(REDIS_BENCHMARK).is_file(),
            "{REDIS_SERVER} or {REDIS_BENCHMARK} is missing: apt-get install -y redis-server \
             redis-tools (`cargo xtask setup` installs them)"
        );
        let dir = Scratch::new();
        let log = dir.path("redis.log");
        let out = File::create(&log).expect("create redis.log");
        // A port the kernel just handed out and we gave back: another process could take it
        // meanwhile, which the pid check in `wait_ready` would catch.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut command = Command::new(REDIS_SERVER);
        // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
        // which is async-signal-safe. PR_SET_PDEATHSIG: should the test process die without
        // unwinding (SIGKILL, a harness timeout), the kernel kills redis-server too.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(dir.path(""))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup redis.log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"));
        let mut redis = Redis {
            child,
            port,
            log,
            _dir: dir,
        };
        redis.wait_ready();
        redis
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (10 s at most) until our server answers on its port: `INFO server` naming its pid.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "redis-server exited ({st}) before serving\n{}",
                    self.describe()
                );
            }
            if let Ok(info) = self.try_command(&["INFO", "server"]) {
                let pid = info_field(&info, "process_id");
                assert_eq!(
                    pid,
                    u64::from(self.pid()),
                    "port {} is served by another redis-server\n{}",
                    self.port,
                    self.describe()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s\n{}",
                self.port,
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command (RESP) and returns its reply: a status line or a bulk string's text.
    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes())?;
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let Some(len) = line.strip_prefix('$') else {
            return Ok(line.trim_end().to_string());
        };
        let len: usize = len.trim().parse().map_err(std::io::Error::other)?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `total_commands_processed` of `INFO stats`.
    fn commands_processed(&self) -> u64 {
        let info = self
            .try_command(&["INFO", "stats"])
            .unwrap_or_else(|e| panic!("INFO stats: {e}\n{}", self.describe()));
        info_field(&info, "total_commands_processed")
    }

    fn describe(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "--- redis-server pid {} port {}, its log:\n{}",
            self.child.id(),
            self.port,
            excerpt(&log, 4000)
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `name:` in an INFO reply.
fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
}

/// Runs redis-benchmark against `redis` (2 minutes at most); returns its output.
fn benchmark(redis: &Redis) -> String {
    let port = redis.port.to_string();
    let n = REQUESTS.to_string();
    let mut child = Command::new(REDIS_BENCHMARK)
        .args(["-h", "127.0.0.1", "-p", &port, "-n", &n, "-q"])
        .args(["-t", "set,get,lpush"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {REDIS_BENCHMARK}: {e}"));
    let (out, h1) = Lines::collect(child.stdout.take().expect("piped stdout"));
    let (err, h2) = Lines::collect(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, Duration::from_secs(120));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = (h1.join(), h2.join());
    let text = format!("{}{}", out.text(), err.text());
    let done = text.matches("requests per second").count();
    assert!(
        status.is_some_and(|s| s.success()) && done == 3,
        "redis-benchmark ({status:?}) did not finish its 3 tests:\n{}\n{}",
        excerpt(&text, 4000),
        redis.describe()
    );
    text
}

/// Whether a report frame is an allocator's: in jemalloc's or libc's file, or named as one of
/// their entry points or internals.
fn is_allocator_frame(f: &Value) -> bool {
    let file = f["module"]
        .as_str()
        .map(|m| m.rsplit('/').next().unwrap_or(m));
    let function = f["function"].as_str().unwrap_or("");
    file.is_some_and(|m| {
        ["libjemalloc", "libc.so", "libc-", "ld-linux"]
            .iter()
            .any(|p| m.starts_with(p))
    }) || function.starts_with("je_")
        || function.starts_with("__libc_")
        || [
            "malloc", "calloc", "realloc", "free", "mallocx", "rallocx", "sdallocx",
        ]
        .contains(&function)
}

/// The busiest sites of `pid`, down to TOP_SHARE of its `allocs`, each by its first frame that
/// is not jemalloc's or libc's: the busiest one's function, and those not a named function of
/// `exe` (the redis-server executable), described.
fn attribution(
    report: &Report,
    pid: u32,
    exe: &Path,
    allocs: u64,
) -> (Option<String>, Vec<String>) {
    let mut sites = report.sites_of(pid);
    sites.sort_by_key(|s| std::cmp::Reverse(s["counters"]["allocs"].as_u64().unwrap_or(0)));
    let mut covered = 0;
    let mut wrong = Vec::new();
    let mut top_function = None;
    for (i, site) in sites.iter().enumerate() {
        if covered as f64 >= TOP_SHARE * allocs as f64 {
            break;
        }
        let n = site["counters"]["allocs"].as_u64().unwrap_or(0);
        covered += n;
        let frames = site["frames"].as_array().cloned().unwrap_or_default();
        let program = frames.iter().find(|f| !is_allocator_frame(f));
        let ours = program.is_some_and(|f| {
            f["function"].is_string()
                && f["module"]
                    .as_str()
                    .and_then(|m| std::fs::canonicalize(m).ok())
                    .is_some_and(|m| m == exe)
        });
        if i == 0 {
            top_function = program.and_then(|f| f["function"].as_str().map(str::to_string));
        }
        if !ours {
            wrong.push(format!(
                "site {} ({n} allocations): first non-allocator frame {}",
                site["stack_id"],
                program.map_or("(none)".to_string(), Report::frame_label)
            ));
        }
    }
    (top_function, wrong)
}

/// redis-server traced with `--pid` while redis-benchmark runs 3 × 10,000 requests.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn redis_server_allocations_are_counted_through_jemalloc() {
    alloctrace_bin();
    let redis = Redis::start();
    let exe = std::fs::canonicalize(format!("/proc/{}/exe", redis.pid()))
        .expect("redis-server's executable");
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(redis.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();

    let before = redis.commands_processed();
    let bench = benchmark(&redis);
    let commands = redis.commands_processed() - before;
    assert!(
        commands >= 3 * REQUESTS,
        "redis processed {commands} commands, not the benchmark's {}:\n{}",
        3 * REQUESTS,
        excerpt(&bench, 4000)
    );

    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(Duration::from_secs(30));
    assert!(
        finished.status.code().is_some(),
        "alloctrace died of SIGINT instead of handling it\n{}",
        finished.describe()
    );
    let context = format!("{}\n{}", finished.describe(), redis.describe());
    let report = Report::read(&report_path, &context);
    let pid = redis.pid();
    let floor = ALLOCS_PER_COMMAND * commands;
    // A process with nothing counted has no entry at all.
    let process = report
        .processes()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
        .unwrap_or_else(|| {
            panic!(
                "alloctrace's report has no entry for redis-server (pid {pid}): it counted none \
                 of the at least {floor} allocations of its {commands} commands (processes \
                 reported: {:?})\n{context}",
                report.pids()
            )
        });
    let counters = report.process_counters(pid);
    let allocators = &process["allocators"];

    assert!(
        counters.allocs >= floor,
        "alloctrace counted {} allocations of redis-server while it processed {commands} commands: \
         at least {floor} ({ALLOCS_PER_COMMAND} per command: its argv array and an object per \
         argument) went through jemalloc; allocators in the report: {allocators}\n{}",
        counters.text(),
        context
    );
    let free_floor = FREES_PER_COMMAND * commands;
    assert!(
        counters.frees >= free_floor,
        "alloctrace counted {} frees of redis-server for {commands} commands: at least \
         {free_floor} ({FREES_PER_COMMAND} per command)\n{}",
        counters.frees,
        context
    );

    let jemalloc = allocators.as_array().is_some_and(|a| {
        a.iter().any(|u| {
            u["name"] == "jemalloc"
                && u["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/libjemalloc.so.2"))
        })
    });
    assert!(
        jemalloc,
        "redis-server's allocators in the report are {allocators}, without jemalloc \
         (libjemalloc.so.2)\n{context}"
    );

    let (top_function, wrong) = attribution(&report, pid, &exe, counters.allocs);
    eprintln!(
        "redis: {commands} commands; alloctrace counted {} (floors: {floor} allocations, \
         {free_floor} frees); allocators {allocators}; busiest site's function {top_function:?}",
        counters.text()
    );
    assert!(
        wrong.is_empty(),
        "the sites holding {:.0}% of redis-server's allocations must each have a named function \
         of {} as their first frame that is not jemalloc's or libc's:\n{}\n{}",
        100.0 * TOP_SHARE,
        exe.display(),
        wrong.join("\n"),
        excerpt(&report.describe_sites(pid), 6000)
    );
    assert!(
        top_function
            .as_deref()
            .is_some_and(|f| REDIS_ALLOCATING.contains(&f)),
        "the busiest site's first non-allocator frame is {top_function:?}, not one of redis's \
         allocation functions {REDIS_ALLOCATING:?}\n{}",
        excerpt(&report.describe_sites(pid), 6000)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of pid 7 with `sites`: (allocations, frame indices into FRAMES).
    fn report(exe: &Path, sites: &[(u64, &[u64])]) -> Report {
        let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
        let frames = serde_json::json!([
            {"function": "malloc", "module": jemalloc},
            {"function": "zmalloc", "module": exe},
            {"function": "strdup", "module": "/usr/lib/x86_64-linux-gnu/libc.so.6"},
            {"function": null, "module": exe},
            {"function": "je_malloc_default", "module": "/elsewhere/libx.so"},
        ]);
        let sites: Vec<Value> = sites
            .iter()
            .enumerate()
            .map(|(i, (n, f))| {
                serde_json::json!({"pid": 7, "stack_id": i, "frames": f,
                    "counters": {"allocs": n, "bytes": n, "frees": 0, "freed_bytes": 0}})
            })
            .collect();
        let json = serde_json::json!({"version": 2, "processes": [], "frames": frames,
            "sites": sites});
        Report::parse(&json.to_string(), "")
    }

    #[test]
    fn sites_are_attributed_past_jemalloc_and_libc_frames() {
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        // The busiest site holds 90%: the rest is not looked at.
        let r = report(&exe, &[(5, &[2, 3]), (90, &[0, 1]), (5, &[2])]);
        assert_eq!(
            attribution(&r, 7, &exe, 100),
            (Some("zmalloc".into()), vec![])
        );
        // jemalloc's internals by name, libc's by file, skipped to redis's function.
        let r = report(&exe, &[(60, &[4, 2, 1]), (40, &[0, 1])]);
        assert_eq!(
            attribution(&r, 7, &exe, 100),
            (Some("zmalloc".into()), vec![])
        );
        // An unnamed frame of the executable, a site with nothing but allocator frames, and a
        // function of another file all fail.
        let r = report(&exe, &[(50, &[0, 1]), (30, &[2, 3]), (15, &[0, 2])]);
        let (top, wrong) = attribution(&r, 7, &exe, 100);
        assert_eq!(top.as_deref(), Some("zmalloc"));
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(wrong[0].contains("site 1 (30 allocations)"), "{wrong:?}");
        assert!(
            wrong[1].contains("first non-allocator frame (none)"),
            "{wrong:?}"
        );
        let other = Path::new("/usr/bin/true");
        let r = report(&exe, &[(100, &[0, 1])]);
        assert_eq!(attribution(&r, 7, other, 100).1.len(), 1);
    }
}
