//! The DWARF walk's reads of the stack: the return address below a CFA and the caller's
//! saved rbp, served from one read of the stack above the frame (`Window`) where it holds
//! them, so a walk reads the stack once every few frames instead of once or twice a frame.
use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf};

/// The stack window's size in words (512 bytes), a power of two.
const WINDOW_WORDS: usize = 64;
/// How far below a CFA a window read starts: a prologue's saved rbp is mostly within this.
const WINDOW_BELOW: u64 = 64;

/// The stack read last: `WINDOW_WORDS` words from `base`, if `ok`.
#[repr(C)]
pub struct Window {
    base: u64,
    pub ok: u64,
    words: [u64; WINDOW_WORDS],
}

/// The word at `at` in the window, if it holds it.
#[inline(always)]
fn in_window(win: &Window, at: u64) -> Option<u64> {
    let off = at.wrapping_sub(win.base);
    if win.ok == 0 || off >= 8 * WINDOW_WORDS as u64 || off & 7 != 0 {
        return None;
    }
    // Read back volatile: LLVM would fold the mask into the test above, and the verifier
    // would see an unbounded offset into the map value.
    // SAFETY: a read of a local.
    let i = unsafe { read_volatile(&off) } >> 3;
    Some(win.words[i as usize & (WINDOW_WORDS - 1)])
}

/// The return address below `cfa` and the caller's rbp: saved `saved` words below `cfa`,
/// else `fp` as it is. None if unreadable.
///
/// Frames lie next to each other, from the bottom of the stack up: one read of 512 bytes
/// from just below a CFA mostly holds the next frames' return addresses and saved rbp as
/// well (gcc's usual six pushes put rbp six words below the CFA), and costs about what a
/// read of one word does (the helper's fixed cost dominates). Into the slot: on the
/// program's stack the window would take the walk past the kernel's 512 bytes for a
/// program and its calls. A walk starts with no window (`ok` 0). The thread is stopped in the probe: its stack does not change
/// during the walk.
#[inline(always)]
pub fn read_frame(win: &mut Window, cfa: u64, saved: Option<u64>, fp: u64) -> Option<(u64, u64)> {
    let rbp_at = cfa.wrapping_sub(8 * saved.unwrap_or(1));
    if let (Some(ret), Some(rbp)) = (in_window(win, cfa - 8), in_window(win, rbp_at)) {
        return Some((ret, saved.map_or(fp, |_| rbp)));
    }
    win.base = cfa.saturating_sub(WINDOW_BELOW);
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting;
    // the cast only views the words as bytes.
    win.ok = unsafe {
        bpf_probe_read_user_buf(
            win.base as *const u8,
            &mut *(&mut win.words as *mut [u64; WINDOW_WORDS] as *mut [u8; 8 * WINDOW_WORDS]),
        )
    }
    .is_ok() as u64;
    if let (Some(ret), Some(rbp)) = (in_window(win, cfa - 8), in_window(win, rbp_at)) {
        return Some((ret, saved.map_or(fp, |_| rbp)));
    }
    // Near the top of the stack the window runs past its mapping (or rbp is saved far
    // below the CFA): word by word.
    let ret = read(cfa - 8)?;
    Some((ret, if saved.is_some() { read(rbp_at)? } else { fp }))
}

/// Reads a user word; None if unreadable.
#[inline(always)]
pub fn read(at: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting.
    unsafe { bpf_probe_read_user(at as *const u64) }.ok()
}
