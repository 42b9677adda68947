//! The allocators a process uses, as probe sets: which of the files it maps (`--pid`, every
//! process in system-wide mode) or will map (a command before its exec, a program just exec'd:
//! `elf_deps`) hold an allocator (`allocator::detect`), each reached through a path alloctrace
//! can open that leads to that very file, and resolved (`probe::resolve`).
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::elf_deps::{self, Context, Mapped};
use super::TargetError;
use crate::allocator::{self, Allocator, Found};
use crate::probe::placement::Mode;
use crate::probe::ProbeSet;
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

/// The file of one executable mapping a process made (`mmap_watch`'s record), as `Mapped`.
pub fn mapping_file(pid: u32, m: &crate::process::procmaps::Mapping) -> Mapped {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let range = format!("{:x}-{:x}", m.start, m.end);
    let file = (m.dev, m.inode);
    Mapped {
        path: openable(&proc_dir, Path::new(&m.path), &range, file, m.deleted),
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
    let ctx = Context { root: &root, env: &env };
    elf_deps::program_files(&ctx, &exe, &shown)
}

/// What `sets_of` found: the sets, and one line per file whose allocator could not be
/// probed.
#[derive(Default)]
pub struct Detected {
    pub sets: Vec<ProbeSet>,
    pub failures: Vec<String>,
}

/// The allocators in `files` (`allocator::detect`), each resolved into a set. A file whose
/// detection or resolution fails is a line in `failures`, and skipped.
pub fn sets_of(files: &[Mapped], mode: Mode) -> Detected {
    let mut out = Detected::default();
    for f in files {
        let found = match detect(f) {
            Ok(found) => found,
            Err(e) => {
                out.failures.push(format!("cannot read {}: {e}", f.shown));
                continue;
            }
        };
        for found in found {
            match ProbeSet::resolve(&f.path, f.shown.clone(), f.file, found, mode) {
                Ok(set) => out.sets.push(set),
                Err(e) => out.failures.push(format!(
                    "cannot probe {} in {}: {e}",
                    found.allocator.name(),
                    f.shown
                )),
            }
        }
    }
    out
}

/// The allocators the file holds: by its content (`allocator::detect`), and, when that finds
/// none through a path that does not carry the file's name (`/proc/PID/map_files/...`), by
/// the name the process mapped it under.
fn detect(f: &Mapped) -> std::io::Result<Vec<Found>> {
    let found = allocator::detect(&f.path)?;
    if !found.is_empty() || f.path.file_name() == Path::new(&f.shown).file_name() {
        return Ok(found);
    }
    Ok(allocator::holder(f.shown.as_bytes())
        .map(|allocator| Found {
            allocator,
            prefix: allocator.symbol_prefix(),
        })
        .into_iter()
        .collect())
}

/// Why a program (its executable at `exe`, openable) uses no allocator alloctrace can probe,
/// and what would help; `failures` are `sets_of`'s.
pub fn no_allocator_reason(exe: Option<&Path>, failures: &[String]) -> String {
    if !failures.is_empty() {
        return format!(
            "its allocator could not be probed ({})",
            failures.join("; ")
        );
    }
    let data = exe.and_then(|p| fs::read(p).ok()).unwrap_or_default();
    let names: Vec<&str> = allocator::REGISTRY.iter().map(|a| a.name()).collect();
    if data.starts_with(b"\x7fELF") && super::command::is_static_elf(&data) {
        if has_symbols(&data) {
            format!(
                "statically linked, with no allocator alloctrace knows ({}) in its symbols",
                names.join(", ")
            )
        } else {
            "statically linked and stripped: no allocator symbols (a build that keeps its \
             symbol table, or links its allocator as a shared library, can be probed)"
                .to_string()
        }
    } else {
        format!(
            "it maps no allocator alloctrace knows ({}); a program on another allocator can be \
             traced if that allocator is a shared library alloctrace knows, e.g. through \
             LD_PRELOAD",
            names.join(", ")
        )
    }
}

/// Whether an ELF has a symbol table (`.symtab`) beyond its dynamic one.
fn has_symbols(data: &[u8]) -> bool {
    use object::{Object, ObjectSymbol};
    object::File::parse(data).is_ok_and(|f| f.symbols().any(|s| !s.is_undefined()))
}

/// Every file some process maps executable (system-wide mode's start), once per device and
/// inode, with the processes mapping each.
pub fn system_files() -> (Vec<Mapped>, HashMap<u32, Vec<(u64, u64)>>) {
    let mut files: Vec<Mapped> = Vec::new();
    let mut index: HashMap<(u64, u64), usize> = HashMap::new();
    let mut uses: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    let pids = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        if pid == std::process::id() {
            continue;
        }
        // Gone, a kernel thread, or unreadable: nothing of it to probe.
        let Ok(mapped) = mapped_files(pid) else {
            continue;
        };
        let ids = uses.entry(pid).or_default();
        for m in mapped {
            ids.push(m.file);
            if let std::collections::hash_map::Entry::Vacant(v) = index.entry(m.file) {
                v.insert(files.len());
                files.push(m);
            }
        }
    }
    (files, uses)
}

/// The libc alloctrace itself maps (the system's), and the allocator it holds.
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
    fn own_process_is_probed_through_its_libc() {
        let pid = std::process::id();
        let files = mapped_files(pid).expect("own maps");
        let found = sets_of(&files, Mode::Auto);
        assert!(found.failures.is_empty(), "{:?}", found.failures);
        let glibc: Vec<_> = found
            .sets
            .iter()
            .filter(|s| s.found.allocator.name() == "glibc")
            .collect();
        assert_eq!(glibc.len(), 1, "{:?}", found.sets);
        assert!(glibc[0].path.starts_with(format!("/proc/{pid}/root")));
        assert!(glibc[0].path.exists());
        assert!(glibc[0].describe().starts_with("glibc in /"), "{}", glibc[0].describe());
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

    #[test]
    fn a_command_is_probed_through_its_own_allocators() {
        let sets = sets_of(&command_files(Path::new("/bin/true")), Mode::Auto).sets;
        assert!(
            sets.iter().any(|s| s.found.allocator.name() == "glibc"),
            "{sets:?}"
        );
    }

    #[test]
    fn a_program_without_an_allocator_is_said_why() {
        let r = no_allocator_reason(Some(Path::new("/nonexistent")), &[]);
        assert!(r.contains("maps no allocator alloctrace knows (glibc"), "{r}");
        let r = no_allocator_reason(None, &["cannot probe x in y: z".into()]);
        assert_eq!(r, "its allocator could not be probed (cannot probe x in y: z)");
    }
}
