//! Loading the probe programs for uprobe_multi links: aya 0.14 loads a uprobe program without
//! an expected attach type, which `BPF_LINK_CREATE` with `BPF_TRACE_UPROBE_MULTI` refuses, so
//! the programs are taken from the object again with aya-obj (parsed, their map references
//! relocated to the maps aya created, their BPF-to-BPF calls and callbacks linked) and loaded
//! with a raw `bpf(BPF_PROG_LOAD)`, the object's BTF with them (global functions are verified
//! once each only when the kernel has their `func_info`).
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use aya::maps::Map;
use aya::Ebpf;
use aya_obj::btf::BtfFeatures;
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_info, bpf_prog_type,
};

use super::ProbeError;

/// One program's relocated code, ready to load.
struct Code {
    insns: Vec<bpf_insn>,
    license: CString,
    func_info: Vec<u8>,
    func_info_cnt: u32,
    func_info_rec_size: u32,
    line_info: Vec<u8>,
    line_info_cnt: u32,
    line_info_rec_size: u32,
}

/// The eBPF object's maps (created by aya) and programs (loaded here, on demand: a set found
/// after an exec may need one the first did not).
pub struct Programs {
    /// The maps, as aya created them (and the programs aya parsed, never loaded by it).
    pub ebpf: Ebpf,
    code: HashMap<String, Code>,
    /// A duplicate of every map's descriptor: the relocated code names maps by descriptor
    /// number, which must stay theirs for every later load (the drainer takes maps out of
    /// `ebpf` and may close its own).
    _maps: Vec<OwnedFd>,
    btf: Option<OwnedFd>,
    loaded: HashMap<&'static str, OwnedFd>,
}

fn map_fd(map: &Map) -> std::os::fd::BorrowedFd<'_> {
    use Map::*;
    match map {
        Array(d)
        | ArrayOfMaps(d)
        | BloomFilter(d)
        | CgroupArray(d)
        | CgroupStorage(d)
        | CgrpStorage(d)
        | CpuMap(d)
        | DevMap(d)
        | DevMapHash(d)
        | HashMap(d)
        | HashOfMaps(d)
        | InodeStorage(d)
        | LpmTrie(d)
        | LruHashMap(d)
        | PerCpuArray(d)
        | PerCpuCgroupStorage(d)
        | PerCpuHashMap(d)
        | PerCpuLruHashMap(d)
        | PerfEventArray(d)
        | ProgramArray(d)
        | Queue(d)
        | ReusePortSockArray(d)
        | RingBuf(d)
        | SockHash(d)
        | SockMap(d)
        | SkStorage(d)
        | Stack(d)
        | StackTraceMap(d)
        | Unsupported(d)
        | XskMap(d) => d.fd().as_fd(),
    }
}

/// Every BTF feature of kernels that have uprobe_multi links (6.6 and later).
const BTF_FEATURES: BtfFeatures = BtfFeatures::new(true, true, true, true, true, true, true, true);

impl Programs {
    /// Prepares the programs of `object` (the bytes aya loaded `ebpf` from) against its maps.
    pub fn new(ebpf: Ebpf, object: &[u8]) -> Result<Programs, ProbeError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            ProbeError::Mode(format!("the eBPF object's programs: {what}: {e}"))
        };
        let mut obj = aya_obj::Object::parse(object).map_err(|e| err("parse", &e))?;
        let btf = match obj
            .fixup_and_sanitize_btf(&BTF_FEATURES)
            .map_err(|e| err("BTF", &e))?
        {
            // As aya does: without it the programs still load, only their global functions
            // (if any) are verified with each caller instead of once.
            Some(btf) => match load_btf(&btf.to_bytes()) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!("the kernel refused the eBPF object's BTF ({e}): loading without");
                    None
                }
            },
            None => None,
        };
        if obj.has_btf_relocations() {
            let kernel = aya::Btf::from_sys_fs().map_err(|e| err("kernel BTF", &e))?;
            obj.relocate_btf(&kernel)
                .map_err(|e| err("CO-RE relocation", &e))?;
        }
        let mut maps = Vec::new();
        let mut fds = HashMap::new();
        for (name, map) in ebpf.maps() {
            let fd = map_fd(map)
                .try_clone_to_owned()
                .map_err(|e| err("map descriptor", &e))?;
            fds.insert(name.to_string(), fd.as_raw_fd());
            maps.push(fd);
        }
        let defs: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let known = defs
            .iter()
            .filter_map(|(name, def)| Some((name.as_str(), *fds.get(name)?, def)));
        obj.relocate_maps(known, &text)
            .map_err(|e| err("map relocation", &e))?;
        obj.relocate_calls(&text)
            .map_err(|e| err("call relocation", &e))?;
        let mut code = HashMap::new();
        for (name, prog) in &obj.programs {
            let Some(f) = obj.functions.get(&prog.function_key()) else {
                continue;
            };
            code.insert(
                name.clone(),
                Code {
                    insns: f.instructions.clone(),
                    license: prog.license.clone(),
                    func_info: f.func_info.func_info_bytes(),
                    func_info_cnt: f.func_info.func_info.len() as u32,
                    func_info_rec_size: f.func_info_rec_size as u32,
                    line_info: f.line_info.line_info_bytes(),
                    line_info_cnt: f.line_info.line_info.len() as u32,
                    line_info_rec_size: f.line_info_rec_size as u32,
                },
            );
        }
        Ok(Programs {
            ebpf,
            code,
            _maps: maps,
            btf,
            loaded: HashMap::new(),
        })
    }

    /// The loaded program `name`'s descriptor.
    pub fn fd(&self, name: &'static str) -> Result<std::os::fd::BorrowedFd<'_>, ProbeError> {
        self.loaded
            .get(name)
            .map(|fd| fd.as_fd())
            .ok_or(ProbeError::MissingProgram(name))
    }

    /// Loads the named programs not loaded yet, on as many threads as there are CPUs: the
    /// kernel's verifier takes most of alloctrace's start-up, and separate loads verify in
    /// parallel.
    pub fn load(&mut self, mut names: Vec<&'static str>) -> Result<(), ProbeError> {
        names.sort_unstable();
        names.dedup();
        names.retain(|n| !self.loaded.contains_key(n));
        if let Some(missing) = names.iter().find(|n| !self.code.contains_key(**n)) {
            return Err(ProbeError::MissingProgram(missing));
        }
        if names.is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let btf = self.btf.as_ref().map(|fd| fd.as_raw_fd());
        let mut results: Vec<Option<Result<OwnedFd, ProbeError>>> =
            names.iter().map(|_| None).collect();
        let queue = Mutex::new(names.iter().zip(results.iter_mut()));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let code = &self.code;
        std::thread::scope(|s| {
            for _ in 0..threads.min(names.len()) {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((name, result)) = next else {
                        break;
                    };
                    *result = Some(load_one(name, &code[*name], btf));
                });
            }
        });
        // Name order, so that of two failures the same one is reported from run to run.
        for (name, result) in names.iter().zip(results) {
            let fd = result.unwrap_or(Err(ProbeError::MissingProgram(name)))?;
            // How close each program came to the verifier's limit (a million instructions
            // walked): start-up time follows it, and a program near it may not load on
            // another kernel or compiler. A test keeps every program well below it. Asked of
            // the kernel only when it will be printed.
            if log::log_enabled!(log::Level::Debug) {
                if let Ok(n) = verified_insns(fd.as_fd()) {
                    log::debug!("program {name}: the verifier walked {n} instructions");
                }
            }
            self.loaded.insert(name, fd);
        }
        log::info!(
            "{} programs loaded in {:.1} ms (the kernel's verifier, {} at once)",
            names.len(),
            t.elapsed().as_secs_f64() * 1e3,
            threads.min(names.len())
        );
        Ok(())
    }
}

