//! C++'s operator new and delete, by their mangled (Itanium, 64-bit) names: the variants an
//! allocator may define itself, and the one rule for "is this frame an operator new/delete".
//! They are probed only in an allocator's own file: libstdc++'s operator new calls malloc,
//! which counts the request there once.

/// `operator new(size_t)` and `operator new[](size_t)`.
pub const NEW: &str = "_Znwm";
pub const NEW_ARRAY: &str = "_Znam";
/// `operator new(size_t, const std::nothrow_t&)`, and `[]`.
pub const NEW_NOTHROW: &str = "_ZnwmRKSt9nothrow_t";
pub const NEW_ARRAY_NOTHROW: &str = "_ZnamRKSt9nothrow_t";
/// `operator new(size_t, std::align_val_t)`, and `[]`: the size first, then the alignment.
pub const NEW_ALIGNED: &str = "_ZnwmSt11align_val_t";
pub const NEW_ARRAY_ALIGNED: &str = "_ZnamSt11align_val_t";
pub const NEW_ALIGNED_NOTHROW: &str = "_ZnwmSt11align_val_tRKSt9nothrow_t";
pub const NEW_ARRAY_ALIGNED_NOTHROW: &str = "_ZnamSt11align_val_tRKSt9nothrow_t";
/// `operator delete(void*)` and its sized (`m`), aligned and nothrow variants, and `[]`:
/// the block is always the first argument.
pub const DELETES: &[&str] = &[
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

/// Whether a function, by its mangled or demangled name, is an operator new or delete
/// (any variant): a wrapper of the allocator, never the program's site.
pub fn is_operator_new_or_delete(name: &str) -> bool {
    ["_Znw", "_Zna", "_Zdl", "_Zda"]
        .iter()
        .any(|p| name.starts_with(p))
        || ["operator new", "operator delete"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(['(', '[']))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names() {
        assert!(is_operator_new_or_delete("_Znwm"));
        assert!(is_operator_new_or_delete("_ZdlPvmSt11align_val_t"));
        assert!(is_operator_new_or_delete("operator new(unsigned long)"));
        assert!(is_operator_new_or_delete("operator new[](unsigned long)"));
        assert!(is_operator_new_or_delete(
            "operator delete(void*, unsigned long)"
        ));
        assert!(!is_operator_new_or_delete("operator newline()"));
        assert!(!is_operator_new_or_delete("_ZN3foo3barEv"));
    }
}
