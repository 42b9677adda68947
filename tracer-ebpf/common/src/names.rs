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
pub const PROG_XALLOCX_ENTER: &str = "xallocx_enter";
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

// Alloc-only programs for allocators whose functions do not hand requests to the exported
// malloc as glibc's do (jemalloc, tcmalloc, mimalloc, musl's aligned family): no delegation
// state is left for a malloc that never comes. Functions taking the size first (malloc,
// mallocx, operator new, mi_malloc_aligned) count with PROG_VALLOC_COUNT, which delegates
// nothing either.
/// realloc(p, n) / rallocx(p, n, flags); realloc(p, 0) frees and allocates nothing.
pub const PROG_REALLOC_COUNT_DIRECT: &str = "realloc_count_direct";
/// realloc(p, n) where realloc(p, 0) returns a new (0-byte) block: musl's, mimalloc's.
pub const PROG_REALLOC0_COUNT_DIRECT: &str = "realloc0_count_direct";
/// mi_reallocn(p, n, size), mi_recalloc(p, n, size): n * size bytes, 0 included.
pub const PROG_REALLOCARRAY_COUNT_DIRECT: &str = "reallocarray_count_direct";
/// posix_memalign(memptr, alignment, size) that allocates itself.
pub const PROG_POSIX_MEMALIGN_COUNT_DIRECT: &str = "posix_memalign_count_direct";
/// aligned_alloc(alignment, size) / memalign that allocates itself.
pub const PROG_ALIGNED_ALLOC_COUNT_DIRECT: &str = "aligned_alloc_count_direct";
/// calloc(n, size) that always hands its request to the exported malloc (musl's): counted
/// here, malloc told to skip it, as glibc's realloc(NULL, n).
pub const PROG_CALLOC_COUNT_TO_MALLOC: &str = "calloc_count_to_malloc";
/// mimalloc's mi_posix_memalign(memptr, alignment, size): once the alignment is valid, it
/// `call`s the exported mi_malloc_aligned (counted with PROG_MALLOC_COUNT), whose stack would
/// start inside mimalloc and miss the program's function: counted here, it is told to skip.
pub const PROG_POSIX_MEMALIGN_COUNT_TO_MALLOC: &str = "posix_memalign_count_to_malloc";
/// mimalloc's mi_new_aligned(size, alignment): `call`s mi_malloc_aligned, as above.
pub const PROG_SIZE_FIRST_COUNT_TO_MALLOC: &str = "size_first_count_to_malloc";

/// Go's `runtime.mallocgc(size, typ, needzero)`: an entry probe on the stack check's
/// conditional branch (never a return probe: Go moves goroutine stacks). Reads `rax` (Go's
/// register ABI, Go 1.17+), not the C argument registers.
pub const PROG_GO_MALLOCGC_COUNT: &str = "go_mallocgc_count";
/// Go's `runtime.gcMarkTermination`: one completed GC cycle (`alloctrace_common::go`), placed
/// as mallocgc's probe.
pub const PROG_GO_GC_COUNT: &str = "go_gc_count";

/// How many of a program's function's arguments it reads (`rdi`, `rsi`, `rdx`, ... in that
/// order; the highest one read counts): user space's probe placement lets a probe move past
/// instructions that write the others. Unknown names read all six.
pub fn args_read(program: &str) -> usize {
    match program {
        // Go's probe reads rax and the flags, and is placed by its own rule (at the stack
        // check's branch), never moved by the C placement.
        PROG_ALLOC_RETURN | PROG_GO_MALLOCGC_COUNT | PROG_GO_GC_COUNT => 0,
        PROG_MALLOC_ENTER
        | PROG_VALLOC_ENTER
        | PROG_FREE_ENTER
        | PROG_MALLOC_COUNT
        | PROG_VALLOC_COUNT
        | PROG_SIZE_FIRST_COUNT_TO_MALLOC => 1,
        PROG_CALLOC_ENTER
        | PROG_REALLOC_ENTER
        | PROG_XALLOCX_ENTER
        | PROG_ALIGNED_ALLOC_ENTER
        | PROG_CALLOC_COUNT
        | PROG_REALLOC_COUNT
        | PROG_ALIGNED_ALLOC_COUNT
        | PROG_REALLOC_COUNT_DIRECT
        | PROG_REALLOC0_COUNT_DIRECT
        | PROG_ALIGNED_ALLOC_COUNT_DIRECT
        | PROG_CALLOC_COUNT_TO_MALLOC => 2,
        PROG_REALLOCARRAY_ENTER
        | PROG_POSIX_MEMALIGN_ENTER
        | PROG_POSIX_MEMALIGN_COUNT
        | PROG_REALLOCARRAY_COUNT_DIRECT
        | PROG_POSIX_MEMALIGN_COUNT_DIRECT
        | PROG_POSIX_MEMALIGN_COUNT_TO_MALLOC => 3,
        _ => 6,
    }
}