/// `bpf(2)`, on a zero-initialised attr the caller filled.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a whole, initialised bpf_attr whose pointers (filled by the caller)
    // point at buffers that outlive the call, of the sizes given next to them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor the kernel just returned.
fn owned(ret: i64) -> OwnedFd {
    // SAFETY: a successful BPF_*_LOAD or BPF_LINK_CREATE returns a new descriptor, ours alone.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// A zeroed `bpf_attr` (every command's members are plain integers: all zero is valid).
pub(super) fn attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integer fields; all-zero bits are a valid value.
    unsafe { zeroed() }
}

pub(super) fn link_create(attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    bpf(bpf_cmd::BPF_LINK_CREATE, attr).map(owned)
}

fn load_btf(bytes: &[u8]) -> io::Result<OwnedFd> {
    let mut a = attr();
    // SAFETY: writes to plain integer fields of the BTF_LOAD member of a zeroed union.
    let u = unsafe { &mut a.__bindgen_anon_7 };
    u.btf = bytes.as_ptr() as u64;
    u.btf_size = bytes.len() as u32;
    bpf(bpf_cmd::BPF_BTF_LOAD, &mut a).map(owned)
}

/// The verifier's log lines kept in an error (its last ones say why).
const LOG_TAIL_LINES: usize = 20;

fn load_one(name: &'static str, code: &Code, btf: Option<i32>) -> Result<OwnedFd, ProbeError> {
    let attempt = |log: &mut [u8]| {
        let mut a = attr();
        // SAFETY: writes to plain integer fields of the PROG_LOAD member of a zeroed union.
        let u = unsafe { &mut a.__bindgen_anon_3 };
        u.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        u.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
        u.insns = code.insns.as_ptr() as u64;
        u.insn_cnt = code.insns.len() as u32;
        u.license = code.license.as_ptr() as u64;
        for (d, s) in u.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s as libc::c_char;
        }
        if let Some(btf) = btf {
            u.prog_btf_fd = btf as u32;
            if code.func_info_rec_size > 0 {
                u.func_info = code.func_info.as_ptr() as u64;
                u.func_info_cnt = code.func_info_cnt;
                u.func_info_rec_size = code.func_info_rec_size;
            }
            if code.line_info_rec_size > 0 {
                u.line_info = code.line_info.as_ptr() as u64;
                u.line_info_cnt = code.line_info_cnt;
                u.line_info_rec_size = code.line_info_rec_size;
            }
        }
        if !log.is_empty() {
            u.log_level = 1;
            u.log_buf = log.as_mut_ptr() as u64;
            u.log_size = log.len() as u32;
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut a).map(owned)
    };
    match attempt(&mut []) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Again with the verifier's log, to say why (a load that fails is rare; the log
            // of a large program is long).
            let mut log = vec![0u8; 16 << 20];
            let source = attempt(&mut log).err().unwrap_or(first);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            Err(ProbeError::Load {
                program: name,
                source,
                log: tail,
            })
        }
    }
}

/// How many instructions the verifier walked to accept the program (`bpf_prog_info`).
fn verified_insns(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: bpf_prog_info is a C struct of integers and pointers-as-u64: zero is valid.
    let mut info: bpf_prog_info = unsafe { zeroed() };
    let mut a = attr();
    // SAFETY: writes to plain integer fields of the OBJ_GET_INFO_BY_FD member.
    let u = unsafe { &mut a.info };
    u.bpf_fd = fd.as_raw_fd() as u32;
    u.info_len = size_of::<bpf_prog_info>() as u32;
    u.info = &mut info as *mut bpf_prog_info as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info.verified_insns)
}
