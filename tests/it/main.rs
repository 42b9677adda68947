//! alloctrace's privileged integration tests, one binary: a module per subject, helpers in
//! `support`. Test names carry their module (`modes::pid_attaches_to_a_running_process`), so
//! `cargo xtask test -- modes` selects a subject's tests.
//!
//! Every test here is #[ignore]d: it needs root and BPF, and `cargo xtask test` runs it with
//! ALLOCTRACE_BIN set, `--include-ignored --test-threads=1`. The helpers' own tests are not.

mod support;

// Per-site accounting in launch mode: counts, frees, leaks, the realloc/calloc/aligned family,
// caller attribution, the text report, folded stacks and the inferno flame graph.
mod sites;

// Targets and lifecycles: --pid, launch before main, exit status, end on exit, SIGINT,
// system-wide, threads; the report's own-cost figures against wait4's.
mod modes;

// Refusals: nonexistent pid, non-executable and missing commands, zombies,
// durations too long, a --pid target gone during start-up; non-UTF-8 paths and arguments.
mod errors;

// A traced process executing another program: every exec announced, the allocations of a
// static program stripped of its allocator's symbols marked unseen in the report.
mod exec;

// Analyses against workloads/phases.c (the guide's three phases and a growing leak): each
// site's pattern class, short-lived share, advice, and `compare` of a run with every
// allocation count halved.
mod analysis;

// Patterns at default options: the guide's loops (workloads/guide.c) and the demo's sites
// classified by their names, bursts whatever the drains' phase, a 1 s run's whole-run series.
mod patterns;

// Leaks from the in-flight table's evidence, at default options: live blocks per site equal to
// the ground truth, leak advice for exactly the leaking functions (workloads/leaks.c) and the
// demo's cache, `--older`.
mod leaks;

// Exports read back by consumers nobody here wrote: the pprof profile decoded by the official
// profile.proto compiled with protoc for Python.
mod pprof;

// The plot (SVG and PNG) and the self-contained HTML report, rendered in headless Chromium.
mod pictures;

// Faults, bad input, load and loss: the target is never harmed, nothing is lost silently.
mod reliability;

// Probe placement: free probed past its NULL check on an emulated instruction (`-v` says so),
// ALLOCTRACE_PROBE_AT=entry at every entry, counts exactly the ground truth either way.
mod placement;

// Stacks hold only return addresses into code: no stack data from code without frame pointers
// reaches any output, its junk frames do not split sites; C names are not demangled.
mod stacks;
// Stacks at the depth limit (MAX_FRAMES) whole, one frame deeper cut and counted.
mod stacks_depth;
// DWARF unwinding: full stacks in code without frame pointers (launch, --pid, threads).
mod unwind;
// The DWARF walk while the traced process's mapping lock is held by another thread.
mod unwind_contended;

// Sampling by bytes (--sample-bytes) on workloads/sampled.c: exact process totals, per-site
// estimates within their statistical error.
mod sampling;

// Who may trace what (a capability-holding copy run as nobody: a root process, system-wide
// mode, a setuid program launched, its own process), and outputs that neither hang alloctrace
// (a FIFO nobody reads, SIGTERM meanwhile) nor cancel each other (a full file system).
mod security;

// A launched command that starts processes: with --follow-forks each one traced under its own
// pid with exact counts; without it, one line says a child was not traced.
mod forks;

// Threads, signals and shared address spaces: the main thread gone (pthread_exit, another
// thread's exec), allocations in signal handlers that interrupt malloc, CLONE_VM and vfork
// children counted under their own pids.
mod threads_signals;

// Every process's real allocator (issue 20): one ground-truth workload built against glibc
// (shared, static, stripped), musl, jemalloc, tcmalloc and mimalloc (linked and preloaded), C++
// new/delete on tcmalloc, Rust on tikv-jemallocator and mimalloc, each exact in launch and
// --pid mode with its allocator named; system-wide, exec into static musl, alloc-only.
mod allocators;

// The daemon (`alloctrace serve`) read by the real `go tool pprof` and a real Prometheus;
// bad requests, the bearer token, SIGTERM during a request.
mod serve;

// `alloctrace top`, the live view, in a real terminal (tmux): rows and counts that grow, sort
// keys, `q` and SIGTERM giving the terminal back with the probes gone.
mod top;

// Go programs (issue 24): runtime.mallocgc counted per stack from an entry probe only, exact
// per //go:noinline function against the program's own ground truth, in launch and --pid
// mode, with goroutines on several threads, stack growth and GC; the program's output intact.
mod golang;
