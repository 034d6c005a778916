//! Raw bindings to Xen 4.17: the public ABI (`xen/*.h`, `xen/io/*.h`, `xen/sys/*.h`) and the
//! toolstack C libraries (libxenctrl, libxenguest, libxenevtchn, libxengnttab,
//! libxenforeignmemory, libxentoollog).
//!
//! Everything in [`generated`] is bindgen output committed to the repository (regenerate with
//! `xen-sys/regen.sh`), so building needs neither the headers nor libclang. Types and constants
//! are re-exported at the crate root. Size, alignment and field-offset checks for every ABI
//! struct are emitted by bindgen as compile-time assertions, so a layout mismatch fails the build.
//!
//! The C libraries are never linked: [`libs`] opens each one with `dlopen` the first time it is
//! needed, so a binary that only uses the simulated host starts on a machine without Xen, and a
//! missing library is an error that names the library and the Debian package that ships it.
//!
//! ```
//! // Constants come from the headers, never typed by hand.
//! assert_eq!(xen_sys::XS_DIRECTORY_PART, 22);
//! assert_eq!(xen_sys::XENSTORE_PAYLOAD_MAX, 4096);
//! assert_eq!(core::mem::size_of::<xen_sys::blkif_request>(), 112);
//! ```

#![allow(missing_docs)]

/// bindgen output, one file per C library plus one for all types and constants.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unused_imports,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks
)]
pub mod generated {
    /// Types and constants of the public ABI and of the library headers.
    pub mod types {
        include!("generated/types.rs");
    }
    /// libxenctrl (`xenctrl.h`).
    pub mod xenctrl {
        include!("generated/xenctrl.rs");
    }
    /// libxenguest (`xenguest.h`): the `xc_dom_*` domain builder.
    pub mod xenguest {
        include!("generated/xenguest.rs");
    }
    /// libxenevtchn (`xenevtchn.h`).
    pub mod xenevtchn {
        include!("generated/xenevtchn.rs");
    }
    /// libxengnttab (`xengnttab.h`): grant mapping (`xengnttab_*`) and sharing (`xengntshr_*`).
    pub mod xengnttab {
        include!("generated/xengnttab.rs");
    }
    /// libxenforeignmemory (`xenforeignmemory.h`).
    pub mod xenforeignmemory {
        include!("generated/xenforeignmemory.rs");
    }
    /// libxentoollog (`xentoollog.h`).
    pub mod xentoollog {
        include!("generated/xentoollog.rs");
    }
}

pub mod libs;

pub use generated::types::*;
