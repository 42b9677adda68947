//! DWARF unwind tables for the kernel's stack walk: each binary's CFI compiled into sorted
//! rows (`compile`, `rules`) and loaded into the kernel's maps once per binary per run
//! (`tables`), as the traced processes map them; where each process's code lies, for the
//! walk to find a pc's binary (`code_maps`).
pub mod code_maps;
pub mod compile;
pub mod feed;
pub mod rules;
pub mod tables;
