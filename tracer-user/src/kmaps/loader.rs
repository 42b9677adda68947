//! Loads the embedded eBPF object with the map sizes and globals of this run.
use alloctrace_common as abi;
use alloctrace_common::unwind_table as ut;
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};

/// The eBPF object, built by `cargo xtask build` and embedded by build.rs (empty when the
/// binary was built without it).
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this alloctrace binary was built without its eBPF programs: build it with `cargo xtask build`")]
    NotEmbedded,
    #[error("cannot load the eBPF programs: {0}{hint}", hint = size_hint(.0))]
    Load(#[source] aya::EbpfError),
    #[error(transparent)]
    Owned(crate::kmaps::owned_totals::OwnedError),
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map SITE_CLAIMS: {0}")]
    Map(#[source] aya::maps::MapError),
    #[error("{0} (alloctrace checks every stack frame against the process's mappings)")]
    Btf(#[source] crate::kmaps::btf::BtfError),
}

/// The running kernel's type information.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The option that sizes a map the kernel could not create (for want of memory, or a size
/// beyond its limits), as a hint to append to the error.
fn size_hint(e: &aya::EbpfError) -> &'static str {
    let aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, .. }) = e else {
        return "";
    };
    match name.as_str() {
        abi::MAP_LIVE => " (lower --max-live)",
        abi::MAP_SITES | abi::MAP_STACKS => " (lower --max-stacks)",
        ut::MAP_UNWIND_ROWS => " (lower --unwind-rows)",
        _ => "",
    }
}

/// Map sizes and run-time knobs of the eBPF side.
pub struct Sizes {
    pub max_stacks: u32,
    pub max_live: u32,
    /// Mean bytes between sampled allocations; 0 records every allocation.
    pub sample_bytes: u64,
    /// The one process traced (its probes are attached to it alone); 0 for every process.
    pub target_tgid: u32,
    /// Some links count one process only, named by their cookies (`probe::Scope::Only`).
    pub by_cookie: bool,
    /// `ut::UNWIND_FP` or `ut::UNWIND_DWARF` (`--unwind`).
    pub unwind_mode: u32,
    /// Rows of the DWARF unwind tables (`--unwind-rows`).
    pub unwind_rows: u32,
    /// Entries of the DWARF walk's code-mapping cache.
    pub code_mappings: u32,
}

/// The embedded eBPF object's bytes (its programs are loaded from them: `probe::Programs`).
pub fn object() -> &'static [u8] {
    OBJECT
}

pub fn load(sizes: &Sizes) -> Result<Ebpf, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotEmbedded);
    }
    let self_tgid = std::process::id();
    let live_slots = abi::live::slots(sizes.max_live);
    let live_mask = live_slots as u64 - 1;
    let site_slots = abi::sites::slots(sizes.max_stacks);
    let site_homes = abi::sites::homes(sizes.max_stacks) as u64;
    let owned_slots = crate::kmaps::owned_totals::slots().map_err(LoadError::Owned)?;
    let t = std::time::Instant::now();
    // Where the kernel keeps a mapping's flags moves between versions and configurations.
    // The DWARF walk reads a pc's mapping and file by the offsets after it (`unwind::cfi`).
    let offsets = crate::kmaps::btf::member_offsets_in_file(
        std::path::Path::new(KERNEL_BTF),
        &[
            ("vm_area_struct", "vm_flags"),
            ("vm_area_struct", "vm_start"),
            ("vm_area_struct", "vm_pgoff"),
            ("vm_area_struct", "vm_file"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("super_block", "s_dev"),
            ("vm_area_struct", "vm_end"),
        ],
    )
    .map_err(LoadError::Btf)?;
    let vma_flags_offset = offsets[0];
    log::info!(
        "kernel BTF read in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = std::time::Instant::now();
    let mut ebpf = EbpfLoader::new()
        // The kernel's BTF is for CO-RE relocations of aya's copies of the programs, which
        // are never loaded (`probe::Programs` loads its own, relocating them itself if they
        // need it): not parsed again here (~20 ms).
        .btf(None)
        .override_global(abi::GLOBAL_SELF_TGID, &self_tgid, true)
        .override_global(abi::GLOBAL_TARGET_TGID, &sizes.target_tgid, true)
        .override_global(abi::GLOBAL_BY_COOKIE, &u32::from(sizes.by_cookie), true)
        .override_global(abi::GLOBAL_SAMPLE_BYTES, &sizes.sample_bytes, true)
        .override_global(abi::GLOBAL_LIVE_MASK, &live_mask, true)
        .override_global(abi::GLOBAL_SITE_HOMES, &site_homes, true)
        .override_global(abi::GLOBAL_VMA_FLAGS_OFFSET, &vma_flags_offset, true)
        .override_global(ut::GLOBAL_VMA_START_OFFSET, &offsets[1], true)
        .override_global(ut::GLOBAL_VMA_PGOFF_OFFSET, &offsets[2], true)
        .override_global(ut::GLOBAL_VMA_FILE_OFFSET, &offsets[3], true)
        .override_global(ut::GLOBAL_FILE_INODE_OFFSET, &offsets[4], true)
        .override_global(ut::GLOBAL_INODE_INO_OFFSET, &offsets[5], true)
        .override_global(ut::GLOBAL_INODE_SB_OFFSET, &offsets[6], true)
        .override_global(ut::GLOBAL_SB_DEV_OFFSET, &offsets[7], true)
        .override_global(ut::GLOBAL_VMA_END_OFFSET, &offsets[8], true)
        .override_global(ut::GLOBAL_UNWIND_MODE, &sizes.unwind_mode, true)
        .map_max_entries(ut::MAP_UNWIND_ROWS, sizes.unwind_rows)
        .map_max_entries(ut::MAP_VMA_CACHE, sizes.code_mappings)
        .map_max_entries(abi::MAP_STACKS, sizes.max_stacks)
        .map_max_entries(abi::MAP_SITES, site_slots)
        .map_max_entries(abi::MAP_LIVE, live_slots)
        .map_max_entries(abi::MAP_OWNED, owned_slots)
        // CALLS is task storage, which aya 0.14 has no user-space type for; only the kernel
        // side uses it.
        .allow_unsupported_maps()
        .load(OBJECT)
        .map_err(LoadError::Load)?;
    log::info!("maps created in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    set_spread_budget(&mut ebpf, abi::sites::spread_budget(sizes.max_stacks))?;
    Ok(ebpf)
}

/// Sets the site table's spread budget (`abi::sites::SPREAD_LEFT`), before any probe runs.
fn set_spread_budget(ebpf: &mut Ebpf, budget: u32) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(abi::MAP_SITE_CLAIMS)
        .ok_or(LoadError::MissingMap(abi::MAP_SITE_CLAIMS))?;
    let mut counts: aya::maps::Array<&mut aya::maps::MapData, u64> =
        map.try_into().map_err(LoadError::Map)?;
    counts
        .set(abi::sites::SPREAD_LEFT, budget as u64, 0)
        .map_err(LoadError::Map)
}
