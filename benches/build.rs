//! Compiles the C xenstored `LD_PRELOAD` shim (`cpeer/xenstored_shim.c`) into
//! `$OUT_DIR/xenstored_shim.so` and exposes its path as `XS_CPEER_SHIM_BUILT`.
//!
//! Needs the libxen-dev headers (as `xen-sys` does). If compiling fails the
//! build still succeeds: `cpeer::shim_library()` then reports the error when
//! a C peer is started.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpeer/xenstored_shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let lib = out.join("xenstored_shim.so");
    let compiler = cc::Build::new().pic(true).opt_level(2).get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-Wall", "-Wextra", "-o"])
        .arg(&lib)
        .arg("cpeer/xenstored_shim.c")
        .arg("-ldl")
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo:rustc-env=XS_CPEER_SHIM_BUILT={}", lib.display());
        }
        Ok(s) => println!("cargo:warning=xenstored shim not built ({s}): is libxen-dev installed?"),
        Err(e) => println!("cargo:warning=xenstored shim not built: {e}"),
    }
}
