//! The drained data as every analyzer and exporter sees it: plain values, no BPF handles, so
//! everything downstream of the drain is a pure function testable without root.
//!
//! A crate of its own (serde only; clap behind a feature for `TraceMode`) so that the integration
//! tests read a report into the very types alloctrace wrote it from.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Cumulative allocation counters (of a site, a process, or everything).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What happened between `earlier` and `self` (both cumulative).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            allocs: self.allocs.saturating_sub(earlier.allocs),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            frees: self.frees.saturating_sub(earlier.frees),
            freed_bytes: self.freed_bytes.saturating_sub(earlier.freed_bytes),
        }
    }
    /// `self += o` as the kernel's counters add: wrapping.
    pub fn add_wrapping(&mut self, o: &Counters) {
        self.allocs = self.allocs.wrapping_add(o.allocs);
        self.bytes = self.bytes.wrapping_add(o.bytes);
        self.frees = self.frees.wrapping_add(o.frees);
        self.freed_bytes = self.freed_bytes.wrapping_add(o.freed_bytes);
    }
    pub fn add(&mut self, o: &Counters) {
        self.allocs += o.allocs;
        self.bytes += o.bytes;
        self.frees += o.frees;
        self.freed_bytes += o.freed_bytes;
    }
}

/// One symbolized frame of a user stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The return address as seen in the process.
    pub addr: u64,
    /// Function name (demangled), when the binary's symbols say. Names and paths are shared
    /// (`Arc<str>`): a run can hold millions of frames of a few hundred distinct names.
    pub function: Option<Arc<str>>,
    /// Offset of `addr` from the function's start.
    pub function_offset: u64,
    /// Path of the binary or library the address falls in, as the process mapped it.
    pub module: Option<Arc<str>>,
    /// File offset of `addr` within `module`.
    pub module_offset: u64,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

impl Frame {
    /// The name a frame goes by in reports: the function, else `module+0xoffset`, else the
    /// bare address. A frame is never dropped for lack of a symbol.
    pub fn name(&self) -> String {
        if let Some(f) = &self.function {
            return f.to_string();
        }
        if let Some(m) = &self.module {
            let base = m.rsplit('/').next().unwrap_or(m);
            return format!("{base}+{:#x}", self.module_offset);
        }
        format!("{:#x}", self.addr)
    }
}

/// One allocation site: a process and the user stack its allocations came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub pid: u32,
    /// The kernel's hash of the stack; identifies the site within its process.
    pub stack_id: u64,
    /// Innermost first: `frames[0]` is the allocator's immediate caller.
    pub frames: Vec<Frame>,
    pub counters: Counters,
    /// log2 histogram of requested sizes (see `alloctrace_common::log2_bucket`).
    pub size_hist: Vec<u64>,
    /// log2 histogram of lifetimes in ns of the blocks that were freed.
    pub life_hist: Vec<u64>,
    /// The site's cumulative counters at each drain where they had changed since the previous
    /// point (a site idle for a while has no points there), oldest first. The last point
    /// equals `counters` unless the final drain moved it.
    #[serde(default)]
    pub series: Vec<SitePoint>,
    /// With sampling, how many allocations of this site were sampled (the estimate's basis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<u64>,
    /// The site's blocks still allocated when the trace ended (read from the kernel's
    /// in-flight table), with their ages. With sampling, only the sampled blocks. Absent in
    /// alloc-only mode and in files from before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveBlocks>,
}

/// A site's blocks allocated and never freed, counted at one moment (`at`): the end of the
/// trace, or for a process that exited earlier in system-wide mode, when its blocks were
/// swept from the in-flight table. Ages are exact (ns, from the kernel's monotonic clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveBlocks {
    /// When the blocks were counted, since the start.
    #[serde(with = "duration_secs")]
    pub at: Duration,
    pub blocks: u64,
    // The ages are written only when not zero (empty): most sites of a program that frees
    // have no live block, and every byte per site counts in a report of 100k sites.
    pub bytes: u64,
    /// log2 histogram of the blocks' ages at `at`, ns (buckets as `Site::life_hist`), without
    /// the empty buckets past the last non-empty one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_hist: Vec<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oldest_ns: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub median_ns: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub youngest_ns: u64,
    /// `--older DUR`: those of the blocks older than DUR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older: Option<OlderBlocks>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl LiveBlocks {
    /// How long the surviving blocks took to be allocated: from the oldest's birth to the
    /// youngest's.
    pub fn birth_span_ns(&self) -> u64 {
        self.oldest_ns.saturating_sub(self.youngest_ns)
    }
}

