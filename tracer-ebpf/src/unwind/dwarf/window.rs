//! The DWARF walk's reads of the stack: the return address below a CFA and the caller's
//! saved rbp, served from one read of the stack above the frame (`Window`) where it holds
//! them, so a walk reads the stack once every few frames instead of once or twice a frame.
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf};

/// The window's size in words (1 KiB), a power of two. On the bench's chain (frames of 56
/// bytes) a frame cost ~47-50 ns of CPU with a window of 256 bytes, ~38-42 with 512, ~30-40
/// with 1 KiB: a larger read costs little more than a smaller one.
const WINDOW_WORDS: usize = 128;
/// How far below a CFA a window starts: the return address and, mostly, the saved rbp lie
/// within it. Also the small window's size.
const WINDOW_BELOW: u64 = 64;
const SMALL_WORDS: usize = (WINDOW_BELOW / 8) as usize;

/// The stack read last: `len` bytes from `base`.
#[repr(C)]
pub struct Window {
    base: u64,
    len: u64,
    /// A window ran past the stack's mapping in this walk: the frames above are nearer its
    /// top, so they read small windows.
    small: u64,
    words: [u64; WINDOW_WORDS],
}

impl Window {
    /// Empties the window for a new walk (of another thread's stack, maybe).
    #[inline(always)]
    pub fn reset(&mut self) {
        // SAFETY: valid references; volatile, as are the walk's other stores into its slot.
        unsafe {
            write_volatile(&mut self.len, 0);
            write_volatile(&mut self.small, 0);
        }
    }

    /// The word at `at`, if the window holds it.
    #[inline(always)]
    fn word(&self, at: u64) -> Option<u64> {
        let off = at.wrapping_sub(self.base);
        if off >= self.len || off & 7 != 0 {
            return None;
        }
        // Read back volatile: LLVM would fold the mask below into the test above, and the
        // verifier would see an unbounded offset into the map value.
        // SAFETY: a read of a local.
        let i = unsafe { read_volatile(&off) } >> 3;
        Some(self.words[i as usize & (WINDOW_WORDS - 1)])
    }

    /// The return address below `cfa` and the saved rbp at `rbp_at`, if the window holds
    /// both.
    #[inline(always)]
    fn pair(&self, cfa: u64, rbp_at: u64) -> Option<(u64, u64)> {
        Some((self.word(cfa - 8)?, self.word(rbp_at)?))
    }

    /// Reads the window for the frame whose CFA is `cfa`: `WINDOW_WORDS` words from just
    /// below it, else (past the stack's mapping) the small window below it.
    #[inline(always)]
    fn fill(&mut self, cfa: u64) {
        self.base = cfa.saturating_sub(WINDOW_BELOW);
        self.len = 0;
        if self.small == 0 {
            // SAFETY: bpf_probe_read_user checks the user address and fails instead of
            // faulting; the cast only views the words as bytes.
            let all = unsafe {
                &mut *(&mut self.words as *mut [u64; WINDOW_WORDS] as *mut [u8; 8 * WINDOW_WORDS])
            };
            // SAFETY: as above.
            if unsafe { bpf_probe_read_user_buf(self.base as *const u8, all) }.is_ok() {
                self.len = 8 * WINDOW_WORDS as u64;
                return;
            }
            self.small = 1;
        }
        // SAFETY: as above, into the window's first words.
        let some = unsafe { &mut *(self.words.as_mut_ptr() as *mut [u8; 8 * SMALL_WORDS]) };
        // SAFETY: as above.
        if unsafe { bpf_probe_read_user_buf(self.base as *const u8, some) }.is_ok() {
            self.len = WINDOW_BELOW;
        }
    }
}

/// The return address below `cfa` and the caller's rbp: saved `saved` words below `cfa`,
/// else `fp` as it is. None if unreadable.
///
/// Frames lie next to each other, from the bottom of the stack up: one read of 1 KiB from
/// just below a CFA mostly holds the next frames' return addresses and saved rbp as well
/// (gcc's usual six pushes put rbp six words below the CFA), and costs little more than a
/// read of one word (the helper's fixed cost dominates). In the slot: on the program's stack
/// even a 64-byte block takes the walk past the kernel's 512 bytes for a program and its
/// calls. The thread is stopped in the probe: its stack does not change during the walk.
#[inline(always)]
pub fn read_frame(win: &mut Window, cfa: u64, saved: Option<u64>, fp: u64) -> Option<(u64, u64)> {
    let rbp_at = cfa.wrapping_sub(8 * saved.unwrap_or(1));
    let pair = match win.pair(cfa, rbp_at) {
        Some(p) => Some(p),
        None => {
            win.fill(cfa);
            win.pair(cfa, rbp_at)
        }
    };
    if let Some((ret, rbp)) = pair {
        return Some((ret, saved.map_or(fp, |_| rbp)));
    }
    // Unreadable, or rbp saved farther below the CFA than the window reaches: word by word.
    let ret = read(cfa - 8)?;
    Some((ret, if saved.is_some() { read(rbp_at)? } else { fp }))
}

/// Reads a user word; None if unreadable.
#[inline(always)]
pub fn read(at: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting.
    unsafe { bpf_probe_read_user(at as *const u64) }.ok()
}
