//! aya's `Pod` for the types user space reads out of the maps (the `user` feature).
use crate::*;

// SAFETY: all these are #[repr(C)] plain-old-data with explicit padding and no pointers.
unsafe impl aya::Pod for StackKey {}
unsafe impl aya::Pod for StackTrace {}
unsafe impl aya::Pod for SiteStats {}
unsafe impl aya::Pod for LiveSlot {}
unsafe impl aya::Pod for AllocInfo {}
unsafe impl aya::Pod for CallState {}
unsafe impl aya::Pod for ProcStats {}
unsafe impl aya::Pod for OwnedTotals {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for GoGc {}
unsafe impl aya::Pod for unwind_table::FileKey {}
unsafe impl aya::Pod for unwind_table::FileRows {}
unsafe impl aya::Pod for unwind_table::VmaKey {}
unsafe impl aya::Pod for unwind_table::VmaEntry {}
