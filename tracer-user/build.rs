//! Embeds the eBPF object built by `cargo xtask build` (it passes the object's path in
//! ALLOCTRACE_EBPF_OBJ). Without it the binary still builds, for `cargo check`, `clippy` and
//! unit tests, and says at run time how to get a working one.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=ALLOCTRACE_EBPF_OBJ");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("tracer.bpf.o");
    match env::var_os("ALLOCTRACE_EBPF_OBJ") {
        Some(obj) => {
            let obj = PathBuf::from(obj);
            println!("cargo:rerun-if-changed={}", obj.display());
            fs::copy(&obj, &out)
                .unwrap_or_else(|e| panic!("cannot copy eBPF object {}: {e}", obj.display()));
        }
        None => {
            fs::write(&out, b"").expect("write empty eBPF placeholder");
        }
    }
}
