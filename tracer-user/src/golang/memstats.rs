//! A running Go program's own `MemStats` counters, read (never written) from its memory with
//! process_vm_readv: the runtime's `runtime.memstats` at its symbol's address, the fields'
//! offsets in `runtime.mstats` from the binary's DWARF (zlib-compressed `.zdebug_*` sections
//! as Go ≤ 1.19 writes them, or SHF_COMPRESSED ones). Only the fields `runtime.ReadMemStats`
//! copies as they are (NumGC, NumForcedGC, PauseTotalNs, LastGC): the heap's are summed from
//! per-P shards at a stop of the world, which a read from outside cannot reproduce exactly.
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};

use crate::model::{GoMemStats, Process};

/// Where a field's value goes.
type Setter = fn(&mut GoMemStats, u64);

/// The `runtime.mstats` fields read, their widths (as declared in the runtime's source,
/// unchanged since Go 1.0: `numgc` and `numforcedgc` are uint32) and where each goes.
const FIELDS: [(&str, usize, Setter); 4] = [
    ("numgc", 4, |m, v| m.num_gc = v),
    ("numforcedgc", 4, |m, v| m.num_forced_gc = v),
    ("pause_total_ns", 8, |m, v| m.pause_total_ns = v),
    ("last_gc_unix", 8, |m, v| m.last_gc_unix_ns = v),
];

/// Where a binary's `runtime.memstats` fields are: their addresses in the file's own address
/// space, and, for a position-independent binary, the address its first page is at there
/// (moved by the load address of each process running it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    addrs: [u64; FIELDS.len()],
    pie_base: Option<u64>,
}

impl Layout {
    /// The layout in the process `pid` (a position-independent one's addresses moved by its
    /// load address, read from its mappings).
    fn in_process(&self, pid: u32) -> Result<Layout, String> {
        let Some(vaddr) = self.pie_base else {
            return Ok(self.clone());
        };
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| format!("its mappings cannot be read ({e})"))?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("its executable cannot be read ({e})"))?;
        let exe = exe.to_string_lossy();
        // The executable's mapping of file offset 0: its first page.
        let start = maps
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let at_zero = f
                    .get(2)
                    .is_some_and(|o| o.trim_start_matches('0').is_empty());
                (f.len() >= 6 && at_zero && f[5..].join(" ") == exe)
                    .then(|| u64::from_str_radix(f[0].split('-').next()?, 16).ok())
                    .flatten()
            })
            .ok_or("no mapping of its executable's first page")?;
        let bias = start.wrapping_sub(vaddr);
        Ok(Layout {
            addrs: self.addrs.map(|a| a.wrapping_add(bias)),
            pie_base: None,
        })
    }
}

/// The layout of the Go binary `data`, or why it cannot be known.
pub fn layout(data: &[u8]) -> Result<Layout, String> {
    let elf = object::File::parse(data).map_err(|e| format!("not a readable ELF file ({e})"))?;
    let pie_base = match elf.kind() {
        ObjectKind::Executable => None,
        ObjectKind::Dynamic => Some(first_page(data)?),
        k => return Err(format!("not an executable ({k:?})")),
    };
    let base = elf
        .symbols()
        .find(|s| s.name() == Ok("runtime.memstats"))
        .map(|s| s.address())
        .ok_or("no symbol runtime.memstats (a stripped binary)")?;
    let offsets = member_offsets(&elf, "runtime.mstats")?;
    let mut addrs = [0; FIELDS.len()];
    for (i, (name, _, _)) in FIELDS.iter().enumerate() {
        let off = offsets
            .get(*name)
            .ok_or_else(|| format!("runtime.mstats has no field {name} in its DWARF"))?;
        addrs[i] = base + off;
    }
    Ok(Layout { addrs, pie_base })
}

/// The address (page-aligned) the loadable segment holding file offset 0 asks for.
fn first_page(data: &[u8]) -> Result<u64, String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data)
        .map_err(|e| format!("not a 64-bit ELF file ({e})"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| format!("unreadable program headers ({e})"))?;
    segments
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_LOAD && p.p_offset(endian) == 0)
        .map(|p| p.p_vaddr(endian) & !0xfff)
        .ok_or_else(|| "no loadable segment at file offset 0".to_string())
}

/// A DWARF section's bytes, decompressed when it is (`.zdebug_*`, or SHF_COMPRESSED).
fn section<'d>(elf: &object::File<'d>, name: &str) -> Result<Cow<'d, [u8]>, String> {
    let zname = name.replacen(".debug_", ".zdebug_", 1);
    let Some(s) = elf
        .section_by_name(name)
        .or_else(|| elf.section_by_name(&zname))
    else {
        return Ok(Cow::Borrowed(&[]));
    };
    let c = s
        .compressed_data()
        .map_err(|e| format!("{name}: unreadable ({e})"))?;
    match c.format {
        object::CompressionFormat::None => Ok(Cow::Borrowed(c.data)),
        object::CompressionFormat::Zlib => {
            let mut out = Vec::with_capacity(usize::try_from(c.uncompressed_size).unwrap_or(0));
            flate2::read::ZlibDecoder::new(c.data)
                .read_to_end(&mut out)
                .map_err(|e| format!("{name}: cannot decompress ({e})"))?;
            Ok(Cow::Owned(out))
        }
        f => Err(format!("{name}: compressed as {f:?}, not read")),
    }
}

