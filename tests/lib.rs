//! Helpers shared by alloctrace's integration tests (`it/*.rs`).
//!
//! The tests run the real `alloctrace` binary (`$ALLOCTRACE_BIN`, set by `cargo xtask test`) as
//! root against small C workloads (`workloads/*.c`, built by `build.rs`) that write their own
//! ground truth (format in `workloads/gt.h`), and assert exact equality between the two.
//!
//! Everything here panics with a message instead of returning errors: a test that cannot run
//! (no `ALLOCTRACE_BIN`, not root, no BPF) fails and says why; it never passes by skipping.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// alloctrace prints a line starting with this on stderr once every probe is attached.
pub const TRACING_PREFIX: &str = "alloctrace: tracing ";
/// Every error alloctrace reports is one stderr line starting with this.
pub const ERROR_PREFIX: &str = "alloctrace: error: ";
/// The drain interval the tests use (short, so runs end soon after their target).
pub const INTERVAL: &str = "250ms";

/// `alloctrace --pid PID --interval 250ms --report json -o REPORT EXTRA`.
pub fn pid_args(pid: u32, report: &Path, extra: &[&OsStr]) -> Vec<OsString> {
    let mut a = vec![OsString::from("--pid"), OsString::from(pid.to_string())];
    a.extend(report_args(INTERVAL, report, extra));
    a
}

/// `--interval INTERVAL --report json -o REPORT EXTRA`: the options of every run whose JSON
/// report a test reads.
pub fn report_args(interval: &str, report: &Path, extra: &[&OsStr]) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["--interval", interval, "--report", "json", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    a.push(report.into());
    a.extend(extra.iter().map(|s| s.to_os_string()));
    a
}

/// Longest a whole alloctrace run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest alloctrace may take to load and attach its probes.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a workload may take to say `ready` or to exit once released.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Buckets of the size and lifetime histograms (alloctrace_common::HIST_BUCKETS).
pub const HIST_BUCKETS: usize = 64;

// =============================================================================================
// Prerequisites
// =============================================================================================

/// The alloctrace binary to test, after checking that tracing can work here: `ALLOCTRACE_BIN`
/// is set to an executable file, we are root, and the kernel lets us use BPF and uprobes.
/// Panics with the reason otherwise. Call it first in every privileged test.
pub fn alloctrace_bin() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CHECKED.get_or_init(check_prerequisites) {
        Ok(p) => p.clone(),
        Err(why) => panic!("cannot run alloctrace's integration tests: {why}"),
    }
}

fn check_prerequisites() -> Result<PathBuf, String> {
    let bin = std::env::var_os("ALLOCTRACE_BIN").ok_or(
        "ALLOCTRACE_BIN is not set: run the privileged tests with `cargo xtask test`, which builds \
         alloctrace and passes its path (or set ALLOCTRACE_BIN=/abs/path/to/alloctrace and run as root)",
    )?;
    let bin = PathBuf::from(bin);
    let meta =
        std::fs::metadata(&bin).map_err(|e| format!("ALLOCTRACE_BIN={}: {e}", bin.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "ALLOCTRACE_BIN={} is not an executable file",
            bin.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not root (euid {euid}): alloctrace loads eBPF programs; run `sudo -E env PATH=\"$PATH\" cargo xtask test`"
        ));
    }
    for (path, what) in [
        (
            "/sys/bus/event_source/devices/uprobe",
            "uprobe support (CONFIG_UPROBE_EVENTS)",
        ),
        (
            "/sys/kernel/btf/vmlinux",
            "kernel BTF (CONFIG_DEBUG_INFO_BTF)",
        ),
    ] {
        if !Path::new(path).exists() {
            return Err(format!(
                "BPF is unavailable: this kernel has no {what}: {path} is missing"
            ));
        }
    }
    bpf_map_create_works()?;
    Ok(bin)
}

/// Creates (and closes) a one-entry BPF array map: fails when BPF is disabled, forbidden by a
/// seccomp filter (containers), or missing from the kernel.
fn bpf_map_create_works() -> Result<(), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, then
    // fields left zero; the kernel accepts a shorter attr as long as it is zero-tailed.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from a valid, initialized buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "BPF is unavailable: bpf(BPF_MAP_CREATE) failed: {err}"
        ));
    }
    // SAFETY: `fd` is a descriptor bpf(2) just returned to us and nobody else holds.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

// =============================================================================================
// Workloads
// =============================================================================================

/// Where build.rs put the compiled workloads.
pub fn workload_dir() -> &'static Path {
    Path::new(env!("WORKLOAD_DIR"))
}

/// The compiled workload `name` (`workloads/<name>.c`); panics, with the compiler's message
/// when build.rs left one, if it was not built.
pub fn workload(name: &str) -> PathBuf {
    let path = workload_dir().join(name);
    if path.is_file() {
        return path;
    }
    let error = workload_dir().join(format!("{name}.build-error"));
    match std::fs::read_to_string(&error) {
        Ok(msg) => panic!("workload {name} was not built:\n{msg}"),
        Err(_) => panic!(
            "workload {name} is missing: no {} (is there a workloads/{name}.c?)",
            path.display()
        ),
    }
}

// =============================================================================================
// Counters and ground truth
// =============================================================================================

/// Cumulative allocation counters, as in the report's `counters` objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counters {
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
}

