//! The files a program will map as code once exec'd, found before it runs by reading its ELF
//! headers as the dynamic loader would: the executable, its program interpreter (`ld.so`, or
//! musl's `ld-musl`, which is also its libc), the closure of its `DT_NEEDED` libraries (searched
//! through `DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH`, the directories of `/etc/ld.so.conf`
//! and the default ones) and what `LD_PRELOAD` and `/etc/ld.so.preload` add. A `#!` script is
//! its interpreter's program. Nothing of the program is run.
//!
//! Every file is read with the real user's access (`access(2)` checks the real uid and
//! groups, without alloctrace's capabilities), as the program's loader will read it: a
//! capability-holding alloctrace run by another user must not parse, probe or name a file that
//! user could not read. Only the headers and the dynamic section are read, never whole files.
//!
//! Over-approximation is harmless (a pid-scoped uprobe on a file the process never maps costs
//! nothing); missing one is not, so where ld.so would choose among candidates by something
//! this does not model (hardware capabilities, a dlopen) every plausible one is kept.
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::read::ReadCache;
use object::{elf, Endianness, ReadRef};

/// A file the program maps: a path alloctrace can open, and the path as the program sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub path: PathBuf,
    pub shown: String,
    /// (device, inode).
    pub file: (u64, u64),
}

/// Where and how a program is looked at: `root` is the file system root it runs in (`/`, or
/// `/proc/PID/root` for a running process), `env` its environment.
pub struct Context<'a> {
    pub root: &'a Path,
    pub env: &'a [(OsString, OsString)],
}

impl Context<'_> {
    fn var(&self, name: &str) -> Option<&OsStr> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }

    /// `p` (absolute, as the program names it) as a path alloctrace can open.
    fn at(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

/// The environment of a running process (`/proc/PID/environ`), empty if unreadable.
pub fn environ_of(pid: u32) -> Vec<(OsString, OsString)> {
    parse_environ(&fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
}

fn parse_environ(data: &[u8]) -> Vec<(OsString, OsString)> {
    data.split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            Some((
                OsStr::from_bytes(&kv[..eq]).to_os_string(),
                OsStr::from_bytes(&kv[eq + 1..]).to_os_string(),
            ))
        })
        .collect()
}

/// Our own environment, which a launched command inherits.
pub fn own_environ() -> Vec<(OsString, OsString)> {
    std::env::vars_os().collect()
}

/// How many `#!` interpreters deep a script may go (the kernel allows 4 levels of binfmt).
const MAX_SCRIPT_DEPTH: usize = 4;

/// Every file the program at `exe` (openable) will map as code, `exe_shown` being its path as
/// the program sees it (for `$ORIGIN` and messages): the executable first.
pub fn program_files(ctx: &Context<'_>, exe: &Path, exe_shown: &Path) -> Vec<Mapped> {
    let mut exe = exe.to_path_buf();
    let mut shown = exe_shown.to_path_buf();
    let mut head = first_line(&exe);
    // A script: its interpreter's program is what runs (and maps its allocator).
    for _ in 0..MAX_SCRIPT_DEPTH {
        let Some(interp) = shebang(&head) else { break };
        shown = interp.to_path_buf();
        exe = ctx.at(&shown);
        head = first_line(&exe);
    }
    let mut out = Walk {
        ctx,
        seen: HashSet::new(),
        files: Vec::new(),
        machine: None,
        default_dirs: None,
    };
    let Some(main) = out.add(&exe, &shown) else {
        return out.files;
    };
    out.machine = Some(main.machine);
    if let Some(interp) = &main.interp {
        out.add(&ctx.at(interp), interp);
    }
    // Preloaded first, as ld.so loads them: their definitions win.
    let mut queue: Vec<(String, Option<Elf>)> = preloads(ctx)
        .into_iter()
        .map(|name| (name, Some(main.clone())))
        .collect();
    queue.extend(main.needed.iter().map(|n| (n.clone(), Some(main.clone()))));
    let mut i = 0;
    while i < queue.len() {
        let (name, from) = queue[i].clone();
        i += 1;
        for (path, shown) in out.search(&name, from.as_ref(), &main) {
            if let Some(lib) = out.add(&path, &shown) {
                queue.extend(lib.needed.iter().map(|n| (n.clone(), Some(lib.clone()))));
            }
        }
    }
    out.files
}