/// The data member offsets of the DWARF structure type `type_name`.
fn member_offsets(elf: &object::File<'_>, type_name: &str) -> Result<HashMap<String, u64>, String> {
    let sections = gimli::DwarfSections::load(|id| section(elf, id.name()))?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let err = |e: gimli::Error| format!("its DWARF is unreadable ({e})");
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(err)? {
        let unit = dwarf.unit(header).map_err(err)?;
        let mut cursor = unit.entries();
        // The structure's depth while inside it: its members are one deeper.
        let mut inside: Option<isize> = None;
        let mut found = HashMap::new();
        while let Some(entry) = cursor.next_dfs().map_err(err)? {
            let depth = entry.depth();
            let name = entry
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| dwarf.attr_string(&unit, v).ok())
                .map(|s| String::from_utf8_lossy(s.slice()).into_owned());
            match inside {
                Some(d) if depth > d => {
                    if depth == d + 1 && entry.tag() == gimli::DW_TAG_member {
                        let off = entry
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|v| v.udata_value());
                        if let (Some(n), Some(off)) = (name, off) {
                            found.insert(n, off);
                        }
                    }
                    continue;
                }
                Some(_) => return Ok(found),
                None => {}
            }
            if entry.tag() == gimli::DW_TAG_structure_type && name.as_deref() == Some(type_name) {
                inside = Some(depth);
            }
        }
        if inside.is_some() {
            return Ok(found);
        }
    }
    Err(format!(
        "no DWARF type {type_name} (built without DWARF: -ldflags=-w)"
    ))
}

/// Reads the fields from `pid`'s memory.
pub fn read(pid: u32, layout: &Layout) -> std::io::Result<GoMemStats> {
    let mut m = GoMemStats::default();
    for ((_, width, set), addr) in FIELDS.iter().zip(layout.addrs) {
        let mut buf = [0u8; 8];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: *width,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: *width,
        };
        // SAFETY: one local iovec over `buf` (8 bytes, `width` ≤ 8), alive for the call; the
        // remote one is only read by the kernel, from the other process.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n != *width as isize {
            return Err(if n < 0 {
                std::io::Error::last_os_error()
            } else {
                std::io::Error::other("a short read")
            });
        }
        set(&mut m, u64::from_le_bytes(buf));
    }
    Ok(m)
}

/// Each Go process's layout (or why there is none, said once per binary), and its last values:
/// a process that has just exited keeps the ones read before.
#[derive(Default)]
pub struct Reader {
    layouts: HashMap<u32, Option<Layout>>,
    /// By executable (device, inode): a binary's DWARF is read once however many processes
    /// run it (system-wide mode: a fleet's service restarted every minute).
    by_file: HashMap<(u64, u64), Option<Layout>>,
    last: HashMap<u32, GoMemStats>,
}

impl Reader {
    /// Fills the Go processes' `memstats` (those `go` marks) with their values now.
    pub fn fill(&mut self, processes: &mut [Process]) {
        for p in processes.iter_mut() {
            let Some(go) = p.go.as_mut() else { continue };
            if !self.layouts.contains_key(&p.pid) {
                let exe = format!("/proc/{}/exe", p.pid);
                let file = match std::fs::metadata(&exe) {
                    Ok(m) => (m.dev(), m.ino()),
                    // Gone before it was read: nothing to say (its last values, if any, stay).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        go.memstats = self.last.get(&p.pid).cloned();
                        continue;
                    }
                    Err(e) => {
                        eprintln!(
                            "alloctrace: pid {} ({}): the Go runtime's MemStats are not read: \
                             its executable cannot be read ({e})",
                            p.pid, p.comm
                        );
                        self.layouts.insert(p.pid, None);
                        continue;
                    }
                };
                let known = self.by_file.entry(file).or_insert_with(|| {
                    std::fs::read(&exe)
                        .map_err(|e| format!("its executable cannot be read ({e})"))
                        .and_then(|d| layout(&d))
                        .map_err(|why| {
                            eprintln!(
                                "alloctrace: pid {} ({}): the Go runtime's MemStats are not \
                                 read: {why}",
                                p.pid, p.comm
                            )
                        })
                        .ok()
                });
                let here = known.as_ref().map(|l| l.in_process(p.pid));
                let here = match here {
                    Some(Err(why)) => {
                        eprintln!(
                            "alloctrace: pid {} ({}): the Go runtime's MemStats are not read: \
                             {why}",
                            p.pid, p.comm
                        );
                        None
                    }
                    Some(Ok(l)) => Some(l),
                    None => None,
                };
                self.layouts.insert(p.pid, here);
            }
            let Some(Some(layout)) = self.layouts.get(&p.pid) else {
                continue;
            };
            if let Ok(m) = read(p.pid, layout) {
                self.last.insert(p.pid, m);
            }
            go.memstats = self.last.get(&p.pid).cloned();
        }
        let listed: std::collections::HashSet<u32> = processes.iter().map(|p| p.pid).collect();
        self.layouts.retain(|pid, _| listed.contains(pid));
        self.last.retain(|pid, _| listed.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_that_is_not_go_has_no_layout() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let why = layout(&me).unwrap_err();
        assert!(why.contains("runtime.memstats"), "{why}");
    }

    #[test]
    fn our_own_memory_is_read_at_a_layout() {
        let fields: [u64; 4] = [7, 3, 123_456_789, 1_700_000_000_000_000_000];
        let addrs = std::array::from_fn(|i| std::ptr::addr_of!(fields[i]) as u64);
        let layout = Layout {
            addrs,
            pie_base: None,
        };
        let m = read(std::process::id(), &layout).unwrap();
        assert_eq!(
            m,
            GoMemStats {
                num_gc: 7,
                num_forced_gc: 3,
                pause_total_ns: 123_456_789,
                last_gc_unix_ns: 1_700_000_000_000_000_000
            }
        );
    }
}
