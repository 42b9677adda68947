//! Snapshots of a process's executable file mappings, taken while it lives, so its stacks
//! still symbolize after it exits, after a binary is deleted or replaced on disk, and when
//! it lives in another mount namespace.
//!
//! `/proc/PID/maps` gives the ranges; for each distinct binary (device, inode) an open
//! [`File`] is held — opened through `/proc/PID/map_files/START-END` (root only; resolves in
//! the process's own mount namespace and survives deletion), else `/proc/PID/root/PATH`, else
//! `PATH` — and symbolizers read it by the path `/proc/self/fd/N`.
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

/// How a binary is identified across processes: (device, inode) as `/proc/PID/maps` shows them.
pub type BinaryId = (u64, u64);

/// Every process now in /proc but alloctrace itself (never traced): system-wide mode's
/// start.
pub fn other_pids() -> impl Iterator<Item = u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&p| p != own)
}

/// One executable mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the file of the byte mapped at `start`.
    pub file_offset: u64,
    /// `libc::makedev(major, minor)` of the maps line's `MM:mm` field.
    pub dev: u64,
    pub inode: u64,
    /// The path as the process names it (without ` (deleted)`); `[vdso]` for the vDSO.
    pub path: String,
    /// The file was deleted (or replaced) on disk after it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// A file-backed mapping (as opposed to the vDSO).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    pub fn binary_id(&self) -> BinaryId {
        (self.dev, self.inode)
    }

    fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    fn overlaps(&self, o: &Mapping) -> bool {
        self.start < o.end && o.start < self.end
    }
}

/// The executable mappings of one process, sorted by address, non-overlapping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMaps {
    pub pid: u32,
    mappings: Vec<Mapping>,
}

// The symbolizer goes through MapsCache; `read` and `mappings` also fill the unwinder's
// code-mapping cache (`unwind::cfi::code_maps`).
#[cfg_attr(not(test), allow(dead_code))]
impl ProcessMaps {
    /// Reads `/proc/PID/maps` now. A process that has exited fails with `NotFound` (or `ESRCH`);
    /// a zombie reads as no mappings at all.
    pub fn read(pid: u32) -> io::Result<ProcessMaps> {
        let text = read_maps(pid)?;
        Ok(ProcessMaps::parse(pid, &text))
    }

    /// Parses the text of a maps file, keeping executable file-backed mappings and the vDSO.
    /// Lines that do not parse are skipped: the kernel's format is stable, and one odd line
    /// must not cost the whole process its symbols.
    pub fn parse(pid: u32, text: &str) -> ProcessMaps {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        ProcessMaps { pid, mappings }
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The mapping holding `addr`, and `addr`'s offset in that mapping's file.
    pub fn lookup(&self, addr: u64) -> Option<(&Mapping, u64)> {
        let i = self
            .mappings
            .partition_point(|m| m.start <= addr)
            .checked_sub(1)?;
        let m = &self.mappings[i];
        m.contains(addr)
            .then(|| (m, addr - m.start + m.file_offset))
    }

    /// Takes in mappings made in this order (as the kernel records them): each wins over
    /// the earlier ones it overlaps, whether already held or earlier in `newer`.
    fn merge_in_order(&mut self, newer: Vec<Mapping>) {
        let mut batch: Vec<Mapping> = Vec::with_capacity(newer.len());
        for m in newer {
            batch.retain(|old| !old.overlaps(&m));
            batch.push(m);
        }
        batch.sort_by_key(|m| m.start);
        self.merge(ProcessMaps {
            pid: self.pid,
            mappings: batch,
        });
    }

    /// Takes in a newer snapshot: its mappings win, and older ones it does not overlap stay
    /// (a library may have been unmapped since, but stacks recorded before still point in it).
    fn merge(&mut self, newer: ProcessMaps) {
        let mut kept: Vec<Mapping> = std::mem::take(&mut self.mappings)
            .into_iter()
            .filter(|old| !newer.mappings.iter().any(|n| n.overlaps(old)))
            .collect();
        kept.extend(newer.mappings);
        kept.sort_by_key(|m| m.start);
        self.mappings = kept;
    }
}

/// The text of `/proc/PID/maps`. A path is any bytes: those that are not UTF-8 read as U+FFFD
/// (the path is for display; the binary itself is opened through `map_files`), rather than
/// losing the whole process's maps.
fn read_maps(pid: u32) -> io::Result<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/maps"))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// One line of `/proc/PID/maps` that names something (a file, `[vdso]`, `[heap]`, ...): the one
/// parser of that format, on bytes (a path is any bytes but NUL and newline), used for the
/// symbolizer's mappings here and for finding the allocator's file and the executable a target
/// maps (`target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    /// `start-end` as printed: also the mapping's name in `/proc/PID/map_files`.
    pub range: &'a str,
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    /// Offset in the file of the byte mapped at `start`.
    pub file_offset: u64,
    /// `libc::makedev(major, minor)` of the `MM:mm` field.
    pub dev: u64,
    pub inode: u64,
    /// The path, bytes that may hold spaces, without ` (deleted)`.
    pub path: &'a [u8],
    /// The path ended in ` (deleted)`: the file was deleted (or replaced) on disk since.
    pub deleted: bool,
}

