//! Builds the C reference peer (`csrc/ring_ref.c`, the macros of Debian's
//! `/usr/include/xen/io/ring.h`) that the tests and benches run against.
//!
//! A machine without the header (or without a C compiler) still builds the crate: the script
//! then emits no `xen_ring_c_ref` cfg, and the C interop tests fail with a message that says
//! to install `libxen-dev`.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xen_ring_c_ref)");
    println!("cargo::rerun-if-changed=csrc/ring_ref.c");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=XEN_INCLUDE_DIR");

    let include = std::env::var_os("XEN_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    let header = include.join("xen/io/ring.h");
    println!("cargo::rerun-if-changed={}", header.display());
    if !header.exists() {
        println!(
            "cargo::warning=xen-ring: {} not found (install libxen-dev): \
             the C interop tests will fail",
            header.display()
        );
        return;
    }
    let mut build = cc::Build::new();
    build
        .file("csrc/ring_ref.c")
        .include(&include)
        .opt_level(2)
        .flag_if_supported("-std=gnu11")
        .warnings(true);
    match build.try_compile("xen_ring_c_ref") {
        Ok(()) => println!("cargo::rustc-cfg=xen_ring_c_ref"),
        Err(e) => println!(
            "cargo::warning=xen-ring: could not compile the C reference ring ({e}): \
             the C interop tests will fail"
        ),
    }
}
