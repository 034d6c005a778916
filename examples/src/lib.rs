//! Runnable examples of the Xen control stack.
//!
//! - [`top`]: an `xentop`-like table of domains, from two samples of `getinfolist`;
//! - [`demo`]: the README's walk-through (boot a host, create and build guests, watch them,
//!   pause, unpause, shut down and destroy them), written against [`xenctrl::XenControl`] so
//!   it runs on the simulated host and on a real dom0 alike. The `demo` binary is a thin
//!   `main` over it;
//! - [`watch_domains`]: domains recorded in xenstore with libxl's permissions and a monitor
//!   that watches them come and go (the `watch-domains` binary);
//! - [`boot_with_disk`]: a PV domain created and built with `xenctrl`, its disk written
//!   through `xenbus` and served by `blkback`, and the guest's blkfront writing and reading
//!   it back (the `boot-with-disk` binary).

pub mod boot_with_disk;
pub mod demo;
pub mod top;
pub mod watch_domains;
