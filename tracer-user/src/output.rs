//! Writing result files safely. alloctrace runs as root, often in directories other users can
//! write to (/tmp), so files are written to a fresh temporary name and renamed into place:
//! a reader never sees a half-written report and a planted symlink is never followed.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Replaces `path` with `bytes` atomically: written to a new temporary file in the same
/// directory, flushed to disk, then renamed over `path`. Readers see the old file or the
/// complete new one, never a partial write.
///
/// If `path` is a symlink, the rename replaces the link itself with a regular file; its
/// target is left untouched. That is deliberate: as root, writing through a link someone
/// else planted would let them overwrite any file on the system.
///
/// The new file is owned by the caller (root under sudo) with mode 0644 (less the umask).
/// Errors name `path`; the temporary file is removed on any failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(stream) = stream_target(path) {
        return OpenOptions::new()
            .write(true)
            .open(stream)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| named(path, e));
    }
    let (tmp, mut file) = create_temp(path).map_err(|e| named(path, e))?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, path)
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(named(path, e));
    }
    // Make the rename itself durable; a failure here does not undo a completed write.
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Where `path` names a stream rather than a file — a FIFO or character device given directly
/// (`-o /dev/null`, a named pipe), or a link to one of alloctrace's own descriptors
/// (`/dev/stdout`, `/proc/self/fd/1`: [`is_descriptor_link`]) — the bytes are written into it: renaming a temporary file over it would replace
/// the device node itself (as root, `-o /dev/null` would turn /dev/null into a regular file).
/// Block devices and regular files never qualify.
fn stream_target(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let is_stream = |t: fs::FileType| t.is_fifo() || t.is_char_device() || t.is_socket();
    let meta = fs::symlink_metadata(path).ok()?;
    if is_stream(meta.file_type()) {
        return Some(path.to_path_buf());
    }
    if meta.file_type().is_symlink() && is_descriptor_link(path) {
        let target = fs::canonicalize(path).ok()?;
        let t = fs::metadata(&target).ok()?.file_type();
        return is_stream(t).then_some(target);
    }
    None
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
    if stream_target(path).is_some() {
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
    use std::os::unix::fs::{symlink, PermissionsExt};

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
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
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
        assert_eq!(stream_target(&link), None);
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
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
        assert_eq!(entries(&d.0), vec!["sub"]);
    }
}
