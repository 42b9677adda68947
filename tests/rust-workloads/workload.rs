// The Rust ground-truth workload's body (tests/it/allocators), included by each program after
// its `#[global_allocator]`: the same calls through whichever allocator that is. Every
// allocating function is `#[no_mangle]` (its symbol is its plain name, as gt.h's C functions)
// and never inlined; each allocation goes through `std::alloc` with an exact layout (or a
// `Box` of a known size), is published with `black_box` so the optimizer cannot drop it, and
// is tallied where gt.h's rules charge it. `main` runs them, then writes the ground truth.

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::hint::black_box;

#[path = "gt.rs"]
mod gt;
use gt::Tally;

const SMALL_N: usize = 300;
const SMALL_SIZE: usize = 24;
const LEAK_N: usize = 40;
const LEAK_SIZE: usize = 200;
const ZEROED_N: usize = 100;
const ZEROED_SIZE: usize = 120;
const CHAIN_N: usize = 30;
const CHAIN_FIRST: usize = 8;
const CHAIN_STEPS: usize = 6;
const ALIGNED_N: usize = 40;
const ALIGNED_SIZE: usize = 192;
const ALIGNED_ALIGN: usize = 64;
const BOX_N: usize = 100;
const OTHER_N: usize = 70;
const OTHER_SIZE: usize = 40;

/// Everything the workload tallies and keeps, in one place (the functions run one at a time
/// on the main thread).
pub struct State {
    small: Tally,
    leak: Tally,
    zeroed: Tally,
    chain_start: Tally,
    chain: Tally,
    aligned: Tally,
    boxes: Tally,
    other: Tally,
    free_else: Tally,
    leaked: Vec<*mut u8>,
    chains: Vec<(*mut u8, usize)>,
    others: Vec<*mut u8>,
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a valid layout")
}

fn check(p: *mut u8, what: &str) -> *mut u8 {
    if p.is_null() {
        eprintln!("workload: {what} failed");
        std::process::exit(99);
    }
    black_box(p)
}

/// alloc and dealloc in the same function.
#[no_mangle]
#[inline(never)]
pub fn rust_alloc_small(s: &mut State) {
    for _ in 0..SMALL_N {
        // SAFETY: a non-zero-sized layout; the block is freed once, with the same layout.
        unsafe {
            let p = check(alloc(layout(SMALL_SIZE)), "alloc");
            s.small.alloc(SMALL_SIZE);
            dealloc(p, layout(SMALL_SIZE));
        }
        s.small.free(SMALL_SIZE);
    }
}

/// Never freed.
#[no_mangle]
#[inline(never)]
pub fn rust_alloc_leak(s: &mut State) {
    for _ in 0..LEAK_N {
        // SAFETY: a non-zero-sized layout.
        let p = check(unsafe { alloc(layout(LEAK_SIZE)) }, "alloc");
        s.leak.alloc(LEAK_SIZE);
        s.leaked.push(p);
    }
}

/// alloc_zeroed (calloc, or the allocator's zeroing call); two thirds freed.
#[no_mangle]
#[inline(never)]
pub fn rust_alloc_zeroed(s: &mut State) {
    for i in 0..ZEROED_N {
        // SAFETY: a non-zero-sized layout; freed at most once, with the same layout.
        let p = check(unsafe { alloc_zeroed(layout(ZEROED_SIZE)) }, "alloc_zeroed");
        s.zeroed.alloc(ZEROED_SIZE);
        if i % 3 != 0 {
            // SAFETY: see above.
            unsafe { dealloc(p, layout(ZEROED_SIZE)) };
            s.zeroed.free(ZEROED_SIZE);
        }
    }
}

/// The first block of every growth chain.
#[no_mangle]
#[inline(never)]
pub fn rust_chain_start(s: &mut State) {
    for _ in 0..CHAIN_N {
        // SAFETY: a non-zero-sized layout.
        let p = check(unsafe { alloc(layout(CHAIN_FIRST)) }, "alloc");
        s.chain_start.alloc(CHAIN_FIRST);
        s.chains.push((p, CHAIN_FIRST));
    }
}