impl Counters {
    pub fn live_objects(&self) -> u64 {
        self.allocs.saturating_sub(self.frees)
    }
    pub fn live_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.freed_bytes)
    }
    pub fn add(&mut self, o: &Counters) {
        self.allocs += o.allocs;
        self.bytes += o.bytes;
        self.frees += o.frees;
        self.freed_bytes += o.freed_bytes;
    }
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
    /// Reads a `{allocs, bytes, frees, freed_bytes}` object; panics naming `what` if a field
    /// is missing or not an unsigned integer.
    pub fn from_json(v: &Value, what: &str) -> Counters {
        Counters {
            allocs: json_u64(&v["allocs"], &format!("{what}.allocs")),
            bytes: json_u64(&v["bytes"], &format!("{what}.bytes")),
            frees: json_u64(&v["frees"], &format!("{what}.frees")),
            freed_bytes: json_u64(&v["freed_bytes"], &format!("{what}.freed_bytes")),
        }
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "allocs={} bytes={} frees={} freed_bytes={} (live {} objects, {} bytes)",
            self.allocs,
            self.bytes,
            self.frees,
            self.freed_bytes,
            self.live_objects(),
            self.live_bytes()
        )
    }
}

/// What a workload says one of its functions did (a `site` record of `workloads/gt.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteTruth {
    pub function: String,
    pub counters: Counters,
    /// Non-empty buckets of the log2 histogram of requested sizes.
    pub size_hist: BTreeMap<usize, u64>,
}

impl SiteTruth {
    /// The histogram as the report writes it: `HIST_BUCKETS` counts.
    pub fn size_hist_vec(&self) -> Vec<u64> {
        let mut v = vec![0; HIST_BUCKETS];
        for (&b, &n) in &self.size_hist {
            v[b] = n;
        }
        v
    }
}

/// A workload's ground truth (format: `workloads/gt.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroundTruth {
    pub pid: u32,
    /// Frees alloctrace must count as unknown; None when the workload cannot know.
    pub unknown_frees: Option<u64>,
    /// In the order the workload wrote them.
    pub sites: Vec<SiteTruth>,
    /// The file as written, for failure messages.
    pub text: String,
}

impl GroundTruth {
    pub fn parse(text: &str) -> Result<GroundTruth, String> {
        let mut pid = None;
        let mut unknown_frees = None;
        let mut sites: Vec<SiteTruth> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("ground truth line {}: {why}: {line:?}", i + 1);
            let mut words = line.split(' ');
            match words.next() {
                Some("pid") => {
                    let v = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("bad pid"))?;
                    pid = Some(v);
                }
                Some("unknown_frees") => {
                    let v = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("bad count"))?;
                    unknown_frees = Some(v);
                }
                Some("site") => {
                    let function = words
                        .next()
                        .filter(|w| !w.is_empty())
                        .ok_or_else(|| bad("no function"))?;
                    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
                    for w in words.by_ref() {
                        let (k, v) = w.split_once('=').ok_or_else(|| bad("expected key=value"))?;
                        fields.insert(k, v);
                    }
                    let num = |k: &str| -> Result<u64, String> {
                        fields
                            .get(k)
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| bad(&format!("bad or missing {k}")))
                    };
                    let counters = Counters {
                        allocs: num("allocs")?,
                        bytes: num("bytes")?,
                        frees: num("frees")?,
                        freed_bytes: num("freed_bytes")?,
                    };
                    let hist_text = fields.get("size_hist").ok_or_else(|| bad("no size_hist"))?;
                    let mut size_hist = BTreeMap::new();
                    if *hist_text != "-" {
                        for pair in hist_text.split(',') {
                            let (b, n) =
                                pair.split_once(':').ok_or_else(|| bad("bad size_hist"))?;
                            let b: usize = b.parse().map_err(|_| bad("bad size_hist bucket"))?;
                            let n: u64 = n.parse().map_err(|_| bad("bad size_hist count"))?;
                            if b >= HIST_BUCKETS {
                                return Err(bad("size_hist bucket out of range"));
                            }
                            size_hist.insert(b, n);
                        }
                    }
                    if sites.iter().any(|s| s.function == function) {
                        return Err(bad("function listed twice"));
                    }
                    sites.push(SiteTruth {
                        function: function.to_string(),
                        counters,
                        size_hist,
                    });
                }
                _ => return Err(bad("unknown record")),
            }
        }
        let pid = pid.ok_or("ground truth has no pid line")?;
        Ok(GroundTruth {
            pid,
            unknown_frees,
            sites,
            text: text.to_string(),
        })
    }

    /// Reads and parses `path`; panics with `context` (what the run printed) on failure.
    pub fn read(path: &Path, context: &str) -> GroundTruth {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "the workload wrote no ground truth to {}: {e}\n{context}",
                path.display()
            )
        });
        GroundTruth::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\nground truth:\n{text}\n{context}"))
    }

    pub fn site(&self, function: &str) -> &SiteTruth {
        self.sites
            .iter()
            .find(|s| s.function == function)
            .unwrap_or_else(|| {
                panic!(
                    "the ground truth has no site {function} (test and workload disagree):\n{}",
                    self.text
                )
            })
    }

    /// The sum of every site: the process's totals when nothing else in it allocates.
    pub fn total(&self) -> Counters {
        let mut c = Counters::default();
        for s in &self.sites {
            c.add(&s.counters);
        }
        c
    }
}

// =============================================================================================
// The JSON report
// =============================================================================================

fn json_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("report field {what} is {v}, not an unsigned integer"))
}

/// What the report says of one function: every site of a process whose `frames[0].function`
/// is that function, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub counters: Counters,
    /// The sum of the sites' own `live_objects`/`live_bytes` fields.
    pub live_objects: u64,
    pub live_bytes: u64,
    pub size_hist: Vec<u64>,
    pub life_hist: Vec<u64>,
    /// How many sites were summed.
    pub sites: usize,
}

