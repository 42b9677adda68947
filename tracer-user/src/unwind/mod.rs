//! How a stack's frames are found, user side. Frame pointers today: the kernel walks them
//! (tracer-ebpf's stack module) and keeps only frames inside executable mappings; a walk that
//! meets code built without frame pointers is cut there, and sites that differ only past the
//! cut are one site again here (`site_merge`). Unwinders that need user-side work (DWARF CFI
//! turned into tables for the kernel) come here.
pub mod site_merge;
