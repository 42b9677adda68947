//! The files that may hold a process's allocators: those it maps executable (`--pid`, every
//! process in system-wide mode) or will map (a command before its exec, a program just exec'd:
//! `elf_deps`), each reached through a path alloctrace can open that leads to that very file.
//! Which of them hold an allocator, `probe::sets` decides.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::elf_deps::{self, Context, Mapped};
use super::TargetError;
#[cfg(test)]
use crate::allocator::{self, Allocator};
use crate::process::procmaps::MapsLine;

/// The files `pid` maps executable (each device and inode once, in the order of the maps),
/// each as a path alloctrace can open that leads to that very file (checked by device and
/// inode): through `/proc/PID/root` (a process in another mount namespace gets its own copy
/// probed), as printed (a chrooted process: the kernel prints the path from our root), or
/// through `/proc/PID/map_files` (deleted or replaced on disk since it was mapped, or reachable
/// no other way).
pub fn mapped_files(pid: u32) -> Result<Vec<Mapped>, TargetError> {
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
    let mut out: Vec<Mapped> = Vec::new();
    for line in MapsLine::all(&maps) {
        if !line.perms.contains('x') || !line.path.starts_with(b"/") || line.inode == 0 {
            continue;
        }
        let file = (line.dev, line.inode);
        if out.iter().any(|m| m.file == file) {
            continue;
        }
        let path = Path::new(OsStr::from_bytes(line.path));
        out.push(Mapped {
            path: openable(&proc_dir, path, line.range, file, line.deleted),
            shown: String::from_utf8_lossy(line.path).into_owned(),
            file,
        });
    }
    Ok(out)
}

/// The file of one executable mapping a process made (`mmap_watch`'s record), as `Mapped`,
/// for probes on every process: through the path as printed when it is that file (it
/// outlives the process), else as `mapped_files` reaches it.
pub fn mapping_file(pid: u32, m: &crate::process::procmaps::Mapping) -> Mapped {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let range = format!("{:x}-{:x}", m.start, m.end);
    let file = (m.dev, m.inode);
    let printed = Path::new(&m.path);
    let path = if !m.deleted && is_file_at(printed, file.0, file.1) {
        printed.to_path_buf()
    } else {
        openable(&proc_dir, printed, &range, file, m.deleted)
    };
    Mapped {
        path,
        shown: m.path.clone(),
        file,
    }
}

/// A path to the file (device, inode) `file` mapped at `range` (as maps prints it) by the
/// process at `proc_dir` under `path` (see `mapped_files`).
fn openable(proc_dir: &Path, path: &Path, range: &str, file: (u64, u64), deleted: bool) -> PathBuf {
    let map_file = proc_dir.join("map_files").join(range);
    if deleted {
        return map_file;
    }
    // The kernel prints the path as seen from *our* root when it can (a chrooted process's
    // libc shows as /srv/jail/lib/...), and from the process's namespace root otherwise: the
    // first of the two that is the mapped file (same device and inode) is it; failing both,
    // the mapping itself, which always is.
    let in_root = proc_dir
        .join("root")
        .join(path.strip_prefix("/").unwrap_or(path));
    [in_root, path.to_path_buf()]
        .into_iter()
        .find(|c| is_file_at(c, file.0, file.1))
        .unwrap_or(map_file)
}

/// Whether `path` is the file with this device and inode.
fn is_file_at(path: &Path, dev: u64, inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|m| m.ino() == inode && m.dev() == dev)
}

/// The files the command at `exe` will map once exec'd in our root with our environment
/// (which it inherits), its own first.
pub fn command_files(exe: &Path) -> Vec<Mapped> {
    let env = elf_deps::own_environ();
    let ctx = Context {
        root: Path::new("/"),
        env: &env,
    };
    elf_deps::program_files(&ctx, exe, exe)
}

/// The files the program process `pid` runs now (it has just exec'd) will map: its
/// executable (`/proc/PID/exe`, the very file), its interpreter and libraries found from its
/// root and environment. Empty when the process is gone.
pub fn exec_files(pid: u32) -> Vec<Mapped> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let Ok(shown) = fs::read_link(&exe) else {
        return Vec::new();
    };
    let env = elf_deps::environ_of(pid);
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let ctx = Context {
        root: &root,
        env: &env,
    };
    elf_deps::program_files(&ctx, &exe, &shown)
}

/// The files (device, inode) each process maps executable.
pub type FilesOf = HashMap<u32, Vec<(u64, u64)>>;

/// Every file some process maps executable (system-wide mode's start), once per device and
/// inode, with the processes mapping each.
pub fn system_files() -> (Vec<Mapped>, FilesOf) {
    let mut files: Vec<Mapped> = Vec::new();
    let mut index: HashMap<(u64, u64), usize> = HashMap::new();
    let mut uses: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    for pid in crate::process::procmaps::other_pids() {
        // Gone, a kernel thread, or unreadable: nothing of it to probe.
        let Ok(mapped) = mapped_files(pid) else {
            continue;
        };
        let ids = uses.entry(pid).or_default();
        for mut m in mapped {
            ids.push(m.file);
            // Probed for every process: through the path as printed when it is that file,
            // which outlives the process it was found in.
            let printed = Path::new(&m.shown);
            if is_file_at(printed, m.file.0, m.file.1) {
                m.path = printed.to_path_buf();
            }
            if let std::collections::hash_map::Entry::Vacant(v) = index.entry(m.file) {
                v.insert(files.len());
                files.push(m);
            }
        }
    }
    (files, uses)
}

/// The libc alloctrace itself maps (the system's), and the allocator it holds: what tests
/// resolve probes against.
#[cfg(test)]
pub fn own_libc() -> Option<(PathBuf, &'static dyn Allocator)> {
    let maps = fs::read("/proc/self/maps").ok()?;
    let found = MapsLine::all(&maps).filter(|l| !l.deleted).find_map(|l| {
        let alloc = allocator::holder(l.path)?;
        Some((PathBuf::from(OsStr::from_bytes(l.path)), alloc))
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_mapped_files_are_each_once_and_openable() {
        let pid = std::process::id();
        let files = mapped_files(pid).expect("own maps");
        let libc = files
            .iter()
            .find(|f| f.shown.ends_with("/libc.so.6"))
            .expect("the test binary maps libc");
        assert!(libc.path.starts_with(format!("/proc/{pid}/root")));
        assert!(libc.path.exists());
        // Each file once.
        let mut ids: Vec<_> = files.iter().map(|m| m.file).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), files.len());
        let (own, alloc) = own_libc().unwrap();
        assert!(own.exists());
        assert_eq!(alloc.name(), "glibc");
    }

    #[test]
    fn missing_pid_is_named() {
        let e = mapped_files(999_999_999).unwrap_err();
        assert_eq!(e.to_string(), "no process with pid 999999999");
    }

    #[test]
    fn kernel_thread_is_refused() {
        // kthreadd is pid 2 on every Linux system.
        match mapped_files(2) {
            Err(TargetError::KernelThread(2)) => {}
            // Without CAP_SYS_PTRACE-like access the maps may be unreadable instead.
            Err(TargetError::Maps { .. }) => {}
            other => panic!("pid 2: {other:?}"),
        }
    }
}
