//! Turns `(pid, [return addresses])` into [`Frame`]s.
//!
//! blazesym's `Symbolizer` is neither Send nor Sync, so one long-lived instance runs on a
//! dedicated thread fed by a channel; [`Symbolizer`] is the (Send + Sync) handle to it. The
//! thread keeps a [`MapsCache`]: the mappings of every process it was told about (read from
//! `/proc/PID/maps`, or recorded by the kernel as they were made: `mmap_watch`), and an open
//! file per binary, so stacks of processes that have exited (or whose binaries were deleted,
//! or that live in another mount namespace) still symbolize. Each binary is symbolized by file
//! offset through `/proc/self/fd/N`, once per distinct offset.
mod go_fallback;
pub mod sites;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{evict, Input, Symbolized};

use crate::model::Frame;
use crate::process::procmaps::{BinaryId, Mapping, MapsCache};

/// A process's maps are re-read at most this often; a request inside the window is served
/// at its end, so a library mapped just before a new stack is still seen.
const REFRESH_EVERY: Duration = Duration::from_millis(5);

// Forget and BuildId are not wired yet: forgetting waits for system-wide retirement to
// symbolize a dead process's sites first, build ids for the pprof export (issue 4).
#[allow(dead_code)]
enum Request {
    Note(u32),
    /// As `Note`, then a reply once the snapshot is taken.
    NoteNow(u32, Sender<()>),
    AddMappings(u32, Vec<Mapping>),
    Forget(u32),
    Symbolize {
        pid: u32,
        addrs: Vec<u64>,
        reply: Sender<Vec<Frame>>,
    },
    BuildId {
        pid: u32,
        addr: u64,
        reply: Sender<Option<Vec<u8>>>,
    },
}

