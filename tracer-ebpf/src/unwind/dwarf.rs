//! The DWARF unwinder: from the caller's return address on top of the stack, frame by frame,
//! each pc's mapping (`vma`), its binary's rows (user space's tables of its CFI), the rule in
//! force at its file offset (a bounded binary search), and from it the caller's stack pointer
//! (the CFA), return address (at CFA - 8) and rbp. Where a binary has no rule for a pc (no
//! table, a gap, a rule the tables do not hold: Go's code, JIT code, the vDSO), one
//! frame-pointer step instead.
//!
//! Every frame is checked on the way (its mapping must be code: the same lookup), so one walk
//! both finds a known stack's site and writes out a new one: it runs once per recorded
//! allocation, writing into a per-CPU slot it claims (`claim`). So a frame costs little:
//! a frame in the mapping of the one below takes no mapping lookup (`vma::find`), a return
//! address seen before takes an array lookup for its rule (`RULE_FRONT`), and the stack is
//! read once every few frames (`window`).
use core::ptr::write_volatile;

use alloctrace_common::unwind_table::{
    row_bound, Rule, CFA_END, CFA_PLT, CFA_RBP, CFA_RSP, CFA_SIGNAL, RBP_AT_CFA, SEARCH_STEPS,
    SIGNAL_RBP_BELOW_RSP,
};
use alloctrace_common::{stack_cut, stack_hash_step, StackTrace, FNV_OFFSET, MAX_FRAMES};
use aya_ebpf::{
    cty::c_void,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

use super::vma::{find, forget, Found};
use crate::bounded::repeat;
use crate::tables::maps::{UNWIND_FILES, UNWIND_ROWS};
use alloctrace_common::unwind_table::{FileKey, VmaEntry};
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use window::{read, read_frame, Window};

mod window;

/// Slots of per-CPU room for walks in progress: a uprobe's program runs with migration
/// disabled, not preemption, so on kernels that preempt kernel code another traced thread's
/// walk can start on this CPU in the middle of one. Each walk claims a slot (`claim`) and
/// passes its index down; with all four taken, the allocation has no site (counted).
pub const SLOTS: u32 = 4;

/// A walk's room: its state, its binary search's, the stack read last, the mapping looked
/// up last, the frames.
/// In a map, not on the program's stack: the verifier does not track values in a map, so it
/// verifies each loop body once or twice rather than once per distinct state (a frame count
/// on the stack is a new state every frame: ~70k more walked instructions per program).
#[repr(C)]
pub struct Slot {
    held: u64,
    walk: Walk,
    search: Search,
    window: Window,
    pub vma: VmaEntry,
    pub trace: StackTrace,
}

#[map]
static DWARF_SLOTS: PerCpuArray<Slot> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Slot `idx` of this CPU, owned by the walk that claimed it.
#[inline(always)]
pub fn slot(idx: u64) -> Option<&'static mut Slot> {
    // SAFETY: this CPU's slot, used by the walk holding it only.
    DWARF_SLOTS
        .get_ptr_mut(idx as u32)
        .map(|p| unsafe { &mut *p })
}

/// Claims a free slot of this CPU (compare-and-swap of its `held`); None if all are taken.
/// In a `bpf_loop`: the index comes out as a value the verifier does not know, so it walks
/// the rest of the program once, not once per slot (~14k walked instructions more).
#[inline(always)]
pub fn claim() -> Option<u64> {
    let mut won = SLOTS as u64;
    repeat(SLOTS, claim_step, &mut won);
    (won < SLOTS as u64).then_some(won)
}

extern "C" fn claim_step(i: u64, ctx: *mut c_void) -> i64 {
    let Some(s) = slot(i) else {
        return 1;
    };
    // SAFETY: a compare-and-swap on a map value.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &mut s.held,
            0,
            1,
        )
    };
    if won {
        // SAFETY: `ctx` is `claim`'s `won`, on its stack.
        unsafe { *(ctx as *mut u64) = i };
        return 1;
    }
    0
}

/// Gives slot `idx` back. Volatile, as are the stores into it (`put`): the compiler keeps
/// them before it.
#[inline(always)]
pub fn release(idx: u64) {
    if let Some(s) = slot(idx) {
        put(&mut s.held, 0);
    }
}