/// The interpreter a `#!` line names.
/// A file opened for reading if the real user may read it (see the module's comment).
fn open_as_user(path: &Path) -> Option<fs::File> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::R_OK) } != 0 {
        return None;
    }
    fs::File::open(path).ok()
}

/// The start of the file at `path`, as much as the kernel reads of a `#!` line (its
/// BINPRM_BUF_SIZE); empty when the real user cannot read it.
fn first_line(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    if let Some(f) = open_as_user(path) {
        let _ = f.take(256).read_to_end(&mut head);
    }
    head
}

fn shebang(data: &[u8]) -> Option<&Path> {
    let line = data.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interp = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    Some(Path::new(OsStr::from_bytes(interp)))
}

/// What the loader reads of one ELF object.
#[derive(Clone, Debug, Default)]
struct Elf {
    /// (class is 64-bit here) e_machine: a library of another machine is skipped, as ld.so does.
    machine: u16,
    interp: Option<PathBuf>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    /// The directory it is in, as the program sees it (`$ORIGIN`).
    origin: PathBuf,
}

fn read_elf<'d, R: ReadRef<'d>>(data: R, shown: &Path) -> Option<Elf> {
    let file = ElfFile64::<Endianness, R>::parse(data).ok()?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut out = Elf {
        machine: header.e_machine(endian),
        origin: shown.parent().unwrap_or(Path::new("/")).to_path_buf(),
        ..Elf::default()
    };
    for ph in file.elf_program_headers() {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            out.interp = Some(PathBuf::from(OsStr::from_bytes(interp)));
        }
    }
    let sections = file.elf_section_table();
    if let Ok(Some((dyns, link))) = sections.dynamic(endian, data) {
        let strings = sections.strings(endian, data, link).ok()?;
        for d in dyns {
            let Ok(tag) = u32::try_from(d.d_tag(endian)) else {
                continue;
            };
            let off = d.d_val(endian);
            let Some(s) = u32::try_from(off).ok().and_then(|o| strings.get(o).ok()) else {
                continue;
            };
            let s = String::from_utf8_lossy(s).into_owned();
            match tag {
                elf::DT_NEEDED => out.needed.push(s),
                elf::DT_RPATH => out.rpath.extend(s.split(':').map(String::from)),
                elf::DT_RUNPATH => out.runpath.extend(s.split(':').map(String::from)),
                _ => {}
            }
        }
    }
    Some(out)
}

struct Walk<'a, 'c> {
    ctx: &'a Context<'c>,
    seen: HashSet<(u64, u64)>,
    files: Vec<Mapped>,
    machine: Option<u16>,
    default_dirs: Option<Vec<PathBuf>>,
}

impl Walk<'_, '_> {
    /// Adds the file (once per device and inode) and returns what the loader reads of it;
    /// None for a file already added, unreadable, not ELF or of another machine.
    fn add(&mut self, path: &Path, shown: &Path) -> Option<Elf> {
        let meta = fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let id = (meta.dev(), meta.ino());
        if self.seen.contains(&id) {
            return None;
        }
        let file = open_as_user(path)?;
        let data = ReadCache::new(&file);
        let elf = read_elf(&data, shown)?;
        if self.machine.is_some_and(|m| m != elf.machine) {
            return None;
        }
        self.seen.insert(id);
        self.files.push(Mapped {
            path: path.to_path_buf(),
            shown: shown.display().to_string(),
            file: id,
        });
        Some(elf)
    }

