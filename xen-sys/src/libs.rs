//! Run-time loading of the Xen C libraries.
//!
//! Each library is opened once, on first use, and kept for the life of the process. Opening
//! fails with [`LoadError`], which names the shared object and the Debian package to install.

use std::sync::OnceLock;

use crate::generated::{xenctrl, xenevtchn, xenforeignmemory, xengnttab, xenguest, xentoollog};

/// A Xen C library could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The shared object that was looked for, e.g. `libxenctrl.so.4.17`.
    pub soname: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// What the dynamic loader said.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} not found (install the Debian package {}, or xen-utils-4.17): {}",
            self.soname, self.package, self.reason
        )
    }
}

impl std::error::Error for LoadError {}

macro_rules! library {
    ($(#[$doc:meta])* $fn_name:ident, $ty:ty, $soname:literal, $package:literal) => {
        $(#[$doc])*
        pub fn $fn_name() -> Result<&'static $ty, LoadError> {
            static LIB: OnceLock<Result<$ty, LoadError>> = OnceLock::new();
            LIB.get_or_init(|| {
                // SAFETY: loading a Xen toolstack library runs only its ELF constructors,
                // which have no preconditions; every symbol is resolved by name with the
                // signature bindgen took from the matching header of the same Xen version.
                unsafe { <$ty>::new($soname) }.map_err(|e| LoadError {
                    soname: $soname,
                    package: $package,
                    reason: e.to_string(),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
        }
    };
}

library!(
    /// libxenctrl: domain and host control.
    xenctrl, xenctrl::XenCtrlLib, "libxenctrl.so.4.17", "libxenmisc4.17"
);
library!(
    /// libxenguest: the `xc_dom_*` domain builder.
    xenguest, xenguest::XenGuestLib, "libxenguest.so.4.17", "libxenmisc4.17"
);
library!(
    /// libxenevtchn: event channels through `/dev/xen/evtchn`.
    xenevtchn, xenevtchn::XenEvtchnLib, "libxenevtchn.so.1", "libxenevtchn1"
);
library!(
    /// libxengnttab: grant mapping (`/dev/xen/gntdev`) and sharing (`/dev/xen/gntalloc`).
    xengnttab, xengnttab::XenGnttabLib, "libxengnttab.so.1", "libxengnttab1"
);
library!(
    /// libxenforeignmemory: mapping other domains' memory through privcmd.
    xenforeignmemory,
    xenforeignmemory::XenForeignMemoryLib,
    "libxenforeignmemory.so.1",
    "libxenforeignmemory1"
);
library!(
    /// libxentoollog: the loggers the other libraries take.
    xentoollog, xentoollog::XenToolLogLib, "libxentoollog.so.1", "libxentoollog1"
);