/// The live blocks older than a threshold (memleak's "outstanding allocations older than").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OlderBlocks {
    #[serde(with = "duration_secs")]
    pub than: Duration,
    pub blocks: u64,
    pub bytes: u64,
}

/// A site's cumulative counters at time `t` since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePoint {
    #[serde(with = "duration_secs")]
    pub t: Duration,
    pub counters: Counters,
}

/// Per-process totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub counters: Counters,
    /// Frees of addresses never seen allocated (allocated before attach, or lost).
    pub unknown_frees: u64,
    /// Set when the process executed a program whose allocations alloctrace cannot see:
    /// its counters stop there. Absent otherwise (and in files from before it was told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen: Option<Unseen>,
    /// The allocators its allocations were counted through (empty in files from before it was
    /// told, and for a process none of whose allocators could be probed: see `unseen`).
    #[serde(default)]
    pub allocators: Vec<AllocatorUse>,
    /// A process running Go code: what alloctrace saw of its runtime. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoRuntime>,
}

/// What alloctrace saw of a Go process's runtime from outside. Go frees by collection, not by
/// calls: no free is counted (the counters' frees are not measured for Go allocations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoRuntime {
    /// GC cycles the process completed while traced (entries of `runtime.gcMarkTermination`,
    /// where the runtime counts `MemStats.NumGC`).
    pub gc_cycles: u64,
    /// When the first and the last of them ended, since the start of the trace (zero when
    /// there was none).
    #[serde(with = "duration_secs")]
    pub first_gc: Duration,
    #[serde(with = "duration_secs")]
    pub last_gc: Duration,
    /// The runtime's own statistics, read from its memory (absent where they cannot be read:
    /// see `GoMemStats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memstats: Option<GoMemStats>,
}

/// Fields of the process's `runtime.MemStats` as its runtime holds them (`runtime.memstats`),
/// read from its memory at the last interval it ran, with the layout from its binary's DWARF:
/// not read for a binary without DWARF or symbols (`-ldflags=-s -w`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoMemStats {
    /// `NumGC`: cycles completed since the program started (traced or not).
    pub num_gc: u64,
    /// `NumForcedGC`: those forced by runtime.GC.
    pub num_forced_gc: u64,
    /// `PauseTotalNs`: the stop-the-world pauses' total.
    pub pause_total_ns: u64,
    /// `LastGC`: when the last cycle ended, in nanoseconds since the Unix epoch (0: none yet).
    pub last_gc_unix_ns: u64,
}

/// One allocator a process used, as probed: its name (`glibc`, `musl`, `jemalloc`,
/// `tcmalloc`, `mimalloc`), the file holding it (a shared library, or the executable when it
/// is linked in) and its version where the file tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorUse {
    pub name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// From when, and why, a process's allocations went unseen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unseen {
    /// Since the start of the run.
    #[serde(with = "duration_secs")]
    pub since: Duration,
    /// The program executed then.
    pub program: String,
    pub reason: String,
}

/// Data the tracer could not record, each with the hint that fixes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Losses {
    pub stack_map_full: u64,
    pub site_map_full: u64,
    pub live_map_full: u64,
    pub call_map_full: u64,
    pub proc_map_full: u64,
    pub stack_read_failed: u64,
    pub stale_call: u64,
    pub event_dropped: u64,
    /// Absent from files written before it was counted.
    #[serde(default)]
    pub stack_preempted: u64,
    /// Absent from files written before it was counted.
    #[serde(default)]
    pub stale_block: u64,
    /// Sites whose stacks were cut at a value that is not a return address into the
    /// process's code (code without frame pointers): their outer frames are missing. Absent
    /// from files written before it was counted.
    #[serde(default)]
    pub stacks_cut: u64,
    /// Bytes allocated at those sites (estimated, with sampling): their share of all bytes
    /// is the share whose call paths are incomplete. Absent from files written before it
    /// was counted.
    #[serde(default)]
    pub stacks_cut_bytes: u64,
    /// Moves of the probes to another task of the traced process (`retarget`). Absent from
    /// files written before it was counted.
    #[serde(default)]
    pub retargets: u64,
    /// Microseconds the moves left the process without probes.
    #[serde(default)]
    pub retarget_gap_us: u64,
    /// Allocator calls of a signal handler that interrupted another handler's, itself
    /// inside an interrupted call: not counted.
    #[serde(default)]
    pub reentry_too_deep: u64,
    /// New stacks not stored because the kernel could not check their frames (the
    /// process's mapping lock was busy): those allocations have no site. Absent from files
    /// written before it was counted.
    #[serde(default)]
    pub stack_unchecked: u64,
    /// Followed processes (`--follow-forks`) whose probes went in after their fork. Absent
    /// from files written before it was counted.
    #[serde(default)]
    pub follow_late: u64,
    /// Microseconds from those forks to their probes, added up.
    #[serde(default)]
    pub follow_gap_us: u64,
    /// Execs of traced processes whose new program's allocators were probed after the exec
    /// (and, system-wide, allocator files probed after a process mapped them). Absent from
    /// files written before it was counted.
    #[serde(default)]
    pub exec_late: u64,
    /// Microseconds from those execs (or mappings) to their probes, added up.
    #[serde(default)]
    pub exec_gap_us: u64,
}