/// Key of [`Report::functions`] for sites whose innermost frame has no function name.
pub const NO_FUNCTION: &str = "<frames[0] without a function>";

/// A parsed `--report json` document.
pub struct Report {
    pub json: Value,
    pub text: String,
}

impl Report {
    /// Parses `text`; panics with it and `context` unless it is a JSON object with `version` 2
    /// whose `frames` table holds each frame once and whose sites' frame indices all resolve.
    /// Each site's `frames` is then resolved in [`Report::json`] to the frame objects (as
    /// version 1 wrote them), so tests read `site["frames"][i]["function"]`.
    pub fn parse(text: &str, context: &str) -> Report {
        let mut json: Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!(
                "the report is not JSON ({e}):\n{}\n{context}",
                excerpt(text, 4000)
            )
        });
        assert!(
            json.is_object(),
            "the report is not a JSON object:\n{}\n{context}",
            excerpt(text, 4000)
        );
        assert_eq!(
            json["version"],
            Value::from(2),
            "report version:\n{}\n{context}",
            excerpt(text, 2000)
        );
        resolve_frames(&mut json, context);
        Report {
            json,
            text: text.to_string(),
        }
    }

    /// Reads the report alloctrace wrote to `path`.
    pub fn read(path: &Path, context: &str) -> Report {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "alloctrace wrote no report to {}: {e}\n{context}",
                path.display()
            )
        });
        Report::parse(&text, context)
    }

    fn array(&self, key: &str) -> &[Value] {
        self.json[key]
            .as_array()
            .unwrap_or_else(|| panic!("report field {key} is {}, not an array", self.json[key]))
    }

    pub fn processes(&self) -> &[Value] {
        self.array("processes")
    }

    pub fn sites(&self) -> &[Value] {
        self.array("sites")
    }

    pub fn samples(&self) -> &[Value] {
        self.array("samples")
    }

    pub fn pids(&self) -> Vec<u64> {
        self.processes()
            .iter()
            .map(|p| json_u64(&p["pid"], "processes[].pid"))
            .collect()
    }

    /// The `processes[]` entry of `pid`; panics listing the pids present if there is none or
    /// more than one.
    pub fn process(&self, pid: u32) -> &Value {
        let found: Vec<&Value> = self
            .processes()
            .iter()
            .filter(|p| p["pid"].as_u64() == Some(u64::from(pid)))
            .collect();
        match found.as_slice() {
            [one] => one,
            [] => panic!(
                "pid {pid} is not among the report's processes {:?}",
                self.pids()
            ),
            _ => panic!(
                "pid {pid} appears {} times among the report's processes {:?}",
                found.len(),
                self.pids()
            ),
        }
    }

    pub fn process_counters(&self, pid: u32) -> Counters {
        Counters::from_json(
            &self.process(pid)["counters"],
            &format!("processes[pid {pid}].counters"),
        )
    }

    pub fn sites_of(&self, pid: u32) -> Vec<&Value> {
        self.sites()
            .iter()
            .filter(|s| s["pid"].as_u64() == Some(u64::from(pid)))
            .collect()
    }

    /// The sites of `pid` whose innermost frame is `function`.
    pub fn sites_in(&self, pid: u32, function: &str) -> Vec<&Value> {
        self.sites_of(pid)
            .into_iter()
            .filter(|s| Report::frame_function(s, 0) == Some(function))
            .collect()
    }

    /// `frames[i].function` of a site, None when the frame is missing or unnamed.
    pub fn frame_function(site: &Value, i: usize) -> Option<&str> {
        site["frames"].get(i).and_then(|f| f["function"].as_str())
    }

    /// The function names of a site's frames, innermost first (`?` for unnamed frames).
    pub fn frame_names(site: &Value) -> Vec<String> {
        site["frames"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| f["function"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A frame for failure messages: `function`, else `?module+0xoffset`, else `?0xaddr`.
    pub fn frame_label(f: &Value) -> String {
        if let Some(func) = f["function"].as_str() {
            return func.to_string();
        }
        match (f["module"].as_str(), f["module_offset"].as_u64()) {
            (Some(m), Some(off)) => format!("?{}+{off:#x}", m.rsplit('/').next().unwrap_or(m)),
            _ => format!("?{:#x}", f["addr"].as_u64().unwrap_or(0)),
        }
    }

    /// Every site of `pid` summed by `frames[0].function` (see [`NO_FUNCTION`]).
    pub fn functions(&self, pid: u32) -> BTreeMap<String, FunctionStats> {
        let mut out: BTreeMap<String, FunctionStats> = BTreeMap::new();
        for s in self.sites_of(pid) {
            let name = Report::frame_function(s, 0)
                .unwrap_or(NO_FUNCTION)
                .to_string();
            let what = format!("site {} of pid {pid} ({name})", s["stack_id"]);
            let e = out.entry(name).or_insert_with(|| FunctionStats {
                size_hist: vec![0; HIST_BUCKETS],
                life_hist: vec![0; HIST_BUCKETS],
                ..Default::default()
            });
            e.counters.add(&Counters::from_json(&s["counters"], &what));
            e.live_objects += json_u64(&s["live_objects"], &format!("{what}.live_objects"));
            e.live_bytes += json_u64(&s["live_bytes"], &format!("{what}.live_bytes"));
            for key in ["size_hist", "life_hist"] {
                let hist = s[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}.{key} is not an array"));
                assert_eq!(
                    hist.len(),
                    HIST_BUCKETS,
                    "{what}.{key} has {} buckets, not {HIST_BUCKETS}",
                    hist.len()
                );
                let sum = if key == "size_hist" {
                    &mut e.size_hist
                } else {
                    &mut e.life_hist
                };
                for (acc, v) in sum.iter_mut().zip(hist) {
                    *acc += json_u64(v, &format!("{what}.{key}[]"));
                }
            }
            e.sites += 1;
        }
        out
    }

    /// One block per site of `pid`: counters and the frames' names, for failure messages.
    pub fn describe_sites(&self, pid: u32) -> String {
        let mut out = format!("sites of pid {pid} in the report:\n");
        for s in self.sites_of(pid) {
            let c = Counters::from_json(&s["counters"], "site");
            let _ = writeln!(out, "  stack_id {}: {c}", s["stack_id"]);
            let frames: Vec<String> = s["frames"]
                .as_array()
                .map(|fs| fs.iter().map(Report::frame_label).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    frames: {}",
                if frames.is_empty() {
                    "(none)".into()
                } else {
                    frames.join(" <- ")
                }
            );
        }
        out
    }

    /// The `losses` object as name -> count.
    pub fn losses(&self) -> BTreeMap<String, u64> {
        let obj = self.json["losses"].as_object().unwrap_or_else(|| {
            panic!(
                "report field losses is {}, not an object",
                self.json["losses"]
            )
        });
        obj.iter()
            .map(|(k, v)| (k.clone(), json_u64(v, &format!("losses.{k}"))))
            .collect()
    }
}

/// Replaces every site's frame indices by the frames they point to in the top-level `frames`
/// table; panics if an index is out of range or the table holds a frame twice.
fn resolve_frames(json: &mut Value, context: &str) {
    let table = match json.get_mut("frames").map(Value::take) {
        Some(Value::Array(t)) => t,
        other => panic!("report field frames is {other:?}, not an array\n{context}"),
    };
    let mut seen = std::collections::HashSet::new();
    for f in &table {
        assert!(
            seen.insert(f.to_string()),
            "the report's frames table holds {f} more than once\n{context}"
        );
    }
    let Some(sites) = json.get_mut("sites").and_then(Value::as_array_mut) else {
        return;
    };
    for site in sites {
        let what = format!("site {}", site["stack_id"]);
        let Some(ids) = site.get_mut("frames").and_then(Value::as_array_mut) else {
            continue;
        };
        for id in ids {
            let i = json_u64(id, &format!("{what}.frames[]")) as usize;
            *id = table.get(i).cloned().unwrap_or_else(|| {
                panic!(
                    "{what}: frame index {i} is past the frames table ({} entries)\n{context}",
                    table.len()
                )
            });
        }
    }
    json["frames"] = Value::Array(table);
}

/// The first `max` characters of `s` (with a note when cut).
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}\n[… {} more bytes]", &s[..i], s.len() - i),
    }
}

