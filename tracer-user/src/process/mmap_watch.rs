//! Executable mappings recorded as they are created, the way `perf record` learns them: a
//! software "dummy" perf event per online CPU asks the kernel for a `PERF_RECORD_MMAP2` side-band
//! record on every executable `mmap` of the watched process (and of the processes and threads
//! it starts), written into a ring buffer we map.
//!
//! `/proc/PID/maps` snapshots miss a process that exits before it is read (a command living a
//! millisecond); records do not: opened on a launched command before its exec, the watch sees
//! the exec map the executable and `ld.so`, then every library `ld.so` and `dlopen` map.
//!
//! One event per CPU rather than one per task: the kernel refuses to `mmap` an inherited
//! per-task (`cpu == -1`) event. The events and their rings are [`super::perf`]; this module
//! turns their records into mappings, execs and forks.
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::process::perf::{
    online_cpus, Ring, ATTR_COMM, ATTR_COMM_EXEC, ATTR_INHERIT, ATTR_MMAP, ATTR_MMAP2,
    ATTR_SAMPLE_ID_ALL, ATTR_TASK, ATTR_USE_CLOCKID, PERF_SAMPLE_TIME,
};
// Probe retargeting opens its own perf events with these (they were defined here first).
pub(crate) use crate::process::perf::{
    perf_event_open, PerfEventAttr, PERF_ATTR_SIZE_VER5, PERF_COUNT_SW_DUMMY, PERF_TYPE_SOFTWARE,
};
use crate::process::procmaps::Mapping;

const PERF_RECORD_MMAP: u32 = 1;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;

/// One record the watch understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An executable mapping created by process `pid`.
    Mmap { pid: u32, mapping: Mapping },
    /// The kernel dropped this many records: the ring was full.
    Lost(u64),
    /// Process `pid` executed a program (execve) whose name (`comm`, at most 15 bytes) is this.
    Exec { pid: u32, comm: String },
    /// Process `ppid` started process `pid` (fork, vfork, or clone without CLONE_THREAD; a new
    /// thread is not one).
    Fork { pid: u32, ppid: u32 },
}

/// A process started by one whose execs are logged (`MmapWatch::track_execs`).
#[derive(Clone, Debug)]
pub struct Forked {
    pub pid: u32,
    pub ppid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time: u64,
    /// Its execs, logged from its first on (with `follow_forks`).
    pub log: Option<Arc<Mutex<ExecLog>>>,
}

/// The execs of one process, in time order (CLOCK_MONOTONIC nanoseconds, the clock of
/// `std::time::Instant`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecLog {
    pub execs: Vec<ExecSeen>,
}

