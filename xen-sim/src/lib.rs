//! A simulated Xen host, in one process.
//!
//! The simulated host implements the traits of the hypervisor-facing crates of this project
//! (`xenctrl::XenControl`, `evtchn::EventChannel`, `gnttab::GrantMap`/`GrantShare`, each
//! behind that crate's `sim` feature), so xenstored and the backends run on it unchanged. It
//! is not a mock: it keeps the per-domain state that Xen keeps and enforces Xen's rules,
//! failing with the errno Xen returns:
//!
//! - [`domain`]: domain ids allocated as Xen allocates them, lifecycle (paused at creation,
//!   running, shutdown with a reason, dying, destroyed), vCPUs, CPU time that advances only for
//!   running domains (measured on the host's [`Clock`], which tests drive by hand), memory
//!   accounting against the host's free pages, a PV/PVH domain builder, and a record of
//!   domain exceptions (what `VIRQ_DOM_EXC` signals);
//! - [`memory`]: each domain's pages are real shared memory (a memfd), so a page granted by
//!   one simulated domain and mapped by another aliases the same bytes;
//! - [`evtchn`]: per-domain port tables with Xen's states, delivered through eventfds;
//! - [`grant`]: per-domain grant tables with page-granular permissions;
//! - [`foreign`]: dom0's mappings of other domains' frames by number (privcmd);
//! - [`console`]: the hypervisor's console ring and a guest's PV console page;
//! - [`watchdog`]: domain watchdogs (`SCHEDOP_watchdog`); dom0's expiring reboots the host.
//! - [`save`]: saving a suspended domain to a stream and restoring it (`xc_domain_save`/
//!   `xc_domain_restore`).
//!
//! All state lives behind one [`Host`] handle (cheap to clone, `Send + Sync`), so separate
//! crates can hang their view of a domain off the same host.
//!
//! ```
//! use xen_sim::{domain::small_pv_guest, Host};
//! use xen_types::{DomId, Errno, Pages};
//!
//! let host = Host::default();
//! let free = host.physinfo().free_pages;
//! let dom = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
//! host.set_max_mem_kb(dom, 16 << 10).unwrap();
//! host.increase_reservation(dom, Pages(1024)).unwrap();
//! assert_eq!(host.physinfo().free_pages, free - 1024);
//! // Past its maximum, Xen refuses (ENOMEM) and nothing is taken.
//! assert_eq!(host.increase_reservation(dom, Pages(4096)), Err(Errno(libc::ENOMEM)));
//! // Paused at creation, as Xen leaves it; destroying it gives its memory back.
//! assert_ne!(host.domain_info(dom).unwrap().flags & xen_sys::XEN_DOMINF_paused, 0);
//! host.destroy(dom).unwrap();
//! assert_eq!(host.physinfo().free_pages, free);
//! ```

pub mod balloon;
pub mod console;
pub mod domain;
pub mod evtchn;
pub mod foreign;
pub mod grant;
pub mod host;
mod kernel_image;
pub mod memory;
mod p2m;
pub mod save;
pub mod watchdog;

pub use host::{Clock, Host, HostConfig};