// =============================================================================================
// Assertions against the ground truth
// =============================================================================================

/// Compares every site of the ground truth whose function is in `functions` (all of them when
/// `functions` is empty) with the report's sites of `truth.pid` summed by `frames[0].function`:
/// counters, the `live_*` fields, the size histogram, and one lifetime per free. A ground-truth
/// site with zero counters must have no allocation charged to it. Panics listing every mismatch
/// with both sides, the ground truth and the report's sites.
pub fn assert_sites_match(report: &Report, truth: &GroundTruth, functions: &[&str]) {
    let got = report.functions(truth.pid);
    let mut problems = Vec::new();
    let selected: Vec<&SiteTruth> = if functions.is_empty() {
        truth.sites.iter().collect()
    } else {
        functions.iter().map(|f| truth.site(f)).collect()
    };
    for want in selected {
        let f = &want.function;
        let Some(g) = got.get(f) else {
            if !want.counters.is_zero() {
                problems.push(format!(
                    "{f}: no site has frames[0].function == {f:?}; expected {}",
                    want.counters
                ));
            }
            continue;
        };
        if want.counters.is_zero() {
            if !g.counters.is_zero() {
                problems.push(format!(
                    "{f}: allocates nothing, but the report charges it {}",
                    g.counters
                ));
            }
            continue;
        }
        if g.counters != want.counters {
            problems.push(format!(
                "{f}: counters\n      expected {}\n      reported {}",
                want.counters, g.counters
            ));
        }
        if (g.live_objects, g.live_bytes)
            != (want.counters.live_objects(), want.counters.live_bytes())
        {
            problems.push(format!(
                "{f}: live_objects/live_bytes fields: expected {}/{}, reported {}/{}",
                want.counters.live_objects(),
                want.counters.live_bytes(),
                g.live_objects,
                g.live_bytes
            ));
        }
        let want_hist = want.size_hist_vec();
        if g.size_hist != want_hist {
            problems.push(format!(
                "{f}: size_hist (bucket:count)\n      expected {}\n      reported {}",
                hist_text(&want_hist),
                hist_text(&g.size_hist)
            ));
        }
        let lifetimes: u64 = g.life_hist.iter().sum();
        if lifetimes != want.counters.frees {
            problems.push(format!(
                "{f}: life_hist holds {lifetimes} lifetimes, expected one per free: {} ({})",
                want.counters.frees,
                hist_text(&g.life_hist)
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "the report disagrees with the ground truth of pid {}:\n  - {}\n\nground truth:\n{}\n{}",
            truth.pid,
            problems.join("\n  - "),
            truth.text,
            report.describe_sites(truth.pid)
        );
    }
}

/// `b:n,b:n` for the non-empty buckets of a histogram, `-` when empty.
pub fn hist_text(h: &[u64]) -> String {
    let parts: Vec<String> = h
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(b, n)| format!("{b}:{n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// For a workload in which nothing but the ground-truth sites allocates: the process's counters
/// and live fields equal the ground truth's sum, and its unknown frees the ground truth's.
pub fn assert_process_matches(report: &Report, truth: &GroundTruth) {
    let pid = truth.pid;
    let p = report.process(pid);
    let got = report.process_counters(pid);
    let want = truth.total();
    let live = (
        json_u64(&p["live_objects"], "live_objects"),
        json_u64(&p["live_bytes"], "live_bytes"),
    );
    let mut problems = Vec::new();
    if got != want {
        problems.push(format!(
            "counters\n      expected {want}\n      reported {got}"
        ));
    }
    if live != (want.live_objects(), want.live_bytes()) {
        problems.push(format!(
            "live_objects/live_bytes: expected {}/{}, reported {}/{}",
            want.live_objects(),
            want.live_bytes(),
            live.0,
            live.1
        ));
    }
    if let Some(unknown) = truth.unknown_frees {
        let got_unknown = json_u64(&p["unknown_frees"], "unknown_frees");
        if got_unknown != unknown {
            problems.push(format!(
                "unknown_frees: expected {unknown}, reported {got_unknown}"
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "process {pid}'s totals disagree with its ground truth (the sum of its sites; nothing else in \
             it allocates):\n  - {}\n\nreported process: {}\nground truth:\n{}\n{}",
            problems.join("\n  - "),
            p,
            truth.text,
            report.describe_sites(pid)
        );
    }
}

/// The process's counters equal the sum of its own sites (whatever allocated them).
pub fn assert_process_is_sum_of_sites(report: &Report, pid: u32) {
    let mut sum = Counters::default();
    for s in report.sites_of(pid) {
        sum.add(&Counters::from_json(&s["counters"], "site"));
    }
    let got = report.process_counters(pid);
    assert_eq!(
        got,
        sum,
        "process {pid}'s counters are not the sum of its sites:\n  process   {got}\n  sum       {sum}\n{}",
        report.describe_sites(pid)
    );
}

/// Every `losses` counter is zero.
pub fn assert_no_losses(report: &Report) {
    let lost: BTreeMap<String, u64> = report
        .losses()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        lost.is_empty(),
        "alloctrace lost data: {lost:?}\nlosses: {}",
        report.json["losses"]
    );
}

/// The report's `target` object equals `want`.
pub fn assert_target(report: &Report, want: &Value) {
    assert_eq!(
        &report.json["target"], want,
        "report target: expected {want}, reported {}",
        report.json["target"]
    );
}

// =============================================================================================
// Folded stacks and flame graphs
// =============================================================================================

/// Parses `root;...;leaf VALUE` lines; panics on a malformed line.
pub fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stack, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line without a value: {l:?}\n{text}"));
            let value: u64 = value
                .parse()
                .unwrap_or_else(|_| panic!("folded line with a bad value: {l:?}\n{text}"));
            assert!(!stack.is_empty(), "folded line without frames: {l:?}");
            (stack.split(';').map(str::to_string).collect(), value)
        })
        .collect()
}

/// Sum of the values of the folded lines, per leaf (innermost) frame.
pub fn folded_by_leaf(lines: &[(Vec<String>, u64)]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (frames, v) in lines {
        *out.entry(frames.last().cloned().unwrap_or_default())
            .or_default() += v;
    }
    out
}

/// `1234567` as `1,234,567` (how inferno prints sample counts).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// =============================================================================================
// Child processes
// =============================================================================================

/// The lines a child writes to one of its pipes, collected by a thread, waitable with a timeout.
#[derive(Clone)]
pub struct Lines {
    inner: Arc<(Mutex<LinesState>, Condvar)>,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    eof: bool,
}

impl Lines {
    /// Starts a thread reading `r` to its end.
    pub fn collect(r: impl Read + Send + 'static) -> (Lines, JoinHandle<()>) {
        let lines = Lines {
            inner: Arc::new((Mutex::new(LinesState::default()), Condvar::new())),
        };
        let l = lines.clone();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        let (m, cv) = &*l.inner;
                        m.lock().unwrap().lines.push(line);
                        cv.notify_all();
                    }
                }
            }
            let (m, cv) = &*l.inner;
            m.lock().unwrap().eof = true;
            cv.notify_all();
        });
        (lines, handle)
    }

    /// The first line (seen so far or arriving within `timeout`) that starts with `prefix`;
    /// Err(why) when the stream ends or the time runs out first.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(l) = st.lines.iter().find(|l| l.starts_with(prefix)) {
                return Ok(l.clone());
            }
            if st.eof {
                return Err(format!(
                    "the stream ended without a line starting with {prefix:?}"
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no line starting with {prefix:?} within {timeout:?}"
                ));
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Everything collected so far, newline-terminated lines.
    pub fn text(&self) -> String {
        let st = self.inner.0.lock().unwrap();
        st.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `child` (ours, by its pid), unless it has been reaped.
pub fn send_signal(child: &mut Child, sig: libc::c_int) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the pid of our own unreaped child, which therefore cannot have
        // been recycled for another process.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
}

/// Stops a child that is still running when a test gives up on it: SIGTERM (alloctrace
/// detaches and exits), then SIGKILL after two seconds.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        send_signal(child, libc::SIGTERM);
        if wait_timeout(child, Duration::from_secs(2)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a finished alloctrace run ended and what it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<OsString>,
}

impl Finished {
    /// The exit code; panics (with the output) if alloctrace died of a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "alloctrace was killed by signal {:?}\n{}",
                self.status.signal(),
                self.describe()
            )
        })
    }

    /// The command line, status and both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- alloctrace {}\n--- {}\n--- stderr:\n{}--- stdout:\n{}---",
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            self.status,
            excerpt(&self.stderr, 8000),
            excerpt(&self.stdout, 8000)
        )
    }

    /// Asserts the run exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            code,
            "alloctrace's exit status\n{}",
            self.describe()
        );
    }

    /// Asserts the run failed the way every alloctrace error must: non-zero status and exactly
    /// one stderr line, which starts with `alloctrace: error: ` and contains every word of
    /// `mentions`. Returns that line.
    pub fn assert_one_line_error(&self, mentions: &[&str]) -> String {
        assert_ne!(
            self.code(),
            0,
            "alloctrace succeeded where it must fail\n{}",
            self.describe()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(ERROR_PREFIX),
            "expected exactly one stderr line starting with {ERROR_PREFIX:?}, got {}\n{}",
            lines.len(),
            self.describe()
        );
        for m in mentions {
            assert!(
                lines[0].contains(m),
                "the error does not mention {m:?}: {:?}\n{}",
                lines[0],
                self.describe()
            );
        }
        lines[0].to_string()
    }
}

