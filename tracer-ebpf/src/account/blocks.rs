//! The blocks in flight: a new block into the in-flight table with its birth time, the losses
//! that could not store it cleanly counted.
use alloctrace_common::{loss, AllocInfo};
use aya_ebpf::{helpers::bpf_ktime_get_ns, EbpfContext};

use crate::account::loss::bump_loss;
use crate::tables::live;

/// The clock, read at most once per program run: a read costs ~20-40 ns on this VM.
#[derive(Default)]
pub struct Now(u64);

impl Now {
    #[inline(always)]
    pub fn get(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: a helper without preconditions.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// Remembers a new block until its free: its size, site and birth time.
#[inline(always)]
pub fn track<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    addr: u64,
    size: u64,
    stack_hash: u64,
    now: &mut Now,
) {
    // Only a site records lifetimes (`record_freed`): an unsampled block skips the clock
    // read, most of what tracking it costs.
    let ts_ns = if stack_hash != 0 { now.get() } else { 0 };
    let info = AllocInfo {
        size,
        stack_hash,
        ts_ns,
    };
    store(ctx, tgid, addr, &info);
}

/// Puts a block in the in-flight table, counting what that could not do cleanly.
#[inline(always)]
pub fn store<C: EbpfContext>(ctx: &C, tgid: u32, addr: u64, info: &AllocInfo) {
    match live::insert(tgid, addr, info) {
        live::Inserted::Stored => {}
        live::Inserted::OverStale => bump_loss(ctx, loss::STALE_BLOCK),
        live::Inserted::Full => bump_loss(ctx, loss::LIVE_MAP_FULL),
    }
}
