//! A task-local-storage map (BPF_MAP_TYPE_TASK_STORAGE): one value per thread, reached from
//! the thread's own task_struct. aya-ebpf 0.2.1 has no wrapper for it, so this is the BTF map
//! definition libbpf and aya expect (`.maps` section, each field a pointer whose pointee type
//! encodes one property) and the two helpers.
//!
//! Why not a hash map keyed by pid_tgid: a lookup here follows the task's storage pointer to
//! a cached slot instead of hashing and walking a bucket, an update needs no bucket lock, and
//! the kernel frees a thread's value when the thread exits.
use core::ptr;

use aya_ebpf::{
    bindings::{bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, BPF_F_NO_PREALLOC},
    helpers::{bpf_get_current_task_btf, bpf_task_storage_get},
};

const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    // Task storage has no capacity (max_entries 0) and cannot be preallocated.
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are BTF placeholders, never dereferenced; the loader replaces the whole
// definition with a map reference.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn get(&self, flags: u64) -> Option<&'static mut T> {
        // SAFETY: the helper takes the map and the current task (a trusted pointer the
        // verifier tracks); it returns NULL or a pointer to this thread's value, which lives
        // until the thread exits, longer than the program's run.
        unsafe {
            let task = bpf_get_current_task_btf();
            let v = bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast(),
                task,
                ptr::null_mut(),
                flags,
            );
            v.cast::<T>().as_mut()
        }
    }

    /// The current thread's value, if it has one.
    #[inline(always)]
    pub fn current(&self) -> Option<&'static mut T> {
        self.get(0)
    }

    /// The current thread's value, created zero-filled if it has none. None only when the
    /// kernel cannot allocate it (or the storage is busy on this CPU).
    #[inline(always)]
    pub fn current_or_zeroed(&self) -> Option<&'static mut T> {
        self.get(BPF_LOCAL_STORAGE_GET_F_CREATE)
    }
}