    /// Where ld.so would find the library `name` needed by `from` (in the program `main`):
    /// every candidate directory's file of that name that exists, in ld.so's order (the
    /// first that is an ELF of the program's machine is the one it loads; `add` skips the
    /// others).
    fn search(&mut self, name: &str, from: Option<&Elf>, main: &Elf) -> Vec<(PathBuf, PathBuf)> {
        if name.contains('/') {
            let p = match from {
                Some(f) if !name.starts_with('/') => f.origin.join(name),
                _ => PathBuf::from(name),
            };
            return vec![(self.ctx.at(&p), p)];
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        let expand = |e: &Elf, list: &[String]| -> Vec<PathBuf> {
            list.iter()
                .filter(|d| !d.is_empty())
                .map(|d| {
                    PathBuf::from(
                        d.replace("${ORIGIN}", &e.origin.to_string_lossy())
                            .replace("$ORIGIN", &e.origin.to_string_lossy()),
                    )
                })
                .filter(|d| d.is_absolute() && !d.to_string_lossy().contains('$'))
                .collect()
        };
        if let Some(f) = from {
            // DT_RPATH counts only without DT_RUNPATH; the executable's applies to all.
            if f.runpath.is_empty() {
                dirs.extend(expand(f, &f.rpath));
                if main.runpath.is_empty() {
                    dirs.extend(expand(main, &main.rpath));
                }
            }
        }
        if let Some(llp) = self.ctx.var("LD_LIBRARY_PATH") {
            dirs.extend(
                llp.as_bytes()
                    .split(|&b| b == b':' || b == b';')
                    .filter(|d| d.starts_with(b"/"))
                    .map(|d| PathBuf::from(OsStr::from_bytes(d))),
            );
        }
        if let Some(f) = from {
            dirs.extend(expand(f, &f.runpath));
        }
        dirs.extend(self.default_dirs().iter().cloned());
        let mut out = Vec::new();
        let mut seen_dirs = HashSet::new();
        for d in dirs {
            if !seen_dirs.insert(d.clone()) {
                continue;
            }
            let p = d.join(name);
            let at = self.ctx.at(&p);
            if at.is_file() {
                out.push((at, p));
            }
        }
        // ld.so loads the first usable one; the rest are kept only when the first is not one
        // (another machine's, not ELF): `add` skips those, so stop at the first ELF here.
        let first_elf = out.iter().position(|(at, _)| is_elf_of(at, self.machine));
        match first_elf {
            Some(i) => vec![out.swap_remove(i)],
            None => Vec::new(),
        }
    }

    /// The directories of `/etc/ld.so.conf` (what `/etc/ld.so.cache` is built from) and the
    /// default ones, read once.
    fn default_dirs(&mut self) -> &[PathBuf] {
        let ctx = self.ctx;
        self.default_dirs.get_or_insert_with(|| {
            let mut dirs = Vec::new();
            conf_dirs(ctx, Path::new("/etc/ld.so.conf"), &mut dirs, 0);
            for d in [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
                // musl's defaults.
                "/usr/local/lib",
            ] {
                dirs.push(PathBuf::from(d));
            }
            dirs
        })
    }
}

fn is_elf_of(path: &Path, machine: Option<u16>) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    let ok = open_as_user(path).is_some_and(|mut f| f.read_exact(&mut head).is_ok());
    if !ok || !head.starts_with(b"\x7fELF") || head[4] != 2 {
        return false;
    }
    // e_machine, little-endian on every machine alloctrace runs on.
    let m = u16::from_le_bytes([head[18], head[19]]);
    machine.is_none_or(|want| want == m)
}

