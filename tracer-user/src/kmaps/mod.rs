//! The kernel's tables: loading the eBPF object with this run's sizes, and user space's views
//! of the maps it shares with the programs (read in place, or a whole hash map per syscall).
pub mod btf;
pub mod live_table;
pub mod loader;
pub mod map_batch;
pub mod owned_totals;
pub mod shared_array;
pub mod site_table;
