//! Names of the maps and programs, as the loader looks them up in the object.

// Map names, as the loader looks them up.
pub const MAP_STACKS: &str = "STACKS";
pub const MAP_SITES: &str = "SITES";
pub const MAP_LIVE: &str = "LIVE";
pub const MAP_CALLS: &str = "CALLS";
pub const MAP_PROCS: &str = "PROCS";
pub const MAP_LOSSES: &str = "LOSSES";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_SITE_CLAIMS: &str = "SITE_CLAIMS";
pub const MAP_STACK_SCRATCH: &str = "STACK_SCRATCH";
pub const MAP_CONTROL: &str = "CONTROL";
pub const MAP_SAMPLER: &str = "SAMPLER";
pub const MAP_OWNED: &str = "OWNED";

// Program names (the eBPF function names).
pub const PROG_MALLOC_ENTER: &str = "malloc_enter";
pub const PROG_CALLOC_ENTER: &str = "calloc_enter";
pub const PROG_REALLOC_ENTER: &str = "realloc_enter";
pub const PROG_REALLOCARRAY_ENTER: &str = "reallocarray_enter";
pub const PROG_POSIX_MEMALIGN_ENTER: &str = "posix_memalign_enter";
pub const PROG_ALIGNED_ALLOC_ENTER: &str = "aligned_alloc_enter";
pub const PROG_VALLOC_ENTER: &str = "valloc_enter";
pub const PROG_ALLOC_RETURN: &str = "alloc_return";
pub const PROG_FREE_ENTER: &str = "free_enter";

// The alloc-only mode's entry programs: they count a request at entry, with no return or
// free probe. glibc's own calls between these functions are left to the callee (see
// tracer-ebpf's `alloc::count`).
pub const PROG_MALLOC_COUNT: &str = "malloc_count";
pub const PROG_CALLOC_COUNT: &str = "calloc_count";
pub const PROG_REALLOC_COUNT: &str = "realloc_count";
pub const PROG_POSIX_MEMALIGN_COUNT: &str = "posix_memalign_count";
pub const PROG_ALIGNED_ALLOC_COUNT: &str = "aligned_alloc_count";
pub const PROG_VALLOC_COUNT: &str = "valloc_count";