/// The walk's state.
#[repr(C)]
pub struct Walk {
    /// The current frame's return address, stack pointer (its CFA in the frame below) and rbp.
    ret: u64,
    sp: u64,
    fp: u64,
    hash: u64,
    len: u64,
    /// `stack_cut::*`.
    cut: u64,
    tgid: u64,
    /// The walk reached the thread's outermost frame.
    ended: u64,
    /// `ret` is the pc a signal interrupted, not a return address.
    interrupted: u64,
}

/// A binary search's bound and range (see `search`).
#[repr(C)]
pub struct Search {
    bound: u64,
    lo: u32,
    hi: u32,
}

/// Walks the stack of a probe at a function's entry (`sp`, `fp` its rsp and rbp; `first`
/// the return address at `sp`, if `has_first`), writing the frames into `st`. Returns the
/// stack's hash, never 0 or 1; sets `st.cut` to why it ended.
#[inline(never)]
pub fn walk(idx: u64, sp: u64, fp: u64, has_first: u64, first: u64) -> u64 {
    let Some(s) = slot(idx) else {
        return 2;
    };
    // The frames past this stack's end still hold an earlier walk's: cleared only for a
    // stack to store (`clear_past_end`), not on the hot path.
    put(&mut s.trace.len, 0);
    let w = &mut s.walk;
    w.ret = first;
    // The caller's stack pointer once the probed function returns.
    w.sp = sp + 8;
    w.fp = fp;
    w.hash = FNV_OFFSET;
    // Volatile: adjacent zero stores become calls of a byte-wise memset otherwise.
    put(&mut w.len, 0);
    put(&mut w.cut, stack_cut::NONE as u64);
    put(&mut w.ended, 0);
    put(&mut w.interrupted, 0);
    w.tgid = bpf_get_current_pid_tgid() >> 32;
    s.window.reset();
    forget(idx);
    let mut ctx = idx;
    if has_first != 0 {
        repeat(MAX_FRAMES as u32, step, &mut ctx);
    }
    let Some(s) = slot(idx) else {
        return 2;
    };
    let w = &mut s.walk;
    if has_first == 0 || (w.ended == 0 && w.cut == stack_cut::NONE as u64) {
        w.cut = stack_cut::TRUNCATED as u64;
    }
    put(&mut s.trace.cut, w.cut as u32);
    // The cut is part of the key: a walk the kernel could not check (busy) never shares a
    // site with a stack that ends there for good.
    let mut hash = stack_hash_step(w.hash, w.len | w.cut << 32);
    if hash < 2 {
        hash += 2;
    }
    hash
}

/// Zeroes the frames of slot `idx` past its stack's end, before the stack is stored: the
/// whole record reaches user space, and no slot may keep an earlier stack's frame (of another
/// process, maybe) there. A known stack's walk, the hot path, skips it (127 stores).
/// In a `bpf_loop`: unrolled, each frame's branch on the length was a state of its own to the
/// verifier (~70k more walked instructions per program).
#[inline(always)]
pub fn clear_past_end(idx: u64) {
    let mut ctx = idx;
    repeat(MAX_FRAMES as u32, clear_step, &mut ctx);
}

extern "C" fn clear_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the slot index `clear_past_end` passed, on its stack.
    let idx = unsafe { *(ctx as *const u64) };
    let Some(s) = slot(idx) else {
        return 1;
    };
    let i = i as usize;
    if i >= MAX_FRAMES {
        return 1;
    }
    if i >= s.trace.len as usize {
        put(&mut s.trace.ips[i], 0);
    }
    0
}

/// A store into a held slot, kept before its release.
#[inline(always)]
fn put<T>(to: &mut T, v: T) {
    // SAFETY: `to` is a valid reference.
    unsafe { write_volatile(to, v) };
}