/// Handle to the symbolizer thread. Dropping it stops the thread.
pub struct Symbolizer {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Symbolizer {
    /// Starts the symbolizer thread. Should the thread fail to start, every frame comes back
    /// as a bare address (and a warning says why).
    pub fn new() -> Symbolizer {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("alloctrace-symbolize".into())
            .spawn(move || Worker::new().run(rx));
        match spawned {
            Ok(thread) => Symbolizer {
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!("cannot start the symbolizer thread, stacks stay unsymbolized: {e}");
                Symbolizer {
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    /// Asks for `pid`'s mappings to be snapshotted (or refreshed) now, while it lives.
    /// Never blocks; cheap to call for every new stack.
    pub fn note_process(&self, pid: u32) {
        self.send(Request::Note(pid));
    }

    /// Snapshots `pid`'s mappings and returns once it is taken: a --pid target's program
    /// may exec (and its earlier mappings vanish) as soon as it is told it is traced, before
    /// the thread would get to an asynchronous note.
    pub fn note_process_now(&self, pid: u32) {
        let (reply, rx) = mpsc::channel();
        self.send(Request::NoteNow(pid, reply));
        let _ = rx.recv();
    }

    /// Adds mappings `pid` was seen to create (mmap records, in the order made), so its
    /// stacks symbolize even if its maps are never read (it exits first); the binaries are
    /// held open. They win over known mappings they overlap. Never blocks.
    pub fn add_mappings(&self, pid: u32, mappings: Vec<Mapping>) {
        if !mappings.is_empty() {
            self.send(Request::AddMappings(pid, mappings));
        }
    }

    /// Drops what is held for `pid` (its mappings, and binaries no other process maps):
    /// its stacks no longer symbolize afterwards.
    pub fn forget_process(&self, pid: u32) {
        self.send(Request::Forget(pid));
    }

    /// One frame per address of `pid`, in order. Addresses are return addresses: each is
    /// looked up at `addr - 1` so a call ending its function resolves to that function.
    /// A frame without a symbol keeps its module and offset, or at least its address.
    pub fn symbolize(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        if addrs.is_empty() {
            return Vec::new();
        }
        let (reply, rx) = mpsc::channel();
        self.send(Request::Symbolize {
            pid,
            addrs: addrs.to_vec(),
            reply,
        });
        match rx.recv() {
            Ok(frames) if frames.len() == addrs.len() => frames,
            _ => addrs
                .iter()
                .map(|&addr| Frame {
                    addr,
                    ..Frame::default()
                })
                .collect(),
        }
    }

    /// The GNU build id of the binary `pid` maps at `addr`, if it has one.
    pub fn build_id(&self, pid: u32, addr: u64) -> Option<Vec<u8>> {
        let (reply, rx) = mpsc::channel();
        self.send(Request::BuildId { pid, addr, reply });
        rx.recv().ok().flatten()
    }

    fn send(&self, req: Request) {
        if let Some(tx) = &self.tx {
            // A dead thread drops the request's reply sender: the caller falls back.
            let _ = tx.send(req);
        }
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer::new()
    }
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a binary says about one file offset.
#[derive(Clone, Default)]
struct Resolved {
    function: Option<Arc<str>>,
    /// Offset of the real return address from the function's start.
    function_offset: u64,
    file: Option<Arc<str>>,
    line: Option<u32>,
}

struct Worker {
    maps: MapsCache,
    bz: blazesym::symbolize::Symbolizer,
    /// Per binary: file offset (of the return address) -> symbol.
    resolved: HashMap<BinaryId, HashMap<u64, Resolved>>,
    build_ids: HashMap<BinaryId, Option<Vec<u8>>>,
    /// Refreshes deferred by the rate limit: pid -> when it is due.
    pending: HashMap<u32, Instant>,
    /// Per binary blazesym could not name a frame of: its Go function table, if any.
    go: HashMap<BinaryId, Option<go_fallback::GoTable>>,
}

impl Worker {
    fn new() -> Worker {
        let bz = blazesym::symbolize::Symbolizer::builder()
            // blazesym hands every name of a binary without language information to the
            // demanglers, which read C's `a` as `signed char`: `display_name` demangles only
            // names that are mangled.
            .enable_demangling(false)
            .enable_code_info(true)
            // With inlined functions on, `code_info` is the line in the function `name` names
            // (the call site of what was inlined), not a line of some inlined callee.
            .enable_inlined_fns(true)
            .build();
        Worker {
            maps: MapsCache::new(),
            bz,
            resolved: HashMap::new(),
            build_ids: HashMap::new(),
            pending: HashMap::new(),
            go: HashMap::new(),
        }
    }

    fn run(mut self, rx: Receiver<Request>) {
        loop {
            let next = match self.pending.values().min() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            match next {
                Ok(req) => {
                    // One bad binary must not end symbolization for the whole run.
                    if catch_unwind(AssertUnwindSafe(|| self.handle(req))).is_err() {
                        log::warn!("symbolizer: a request panicked; continuing");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.run_due();
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Note(pid) => self.note(pid),
            Request::NoteNow(pid, reply) => {
                self.note(pid);
                let _ = reply.send(());
            }
            Request::AddMappings(pid, mappings) => self.maps.add_mappings(pid, mappings),
            Request::Forget(pid) => self.forget(pid),
            Request::Symbolize { pid, addrs, reply } => {
                let _ = reply.send(self.symbolize(pid, &addrs));
            }
            Request::BuildId { pid, addr, reply } => {
                let _ = reply.send(self.build_id(pid, addr));
            }
        }
    }

    fn note(&mut self, pid: u32) {
        match self.maps.refreshed_at(pid) {
            Some(t) if t.elapsed() < REFRESH_EVERY => {
                self.pending.entry(pid).or_insert(t + REFRESH_EVERY);
            }
            _ => self.refresh(pid),
        }
    }

    fn refresh(&mut self, pid: u32) {
        self.pending.remove(&pid);
        self.maps.refresh(pid);
    }

    fn run_due(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            self.refresh(pid);
        }
    }

    /// Refreshes `pid` first if nothing is known of it, a refresh is pending, or an address
    /// falls outside every known mapping (a library mapped since the last look).
    fn ensure_fresh(&mut self, pid: u32, addrs: &[u64]) {
        let stale = match self.maps.refreshed_at(pid) {
            None => true,
            Some(_) if self.pending.contains_key(&pid) => true,
            Some(t) => {
                t.elapsed() >= REFRESH_EVERY
                    && addrs.iter().any(|&a| self.maps.lookup(pid, a).is_none())
            }
        };
        if stale {
            self.refresh(pid);
        }
    }

    fn symbolize(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.ensure_fresh(pid, addrs);
        let mut todo: HashMap<BinaryId, Vec<u64>> = HashMap::new();
        for &a in addrs {
            let Some((m, off)) = self.maps.lookup(pid, a) else {
                continue;
            };
            let id = m.binary_id();
            let known = self.resolved.get(&id).is_some_and(|c| c.contains_key(&off));
            if m.is_file() && !known && self.maps.binary(id).is_some() {
                todo.entry(id).or_default().push(off);
            }
        }
        for (id, mut offs) in todo {
            offs.sort_unstable();
            offs.dedup();
            self.resolve(id, &offs);
        }
        addrs.iter().map(|&a| self.frame(pid, a)).collect()
    }

    /// Symbolizes `offs` (return-address file offsets) of one binary in one blazesym call.
    fn resolve(&mut self, id: BinaryId, offs: &[u64]) {
        let Some(bin) = self.maps.binary(id) else {
            return;
        };
        let src = Source::Elf(Elf::new(bin.read_path()));
        let lookup: Vec<u64> = offs.iter().map(|o| o.saturating_sub(1)).collect();
        let results = match self.bz.symbolize(&src, Input::FileOffset(&lookup)) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("cannot symbolize {}: {e:#}", bin.name());
                Vec::new()
            }
        };
        let cache = self.resolved.entry(id).or_default();
        for (i, (&off, &at)) in offs.iter().zip(&lookup).enumerate() {
            let r = match results.get(i) {
                Some(Symbolized::Sym(sym)) => Resolved {
                    function: Some(display_name(&sym.name).into()),
                    function_offset: sym.offset as u64 + (off - at),
                    file: sym
                        .code_info
                        .as_ref()
                        .map(|ci| ci.to_path().display().to_string().into()),
                    line: sym.code_info.as_ref().and_then(|ci| ci.line),
                },
                Some(Symbolized::Unknown(_)) | None => {
                    let go = self
                        .go
                        .entry(id)
                        .or_insert_with(|| go_fallback::GoTable::load(&bin.read_path()));
                    match go.as_ref().and_then(|t| t.lookup(at)) {
                        Some((name, from_entry)) => Resolved {
                            function: Some(name.into()),
                            function_offset: from_entry + (off - at),
                            ..Resolved::default()
                        },
                        None => Resolved::default(),
                    }
                }
            };
            cache.insert(off, r);
        }
    }

    fn frame(&self, pid: u32, addr: u64) -> Frame {
        let Some((m, off)) = self.maps.lookup(pid, addr) else {
            return Frame {
                addr,
                ..Frame::default()
            };
        };
        let r = self
            .resolved
            .get(&m.binary_id())
            .and_then(|c| c.get(&off))
            .filter(|_| m.is_file());
        let r = r.cloned().unwrap_or_default();
        Frame {
            addr,
            function: r.function,
            function_offset: r.function_offset,
            module: Some(m.path.as_str().into()),
            module_offset: off,
            file: r.file,
            line: r.line,
        }
    }

    fn build_id(&mut self, pid: u32, addr: u64) -> Option<Vec<u8>> {
        self.ensure_fresh(pid, &[addr]);
        let (m, _) = self.maps.lookup(pid, addr)?;
        let id = m.binary_id();
        if let Some(b) = self.build_ids.get(&id) {
            return b.clone();
        }
        let bin = self.maps.binary(id)?;
        let b = blazesym::helper::read_elf_build_id(&bin.read_path())
            .ok()
            .flatten()
            .map(|b| b.into_owned());
        self.build_ids.insert(id, b.clone());
        b
    }

    fn forget(&mut self, pid: u32) {
        self.pending.remove(&pid);
        for (id, bin) in self.maps.forget(pid) {
            self.resolved.remove(&id);
            self.build_ids.remove(&id);
            self.go.remove(&id);
            // Before the file closes: its fd number may be reused by another binary.
            let _ = self.bz.evict(&evict::Elf::new(bin.read_path()).into());
        }
    }
}

/// The name users know a symbol by: demangled if it is mangled (Rust's v0 `_R…` and legacy
/// `_ZN…17h<hash>E`, C++'s Itanium `_Z…`), else as it is. glibc's debug symbols name many
/// functions by their internal hidden alias `__GI_<name>` (`__GI___libc_malloc`); users know
/// them as `<name>`.
fn display_name(name: &str) -> String {
    if let Some(d) = demangle(name) {
        return d;
    }
    name.strip_prefix("__GI_")
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
        .to_owned()
}

/// `name` demangled, if it is a mangled name (by its prefix: a C name never starts with `_R`
/// or `_Z` followed by more, as those are reserved to the implementation).
fn demangle(name: &str) -> Option<String> {
    if !(name.starts_with("_Z") || name.starts_with("_R")) {
        return None;
    }
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        // `{:#}`: without the legacy scheme's hash.
        return Some(format!("{d:#}"));
    }
    if !name.starts_with("_Z") {
        return None;
    }
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|s| s.demangle().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function of the test binary itself, with a symbol and debug info.
    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn alloctrace_symbolize_test_target(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(31) ^ 7
    }

    fn own_exe() -> String {
        std::fs::read_link("/proc/self/exe")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn glibc_internal_aliases_lose_their_prefix() {
        assert_eq!(display_name("__GI___libc_malloc"), "__libc_malloc");
        assert_eq!(display_name("__GI_memcpy"), "memcpy");
        assert_eq!(display_name("__GI_"), "__GI_");
        assert_eq!(
            display_name("std::vec::Vec<T>::push"),
            "std::vec::Vec<T>::push"
        );
    }

    #[test]
    fn only_mangled_names_are_demangled() {
        // C names that are Itanium type codes, and other plain names.
        for plain in [
            "a",
            "h",
            "v",
            "i",
            "St",
            "main",
            "R",
            "_R",
            "_Z",
            "__libc_malloc",
        ] {
            assert_eq!(display_name(plain), plain);
        }
        assert_eq!(display_name("_Znwm"), "operator new(unsigned long)");
        assert_eq!(display_name("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(
            display_name("_ZN3std2rt10lang_start17h0123456789abcdefE"),
            "std::rt::lang_start"
        );
        assert_eq!(display_name("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
    }

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Symbolizer>();
    }

    #[test]
    fn symbolizes_own_function() {
        let sym = Symbolizer::new();
        let pid = std::process::id();
        let f = alloctrace_symbolize_test_target as *const () as u64;
        assert_eq!(alloctrace_symbolize_test_target(1), 31 ^ 7);
        // As if a call ended one byte into the function: the return address is f + 1.
        let frames = sym.symbolize(pid, &[f + 1, f + 1]);
        assert_eq!(frames.len(), 2);
        let fr = &frames[0];
        assert_eq!(fr.addr, f + 1);
        assert_eq!(
            fr.function.as_deref(),
            Some("alloctrace_symbolize_test_target"),
            "{fr:?}"
        );
        assert_eq!(fr.function_offset, 1);
        assert_eq!(fr.module.as_deref(), Some(own_exe().as_str()));
        assert!(
            fr.file
                .as_deref()
                .is_some_and(|f| f.ends_with("symbolize/mod.rs")),
            "{fr:?}"
        );
        assert!(fr.line.is_some(), "{fr:?}");
        assert_eq!(frames[1], frames[0]);
        // The file offset matches what the maps say.
        let (_, off) = crate::process::procmaps::ProcessMaps::read(pid)
            .unwrap()
            .lookup(f + 1)
            .unwrap();
        assert_eq!(fr.module_offset, off);
    }

    #[test]
    fn symbolizes_malloc_in_libc() {
        let sym = Symbolizer::new();
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) };
        assert!(!p.is_null());
        let addr = p as u64 + 1;
        let fr = &sym.symbolize(std::process::id(), &[addr])[0];
        let name = fr
            .function
            .as_deref()
            .unwrap_or_else(|| panic!("no name: {fr:?}"));
        // With glibc's debug symbols installed its internal alias `__GI___libc_malloc` comes
        // back (reported without the `__GI_`); without them, `malloc` or `__libc_malloc`.
        assert!(
            ["malloc", "__libc_malloc", "__malloc"].contains(&name),
            "{fr:?}"
        );
        assert_eq!(fr.function_offset, 1);
        assert!(
            fr.module.as_deref().is_some_and(|m| m.contains("libc.so")),
            "{fr:?}"
        );
    }

    #[test]
    fn mappings_from_records_alone_symbolize() {
        // A pid with no /proc entry (beyond pid_max): all that is known of it is what
        // `add_mappings` says, as for a command that exited before its maps were read.
        let pid = u32::MAX - 2;
        let f = alloctrace_symbolize_test_target as *const () as u64;
        let own = crate::process::procmaps::ProcessMaps::read(std::process::id()).unwrap();
        let (m, off) = own.lookup(f + 1).unwrap();
        let sym = Symbolizer::new();
        assert!(sym.symbolize(pid, &[f + 1])[0].module.is_none());
        // An earlier mapping at the same place, superseded by the later one.
        let stale = crate::process::procmaps::Mapping {
            path: "/nonexistent/old.so".into(),
            inode: 1,
            ..m.clone()
        };
        sym.add_mappings(pid, vec![stale, m.clone()]);
        let fr = &sym.symbolize(pid, &[f + 1])[0];
        assert_eq!(
            fr.function.as_deref(),
            Some("alloctrace_symbolize_test_target"),
            "{fr:?}"
        );
        assert_eq!(fr.module.as_deref(), Some(own_exe().as_str()));
        assert_eq!(fr.module_offset, off);
        assert!(sym.build_id(pid, f + 1).is_some());
    }

    #[test]
    fn unmapped_address_keeps_bare_address_and_order() {
        let sym = Symbolizer::new();
        let f = alloctrace_symbolize_test_target as *const () as u64;
        let frames = sym.symbolize(std::process::id(), &[0x10, f + 1, 0x20]);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[0],
            Frame {
                addr: 0x10,
                ..Frame::default()
            }
        );
        assert_eq!(frames[0].name(), "0x10");
        assert_eq!(
            frames[1].function.as_deref(),
            Some("alloctrace_symbolize_test_target")
        );
        assert_eq!(frames[2].addr, 0x20);
        assert!(frames[2].module.is_none());
        assert!(sym.symbolize(std::process::id(), &[]).is_empty());
        // A pid that never existed: bare addresses, not an error.
        let frames = sym.symbolize(u32::MAX - 1, &[f]);
        assert_eq!(
            frames,
            [Frame {
                addr: f,
                ..Frame::default()
            }]
        );
    }

    #[test]
    fn process_that_exited_and_deleted_binary_still_symbolize() {
        // A private copy of sleep, so it can be deleted while the process runs.
        let dir = std::env::temp_dir().join(format!("alloctrace-symtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("sleep copy");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let exe_s = exe.to_str().unwrap().to_owned();
        let mut child = None;
        for _ in 0..50 {
            // ETXTBSY while another test thread's fork still holds the copy's write fd.
            match std::process::Command::new(&exe).arg("10").spawn() {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("cannot run {exe_s}: {e}"),
            }
        }
        let mut child = child.expect("copy of sleep stayed busy");
        let pid = child.id();
        // spawn returns once exec has replaced the memory, possibly before the kernel has
        // mapped the new executable: wait for it.
        let started = Instant::now();
        let m = loop {
            let maps = crate::process::procmaps::ProcessMaps::read(pid).unwrap();
            if let Some(m) = maps.mappings().iter().find(|m| m.path == exe_s) {
                break m.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{exe_s} not in {maps:#?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let addr = m.start + 0x11;

        let sym = Symbolizer::new();
        sym.note_process(pid);
        let alive_id = sym.build_id(pid, addr); // blocking: the note was handled before it
        std::fs::remove_file(&exe).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

        sym.note_process(pid); // gone: keeps the snapshot
        let fr = &sym.symbolize(pid, &[addr])[0];
        assert_eq!(fr.module.as_deref(), Some(exe_s.as_str()), "{fr:?}");
        assert_eq!(fr.module_offset, 0x11 + m.file_offset);
        assert!(fr.name() != format!("{addr:#x}"), "{fr:?}");
        // The binary is still readable through the held file after exit and deletion.
        let dead_id = sym.build_id(pid, addr);
        assert!(dead_id.is_some(), "Debian's sleep has a build id");
        assert_eq!(dead_id, alive_id);

        sym.forget_process(pid);
        let fr = &sym.symbolize(pid, &[addr])[0];
        assert!(fr.module.is_none(), "forgotten: {fr:?}");
    }
}
