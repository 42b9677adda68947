//! Writing result files safely. alloctrace runs as root, often in directories other users can
//! write to (/tmp), so files are written to a fresh temporary name and renamed into place:
//! a reader never sees a half-written report and a planted symlink is never followed.
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The directory `path` lives in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// 64 bits from the kernel's CSPRNG (getrandom(2)), for temporary names nobody can predict.
/// Falls back to the clock and a counter if getrandom fails (it does not on Linux >= 3.17):
/// the O_EXCL|O_NOFOLLOW open below keeps even a predicted name safe, only not unblockable.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `v`, a valid, writable u64.
    let n = unsafe { libc::getrandom((&raw mut v).cast(), size_of::<u64>(), 0) };
    if n == size_of::<u64>() as isize {
        return v;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
}

/// The temporary name for `base` with random part `r`: a hidden file next to the target.
fn temp_name(base: &str, r: u64) -> String {
    format!(".{base}.alloctrace-{r:016x}.tmp")
}

/// Creates `tmp` as a new file (mode 0644 before the umask), never through a symlink:
/// O_CREAT|O_EXCL fails if anything exists at that name, a symlink included (even a dangling
/// one), and O_NOFOLLOW says the same thing again.
fn open_new(tmp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
}

/// Creates a new, empty file at an unpredictable name next to `path` (see [`open_new`]): a
/// name already taken — by chance, or by a symlink someone planted there — is never followed,
/// and another random name is tried.
fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    let dir = parent_dir(path);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let mut last_err = None;
    for _ in 0..100 {
        let tmp = dir.join(temp_name(&base, random_u64()));
        match open_new(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name")))
}

/// Replaces `path` with `bytes` atomically: written to a new temporary file in the same
/// directory, flushed to disk, then renamed over `path`. Readers see the old file or the
/// complete new one, never a partial write.
///
/// If `path` is a symlink, the rename replaces the link itself with a regular file; its
/// target is left untouched. That is deliberate: as root, writing through a link someone
/// else planted would let them overwrite any file on the system.
///
/// A FIFO or character device at `path`, or a link to one of alloctrace's own descriptors, is
/// written into instead ([`classify`]); a FIFO only once a reader opens it, and only while the
/// reader keeps reading ([`STREAM_WAIT`]).
///
/// The new file is owned by the caller (root under sudo) with mode 0644 (less the umask).
/// The error does not repeat `path` (the caller names the output); the temporary file is
/// removed on any failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Target::Into(fd, kind) = classify(path) {
        #[cfg(test)]
        tests::after_decision(path);
        return write_into(&fd, kind, bytes, STREAM_WAIT);
    }
    #[cfg(test)]
    tests::after_decision(path);
    let (tmp, mut file) = create_temp(path)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, path)
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; a failure here does not undo a completed write.
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How long a stream output may keep alloctrace waiting: for a FIFO's reader to open it, and
/// for any reader to take more bytes. A FIFO nobody reads must not hold alloctrace forever.
pub const STREAM_WAIT: Duration = Duration::from_secs(5);

/// What is at an output path, as the kernel answered for one descriptor of it.
enum Target {
    /// Nothing yet, a regular file, a symlink (never followed), or anything else: replaced by
    /// a new regular file ([`write_atomic`]'s temporary file and rename). Replacing a name
    /// only ever changes that directory entry, whatever it has become meanwhile.
    Replace,
    /// Written into, through this `O_PATH` descriptor: the very inode that was examined.
    Into(OwnedFd, Stream),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Fifo,
    /// A character device (`/dev/null`, a terminal), or whatever one of alloctrace's own
    /// descriptors is (a regular file `> out` redirected stdout to: appended to).
    Other,
}