/// A running alloctrace, its outputs collected by threads. Dropped while still running (a test
/// failed), it is stopped.
pub struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    args: Vec<OsString>,
}

impl Running {
    /// Starts `$ALLOCTRACE_BIN ARGS` with stdin from /dev/null and `env` added to ours.
    pub fn spawn<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &OsStr)]) -> Running {
        Running::spawn_with(args, |c| {
            for (k, v) in env {
                c.env(k, v);
            }
        })
    }

    /// Like [`Running::spawn`], with `configure` adjusting the command (environment,
    /// directory) before it starts.
    pub fn spawn_with<A: AsRef<OsStr>>(
        args: &[A],
        configure: impl FnOnce(&mut Command),
    ) -> Running {
        let bin = alloctrace_bin();
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (stdout, h1) = Lines::collect(child.stdout.take().expect("piped stdout"));
        let (stderr, h2) = Lines::collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![h1, h2],
            args,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for alloctrace's `alloctrace: tracing ` line; panics with its output if it exits
    /// or takes longer than [`STARTUP_TIMEOUT`].
    pub fn wait_until_tracing(&mut self) -> String {
        match self.stderr.wait_for(TRACING_PREFIX, STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(why) => {
                stop(&mut self.child);
                panic!(
                    "alloctrace never said it was tracing: {why}\n--- alloctrace {}\n--- stderr:\n{}--- stdout:\n{}",
                    self.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
                    excerpt(&self.stderr.text(), 8000),
                    excerpt(&self.stdout.text(), 8000)
                )
            }
        }
    }

    /// Sends `sig` to alloctrace.
    pub fn signal(&mut self, sig: libc::c_int) {
        send_signal(&mut self.child, sig);
    }

    /// Waits up to `timeout` for alloctrace to exit by itself; panics (after stopping it, with
    /// its output) if it does not.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let status = wait_timeout(&mut self.child, timeout);
        if status.is_none() {
            stop(&mut self.child);
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let finished = Finished {
            status: status.unwrap_or_else(|| self.child.wait().expect("wait for alloctrace")),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            args: std::mem::take(&mut self.args),
        };
        assert!(
            status.is_some(),
            "alloctrace did not exit within {timeout:?}; stopped it\n{}",
            finished.describe()
        );
        finished
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Runs alloctrace with `args` to completion (at most [`RUN_TIMEOUT`]).
pub fn run_alloctrace<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &OsStr)]) -> Finished {
    Running::spawn(args, env).wait(RUN_TIMEOUT)
}

