//! The file a target maps its allocator from (its libc today), as a path alloctrace can open
//! and probe: which mapping that is, the `allocator` registry decides.
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::TargetError;
use crate::allocator::{self, Allocator};
use crate::process::procmaps::MapsLine;

/// The libc `pid` really maps, as a path alloctrace can open that leads to that very file
/// (checked by device and inode): through `/proc/PID/root` (a process in another mount
/// namespace gets its own copy probed), as printed (a chrooted process: the kernel prints the
/// path from our root), or through `/proc/PID/map_files` (deleted or replaced on disk since it
/// was mapped, or reachable no other way).
pub fn libc_of_pid(pid: u32) -> Result<(PathBuf, &'static dyn Allocator), TargetError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if pid == 0 || !proc_dir.exists() {
        return Err(TargetError::NoSuchPid(pid));
    }
    // Bytes: a path may be any bytes but NUL and newline.
    let maps = fs::read(proc_dir.join("maps")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchPid(pid)
        } else {
            TargetError::Maps { pid, source }
        }
    })?;
    if maps.trim_ascii().is_empty() {
        // Kernel threads have no mm: an empty maps file (and no exe link).
        if fs::read_link(proc_dir.join("exe")).is_err() {
            return Err(TargetError::KernelThread(pid));
        }
    }
    if let Some((alloc, line)) = allocator::in_maps(&maps) {
        let path = Path::new(OsStr::from_bytes(line.path));
        let map_file = proc_dir.join("map_files").join(line.range);
        if line.deleted {
            return Ok((map_file, alloc));
        }
        // The kernel prints the path as seen from *our* root when it can (a chrooted process's
        // libc shows as /srv/jail/lib/...), and from the process's namespace root otherwise: the
        // first of the two that is the mapped file (same device and inode) is it; failing
        // both, the mapping itself, which always is.
        let in_root = proc_dir
            .join("root")
            .join(path.strip_prefix("/").unwrap_or(path));
        for candidate in [in_root, path.to_path_buf()] {
            if is_file_at(&candidate, line.dev, line.inode) {
                return Ok((candidate, alloc));
            }
        }
        return Ok((map_file, alloc));
    }
    let exe = fs::read_link(proc_dir.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Err(TargetError::NoLibc { pid, exe })
}

/// Whether `path` is the file with this device and inode.
fn is_file_at(path: &Path, dev: u64, inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|m| m.ino() == inode && m.dev() == dev)
}

/// The libc alloctrace itself maps: the system's, which a launched command or system-wide
/// mode probes.
pub fn own_libc() -> Result<(PathBuf, &'static dyn Allocator), TargetError> {
    let maps = fs::read("/proc/self/maps").map_err(|_| TargetError::NoOwnLibc)?;
    let found = MapsLine::all(&maps).filter(|l| !l.deleted).find_map(|l| {
        let alloc = allocator::holder(l.path)?;
        Some((PathBuf::from(OsStr::from_bytes(l.path)), alloc))
    });
    found.ok_or(TargetError::NoOwnLibc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_libc() {
        let (libc, alloc) = libc_of_pid(std::process::id()).expect("the test binary maps libc");
        assert_eq!(alloc.name(), "glibc");
        assert!(
            libc.starts_with(format!("/proc/{}/root", std::process::id())),
            "{libc:?}"
        );
        assert!(libc.exists());
        let (own, alloc) = own_libc().unwrap();
        assert!(own.exists());
        assert_eq!(alloc.name(), "glibc");
    }

    #[test]
    fn missing_pid_is_named() {
        let e = libc_of_pid(999_999_999).unwrap_err();
        assert_eq!(e.to_string(), "no process with pid 999999999");
    }

    #[test]
    fn kernel_thread_is_refused() {
        // kthreadd is pid 2 on every Linux system.
        match libc_of_pid(2) {
            Err(TargetError::KernelThread(2)) => {}
            // Without CAP_SYS_PTRACE-like access the maps may be unreadable instead.
            Err(TargetError::Maps { .. }) => {}
            other => panic!("pid 2: {other:?}"),
        }
    }
}