/// Decides how to write `path` from one `open(O_PATH)` of it and an `fstat` of that
/// descriptor, never from a second lookup by name: a name checked and then opened again
/// could be swapped in between (a FIFO for a symlink to /etc/shadow), and root's report would
/// overwrite whatever the new name leads to. `O_PATH` opens nothing (no FIFO blocks, no device
/// driver runs); the write goes through `/proc/self/fd/N` of this descriptor, which reopens
/// the inode examined, not the name.
///
/// Only FIFOs and character devices are written into (renaming over `/dev/null` as root would
/// replace the device node), and the kernel's links to alloctrace's own descriptors
/// ([`is_descriptor_link`]), followed to whatever they are. Any other symlink is opened as
/// itself (`O_NOFOLLOW`) and replaced.
fn classify(path: &Path) -> Target {
    let follow = is_descriptor_link(path);
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Target::Replace;
    };
    let flags = libc::O_PATH | libc::O_CLOEXEC | if follow { 0 } else { libc::O_NOFOLLOW };
    // SAFETY: `c` is a valid NUL-terminated path; open returns a new descriptor or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        // Nothing there (or not reachable): the temporary file's creation says what is wrong.
        return Target::Replace;
    }
    // SAFETY: a descriptor open just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes a stat into the pointer it is given; an O_PATH descriptor may be
    // fstat'ed (Linux >= 3.6).
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Target::Replace;
    }
    // SAFETY: filled by the successful fstat above.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    match mode {
        libc::S_IFIFO => Target::Into(fd, Stream::Fifo),
        libc::S_IFCHR => Target::Into(fd, Stream::Other),
        _ if follow => Target::Into(fd, Stream::Other),
        _ => Target::Replace,
    }
}