/// A workload started by the test (not by alloctrace), with stdin and stdout piped: for
/// `--pid` tests. Dropped while still running, it is killed.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
    name: String,
}

impl Workload {
    /// Starts workload `name` with `args` and `env`, and waits for its `ready` line.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        Workload::spawn(&workload(name), name, args, env)
    }

    /// Starts the program at `path`, named `name` in messages, and waits for its `ready` line.
    fn spawn(path: &Path, name: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdin = child.stdin.take();
        let (stdout, _) = Lines::collect(child.stdout.take().expect("piped stdout"));
        let (stderr, _) = Lines::collect(child.stderr.take().expect("piped stderr"));
        let mut w = Workload {
            child,
            stdin,
            stdout,
            stderr,
            name: name.to_string(),
        };
        if let Err(why) = w.stdout.wait_for("ready", WORKLOAD_TIMEOUT) {
            stop(&mut w.child);
            panic!("workload {name} never said ready: {why}\n{}", w.describe());
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets a waiting workload go on (one byte on its stdin).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("the workload's stdin is open");
        stdin
            .write_all(b"g")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot release workload {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                )
            });
    }

    /// Waits for the workload to print `line` on stdout; panics after [`WORKLOAD_TIMEOUT`].
    pub fn wait_for_line(&mut self, line: &str) {
        if let Err(why) = self.stdout.wait_for(line, WORKLOAD_TIMEOUT) {
            panic!(
                "workload {} never printed {line:?}: {why}\n{}",
                self.name,
                self.describe()
            );
        }
    }

    /// Closes the workload's stdin (end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the workload to exit; panics if it does not within [`WORKLOAD_TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        match wait_timeout(&mut self.child, WORKLOAD_TIMEOUT) {
            Some(st) => st,
            None => {
                stop(&mut self.child);
                panic!(
                    "workload {} did not exit within {WORKLOAD_TIMEOUT:?}\n{}",
                    self.name,
                    self.describe()
                )
            }
        }
    }

    /// Waits for the workload to exit with `code`.
    pub fn wait_code(&mut self, code: i32) {
        let st = self.wait();
        assert_eq!(
            st.code(),
            Some(code),
            "workload {} exited with {st}\n{}",
            self.name,
            self.describe()
        );
    }

    pub fn describe(&self) -> String {
        format!(
            "--- workload {} (pid {}) stdout:\n{}--- stderr:\n{}---",
            self.name,
            self.child.id(),
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts workload `name` on its own (not under alloctrace: for system-wide tests), stdin from
/// /dev/null, stdout and stderr discarded and collected respectively, `GROUND_TRUTH=truth`.
pub fn spawn_workload(name: &str, args: &[&str], truth: &Path) -> Child {
    let path = workload(name);
    Command::new(&path)
        .args(args)
        .env("GROUND_TRUTH", truth)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()))
}