impl<'a> MapsLine<'a> {
    /// `start-end perms offset MM:mm inode   path`; None for anonymous mappings (no path) and
    /// lines that do not parse.
    pub fn parse(line: &'a [u8]) -> Option<MapsLine<'a>> {
        let mut rest = line;
        let mut field = || -> Option<&'a str> {
            let start = rest.iter().position(|&b| b != b' ')?;
            let s = &rest[start..];
            let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
            rest = &s[end..];
            std::str::from_utf8(&s[..end]).ok()
        };
        let range = field()?;
        let perms = field()?;
        let offset = field()?;
        let dev = field()?;
        let inode = field()?;
        let path = rest.trim_ascii_start();
        if path.is_empty() {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let (major, minor) = dev.split_once(':')?;
        let (path, deleted) = match path.strip_suffix(b" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        Some(MapsLine {
            range,
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            file_offset: u64::from_str_radix(offset, 16).ok()?,
            dev: libc::makedev(
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode: inode.parse().ok()?,
            path,
            deleted,
        })
    }

    /// Every line of a maps file that names something, in the file's order.
    pub fn all(maps: &'a [u8]) -> impl Iterator<Item = MapsLine<'a>> {
        maps.split(|&b| b == b'\n').filter_map(MapsLine::parse)
    }
}

/// An executable mapping of a file or the vDSO, from a maps line; `path` may hold spaces and end
/// in ` (deleted)`.
fn parse_line(line: &str) -> Option<Mapping> {
    let l = MapsLine::parse(line.as_bytes())?;
    if !l.perms.contains('x') || !(l.path.starts_with(b"/") || l.path == b"[vdso]") {
        return None;
    }
    Some(Mapping {
        start: l.start,
        end: l.end,
        file_offset: l.file_offset,
        dev: l.dev,
        inode: l.inode,
        path: String::from_utf8_lossy(l.path).into_owned(),
        deleted: l.deleted,
    })
}

/// A binary held open so it can be read after its process exits or its path changes.
#[derive(Debug)]
pub struct Binary {
    file: File,
    /// The path the first process to map it named it by, for display.
    name: String,
}

impl Binary {
    /// `/proc/self/fd/N` of the held file: a path any path-based reader (blazesym) can open.
    pub fn read_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

struct Snapshot {
    maps: ProcessMaps,
    /// Hash of the last maps text read, to skip re-parsing an unchanged file.
    text_hash: u64,
    /// When `/proc/PID/maps` was last read; `None` while all we know comes from mmap records.
    refreshed: Option<Instant>,
}

/// pid -> last snapshot of its mappings, and (dev, inode) -> held binary.
#[derive(Default)]
pub struct MapsCache {
    procs: HashMap<u32, Snapshot>,
    binaries: HashMap<BinaryId, Binary>,
}

impl MapsCache {
    pub fn new() -> MapsCache {
        MapsCache::default()
    }

    /// Re-reads `pid`'s maps if it lives, merges them into its snapshot and opens binaries not
    /// yet held. A process that is gone (or a zombie) keeps its last snapshot. Returns whether
    /// the process's maps could be read.
    pub fn refresh(&mut self, pid: u32) -> bool {
        let Ok(text) = read_maps(pid) else {
            return false;
        };
        if text.is_empty() {
            // A zombie: its memory is gone already.
            return false;
        }
        let text_hash = {
            let mut h = DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        };
        let now = Instant::now();
        if let Some(s) = self.procs.get_mut(&pid) {
            if s.refreshed.is_some() && s.text_hash == text_hash {
                s.refreshed = Some(now);
                self.open_missing(pid);
                return true;
            }
        }
        let newer = ProcessMaps::parse(pid, &text);
        match self.procs.get_mut(&pid) {
            Some(s) => {
                s.maps.merge(newer);
                s.text_hash = text_hash;
                s.refreshed = Some(now);
            }
            None => {
                self.procs.insert(
                    pid,
                    Snapshot {
                        maps: newer,
                        text_hash,
                        refreshed: Some(now),
                    },
                );
            }
        }
        self.open_missing(pid);
        true
    }

    /// Takes in mappings `pid` was seen to make (mmap records, in the order made): they win
    /// over the known mappings they overlap, as a refresh's do, and their binaries are opened
    /// (through `pid`'s `map_files` while it lives). Does not count as a refresh: a process
    /// known only this way still has its maps read when it is next looked at.
    pub fn add_mappings(&mut self, pid: u32, mappings: Vec<Mapping>) {
        if mappings.is_empty() {
            return;
        }
        self.procs
            .entry(pid)
            .or_insert_with(|| Snapshot {
                maps: ProcessMaps {
                    pid,
                    mappings: Vec::new(),
                },
                text_hash: 0,
                refreshed: None,
            })
            .maps
            .merge_in_order(mappings);
        self.open_missing(pid);
    }

    /// Opens every binary `pid` maps that is not held yet (retrying earlier failures).
    fn open_missing(&mut self, pid: u32) {
        let Some(s) = self.procs.get(&pid) else {
            return;
        };
        for m in s.maps.mappings.iter().filter(|m| m.is_file()) {
            if self.binaries.contains_key(&m.binary_id()) {
                continue;
            }
            if let Some(file) = open_binary(pid, m) {
                self.binaries.insert(
                    m.binary_id(),
                    Binary {
                        file,
                        name: m.path.clone(),
                    },
                );
            }
        }
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessMaps> {
        self.procs.get(&pid).map(|s| &s.maps)
    }

    /// When `pid`'s maps were last read successfully (`None`: never, though mmap records may
    /// have told us its mappings).
    pub fn refreshed_at(&self, pid: u32) -> Option<Instant> {
        self.procs.get(&pid).and_then(|s| s.refreshed)
    }

    /// The mapping of `pid` holding `addr` and `addr`'s file offset in it.
    pub fn lookup(&self, pid: u32, addr: u64) -> Option<(&Mapping, u64)> {
        self.get(pid)?.lookup(addr)
    }

    /// The held file of a binary, if it could be opened.
    pub fn binary(&self, id: BinaryId) -> Option<&Binary> {
        self.binaries.get(&id)
    }

    /// Drops `pid`'s snapshot and returns the binaries no remaining process maps (the caller
    /// evicts what it derived from them, then drops them to close the files).
    pub fn forget(&mut self, pid: u32) -> Vec<(BinaryId, Binary)> {
        if self.procs.remove(&pid).is_none() {
            return Vec::new();
        }
        let mut unused: Vec<BinaryId> = self.binaries.keys().copied().collect();
        unused.retain(|id| {
            !self
                .procs
                .values()
                .any(|s| s.maps.mappings.iter().any(|m| m.binary_id() == *id))
        });
        unused
            .into_iter()
            .filter_map(|id| self.binaries.remove_entry(&id))
            .collect()
    }
}

/// Opens the file behind `m` as `pid` sees it. A deleted file is only opened through
/// `map_files`: by path we would get whatever replaced it, and symbolize against the wrong binary.
fn open_binary(pid: u32, m: &Mapping) -> Option<File> {
    if let Ok(f) = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)) {
        return Some(f);
    }
    if m.deleted {
        return None;
    }
    File::open(format!("/proc/{pid}/root{}", m.path))
        .or_else(|_| File::open(&m.path))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00651000-00652000 r--p 00051000 08:02 173521      /usr/bin/dbus-daemon
55d7c0a00000-55d7c0a21000 rw-p 00000000 00:00 0                          [heap]
7f1a2b000000-7f1a2b026000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2b026000-7f1a2b17c000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2b200000-7f1a2b201000 r-xp 00001000 fe:00 99                         /opt/my app/lib with spaces.so
7f1a2b300000-7f1a2b310000 r-xp 00002000 fe:00 1234                       /tmp/old binary (deleted)
7f1a2b400000-7f1a2b401000 rwxp 00000000 00:00 0 
7f1a2b500000-7f1a2b501000 r-xp 00000000 00:00 0                          [vdso]
7ffc0a000000-7ffc0a021000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_executable_file_mappings_and_vdso() {
        let pm = ProcessMaps::parse(42, MAPS);
        let got: Vec<(&str, bool)> = pm
            .mappings()
            .iter()
            .map(|m| (m.path.as_str(), m.deleted))
            .collect();
        assert_eq!(
            got,
            [
                ("/usr/bin/dbus-daemon", false),
                ("/usr/lib/x86_64-linux-gnu/libc.so.6", false),
                ("/opt/my app/lib with spaces.so", false),
                ("/tmp/old binary", true),
                ("[vdso]", false),
            ]
        );
        let libc = &pm.mappings()[1];
        assert_eq!(
            *libc,
            Mapping {
                start: 0x7f1a2b026000,
                end: 0x7f1a2b17c000,
                file_offset: 0x26000,
                dev: libc::makedev(0xfe, 0),
                inode: 326279,
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                deleted: false,
            }
        );
        assert_eq!(pm.mappings()[0].dev, libc::makedev(8, 2));
        assert!(!pm.mappings()[4].is_file());
    }

    #[test]
    fn lookup_gives_file_offset() {
        let pm = ProcessMaps::parse(42, MAPS);
        let (m, off) = pm.lookup(0x7f1a2b026000 + 0x1234).unwrap();
        assert_eq!(m.inode, 326279);
        assert_eq!(off, 0x26000 + 0x1234);
        assert_eq!(pm.lookup(0x00400000).unwrap().1, 0);
        assert!(pm.lookup(0x00452000).is_none(), "end is exclusive");
        assert!(pm.lookup(0x7f1a2b000010).is_none(), "not executable");
        assert!(pm.lookup(0x55d7c0a00010).is_none(), "anonymous");
        assert!(pm.lookup(0).is_none());
        assert!(pm.lookup(u64::MAX).is_none());
    }

    #[test]
    fn maps_lines_keep_path_bytes() {
        let line = b"7f00-7f10 r-xp 00001000 fe:01 42    /tmp/x\xff y/libc.so.6 (deleted)";
        let l = MapsLine::parse(line).unwrap();
        assert_eq!(
            (l.range, l.dev, l.inode),
            ("7f00-7f10", libc::makedev(0xfe, 1), 42)
        );
        assert_eq!((l.path, l.deleted), (&b"/tmp/x\xff y/libc.so.6"[..], true));
        assert_eq!(MapsLine::parse(b"7f00-7f10 rw-p 00000000 00:00 0 "), None);
    }

    #[test]
    fn skips_malformed_lines() {
        let pm = ProcessMaps::parse(1, "garbage\n\n1000-2000 r-xp\nzz-2000 r-xp 0 08:01 1 /x\n");
        assert!(pm.mappings().is_empty());
    }

    #[test]
    fn merge_keeps_unsuperseded_mappings() {
        let mut pm = ProcessMaps::parse(
            7,
            "1000-2000 r-xp 00000000 08:01 1 /a\n3000-4000 r-xp 00000000 08:01 2 /b\n",
        );
        // /b was dlclose'd and /c mapped over part of its range; /d is new.
        pm.merge(ProcessMaps::parse(
            7,
            "1000-2000 r-xp 00000000 08:01 1 /a\n3800-5000 r-xp 00000000 08:01 3 /c\n\
             6000-7000 r-xp 00000000 08:01 4 /d\n",
        ));
        let paths: Vec<&str> = pm.mappings().iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/c", "/d"]);
        pm.merge(ProcessMaps::parse(
            7,
            "8000-9000 r-xp 00000000 08:01 5 /e\n",
        ));
        let paths: Vec<&str> = pm.mappings().iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/c", "/d", "/e"]);
    }

    #[test]
    fn cache_holds_own_binaries_and_survives_forget_bookkeeping() {
        let pid = std::process::id();
        let mut cache = MapsCache::new();
        assert!(cache.refresh(pid));
        let here = cache_holds_own_binaries_and_survives_forget_bookkeeping as *const () as u64;
        let (m, _) = cache.lookup(pid, here).expect("own code is mapped");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(m.path, exe.to_str().unwrap());
        let bin = cache
            .binary(m.binary_id())
            .expect("own executable held open");
        assert_eq!(std::fs::read_link(bin.read_path()).unwrap(), exe);
        // Unchanged text: cheap path, same snapshot.
        let before = cache.get(pid).unwrap().clone();
        assert!(cache.refresh(pid));
        assert_eq!(cache.get(pid).unwrap(), &before);
        let dropped = cache.forget(pid);
        assert!(dropped
            .iter()
            .any(|(_, b)| b.name() == exe.to_str().unwrap()));
        assert!(cache.get(pid).is_none());
        assert!(cache.forget(pid).is_empty());
    }

    #[test]
    fn added_mappings_apply_in_order_and_count_as_known_not_refreshed() {
        let pid = u32::MAX - 3;
        let mut cache = MapsCache::new();
        let m = |start: u64, end: u64, inode: u64, path: &str| Mapping {
            start,
            end,
            file_offset: 0x1000,
            dev: libc::makedev(8, 1),
            inode,
            path: path.into(),
            deleted: false,
        };
        cache.add_mappings(pid, vec![]);
        assert!(cache.get(pid).is_none());
        // /a, then /b mapped over part of /a, then /c elsewhere.
        cache.add_mappings(
            pid,
            vec![
                m(0x1000, 0x3000, 1, "/a"),
                m(0x2000, 0x4000, 2, "/b"),
                m(0x8000, 0x9000, 3, "/c"),
            ],
        );
        let paths = |c: &MapsCache| -> Vec<String> {
            c.get(pid)
                .unwrap()
                .mappings()
                .iter()
                .map(|m| m.path.clone())
                .collect()
        };
        assert_eq!(paths(&cache), ["/b", "/c"]);
        assert_eq!(cache.lookup(pid, 0x2010).unwrap().1, 0x1010);
        assert!(cache.refreshed_at(pid).is_none(), "known, never read");
        // A later batch wins over what it overlaps.
        cache.add_mappings(pid, vec![m(0x8800, 0x9800, 4, "/d")]);
        assert_eq!(paths(&cache), ["/b", "/d"]);
        // Nonexistent paths: nothing held open, but the mappings still name the module.
        assert!(cache.binary((libc::makedev(8, 1), 4)).is_none());
        // Gone and never read: a refresh keeps what the records said.
        assert!(!cache.refresh(pid));
        assert_eq!(paths(&cache), ["/b", "/d"]);
    }

    #[test]
    fn refresh_of_missing_process_is_noop() {
        let mut cache = MapsCache::new();
        // Beyond the kernel's pid_max limit (4194304), so no such process.
        assert!(!cache.refresh(u32::MAX - 1));
        assert!(cache.get(u32::MAX - 1).is_none());
    }
}