/// Writes `bytes` into the stream `fd` (an `O_PATH` descriptor) refers to, reopened for
/// writing through `/proc/self/fd`, non-blocking: a FIFO without a reader is retried until
/// `wait` has passed, and a reader that takes nothing for `wait` ends the write. Both are
/// errors (`TimedOut`) that say so.
fn write_into(fd: &OwnedFd, kind: Stream, bytes: &[u8], wait: Duration) -> io::Result<()> {
    let reopen = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let open = || {
        OpenOptions::new()
            .write(true)
            // Appends to a regular file behind a descriptor link (stdout redirected with `>`
            // or `>>`) instead of overwriting what is already there; no effect on streams.
            .append(kind == Stream::Other)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&reopen)
    };
    let deadline = Instant::now() + wait;
    let mut file = loop {
        match open() {
            Ok(f) => break f,
            // A FIFO opened for writing without blocking fails with ENXIO while no reader has
            // it open.
            Err(e) if kind == Stream::Fifo && e.raw_os_error() == Some(libc::ENXIO) => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "it is a FIFO and no reader opened it within {} s",
                            wait.as_secs_f64()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        match file.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = wait.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "its reader took nothing for {} s ({} of {} bytes written)",
                            wait.as_secs_f64(),
                            bytes.len() - rest.len(),
                            bytes.len()
                        ),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The kernel's own links to a process's open descriptors: `/dev/stdout`, `/dev/stderr`,
/// `/dev/stdin`, `/dev/fd/N`, `/proc/self/fd/N`, `/proc/PID/fd/N` (and `thread-self`). Only
/// these symlinks are followed to a stream; any other — including one planted in a
/// world-writable directory under /dev, such as /dev/shm or /dev/mqueue, which could point at
/// /dev/mem — is replaced like every other symlink.
fn is_descriptor_link(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return false;
    };
    if matches!(s, "/dev/stdin" | "/dev/stdout" | "/dev/stderr") {
        return true;
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if let Some(n) = s.strip_prefix("/dev/fd/") {
        return digits(n);
    }
    let Some(rest) = s.strip_prefix("/proc/") else {
        return false;
    };
    match rest.split_once("/fd/") {
        Some((who, n)) => (who == "self" || who == "thread-self" || digits(who)) && digits(n),
        None => false,
    }
}

/// Checks before tracing starts that [`write_atomic`] will be able to write `path`: its
/// directory exists, is a directory, and accepts new files (a probe file is created and
/// removed), and `path` is not itself a directory. The error is one line naming the path.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if matches!(classify(path), Target::Into(..)) {
        return Ok(());
    }
    let dir = parent_dir(path);
    let cannot = |why: String| format!("cannot write {}: {why}", path.display());
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(cannot(format!("{} is not a directory", dir.display())))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(cannot(format!(
                "directory {} does not exist",
                dir.display()
            )))
        }
        Err(e) => return Err(cannot(format!("{}: {e}", dir.display()))),
    }
    if path.file_name().is_none() {
        return Err(cannot("not a file name".into()));
    }
    // symlink_metadata: a symlink at `path` is fine (it gets replaced); a directory is not.
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.is_dir() {
            return Err(cannot("is a directory".into()));
        }
    }
    let (tmp, file) = create_temp(path).map_err(|e| cannot(format!("{}: {e}", dir.display())))?;
    drop(file);
    let _ = fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::{symlink, PermissionsExt};

    type Hook = Box<dyn FnMut(&Path)>;
    thread_local! {
        /// Run by `write_atomic` right after it has decided how to write (the window a swap
        /// of the path would use); set by a test on its own thread.
        static AFTER_DECISION: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn after_decision(path: &Path) {
        AFTER_DECISION.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h(path)
            }
        });
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "alloctrace-output-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&p).expect("create test dir");
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A FIFO stands in for /dev/null and pipes: it must be written into, never replaced
    /// (a rename over /dev/null as root turns it into a regular file, as happened here once).
    #[test]
    fn fifo_is_written_into_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let d = TempDir::new("fifo");
        let fifo = d.0.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        check_writable(&fifo).unwrap();
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(
            fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
            "FIFO replaced"
        );
        assert_eq!(entries(&d.0), vec!["pipe"], "temporary files left behind");
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// The decision is made on the descriptor, not the name: the path is a FIFO when
    /// write_atomic looks, and is swapped for a symlink to a victim file right after (the hook
    /// runs in the window between the decision and the write). The bytes must reach the FIFO
    /// that was examined, and the victim stay untouched. Code that decides on `lstat` and
    /// then opens the name again follows the new symlink and overwrites the victim (checked
    /// against the code before this test: it failed there).
    #[test]
    fn a_swap_after_the_decision_is_not_followed() {
        let d = TempDir::new("swap");
        let fifo = d.0.join("out");
        mkfifo(&fifo);
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        // The reader holds the FIFO's inode open before the swap (non-blocking: no writer yet).
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let link = d.0.join("link");
        symlink(&victim, &link).unwrap();
        let (l, f) = (link.clone(), fifo.clone());
        AFTER_DECISION.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |_: &Path| fs::rename(&l, &f).unwrap()))
        });
        let r = write_atomic(&fifo, b"report");
        AFTER_DECISION.with(|h| *h.borrow_mut() = None);
        r.unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious",
            "written through the swap"
        );
        assert!(fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_symlink());
        let mut got = Vec::new();
        let _ = io::Read::read_to_end(&mut &reader, &mut got);
        assert_eq!(got, b"report");
    }

    /// A FIFO nobody opens for reading ends the write after the wait, with an error that says
    /// why, instead of blocking forever.
    #[test]
    fn a_fifo_without_reader_times_out() {
        let d = TempDir::new("noreader");
        let fifo = d.0.join("pipe");
        mkfifo(&fifo);
        let Target::Into(fd, kind) = classify(&fifo) else {
            panic!("a FIFO is written into")
        };
        assert_eq!(kind, Stream::Fifo);
        let t = Instant::now();
        let e = write_into(&fd, kind, b"x", Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("no reader opened it"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    /// A reader that opens the FIFO and then takes nothing ends the write after the wait too.
    #[test]
    fn a_reader_that_stops_reading_times_out() {
        let d = TempDir::new("stalled");
        let fifo = d.0.join("pipe");
        mkfifo(&fifo);
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let Target::Into(fd, kind) = classify(&fifo) else {
            panic!("a FIFO is written into")
        };
        let big = vec![b'x'; 1 << 20];
        let e = write_into(&fd, kind, &big, Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("took nothing"), "{e}");
    }

    /// A link to one of our own descriptors is written into whatever it is: a regular file
    /// (stdout redirected to a file) is appended to, not replaced or overwritten.
    #[test]
    fn a_descriptor_link_to_a_file_is_appended_to() {
        let d = TempDir::new("fdlink");
        let file = d.0.join("log");
        fs::write(&file, b"command output\n").unwrap();
        let f = OpenOptions::new().append(true).open(&file).unwrap();
        let link = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        check_writable(&link).unwrap();
        write_atomic(&link, b"report\n").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"command output\nreport\n");
        assert_eq!(entries(&d.0), vec!["log"]);
    }

    #[test]
    fn dev_null_stays_a_device() {
        use std::os::unix::fs::FileTypeExt;
        write_atomic(Path::new("/dev/null"), b"x").unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces() {
        let d = TempDir::new("replace");
        let path = d.0.join("report.txt");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        // No temporary file left behind.
        assert_eq!(entries(&d.0), vec!["report.txt"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
    }

    #[test]
    fn missing_directory_names_the_path() {
        let d = TempDir::new("missing");
        let path = d.0.join("nope").join("x.folded");
        let e = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = check_writable(&path).unwrap_err();
        assert_eq!(
            msg,
            format!(
                "cannot write {}: directory {} does not exist",
                path.display(),
                d.0.join("nope").display()
            )
        );
    }

    #[test]
    fn symlink_at_path_is_replaced_not_followed() {
        let d = TempDir::new("symlink");
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = d.0.join("out.json");
        symlink(&victim, &path).unwrap();
        check_writable(&path).unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(entries(&d.0), vec!["out.json", "victim"]);
    }

    /// A symlink planted at a temporary name is never followed: the open fails (the name is
    /// taken) and the link's target is untouched; write_atomic then picks another name.
    #[test]
    fn symlink_at_temp_name_is_not_followed() {
        let d = TempDir::new("tmplink");
        let victim = d.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = d.0.join(temp_name("out.json", 42));
        symlink(&victim, &tmp).unwrap();
        let e = open_new(&tmp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        // A dangling link too (O_CREAT alone would create its target).
        let dangling = d.0.join(temp_name("out.json", 43));
        symlink(d.0.join("created-through-link"), &dangling).unwrap();
        assert!(open_new(&dangling).is_err());
        assert!(!d.0.join("created-through-link").exists());
        write_atomic(&d.0.join("out.json"), b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(d.0.join("out.json")).unwrap(), b"{}");
        assert_eq!(entries(&d.0).len(), 4, "{:?}", entries(&d.0));
    }

    #[test]
    fn temp_names_are_unpredictable() {
        let a = temp_name("r.json", random_u64());
        let b = temp_name("r.json", random_u64());
        assert_ne!(a, b);
        assert!(
            a.starts_with(".r.json.alloctrace-") && a.ends_with(".tmp"),
            "{a}"
        );
    }

    /// Only links to alloctrace's own descriptors are followed to a stream; a link planted
    /// in a world-writable directory under /dev is replaced, whatever it points at.
    #[test]
    fn only_descriptor_links_are_followed() {
        for p in [
            "/dev/stdout",
            "/dev/stderr",
            "/dev/fd/1",
            "/proc/self/fd/2",
            "/proc/123/fd/4",
            "/proc/thread-self/fd/1",
        ] {
            assert!(is_descriptor_link(Path::new(p)), "{p}");
        }
        for p in [
            "/dev/shm/x",
            "/dev/mqueue/x",
            "/dev/fd/x",
            "/proc/self/fd/",
            "/proc/self/root/tmp/x",
            "/tmp/stdout",
        ] {
            assert!(!is_descriptor_link(Path::new(p)), "{p}");
        }
        if !Path::new("/dev/shm").is_dir() {
            return;
        }
        use std::os::unix::fs::FileTypeExt;
        let link =
            Path::new("/dev/shm").join(format!("alloctrace-output-test-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        symlink("/dev/null", &link).unwrap();
        assert!(matches!(classify(&link), Target::Replace));
        write_atomic(&link, b"report").unwrap();
        let meta = fs::symlink_metadata(&link).unwrap();
        let content = fs::read(&link).unwrap();
        let _ = fs::remove_file(&link);
        assert!(meta.file_type().is_file(), "the planted link was followed");
        assert_eq!(content, b"report");
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn check_writable_cases() {
        let d = TempDir::new("check");
        check_writable(&d.0.join("new.txt")).unwrap();
        assert_eq!(entries(&d.0), Vec::<String>::new(), "probe file removed");
        let msg = check_writable(&d.0).unwrap_err();
        assert!(
            msg.contains("is a directory") && msg.contains(&d.0.display().to_string()),
            "{msg}"
        );
        let file = d.0.join("plain");
        fs::write(&file, b"").unwrap();
        let msg = check_writable(&file.join("x")).unwrap_err();
        assert!(msg.contains("is not a directory"), "{msg}");
        // A bare file name is relative to the current directory.
        assert_eq!(parent_dir(Path::new("x.txt")), Path::new("."));
    }

    #[test]
    fn directory_at_path_fails_and_cleans_up() {
        let d = TempDir::new("dir");
        let path = d.0.join("sub");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"k").unwrap();
        let e = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory, "{e}");
        assert_eq!(entries(&d.0), vec!["sub"]);
    }
}
