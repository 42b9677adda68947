//! The DWARF unwind tables user space compiles from a binary's CFI (`.eh_frame`,
//! `.debug_frame`) and the kernel's stack walk reads: one packed row per address range, keyed
//! by the binary's file offset so a pc maps to its row from its mapping alone.
//!
//! A row is a `u64`: the file offset where its range starts in the high 32 bits, its rule in
//! the low 32. Each binary's rows are sorted by offset, consecutive equal rules merged, and
//! they lie in one slice of the row array; the file map gives (first row, count) per file.
//! A range runs up to the next row's offset; the last row of a file ends the CFI it knows.
use core::mem::size_of;

/// Rows the row array holds by default (8 bytes each: 16 MiB). A binary whose rows do not
/// fit in what is left is walked by frame pointers (said once, counted).
pub const DEFAULT_ROWS: u32 = 1 << 21;
/// Binary-search steps the kernel takes: enough for any one file's slice of the array.
pub const SEARCH_STEPS: u32 = 23;
/// Files whose tables the kernel holds at once.
pub const MAX_FILES: u32 = 4096;

/// The CFA (the caller's stack pointer) is not known here: no CFI for this range (a gap
/// between functions, or a rule the tables do not encode). The walker falls back to frame
/// pointers.
pub const CFA_NONE: u32 = 0;
/// CFA = rsp + offset.
pub const CFA_RSP: u32 = 1;
/// CFA = rbp + offset.
pub const CFA_RBP: u32 = 2;
/// The PLT's expression: CFA = rsp + 8, + 8 more when (pc & 15) >= offset (the stub's push).
pub const CFA_PLT: u32 = 3;
/// The return address is undefined: the outermost frame of a thread (`_start`,
/// `clone`/`clone3`'s child). The stack is complete.
pub const CFA_END: u32 = 4;
/// A signal frame (`__restore_rt`): rsp points at the kernel's `ucontext`, whose saved
/// registers give the interrupted frame: rsp at rsp + offset, rip 8 bytes above it, rbp
/// `SIGNAL_RBP_BELOW_RSP` bytes below it (x86-64's `struct sigcontext`).
pub const CFA_SIGNAL: u32 = 5;
pub const SIGNAL_RBP_BELOW_RSP: u32 = 40;

/// rbp is unchanged by this frame.
pub const RBP_SAME: u32 = 0;
/// The caller's rbp is saved at CFA + offset (a negative multiple of 8).
pub const RBP_AT_CFA: u32 = 1;

const KIND_BITS: u32 = 3;
const RBP_KIND_SHIFT: u32 = 3;
const RBP_OFF_SHIFT: u32 = 4;
const RBP_OFF_BITS: u32 = 8;
const CFA_OFF_SHIFT: u32 = 12;
/// Largest CFA offset a rule holds (20 bits): bigger frames have no row (frame pointers).
pub const MAX_CFA_OFFSET: u32 = (1 << 20) - 1;
/// Largest saved-rbp distance below the CFA, in 8-byte words.
pub const MAX_RBP_WORDS: u32 = (1 << RBP_OFF_BITS) - 1;

/// One unwind rule, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `CFA_*`.
    pub cfa: u32,
    /// The CFA's offset from its register (bytes), or the PLT's threshold.
    pub cfa_offset: u32,
    /// `RBP_*`.
    pub rbp: u32,
    /// With `RBP_AT_CFA`: the caller's rbp is at CFA - 8 * `rbp_words`.
    pub rbp_words: u32,
}

impl Rule {
    pub const NONE: Rule = Rule {
        cfa: CFA_NONE,
        cfa_offset: 0,
        rbp: RBP_SAME,
        rbp_words: 0,
    };

    /// The rule packed into a row's low 32 bits; None when it does not fit (the range gets
    /// `Rule::NONE`).
    pub fn pack(&self) -> Option<u32> {
        if self.cfa > CFA_SIGNAL
            || self.rbp > RBP_AT_CFA
            || self.cfa_offset > MAX_CFA_OFFSET
            || self.rbp_words > MAX_RBP_WORDS
        {
            return None;
        }
        Some(
            self.cfa
                | self.rbp << RBP_KIND_SHIFT
                | self.rbp_words << RBP_OFF_SHIFT
                | self.cfa_offset << CFA_OFF_SHIFT,
        )
    }

    #[inline(always)]
    pub fn unpack(r: u32) -> Rule {
        Rule {
            cfa: r & ((1 << KIND_BITS) - 1),
            rbp: (r >> RBP_KIND_SHIFT) & 1,
            rbp_words: (r >> RBP_OFF_SHIFT) & MAX_RBP_WORDS,
            cfa_offset: r >> CFA_OFF_SHIFT,
        }
    }
}