/// Waits for a workload from [`spawn_workload`] to exit 0 and returns its ground truth, whose
/// pid must be the child's.
pub fn finish_workload(name: &str, mut child: Child, truth: &Path) -> GroundTruth {
    let status = wait_timeout(&mut child, WORKLOAD_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = status.unwrap_or_else(|| {
        panic!("workload {name} did not exit within {WORKLOAD_TIMEOUT:?}\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "workload {name} exited with {status}\n{stderr}"
    );
    let truth = GroundTruth::read(truth, &stderr);
    assert_eq!(
        truth.pid,
        child.id(),
        "workload {name}'s ground truth names another pid"
    );
    truth
}

// =============================================================================================
// Launch mode in one call
// =============================================================================================

/// A scratch directory for one run's outputs (report, ground truth, folded stacks).
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("alloctrace-test-")
                .tempdir()
                .expect("create a temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// One launch-mode run: `alloctrace --interval 250ms --report json -o REPORT EXTRA -- WORKLOAD
/// ARGS` with `GROUND_TRUTH` set, finished, with its report and the workload's ground truth.
pub struct Launched {
    pub finished: Finished,
    pub report: Report,
    pub truth: GroundTruth,
    /// The absolute path alloctrace was asked to run.
    pub command: PathBuf,
    pub scratch: Scratch,
}

impl Launched {
    /// Asserts the report's target is this command with the workload's pid.
    pub fn assert_command_target(&self, args: &[&str]) {
        let mut argv = vec![Value::from(self.command.to_string_lossy().into_owned())];
        argv.extend(args.iter().map(|a| Value::from(*a)));
        assert_target(
            &self.report,
            &serde_json::json!({"mode": "command", "argv": argv, "pid": self.truth.pid}),
        );
    }
}

/// Runs workload `name` with `args` under alloctrace in launch mode (see [`Launched`]); `extra`
/// goes before `--` and may name files in `scratch` (pass [`Scratch::new`] when none).
/// Panics if alloctrace does not finish in time or writes no report, or the workload writes no
/// ground truth; the exit status is the caller's to check.
pub fn launch(name: &str, args: &[&str], extra: &[&OsStr], scratch: Scratch) -> Launched {
    launch_every(INTERVAL, name, args, extra, scratch)
}

/// [`launch`] with `--interval INTERVAL` instead of the default [`INTERVAL`] (analyses that
/// need several drains per phase of a workload).
pub fn launch_every(
    interval: &str,
    name: &str,
    args: &[&str],
    extra: &[&OsStr],
    scratch: Scratch,
) -> Launched {
    let command = workload(name);
    let report_path = scratch.path("report.json");
    let truth_path = scratch.path("truth.txt");
    let mut argv: Vec<OsString> = ["--interval", interval, "--report", "json", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    argv.push(report_path.clone().into());
    argv.extend(extra.iter().map(|a| a.to_os_string()));
    argv.push("--".into());
    argv.push(command.clone().into());
    argv.extend(args.iter().map(OsString::from));
    let finished = run_alloctrace(&argv, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    Launched {
        finished,
        report,
        truth,
        command,
        scratch,
    }
}

// =============================================================================================
// Reliability helpers (it/reliability.rs)
// =============================================================================================

impl Workload {
    /// [`Workload::start`] for a program at `path` (a copy of a workload, say), named `name`
    /// in messages.
    pub fn start_path(path: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        Workload::spawn(path, &path.display().to_string(), args, env)
    }

    /// Everything the workload printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// The first stdout line starting with `prefix` (waiting up to [`WORKLOAD_TIMEOUT`]),
    /// without the prefix; panics if none comes.
    pub fn stdout_value(&self, prefix: &str) -> String {
        match self.stdout.wait_for(prefix, WORKLOAD_TIMEOUT) {
            Ok(line) => line[prefix.len()..].trim().to_string(),
            Err(why) => panic!(
                "workload {} never printed {prefix:?}: {why}\n{}",
                self.name,
                self.describe()
            ),
        }
    }

    /// Sends `sig` to the workload.
    pub fn signal(&mut self, sig: libc::c_int) {
        send_signal(&mut self.child, sig);
    }
}

impl Running {
    /// Whether alloctrace is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// alloctrace's stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }
}

/// Waits (20 s at most) for `tracer`'s stderr to contain `needle`.
pub fn await_stderr(tracer: &Running, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tracer.stderr_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "alloctrace did not say {needle:?} within 20 s\n{}",
            tracer.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The names in directory `dir`, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Pins the calling thread (and the processes and threads it starts later) to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0, ..) applies to
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ground_truth() {
        let text = "pid 42\nunknown_frees 3\nsite alloc_a allocs=2 bytes=128 frees=1 freed_bytes=64 size_hist=7:2\n\
                    site free_b allocs=0 bytes=0 frees=0 freed_bytes=0 size_hist=-\n";
        let gt = GroundTruth::parse(text).unwrap();
        assert_eq!(gt.pid, 42);
        assert_eq!(gt.unknown_frees, Some(3));
        let a = gt.site("alloc_a");
        assert_eq!(
            a.counters,
            Counters {
                allocs: 2,
                bytes: 128,
                frees: 1,
                freed_bytes: 64
            }
        );
        assert_eq!(a.size_hist_vec()[7], 2);
        assert_eq!(a.size_hist_vec().iter().sum::<u64>(), 2);
        assert!(gt.site("free_b").counters.is_zero());
        assert_eq!(gt.total(), a.counters);
        assert!(GroundTruth::parse("site x allocs=1\n").is_err());
        assert!(GroundTruth::parse(
            "pid 1\nsite x allocs=1 bytes=2 frees=0 freed_bytes=0 size_hist=99:1\n"
        )
        .is_err());
        assert_eq!(GroundTruth::parse("pid 7\n").unwrap().unknown_frees, None);
    }

    #[test]
    fn parses_folded() {
        let lines = parse_folded("_start;main;alloc_a 100\nmain;alloc_b 5\nmain;x;alloc_a 1\n");
        assert_eq!(
            lines[0],
            (
                vec!["_start".to_string(), "main".into(), "alloc_a".into()],
                100
            )
        );
        let by_leaf = folded_by_leaf(&lines);
        assert_eq!(by_leaf["alloc_a"], 101);
        assert_eq!(by_leaf["alloc_b"], 5);
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn aggregates_sites_by_function() {
        let mut hist = vec![0u64; HIST_BUCKETS];
        hist[7] = 1;
        let site = |id: u64, f: u64| {
            serde_json::json!({"pid": 9, "stack_id": id, "frames": [f, 2],
                "counters": {"allocs": 1, "bytes": 100, "frees": 1, "freed_bytes": 100},
                "live_objects": 0, "live_bytes": 0, "size_hist": hist, "life_hist": hist})
        };
        let frames =
            serde_json::json!([{"function": "f"}, {"function": null}, {"function": "main"}]);
        let json = serde_json::json!({"version": 2, "processes": [], "frames": frames,
            "sites": [site(1, 0), site(2, 0), site(3, 1)]});
        let r = Report::parse(&json.to_string(), "");
        let fs = r.functions(9);
        assert_eq!(
            fs["f"].counters,
            Counters {
                allocs: 2,
                bytes: 200,
                frees: 2,
                freed_bytes: 200
            }
        );
        assert_eq!((fs["f"].sites, fs["f"].size_hist[7]), (2, 2));
        assert_eq!(fs[NO_FUNCTION].sites, 1);
        assert_eq!(
            Report::frame_names(r.sites().first().unwrap()),
            ["f", "main"]
        );
    }

    #[test]
    #[should_panic(expected = "holds {\"function\":\"f\"} more than once")]
    fn a_frame_twice_in_the_table_fails() {
        let json = serde_json::json!({"version": 2, "processes": [],
            "frames": [{"function": "f"}, {"function": "f"}], "sites": []});
        Report::parse(&json.to_string(), "");
    }

    #[test]
    #[should_panic(expected = "frame index 1 is past the frames table (1 entries)")]
    fn a_frame_index_past_the_table_fails() {
        let json = serde_json::json!({"version": 2, "processes": [], "frames": [{"function": "f"}],
            "sites": [{"pid": 1, "stack_id": 5, "frames": [0, 1]}]});
        Report::parse(&json.to_string(), "");
    }

    /// Every workload runs untraced and writes a ground truth that parses, with its own pid:
    /// the workloads are checked even where alloctrace cannot run.
    #[test]
    fn workloads_write_their_ground_truth() {
        let scratch = Scratch::new();
        for (name, args, code, input) in [
            ("sites", &[][..], 0, None),
            ("premain", &[][..], 0, None),
            ("threads", &[][..], 0, None),
            ("exit_status", &["5"][..], 5, None),
            ("wait", &["4"][..], 4, Some(&b"g"[..])),
        ] {
            let truth_path = scratch.path(&format!("{name}.txt"));
            let mut child = Command::new(workload(name))
                .args(args)
                .env("GROUND_TRUTH", &truth_path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start workload {name}: {e}"));
            let mut stdin = child.stdin.take().unwrap();
            if let Some(bytes) = input {
                stdin.write_all(bytes).unwrap();
            }
            drop(stdin);
            let status = wait_timeout(&mut child, WORKLOAD_TIMEOUT).unwrap_or_else(|| {
                let _ = child.kill();
                panic!("workload {name} did not finish")
            });
            assert_eq!(
                status.code(),
                Some(code),
                "workload {name} exited with {status}"
            );
            let truth = GroundTruth::read(&truth_path, name);
            assert_eq!(truth.pid, child.id(), "workload {name}'s ground-truth pid");
            assert!(
                truth.sites.iter().any(|s| s.counters.allocs > 0),
                "workload {name} allocates nothing:\n{}",
                truth.text
            );
            for s in &truth.sites {
                assert_eq!(
                    s.size_hist.values().sum::<u64>(),
                    s.counters.allocs,
                    "workload {name}: {}'s size_hist does not count every allocation",
                    s.function
                );
            }
        }
    }
}