impl Losses {
    /// The non-zero counters as (name, count, what to do about it).
    pub fn nonzero(&self) -> Vec<(&'static str, u64, &'static str)> {
        [
            ("stack map full", self.stack_map_full, "raise --max-stacks"),
            ("site map full", self.site_map_full, "raise --max-stacks"),
            ("in-flight map full", self.live_map_full, "raise --max-live"),
            (
                "call map full",
                self.call_map_full,
                "the kernel could not allocate a thread's call state",
            ),
            (
                "process map full",
                self.proc_map_full,
                "too many traced processes at once",
            ),
            (
                "stack unreadable",
                self.stack_read_failed,
                "these allocations have no frames",
            ),
            (
                "call without return",
                self.stale_call,
                "an allocator call never returned",
            ),
            (
                "events dropped",
                self.event_dropped,
                "short-lived processes may not symbolize",
            ),
            (
                "stack scratch in use",
                self.stack_preempted,
                "a traced thread preempted another on its CPU: these allocations have no site",
            ),
            (
                "frees never seen",
                self.stale_block,
                "addresses handed out again before their blocks' frees were seen, after an \
                 exec or a free no probe saw: those blocks stay counted live",
            ),
            (
                "stacks cut",
                self.stacks_cut,
                "sites whose stacks end before their thread's entry: the walk met a frame \
                 with no unwind info and no frame pointer, a value that is not a return \
                 address, or the depth limit",
            ),
            (
                "bytes at cut stacks",
                self.stacks_cut_bytes,
                "allocated at those sites: their call paths are incomplete",
            ),
            (
                "probes moved to another thread",
                self.retargets,
                "the thread they were attached to ended (the main thread's pthread_exit, \
                 another thread's exec): allocations until the move were not seen",
            ),
            (
                "microseconds without probes",
                self.retarget_gap_us,
                "the time those moves took: allocations in it were not seen",
            ),
            (
                "signal handlers three deep",
                self.reentry_too_deep,
                "allocator calls of a handler interrupting another handler's allocator call, \
                 inside an interrupted one: not counted",
            ),
            (
                "stacks not checked",
                self.stack_unchecked,
                "new stacks whose frames the kernel could not check (the process was changing \
                 its mappings): those allocations have no site, the next from each stack retries",
            ),
            (
                "followed processes probed late",
                self.follow_late,
                "processes started by the target got their probes after their fork (no way to \
                 hold them): their allocations before were not seen",
            ),
            (
                "microseconds before followed processes' probes",
                self.follow_gap_us,
                "the time from those forks to their probes, added up",
            ),
            (
                "programs probed late after an exec",
                self.exec_late,
                "a traced process executed a program (or, system-wide, mapped an allocator's \
                 file) whose allocators were probed only after it: its allocations before were \
                 not seen",
            ),
            (
                "microseconds before exec'd programs' probes",
                self.exec_gap_us,
                "the time from those execs (or mappings) to their probes, added up",
            ),
        ]
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .collect()
    }
}

/// One drain: the cumulative counters of every process at time `t` since the start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(with = "duration_secs")]
    pub t: Duration,
    pub processes: BTreeMap<u32, Counters>,
}

impl Sample {
    pub fn total(&self) -> Counters {
        let mut c = Counters::default();
        for p in self.processes.values() {
            c.add(p);
        }
        c
    }
}

/// What was traced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Target {
    Pid { pid: u32 },
    Command { argv: Vec<String>, pid: u32 },
    System,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid { pid } => write!(f, "pid {pid}"),
            Target::Command { argv, .. } => write!(f, "{}", argv.join(" ")),
            Target::System => write!(f, "all processes"),
        }
    }
}

