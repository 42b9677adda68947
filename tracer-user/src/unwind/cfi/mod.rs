//! DWARF unwind tables for the kernel's stack walk: each binary's CFI compiled into sorted
//! rows (`compile`, `rules`) and loaded into the kernel's maps once per binary per run
//! (`tables`), as the traced processes map them.
pub mod compile;
pub mod feed;
pub mod rules;
pub mod tables;