impl ExecLog {
    /// The execs whose new program's probing is not decided yet.
    pub fn undecided(&self) -> Vec<ExecSeen> {
        self.execs
            .iter()
            .filter(|e| e.probed.is_none())
            .cloned()
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSeen {
    pub time: u64,
    pub comm: String,
    /// The first executable file mapping after the exec: the new program's own text.
    pub exe: Option<String>,
    /// What its new program is traced through, once decided (`probe::reprobe`).
    pub probed: Option<ExecProbed>,
}

/// What a program exec'd is traced through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecProbed {
    /// Its allocators' sets (`ProbeSet::describe`), all attached for the process now;
    /// `late_us` when some had to be attached after the exec (microseconds from the exec).
    Through {
        sets: Vec<String>,
        late_us: Option<u64>,
    },
    /// None of its allocators can be probed, for this reason.
    Unseen(String),
}

/// The process whose execs are logged, and the log the watch's drains fill.
struct ExecTrack {
    pid: u32,
    log: Arc<Mutex<ExecLog>>,
}

impl ExecTrack {
    fn note(&self, time: u64, rec: &Record) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        match rec {
            Record::Exec { pid, comm } if *pid == self.pid => {
                let at = log.execs.partition_point(|e| e.time <= time);
                log.execs.insert(
                    at,
                    ExecSeen {
                        time,
                        comm: comm.clone(),
                        exe: None,
                        probed: None,
                    },
                );
            }
            Record::Mmap { pid, mapping } if *pid == self.pid && mapping.is_file() => {
                // Records of one drain come in time order, but a late one from another CPU may
                // belong before an exec already logged: placed by time, not by arrival.
                let at = log.execs.partition_point(|e| e.time < time);
                if let Some(e) = at.checked_sub(1).map(|i| &mut log.execs[i]) {
                    if e.exe.is_none() {
                        e.exe = Some(mapping.path.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

/// The side-band event the watch opens on each CPU: mmaps, execs and forks, each stamped
/// with the time it was written. `inherit` for a task's event.
fn watch_attr(inherit: bool) -> PerfEventAttr {
    PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: PERF_ATTR_SIZE_VER5,
        config: PERF_COUNT_SW_DUMMY,
        // Enabled from the start; watermark off, so wake up on every record. A task's
        // event is inherited by the processes and threads it starts; a CPU-wide one
        // (pid -1) sees every task already.
        flags: if inherit { ATTR_INHERIT } else { 0 }
            | ATTR_MMAP
            | ATTR_MMAP2
            | ATTR_COMM
            | ATTR_COMM_EXEC
            | ATTR_TASK
            | ATTR_SAMPLE_ID_ALL
            | ATTR_USE_CLOCKID,
        sample_type: PERF_SAMPLE_TIME,
        clockid: libc::CLOCK_MONOTONIC,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    }
}

/// Executable mmaps of one process tree (or of the whole system), recorded by the kernel.
pub struct MmapWatch {
    rings: Vec<Ring>,
    exec_tracks: Vec<ExecTrack>,
    /// Pass on only this process's mappings (see `only`).
    only: Option<u32>,
    /// Whether the children of logged processes get their execs logged too (`follow_forks`).
    follow: bool,
    forks: Vec<Forked>,
    /// Logged processes seen to exec.
    execs: Vec<u32>,
    /// Every executable file mapping with its time and process, kept for `take_files` (see
    /// `collect_files`).
    files: Option<Vec<(u64, u32, Mapping)>>,
    /// Pass on only the mappings of processes whose execs are logged (see `open_running`).
    tracked_only: bool,
}

impl MmapWatch {
    /// Watches `pid` and every process and thread it starts from now on, or with `None`
    /// every process (one event per CPU either way). Must be opened before the mappings of interest are made (for a launched
    /// command: before its exec).
    pub fn open(pid: Option<u32>) -> io::Result<MmapWatch> {
        let pid = match pid {
            Some(p) => {
                i32::try_from(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?
            }
            None => -1,
        };
        let rings = online_cpus()?
            .into_iter()
            .map(|cpu| Ring::open(&watch_attr(pid >= 0), pid, cpu))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(MmapWatch {
            rings,
            exec_tracks: Vec::new(),
            only: None,
            follow: false,
            forks: Vec::new(),
            execs: Vec::new(),
            files: None,
            tracked_only: false,
        })
    }

    /// Watches a process that is already running (`--pid`): every CPU's records, of which
    /// only those of the processes whose execs are logged (`track_execs`: the target, and
    /// with `follow_forks` the processes it starts) are passed on. Not a task's inherited
    /// event: that sees only the task it is opened on and the tasks started after, so the
    /// forks, execs and mappings of the target's other threads, started before alloctrace,
    /// would be missed.
    pub fn open_running() -> io::Result<MmapWatch> {
        let mut w = MmapWatch::open(None)?;
        w.tracked_only = true;
        Ok(w)
    }

    /// From now on, keeps every file mapping recorded, with its time, for `take_files`
    /// (system-wide mode probes each new allocator file as it appears).
    pub fn collect_files(&mut self) {
        self.files = Some(Vec::new());
    }

    /// The file mappings recorded since the last call, as (time, pid, mapping).
    pub fn take_files(&mut self) -> Vec<(u64, u32, Mapping)> {
        self.files.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Passes on the mappings of `pid` only, not those of the processes it starts (which the
    /// watch sees too): nothing else is traced, and a target that forks all day would
    /// otherwise have every child's mappings held.
    pub fn only(&mut self, pid: u32) {
        self.only = Some(pid);
    }

    /// From now on, logs the execs of `pid` (and its new program's first mapping); returns
    /// the log, filled as the watch is drained.
    pub fn track_execs(&mut self, pid: u32) -> Arc<Mutex<ExecLog>> {
        let log = Arc::new(Mutex::new(ExecLog::default()));
        self.exec_tracks.push(ExecTrack {
            pid,
            log: log.clone(),
        });
        log
    }

    /// From now on, every process started by one whose execs are logged has its execs logged
    /// too, from the moment of its fork record (before any exec of its own can be read).
    pub fn follow_forks(&mut self) {
        self.follow = true;
    }

    /// The processes started by logged ones since the last call (see `Forked`).
    pub fn take_forks(&mut self) -> Vec<Forked> {
        std::mem::take(&mut self.forks)
    }

    /// The logged processes that executed a program since the last call.
    pub fn take_execs(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.execs)
    }

    /// The descriptors to poll for `POLLIN` (records waiting) or `POLLHUP` (the watched
    /// task exited: nothing more will come on that one).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.rings.iter().map(Ring::fd)
    }

    /// Every record written since the last call, grouped by process, in the order the kernel
    /// wrote them (per CPU; a process's mmaps run on one CPU at a time, so in practice in order).
    pub fn drain(&mut self) -> HashMap<u32, Vec<Mapping>> {
        let mut records: Vec<(u64, Record)> = Vec::new();
        for ring in &mut self.rings {
            ring.read(|rec| {
                if let Some(r) = parse_record(rec) {
                    records.push((record_time(rec).unwrap_or(0), r));
                }
            });
        }
        // Stable: records without a time keep their ring's order.
        records.sort_by_key(|(t, _)| *t);
        let mut by_pid: HashMap<u32, Vec<Mapping>> = HashMap::new();
        for (time, rec) in records {
            for track in &self.exec_tracks {
                track.note(time, &rec);
            }
            match rec {
                Record::Fork { pid, ppid } => {
                    if !self.exec_tracks.iter().any(|t| t.pid == ppid) {
                        continue;
                    }
                    let log = self.follow.then(|| self.track_execs(pid));
                    self.forks.push(Forked {
                        pid,
                        ppid,
                        time,
                        log,
                    });
                }
                Record::Mmap { pid, .. } if self.only.is_some_and(|o| o != pid) => {}
                Record::Mmap { pid, .. }
                    if self.tracked_only && !self.exec_tracks.iter().any(|t| t.pid == pid) => {}
                Record::Mmap { pid, mapping } => {
                    if let Some(files) = self.files.as_mut().filter(|_| mapping.is_file()) {
                        files.push((time, pid, mapping.clone()));
                    }
                    by_pid.entry(pid).or_default().push(mapping)
                }
                Record::Lost(n) => {
                    log::warn!(
                        "mmap watch: the kernel dropped {n} mapping records; some frames may \
                         print as bare addresses"
                    );
                }
                Record::Exec { pid, .. } => {
                    if self.exec_tracks.iter().any(|t| t.pid == pid) {
                        self.execs.push(pid);
                    }
                }
            }
        }
        by_pid
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The time a record was written (the `sample_id` trailer `sample_id_all` with only
/// PERF_SAMPLE_TIME appends: its last 8 bytes).
fn record_time(rec: &[u8]) -> Option<u64> {
    let size = (u16::from_ne_bytes(rec.get(6..8)?.try_into().ok()?) as usize).min(rec.len());
    u64_at(rec, size.checked_sub(8)?)
}

/// Decodes one record (header included). Mappings that are neither file-backed nor the vDSO
/// come back as `None`, as do record types of no interest.
pub fn parse_record(rec: &[u8]) -> Option<Record> {
    let ty = u32_at(rec, 0)?;
    let misc = u16::from_ne_bytes(rec.get(4..6)?.try_into().ok()?);
    let size = (u16::from_ne_bytes(rec.get(6..8)?.try_into().ok()?) as usize).min(rec.len());
    let rec = &rec[..size];
    match ty {
        PERF_RECORD_LOST => Some(Record::Lost(u64_at(rec, 16)?)),
        PERF_RECORD_FORK => {
            // header(8) pid ppid tid ptid time
            let (pid, ppid) = (u32_at(rec, 8)?, u32_at(rec, 12)?);
            (pid != ppid).then_some(Record::Fork { pid, ppid })
        }
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => {
            // header(8) pid tid comm (NUL-terminated)
            let pid = u32_at(rec, 8)?;
            let raw = rec.get(16..)?;
            let comm = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            Some(Record::Exec {
                pid,
                comm: String::from_utf8_lossy(comm).into_owned(),
            })
        }
        PERF_RECORD_MMAP | PERF_RECORD_MMAP2 => {
            // header(8) pid tid addr len pgoff
            let pid = u32_at(rec, 8)?;
            let (addr, len, pgoff) = (u64_at(rec, 16)?, u64_at(rec, 24)?, u64_at(rec, 32)?);
            let (ids, name_at) = if ty == PERF_RECORD_MMAP2 {
                // maj min ino ino_generation (or a build id in their place), prot flags
                let ids = (misc & PERF_RECORD_MISC_MMAP_BUILD_ID == 0).then(|| {
                    let (maj, min) = (u32_at(rec, 40)?, u32_at(rec, 44)?);
                    Some((libc::makedev(maj, min), u64_at(rec, 48)?))
                });
                let prot = u32_at(rec, 64)?;
                if prot & libc::PROT_EXEC as u32 == 0 {
                    return None;
                }
                (ids.flatten(), 72)
            } else {
                (None, 40)
            };
            let raw = rec.get(name_at..)?;
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            let name = String::from_utf8_lossy(name);
            let (path, deleted) = match name.strip_suffix(" (deleted)") {
                Some(p) => (p.to_owned(), true),
                None => (name.into_owned(), false),
            };
            if !((path.starts_with('/') && !path.starts_with("//")) || path == "[vdso]") {
                return None;
            }
            let (dev, inode) = match ids {
                Some(ids) => ids,
                None if path.starts_with('/') => stat_ids(pid, &path)?,
                None => (0, 0),
            };
            Some(Record::Mmap {
                pid,
                mapping: Mapping {
                    start: addr,
                    end: addr.checked_add(len)?,
                    file_offset: pgoff,
                    dev,
                    inode,
                    path,
                    deleted,
                },
            })
        }
        _ => None,
    }
}

/// (device, inode) of `path` as process `pid` sees it, for records that do not carry them.
fn stat_ids(pid: u32, path: &str) -> Option<(u64, u64)> {
    let md = File::open(format!("/proc/{pid}/root{path}"))
        .or_else(|_| File::open(path))
        .and_then(|f| f.metadata())
        .ok()?;
    Some((md.dev(), md.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::perf::read_records;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn mmap2(pid: u32, addr: u64, len: u64, pgoff: u64, prot: u32, name: &str) -> Vec<u8> {
        let mut name = name.as_bytes().to_vec();
        name.push(0);
        name.resize(name.len().next_multiple_of(8), 0);
        let size = 72 + name.len();
        let mut b = Vec::new();
        b.extend(PERF_RECORD_MMAP2.to_ne_bytes());
        b.extend(0u16.to_ne_bytes());
        b.extend((size as u16).to_ne_bytes());
        b.extend(pid.to_ne_bytes());
        b.extend((pid + 1).to_ne_bytes()); // tid
        b.extend(addr.to_ne_bytes());
        b.extend(len.to_ne_bytes());
        b.extend(pgoff.to_ne_bytes());
        b.extend(0xfeu32.to_ne_bytes()); // maj
        b.extend(1u32.to_ne_bytes()); // min
        b.extend(4242u64.to_ne_bytes()); // ino
        b.extend(7u64.to_ne_bytes()); // ino_generation
        b.extend(prot.to_ne_bytes());
        b.extend(2u32.to_ne_bytes()); // MAP_PRIVATE
        b.extend(name);
        assert_eq!(b.len(), size);
        b
    }

    const RX: u32 = (libc::PROT_READ | libc::PROT_EXEC) as u32;

    #[test]
    fn parses_mmap2() {
        let r = parse_record(&mmap2(9, 0x7000, 0x3000, 0x1000, RX, "/usr/lib/libx.so")).unwrap();
        assert_eq!(
            r,
            Record::Mmap {
                pid: 9,
                mapping: Mapping {
                    start: 0x7000,
                    end: 0xa000,
                    file_offset: 0x1000,
                    dev: libc::makedev(0xfe, 1),
                    inode: 4242,
                    path: "/usr/lib/libx.so".into(),
                    deleted: false,
                }
            }
        );
        let Some(Record::Mmap { mapping, .. }) =
            parse_record(&mmap2(9, 0x7000, 0x1000, 0, RX, "/tmp/a b (deleted)"))
        else {
            panic!()
        };
        assert_eq!((mapping.path.as_str(), mapping.deleted), ("/tmp/a b", true));
        let vdso = parse_record(&mmap2(9, 0x7000, 0x1000, 0, RX, "[vdso]")).unwrap();
        assert!(matches!(vdso, Record::Mmap { mapping, .. } if mapping.path == "[vdso]"));
    }

    #[test]
    fn skips_anonymous_non_executable_and_truncated_records() {
        assert_eq!(
            parse_record(&mmap2(9, 0x7000, 0x1000, 0, RX, "//anon")),
            None
        );
        let ro = libc::PROT_READ as u32;
        assert_eq!(
            parse_record(&mmap2(9, 0x7000, 0x1000, 0, ro, "/lib/x.so")),
            None
        );
        let full = mmap2(9, 0x7000, 0x1000, 0, RX, "/lib/x.so");
        assert_eq!(parse_record(&full[..40]), None);
        assert_eq!(parse_record(&[]), None);
        // An overflowing range.
        assert_eq!(
            parse_record(&mmap2(9, u64::MAX - 1, 0x1000, 0, RX, "/x")),
            None
        );
    }

    #[test]
    fn build_id_variant_falls_back_to_stat() {
        let mut r = mmap2(9, 0x7000, 0x1000, 0, RX, "/proc/self/exe-does-not-exist");
        r[4..6].copy_from_slice(&PERF_RECORD_MISC_MMAP_BUILD_ID.to_ne_bytes());
        assert_eq!(parse_record(&r), None, "no ids and no file to stat");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut r = mmap2(
            std::process::id(),
            0x7000,
            0x1000,
            0,
            RX,
            exe.to_str().unwrap(),
        );
        r[4..6].copy_from_slice(&PERF_RECORD_MISC_MMAP_BUILD_ID.to_ne_bytes());
        let Some(Record::Mmap { mapping, .. }) = parse_record(&r) else {
            panic!()
        };
        let md = std::fs::metadata(&exe).unwrap();
        assert_eq!((mapping.dev, mapping.inode), (md.dev(), md.ino()));
    }

    #[test]
    fn parses_lost_and_ignores_other_types() {
        let mut b = Vec::new();
        b.extend(PERF_RECORD_LOST.to_ne_bytes());
        b.extend(0u16.to_ne_bytes());
        b.extend(24u16.to_ne_bytes());
        b.extend(1u64.to_ne_bytes()); // id
        b.extend(5u64.to_ne_bytes());
        assert_eq!(parse_record(&b), Some(Record::Lost(5)));
        b[0..4].copy_from_slice(&3u32.to_ne_bytes()); // PERF_RECORD_COMM
        assert_eq!(parse_record(&b), None);
    }

    fn fork(pid: u32, ppid: u32, tid: u32, ptid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(PERF_RECORD_FORK.to_ne_bytes());
        b.extend(0u16.to_ne_bytes());
        b.extend(40u16.to_ne_bytes());
        for v in [pid, ppid, tid, ptid] {
            b.extend(v.to_ne_bytes());
        }
        b.extend(7u64.to_ne_bytes()); // time
        b.extend(7u64.to_ne_bytes()); // sample_id_all: time
        b
    }

    #[test]
    fn parses_process_forks_not_new_threads() {
        assert_eq!(
            parse_record(&fork(20, 10, 20, 10)),
            Some(Record::Fork { pid: 20, ppid: 10 })
        );
        // A thread of process 10 (started by its thread 11) starting a process.
        assert_eq!(
            parse_record(&fork(21, 10, 21, 11)),
            Some(Record::Fork { pid: 21, ppid: 10 })
        );
        assert_eq!(parse_record(&fork(10, 10, 12, 10)), None, "a new thread");
        assert_eq!(parse_record(&fork(20, 10, 20, 10)[..12]), None);
    }

    fn comm_exec(pid: u32, comm: &str, time: u64) -> Vec<u8> {
        let mut name = comm.as_bytes().to_vec();
        name.push(0);
        name.resize(name.len().next_multiple_of(8), 0);
        let size = 16 + name.len() + 8;
        let mut b = Vec::new();
        b.extend(PERF_RECORD_COMM.to_ne_bytes());
        b.extend(PERF_RECORD_MISC_COMM_EXEC.to_ne_bytes());
        b.extend((size as u16).to_ne_bytes());
        b.extend(pid.to_ne_bytes());
        b.extend(pid.to_ne_bytes());
        b.extend(name);
        b.extend(time.to_ne_bytes());
        b
    }

    #[test]
    fn parses_exec_and_record_times() {
        let r = comm_exec(9, "static_wait", 12345);
        assert_eq!(
            parse_record(&r),
            Some(Record::Exec {
                pid: 9,
                comm: "static_wait".into()
            })
        );
        assert_eq!(record_time(&r), Some(12345));
        let mut plain = r.clone();
        plain[4..6].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(
            parse_record(&plain),
            None,
            "a rename (prctl) is not an exec"
        );
    }

    #[test]
    fn exec_log_places_mappings_by_time() {
        let track = ExecTrack {
            pid: 9,
            log: Arc::default(),
        };
        let map = |path: &str| {
            let Some(Record::Mmap { mapping, .. }) =
                parse_record(&mmap2(9, 0x7000, 0x1000, 0, RX, path))
            else {
                panic!()
            };
            Record::Mmap { pid: 9, mapping }
        };
        let libc_map = map("/lib/libc.so.6");
        let other = |path: &str| match map(path) {
            Record::Mmap { pid, mut mapping } => {
                mapping.inode = 1;
                Record::Mmap { pid, mapping }
            }
            r => r,
        };
        track.note(
            10,
            &Record::Exec {
                pid: 9,
                comm: "sh".into(),
            },
        );
        track.note(11, &other("/bin/sh"));
        track.note(13, &libc_map);
        track.note(
            30,
            &Record::Exec {
                pid: 9,
                comm: "static".into(),
            },
        );
        // Read late from another CPU's ring: still the first program's.
        track.note(12, &other("/lib/ld.so"));
        track.note(31, &other("/tmp/static"));
        track.note(
            32,
            &Record::Exec {
                pid: 8,
                comm: "other".into(),
            },
        );
        let log = track.log.lock().unwrap().clone();
        let execs: Vec<_> = log
            .execs
            .iter()
            .map(|e| (e.time, e.comm.as_str(), e.exe.as_deref()))
            .collect();
        assert_eq!(
            execs,
            [
                (10, "sh", Some("/bin/sh")),
                (30, "static", Some("/tmp/static"))
            ]
        );
    }

    /// Lays `records` into a ring of `size` bytes starting at byte counter `start`.
    fn ring_with(size: usize, start: u64, records: &[Vec<u8>]) -> (Vec<u8>, u64) {
        let mut data = vec![0xAAu8; size];
        let mut pos = start;
        for r in records {
            for &b in r {
                data[(pos % size as u64) as usize] = b;
                pos += 1;
            }
        }
        (data, pos)
    }

    fn collect(data: &[u8], tail: u64, head: u64) -> (Vec<Record>, u64) {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let t = read_records(data, tail, head, &mut scratch, &mut |r| {
            got.push(parse_record(r).expect("a record"))
        });
        (got, t)
    }

    #[test]
    fn reads_records_wrapping_around_the_ring_end() {
        let a = mmap2(1, 0x1000, 0x1000, 0, RX, "/a");
        let b = mmap2(2, 0x2000, 0x1000, 0, RX, "/some/longer/library/path.so");
        let c = mmap2(3, 0x3000, 0x1000, 0, RX, "/c");
        let size = 512;
        // `b` starts 40 bytes before the end: its header and body wrap; the counters are
        // far past the ring size, as after a long run.
        let start = 10 * size as u64 + (size - a.len() - 40) as u64;
        let (data, head) = ring_with(size, start, &[a.clone(), b.clone(), c.clone()]);
        let (got, tail) = collect(&data, start, head);
        assert_eq!(tail, head);
        let pids: Vec<u32> = got
            .iter()
            .map(|r| match r {
                Record::Mmap { pid, .. } => *pid,
                Record::Lost(_) | Record::Exec { .. } | Record::Fork { .. } => 0,
            })
            .collect();
        assert_eq!(pids, [1, 2, 3]);
        assert_eq!(got[1], parse_record(&b).unwrap());

        // A header split by the end of the ring.
        let start = 3 * size as u64 + (size - 4) as u64;
        let (data, head) = ring_with(size, start, std::slice::from_ref(&c));
        assert_eq!(collect(&data, start, head).0, [parse_record(&c).unwrap()]);
    }

    #[test]
    fn partial_record_is_left_for_later() {
        let a = mmap2(1, 0x1000, 0x1000, 0, RX, "/a");
        let (data, head) = ring_with(256, 0, std::slice::from_ref(&a));
        // The kernel never publishes half a record; a corrupt length is skipped, not read.
        let (got, tail) = collect(&data, 0, head - 8);
        assert!(got.is_empty());
        assert_eq!(tail, head - 8);
        let (got, tail) = collect(&data, 0, 0);
        assert!(got.is_empty());
        assert_eq!(tail, 0);
    }

    /// A launched command's exec and library mappings arrive as records, even though the
    /// command has exited (and been reaped) before anything reads them. Needs root (or
    /// CAP_PERFMON), as alloctrace itself does.
    #[test]
    fn records_mappings_of_a_held_child_across_its_exec() {
        let mut h = crate::target::launch::hold(Path::new("/bin/true"), &["true".into()]).unwrap();
        let mut w = MmapWatch::open(Some(h.pid)).unwrap_or_else(|e| {
            panic!("perf_event_open on a child failed (alloctrace needs root): {e}")
        });
        h.release().unwrap();
        assert_eq!(h.reap(), 0);
        let mut all: HashMap<u32, Vec<Mapping>> = HashMap::new();
        let started = Instant::now();
        loop {
            for (pid, ms) in w.drain() {
                all.entry(pid).or_default().extend(ms);
            }
            let maps = all.get(&h.pid).map(Vec::as_slice).unwrap_or_default();
            let has = |f: &dyn Fn(&Mapping) -> bool| maps.iter().any(f);
            let exe = std::fs::canonicalize("/bin/true").unwrap();
            if has(&|m| {
                Path::new(&m.path) == exe || m.path == "/bin/true" || m.path == "/usr/bin/true"
            }) && has(&|m| m.path.contains("libc.so"))
                && has(&|m| m.path.contains("ld-linux") || m.path.contains("/ld-"))
            {
                let libc = maps.iter().find(|m| m.path.contains("libc.so")).unwrap();
                let md = std::fs::metadata(&libc.path).unwrap();
                assert_eq!((libc.dev, libc.inode), (md.dev(), md.ino()), "{libc:?}");
                assert!(libc.end > libc.start && libc.file_offset > 0, "{libc:?}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "records of {}: {maps:#?}",
                h.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