/// What the probes measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum TraceMode {
    /// Entry, return and free probes: allocations, frees, live bytes and lifetimes per site.
    #[default]
    Full,
    /// Entry probes only: allocations, bytes and sizes per site, at the lowest cost; no frees,
    /// live bytes or lifetimes.
    AllocOnly,
}

impl TraceMode {
    /// Whether frees (and so live bytes and lifetimes) were measured.
    pub fn sees_frees(self) -> bool {
        self == TraceMode::Full
    }
}

impl std::fmt::Display for TraceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceMode::Full => "full",
            TraceMode::AllocOnly => "alloc-only",
        })
    }
}

/// Everything one run of the tracer measured: the input of every report and exporter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub target: Target,
    /// Files written before modes existed were all full mode.
    #[serde(default)]
    pub mode: TraceMode,
    /// `--sample-bytes`: mean bytes between sampled allocations. When set, every site's
    /// counters and size histogram are estimates (see `sampling`); process totals are exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_bytes: Option<u64>,
    /// Wall-clock start, seconds since the Unix epoch.
    pub start_unix_secs: u64,
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    #[serde(with = "duration_secs")]
    pub interval: Duration,
    /// How often the kernel's counters were drained into the samples and the sites' series
    /// (`--resolution`; zero in files from before it: once per interval).
    #[serde(default, with = "duration_secs")]
    pub resolution: Duration,
    /// The run's drains, oldest first; bounded by merging adjacent ones (older ones coarser),
    /// never by dropping the start or the totals.
    pub samples: Vec<Sample>,
    pub processes: Vec<Process>,
    pub sites: Vec<Site>,
    pub losses: Losses,
    /// The binaries the sites' frames fall in, one per process and path.
    #[serde(default)]
    pub modules: Vec<Module>,
    /// What the run cost alloctrace itself (absent in files from before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracer: Option<TracerCost>,
}

/// alloctrace's own resource use over a run, as the kernel accounts it to alloctrace's
/// process: loading (the verifier runs in the loading process), attaching, every drain and
/// the symbolization, up to the report; not the detach after it. The BPF programs run in the
/// traced processes and are accounted to them, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracerCost {
    /// CPU time, user and system, of all of alloctrace's threads.
    #[serde(with = "duration_secs")]
    pub cpu_time: Duration,
    /// Peak resident set size.
    pub peak_rss_bytes: u64,
}

/// A binary or library that a process mapped and some site's frames fall in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub pid: u32,
    /// As the process mapped it (`Frame::module`).
    pub path: String,
    /// The GNU build id, lower-case hex, when the binary has one.
    pub build_id: Option<String>,
}

impl Profile {
    /// Every site with allocations, biggest (bytes) first: the order of the report's site
    /// table and of the per-site analyses, so they list sites alike.
    pub fn sites_by_bytes(&self) -> Vec<&Site> {
        let mut sites: Vec<&Site> = self
            .sites
            .iter()
            .filter(|s| s.counters.allocs > 0)
            .collect();
        sites.sort_by(|a, b| {
            b.counters
                .bytes
                .cmp(&a.counters.bytes)
                .then(b.counters.allocs.cmp(&a.counters.allocs))
                .then(a.pid.cmp(&b.pid))
                .then(a.stack_id.cmp(&b.stack_id))
        });
        sites
    }

    /// The drains' spacing: `resolution`, or the interval in files from before it.
    pub fn drain_step(&self) -> Duration {
        if self.resolution.is_zero() {
            self.interval
        } else {
            self.resolution
        }
    }

    /// More than one process appears (system-wide, or a command that forked): reports then
    /// name the process of every site.
    pub fn is_multi_process(&self) -> bool {
        let mut pids = self
            .processes
            .iter()
            .map(|x| x.pid)
            .chain(self.sites.iter().map(|s| s.pid));
        let Some(first) = pids.next() else {
            return false;
        };
        pids.any(|p| p != first)
    }

    /// What a site's share of bytes is of: everything allocated, or the sites' own sum when
    /// the process totals are missing.
    pub fn share_base(&self) -> u64 {
        match self.total().bytes {
            0 => self.sites.iter().map(|s| s.counters.bytes).sum(),
            total => total,
        }
    }

    pub fn total(&self) -> Counters {
        let mut c = Counters::default();
        for p in &self.processes {
            c.add(&p.counters);
        }
        c
    }
}

/// Durations as fractional seconds in serialized output.
pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