/// The directories an `ld.so.conf` lists, following its `include` lines (a `*` in their last
/// component matching any file names).
fn conf_dirs(ctx: &Context<'_>, conf: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(text) = fs::read_to_string(ctx.at(conf)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            for pattern in pattern.split_whitespace() {
                let pattern = conf.parent().unwrap_or(Path::new("/")).join(pattern);
                for f in glob_last(ctx, &pattern) {
                    conf_dirs(ctx, &f, out, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// The files `pattern` names, a `*` allowed in its last component only; sorted, as glibc's
/// `ldconfig` reads them.
fn glob_last(ctx: &Context<'_>, pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some((pre, post)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let mut out: Vec<PathBuf> = fs::read_dir(ctx.at(dir))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            (n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len())
                .then(|| dir.join(n))
        })
        .collect();
    out.sort();
    out
}

/// The names `LD_PRELOAD` (separated by spaces or colons) and `/etc/ld.so.preload` (by white
/// space) list.
fn preloads(ctx: &Context<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = ctx.var("LD_PRELOAD") {
        out.extend(
            v.to_string_lossy()
                .split([' ', ':'])
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    if let Ok(text) = fs::read_to_string(ctx.at(Path::new("/etc/ld.so.preload"))) {
        out.extend(text.split_whitespace().map(String::from));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_of(exe: &str, env: &[(&str, &str)]) -> Vec<String> {
        let env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let ctx = Context {
            root: Path::new("/"),
            env: &env,
        };
        program_files(&ctx, Path::new(exe), Path::new(exe))
            .into_iter()
            .map(|m| m.shown)
            .collect()
    }

    fn has(files: &[String], name: &str) -> bool {
        files
            .iter()
            .any(|f| Path::new(f).file_name().is_some_and(|n| n == name))
    }

    #[test]
    fn redis_server_resolves_its_jemalloc_and_libc() {
        let files = files_of("/usr/bin/redis-server", &[]);
        assert_eq!(files[0], "/usr/bin/redis-server");
        assert!(has(&files, "libjemalloc.so.2"), "{files:?}");
        assert!(has(&files, "libc.so.6"), "{files:?}");
        assert!(has(&files, "ld-linux-x86-64.so.2"), "{files:?}");
        // Once each.
        let mut sorted = files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), files.len(), "{files:?}");
    }

    #[test]
    fn ld_preload_and_ld_library_path_are_honoured() {
        let plain = files_of("/bin/true", &[]);
        assert!(!has(&plain, "libjemalloc.so.2"), "{plain:?}");
        let by_name = files_of("/bin/true", &[("LD_PRELOAD", "libjemalloc.so.2")]);
        assert!(has(&by_name, "libjemalloc.so.2"), "{by_name:?}");
        let jemalloc = by_name
            .iter()
            .find(|f| f.ends_with("libjemalloc.so.2"))
            .unwrap()
            .clone();
        let by_path = files_of("/bin/true", &[("LD_PRELOAD", &jemalloc)]);
        assert!(by_path.contains(&jemalloc), "{by_path:?}");

        // A copy of libc in a directory of LD_LIBRARY_PATH is the one loaded.
        let dir = std::env::temp_dir().join(format!("alloctrace-deps-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let libc = files_of("/bin/true", &[])
            .into_iter()
            .find(|f| f.ends_with("/libc.so.6"))
            .unwrap();
        fs::copy(&libc, dir.join("libc.so.6")).unwrap();
        let llp = files_of("/bin/true", &[("LD_LIBRARY_PATH", dir.to_str().unwrap())]);
        fs::remove_dir_all(&dir).unwrap();
        let copy = dir.join("libc.so.6").display().to_string();
        assert!(llp.contains(&copy), "{llp:?}");
        assert!(!llp.contains(&libc), "{llp:?}");
    }

    #[test]
    fn a_script_resolves_through_its_interpreter() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("alloctrace-script-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        fs::write(&script, "#! /bin/sh -e\nexit 0\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let files = files_of(script.to_str().unwrap(), &[]);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files[0], "/bin/sh");
        assert!(has(&files, "libc.so.6"), "{files:?}");
    }

    #[test]
    fn a_musl_program_resolves_ld_musl_and_a_static_one_itself() {
        let dir = std::env::temp_dir().join(format!("alloctrace-musl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("m.c");
        fs::write(
            &src,
            "#include <stdlib.h>\nint main(void){free(malloc(8));return 0;}\n",
        )
        .unwrap();
        let build = |out: &str, extra: &[&str]| {
            let st = std::process::Command::new("musl-gcc")
                .args(extra)
                .arg("-o")
                .arg(dir.join(out))
                .arg(&src)
                .status()
                .expect("musl-gcc (package musl-tools) runs");
            assert!(st.success(), "musl-gcc {extra:?} failed");
            dir.join(out).display().to_string()
        };
        let dynamic = build("dyn", &[]);
        let fixed = build("static", &["-static"]);
        let d = files_of(&dynamic, &[]);
        let s = files_of(&fixed, &[]);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d[0], dynamic);
        assert!(
            d.iter().any(|f| f.contains("ld-musl-")),
            "no ld-musl in {d:?}"
        );
        assert!(!has(&d, "libc.so.6"), "{d:?}");
        assert_eq!(s, [fixed]);
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let ctx = Context {
            root: Path::new("/"),
            env: &[],
        };
        let mut dirs = Vec::new();
        conf_dirs(&ctx, Path::new("/etc/ld.so.conf"), &mut dirs, 0);
        // Debian lists its multiarch directory in /etc/ld.so.conf.d/x86_64-linux-gnu.conf.
        assert!(
            dirs.iter().any(|d| d.ends_with("x86_64-linux-gnu")),
            "{dirs:?}"
        );
        assert_eq!(
            parse_environ(b"A=1\0B=x=y\0junk\0"),
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }
}