/// Step `i`: keeps frame `i` (the return address in `ret`) if it lies in code, then unwinds
/// one frame to the next return address. Returns 1 to end the walk.
extern "C" fn step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the slot index `walk` passed, on its stack.
    let idx = unsafe { *(ctx as *const u64) };
    let Some(s) = slot(idx) else {
        return 1;
    };
    let (w, trace) = (&mut s.walk, &mut s.trace);
    let i = i as usize;
    if i >= MAX_FRAMES {
        return 1;
    }
    let ret = w.ret;
    // The call instruction, not the one after it: a call to a function that does not
    // return may be its function's last instruction.
    // A pc a signal interrupted is looked up as it is: the instruction it names has not run.
    let pc = ret.wrapping_sub(1 - w.interrupted.min(1));
    w.interrupted = 0;
    let vma = match find(idx, w.tgid as u32, pc) {
        (Found::Code, Some(v)) => v,
        (Found::NotCode, _) => {
            w.cut = stack_cut::NOT_CODE as u64;
            return 1;
        }
        _ => {
            w.cut = stack_cut::UNCHECKED as u64;
            return 1;
        }
    };
    w.hash = stack_hash_step(w.hash, ret);
    w.len += 1;
    put(&mut trace.ips[i], ret);
    put(&mut trace.len, (i + 1) as u32);
    let rule = Rule::unpack(rule_of(idx, vma, pc));
    if rule.cfa == CFA_END {
        w.ended = 1;
        return 1;
    }
    if i + 1 >= MAX_FRAMES {
        // More frames: cut by the depth limit (marked by `walk`).
        return 1;
    }
    if rule.cfa == CFA_SIGNAL {
        // The interrupted frame's registers, as the kernel saved them in the signal frame.
        let at = w.sp + rule.cfa_offset as u64;
        let (Some(sp), Some(pc), Some(fp)) = (
            read(at),
            read(at + 8),
            read(at - SIGNAL_RBP_BELOW_RSP as u64),
        ) else {
            w.cut = stack_cut::TRUNCATED as u64;
            return 1;
        };
        if pc == 0 {
            w.ended = 1;
            return 1;
        }
        w.ret = pc;
        w.sp = sp;
        w.fp = fp;
        w.interrupted = 1;
        return 0;
    }
    let (cfa, fp) = match rule.cfa {
        CFA_RSP => (w.sp + rule.cfa_offset as u64, w.fp),
        CFA_RBP => (w.fp.wrapping_add(rule.cfa_offset as u64), w.fp),
        CFA_PLT => {
            let pushed = if pc & 15 >= rule.cfa_offset as u64 {
                8
            } else {
                0
            };
            (w.sp + 8 + pushed, w.fp)
        }
        _ => {
            // No rule: a frame record at rbp, if rbp points at the stack above sp.
            if w.fp < w.sp || w.fp & 7 != 0 {
                w.cut = stack_cut::TRUNCATED as u64;
                return 1;
            }
            match read(w.fp) {
                Some(saved) => (w.fp + 16, saved),
                None => {
                    w.cut = stack_cut::TRUNCATED as u64;
                    return 1;
                }
            }
        }
    };
    // The stack grows down: a caller's frame lies above, past at least its return address.
    if cfa < w.sp + 8 {
        w.cut = stack_cut::TRUNCATED as u64;
        return 1;
    }
    let saved = (rule.cfa != 0 && rule.rbp == RBP_AT_CFA).then_some(rule.rbp_words as u64);
    let Some((next, fp)) = read_frame(&mut s.window, cfa, saved, fp) else {
        w.cut = stack_cut::TRUNCATED as u64;
        return 1;
    };
    // A zero return address ends a frame-pointer chain (`_start` clears rbp).
    if next == 0 {
        w.ended = 1;
        return 1;
    }
    w.ret = next;
    w.sp = cfa;
    w.fp = fp;
    0
}

