//! Every map of the tracer. Sizes here are defaults: the loader sets the real ones from
//! `--max-stacks` / `--max-live` with `EbpfLoader::map_max_entries`.
use crate::tables::task_storage::TaskStorage;
use alloctrace_common::unwind_table::{FileKey, FileRows, DEFAULT_ROWS, MAX_FILES};
use alloctrace_common::{
    loss, CallStates, GoGc, LiveSlot, OwnedTotals, ProcStats, SiteSlot, StackKey, StackTrace,
};
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

/// (tgid, stack hash) -> frames. Written once per distinct stack.
#[map]
pub static STACKS: HashMap<StackKey, StackTrace> = HashMap::with_max_entries(16384, 0);

/// The site table: (tgid, stack hash) -> cumulative counters and histograms of that
/// allocation site (see `sites`). Mmapable: user space reads the counters in place and
/// retires exited processes' slots. The loader sizes it (`alloctrace_common::sites::slots`).
#[map]
pub static SITES: Array<SiteSlot> = Array::with_max_entries(24576, BPF_F_MMAPABLE);

/// The site table's counts (`alloctrace_common::sites::CLAIMS`, `SPREAD_LEFT`). Mmapable:
/// user space gives spread budget back atomically.
#[map]
pub static SITE_CLAIMS: Array<u64> =
    Array::with_max_entries(alloctrace_common::sites::CLAIM_WORDS, BPF_F_MMAPABLE);

/// Blocks allocated and not yet freed: size, site and birth time (see `live`). Mmapable, so
/// user space can retire exited processes' slots with the same atomic protocol.
#[map]
pub static LIVE: Array<LiveSlot> = Array::with_max_entries(1 << 20, BPF_F_MMAPABLE);

/// Per thread: the state of the allocator call it is inside, and of one a signal handler
/// made meanwhile.
#[btf_map]
pub static CALLS: TaskStorage<CallStates> = TaskStorage::new();

/// tgid -> what the process allocated and freed that no site holds (see
/// `account::count_alloc`), and its name. Per CPU: threads on different CPUs never share its
/// cache line; user space sums the CPUs.
#[map]
pub static PROCS: PerCpuHashMap<u32, ProcStats> = PerCpuHashMap::with_max_entries(8192, 0);

/// Per CPU id: the unattributed totals of the process that owns the slot (see
/// `OwnedTotals`). A plain mmapable array, not a per-CPU one: user space frees a slot in
/// place, field by field. The loader sizes it to the possible CPUs.
#[map]
pub static OWNED: Array<OwnedTotals> = Array::with_max_entries(256, BPF_F_MMAPABLE);

/// Loss counters, indexed by `alloctrace_common::loss`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// New processes and stacks, so user space snapshots mappings while the process lives.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU room to build a new stack in before it is stored, and the flag that says it is in
/// use (see `unwind::record`).
#[repr(C)]
pub struct StackScratch {
    pub held: u64,
    pub trace: StackTrace,
}

#[map]
pub static STACK_SCRATCH: PerCpuArray<StackScratch> = PerCpuArray::with_max_entries(1, 0);

/// Run-time switches set by user space (`alloctrace_common::CONTROL_STOPPED`).
#[map]
pub static CONTROL: Array<u32> = Array::with_max_entries(1, 0);

/// Alloc-only mode: how many threads are inside an allocator call that hands its request to
/// malloc (see `alloc::count::count_entry`). Not per CPU: the thread may move to another CPU
/// before its malloc runs.
#[map]
pub static PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: bytes still to allocate before the next sampled allocation (`--sample-bytes`);
/// 0 until the first draw.
#[map]
pub static SAMPLER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// tgid -> the Go GC cycles it completed (`alloctrace_common::go`).
#[map]
pub static GO_GC: HashMap<u32, GoGc> =
    HashMap::with_max_entries(alloctrace_common::go::GO_GC_PROCS, 0);

/// The DWARF unwind tables' rows, every binary's in its own slice (see
/// `alloctrace_common::unwind_table`). Written by user space once per binary per run, in
/// place (mmapable).
#[map]
pub static UNWIND_ROWS: Array<u64> = Array::with_max_entries(DEFAULT_ROWS, BPF_F_MMAPABLE);

/// A binary (its device and inode) -> its slice of UNWIND_ROWS.
#[map]
pub static UNWIND_FILES: HashMap<FileKey, FileRows> = HashMap::with_max_entries(MAX_FILES, 0);
