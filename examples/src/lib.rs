//! Runnable examples of the Xen control stack.
//!
//! - [`top`]: an `xentop`-like table of domains, from two samples of `getinfolist`;
//! - [`demo`]: the README's walk-through (boot a host, create and build guests, watch them,
//!   pause, unpause, shut down and destroy them), written against [`xenctrl::XenControl`] so
//!   it runs on the simulated host and on a real dom0 alike. The `demo` binary is a thin
//!   `main` over it;
//! - [`watch_domains`]: domains recorded in xenstore with libxl's permissions and a monitor
//!   that watches them come and go (the `watch-domains` binary).

pub mod demo;
pub mod top;
pub mod watch_domains;