/// The packed rule in force at `pc` of mapping `vma`; 0 (`CFA_NONE`) if its binary has no
/// table or the table no row there.
#[inline(always)]
fn rule_of(idx: u64, vma: &VmaEntry, pc: u64) -> u32 {
    if vma.file.dev == 0 && vma.file.ino == 0 {
        return 0;
    }
    let off = pc - vma.start + (vma.pgoff << 12);
    if off > u32::MAX as u64 {
        return 0;
    }
    let front = front_entry(idx, &vma.file, off);
    if let Some(f) = front.as_ref() {
        if f.offset == off && f.file.ino == vma.file.ino && f.file.dev == vma.file.dev {
            return f.rule;
        }
    }
    let key = RuleKey {
        file: vma.file,
        offset: off,
    };
    // SAFETY: a hash map lookup; the value is copied out at once.
    let rule = if let Some(&rule) = unsafe { RULE_CACHE.get(&key) } {
        rule
    } else {
        // SAFETY: as above.
        let Some(rows) = (unsafe { UNWIND_FILES.get(&vma.file) }).copied() else {
            // No table (yet): cached nowhere, so the rule is found once the table is in.
            return 0;
        };
        let rule = search(idx, rows.first, rows.count, off as u32).unwrap_or(0);
        let _ = RULE_CACHE.insert(&key, &rule, 0);
        rule
    };
    if let Some(f) = front {
        f.file = vma.file;
        f.offset = off;
        f.rule = rule;
    }
    rule
}

/// Entries of each slot's rule cache (a power of two).
const FRONT_ENTRIES: u32 = 512;

/// A rule found, as the front cache holds it: its file and offset (the tag) and the rule.
#[repr(C)]
struct FrontRule {
    file: FileKey,
    offset: u64,
    rule: u32,
    _pad: u32,
}

/// Per CPU and slot, a direct-mapped cache of rules in front of `RULE_CACHE`: an array
/// lookup the kernel inlines instead of an LRU hash's (hashing the key, taking its bucket,
/// marking the entry used): a rule is only ever found once per slot and return address.
/// A slot's part is used by the walk holding it alone, so an entry is never read half
/// written; a file's rules never change during a run, so an entry is never stale. A zeroed
/// entry names no file (an anonymous mapping has no rule lookup).
#[map]
static RULE_FRONT: PerCpuArray<FrontRule> = PerCpuArray::with_max_entries(SLOTS * FRONT_ENTRIES, 0);

/// The front cache's entry for `off` in `file`, in slot `idx`'s part.
#[inline(always)]
fn front_entry(idx: u64, file: &FileKey, off: u64) -> Option<&'static mut FrontRule> {
    let h = (file.ino ^ file.dev.rotate_left(40) ^ off).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let i = (h >> 40) as u32 & (FRONT_ENTRIES - 1);
    // SAFETY: this CPU's entry in the part of slot `idx`, which only its holder uses.
    RULE_FRONT
        .get_ptr_mut(idx as u32 * FRONT_ENTRIES + i)
        .map(|p| unsafe { &mut *p })
}

/// A pc as its binary's file and offset: the key of a rule found, valid for every process
/// mapping the file (a binary's table never changes during a run).
#[repr(C)]
pub struct RuleKey {
    file: FileKey,
    offset: u64,
}

/// (file, offset) -> the rule the search found there: one hash lookup in place of the file
/// map's and the search's ~20 steps for a return address seen before.
#[map]
static RULE_CACHE: LruHashMap<RuleKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// The rule of the last row at or below file offset `off` among `count` rows from `first`;
/// 0 if there is none (or the slice is beyond the search's reach). In a `bpf_loop`: the
/// verifier walks its step once, not once per step and branch.
#[inline(always)]
fn search(idx: u64, first: u32, count: u32, off: u32) -> Option<u32> {
    let s = &mut slot(idx)?.search;
    s.bound = row_bound(off);
    s.lo = first;
    s.hi = first.saturating_add(count);
    let mut ctx = idx;
    repeat(SEARCH_STEPS, search_step, &mut ctx);
    let s = &slot(idx)?.search;
    if s.lo < s.hi || s.lo == first {
        return None;
    }
    UNWIND_ROWS.get(s.lo - 1).map(|&r| r as u32)
}

/// A step of `search`. Invariant: rows below `lo` are <= `bound`, rows from `hi` on above it.
extern "C" fn search_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the slot index `search` passed, on its stack.
    let idx = unsafe { *(ctx as *const u64) };
    let Some(s) = slot(idx).map(|s| &mut s.search) else {
        return 1;
    };
    if s.lo >= s.hi {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    match UNWIND_ROWS.get(mid) {
        Some(&r) if r <= s.bound => s.lo = mid + 1,
        Some(_) => s.hi = mid,
        None => {
            // Unreachable for a slice inside the array; ends the search with no row.
            s.hi = s.lo;
            return 1;
        }
    }
    0
}