/// A row: the file offset its range starts at, and its packed rule.
#[inline(always)]
pub fn row(offset: u32, rule: u32) -> u64 {
    (offset as u64) << 32 | rule as u64
}

/// The rows whose offset is at most `offset` are the rows at most this value.
#[inline(always)]
pub fn row_bound(offset: u32) -> u64 {
    ((offset as u64) << 32) | 0xffff_ffff
}

/// A file as the kernel names it: the `s_dev` of its superblock (the kernel's encoding,
/// major << 20 | minor) and its inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}
const _: () = assert!(size_of::<FileKey>() == 16);

/// A file's slice of the row array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileRows {
    pub first: u32,
    pub count: u32,
}
const _: () = assert!(size_of::<FileRows>() == 8);

/// The kernel's `dev_t` (`MKDEV`: major << 20 | minor) of a user-space `dev_t` (glibc's
/// `makedev` encoding, as `stat` and `/proc/PID/maps` give it).
pub fn kernel_dev(major: u64, minor: u64) -> u64 {
    major << 20 | minor
}

/// The row array (`Array<u64>`) and the file map (`HashMap<FileKey, FileRows>`).
pub const MAP_UNWIND_ROWS: &str = "UNWIND_ROWS";
pub const MAP_UNWIND_FILES: &str = "UNWIND_FILES";

/// How stacks are walked: `UNWIND_FP` or `UNWIND_DWARF`.
pub const GLOBAL_UNWIND_MODE: &str = "UNWIND_MODE";
/// Offsets in the running kernel's structs (from its BTF) the walk reads a pc's mapping
/// and file by: `vm_area_struct`'s `vm_start`, `vm_pgoff`, `vm_file`; `file`'s `f_inode`;
/// `inode`'s `i_ino`, `i_sb`; `super_block`'s `s_dev`.
pub const GLOBAL_VMA_START_OFFSET: &str = "VMA_START_OFFSET";
pub const GLOBAL_VMA_PGOFF_OFFSET: &str = "VMA_PGOFF_OFFSET";
pub const GLOBAL_VMA_FILE_OFFSET: &str = "VMA_FILE_OFFSET";
pub const GLOBAL_FILE_INODE_OFFSET: &str = "FILE_INODE_OFFSET";
pub const GLOBAL_INODE_INO_OFFSET: &str = "INODE_INO_OFFSET";
pub const GLOBAL_INODE_SB_OFFSET: &str = "INODE_SB_OFFSET";
pub const GLOBAL_SB_DEV_OFFSET: &str = "SB_DEV_OFFSET";

/// The kernel's cache of the mappings pcs were found in (an LRU hash): what `bpf_find_vma`
/// said of a pc, for every pc of the same process in the same granule that the mapping
/// covers. Cheaper than the lookup, and it needs no lock on the process's mappings (a
/// lookup fails while another thread maps or unmaps memory). User space fills it with each
/// traced process's code mappings as it reads or records them (`code_maps`).
pub const MAP_VMA_CACHE: &str = "VMA_CACHE";
pub const VMA_CACHE_ENTRIES: u32 = 16384;
/// System-wide, user space fills it with every process's code mappings (a process maps
/// ~40-100 granules of code): room for several hundred processes.
pub const VMA_CACHE_ENTRIES_SYSTEM: u32 = 65536;
/// log2 of a granule's size (64 KiB).
pub const VMA_GRANULE_SHIFT: u32 = 16;
/// `vm_area_struct`'s `vm_end` (see `GLOBAL_VMA_START_OFFSET`).
pub const GLOBAL_VMA_END_OFFSET: &str = "VMA_END_OFFSET";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmaKey {
    pub tgid: u32,
    pub _pad: u32,
    /// pc >> VMA_GRANULE_SHIFT.
    pub granule: u64,
}
const _: () = assert!(size_of::<VmaKey>() == 16);

/// A mapping found for a pc: its flags, range, page offset and file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaEntry {
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    /// In pages.
    pub pgoff: u64,
    /// dev 0 and ino 0: anonymous (or the file could not be read).
    pub file: FileKey,
}
const _: () = assert!(size_of::<VmaEntry>() == 48);

/// How stacks are walked (`GLOBAL_UNWIND_MODE`).
pub const UNWIND_FP: u32 = 0;
pub const UNWIND_DWARF: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_a_row() {
        let r = Rule {
            cfa: CFA_RSP,
            cfa_offset: 4104,
            rbp: RBP_AT_CFA,
            rbp_words: 2,
        };
        assert_eq!(Rule::unpack(r.pack().unwrap()), r);
        let big = Rule {
            cfa_offset: MAX_CFA_OFFSET + 1,
            ..r
        };
        assert_eq!(big.pack(), None);
        assert!(row(10, 0xffff_ffff) <= row_bound(10));
        assert!(row(11, 0) > row_bound(10));
    }
}