/// Doubles every chain's block CHAIN_STEPS times with realloc: one allocation here and one
/// free of the old block (rust_chain_start's for the first step) per call.
#[no_mangle]
#[inline(never)]
pub fn rust_realloc_chain(s: &mut State) {
    for c in 0..CHAIN_N {
        for step in 0..CHAIN_STEPS {
            let (p, old) = s.chains[c];
            let grown = old * 2;
            // SAFETY: `p` was allocated with layout(old) and is live; grown is non-zero.
            let q = check(unsafe { realloc(p, layout(old), grown) }, "realloc");
            if step == 0 {
                s.chain_start.free(old);
            } else {
                s.chain.free(old);
            }
            s.chain.alloc(grown);
            s.chains[c] = (q, grown);
        }
    }
}

/// Over-aligned blocks (jemalloc's mallocx/sdallocx, mimalloc's aligned calls).
#[no_mangle]
#[inline(never)]
pub fn rust_alloc_aligned(s: &mut State) {
    let l = Layout::from_size_align(ALIGNED_SIZE, ALIGNED_ALIGN).expect("a valid layout");
    for _ in 0..ALIGNED_N {
        // SAFETY: a non-zero-sized layout; freed once with it.
        unsafe {
            let p = check(alloc(l), "aligned alloc");
            s.aligned.alloc(ALIGNED_SIZE);
            dealloc(p, l);
        }
        s.aligned.free(ALIGNED_SIZE);
    }
}

/// Box::new of a 64-byte array and its drop: the way Rust code allocates.
#[no_mangle]
#[inline(never)]
pub fn rust_boxes(s: &mut State) {
    for i in 0..BOX_N {
        let b = black_box(Box::new([i as u64; 8]));
        s.boxes.alloc(size_of::<[u64; 8]>());
        drop(b);
        s.boxes.free(size_of::<[u64; 8]>());
    }
}

/// Allocates blocks rust_free_elsewhere frees.
#[no_mangle]
#[inline(never)]
pub fn rust_alloc_for_other(s: &mut State) {
    for _ in 0..OTHER_N {
        // SAFETY: a non-zero-sized layout.
        let p = check(unsafe { alloc(layout(OTHER_SIZE)) }, "alloc");
        s.other.alloc(OTHER_SIZE);
        s.others.push(p);
    }
}

/// Frees rust_alloc_for_other's blocks and the chains' last blocks: those frees are theirs.
#[no_mangle]
#[inline(never)]
pub fn rust_free_elsewhere(s: &mut State) {
    for p in std::mem::take(&mut s.others) {
        // SAFETY: allocated by rust_alloc_for_other with this layout, freed once.
        unsafe { dealloc(p, layout(OTHER_SIZE)) };
        s.other.free(OTHER_SIZE);
    }
    for (p, size) in std::mem::take(&mut s.chains) {
        // SAFETY: the chain's live block, of this size, freed once.
        unsafe { dealloc(p, layout(size)) };
        s.chain.free(size);
    }
}

fn main() {
    gt::wait_if_asked();
    // Reserved up front (by main, not a site), so no site's Vec grows.
    let mut s = State {
        small: Tally::new("rust_alloc_small"),
        leak: Tally::new("rust_alloc_leak"),
        zeroed: Tally::new("rust_alloc_zeroed"),
        chain_start: Tally::new("rust_chain_start"),
        chain: Tally::new("rust_realloc_chain"),
        aligned: Tally::new("rust_alloc_aligned"),
        boxes: Tally::new("rust_boxes"),
        other: Tally::new("rust_alloc_for_other"),
        free_else: Tally::new("rust_free_elsewhere"),
        leaked: Vec::with_capacity(LEAK_N),
        chains: Vec::with_capacity(CHAIN_N),
        others: Vec::with_capacity(OTHER_N),
    };
    rust_alloc_small(&mut s);
    rust_alloc_leak(&mut s);
    rust_alloc_zeroed(&mut s);
    rust_chain_start(&mut s);
    rust_realloc_chain(&mut s);
    rust_alloc_aligned(&mut s);
    rust_boxes(&mut s);
    rust_alloc_for_other(&mut s);
    rust_free_elsewhere(&mut s);
    black_box(&s.leaked);
    gt::write(&[
        &s.small, &s.leak, &s.zeroed, &s.chain_start, &s.chain, &s.aligned, &s.boxes,
        &s.other, &s.free_else,
    ]);
    println!("done");
    // The leaked blocks stay live: no destructor frees them.
    std::mem::forget(s);
}
