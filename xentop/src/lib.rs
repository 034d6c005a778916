//! Per-domain statistics as libxenstat gathers them, and the `xentop` program over them.
//!
//! The library is the `xenstat` part: [`Collector::node`] takes one [`Node`] sample from
//! the same sources as Xen's `tools/libs/stat`:
//!
//! - domains, vCPUs, the host and the hypervisor version through [`xenctrl::XenControl`]
//!   (`xc_domain_getinfolist`, `xc_vcpu_getinfo`, `xc_physinfo`, `xc_version`): a real
//!   dom0 or the simulated host, `xen-sim`;
//! - domain names from xenstore (`/local/domain/<id>/name`; a domain without one is being
//!   created or destroyed and is left out, as libxenstat does);
//! - vif counters from `/proc/net/dev` ([`netdev`]);
//! - VBD counters from the kernel's blkback (`/sys/bus/xen-backend/devices/vbd-<domid>-<devid>/
//!   statistics/*`, [`sysfs`]) and from a qdisk backend (QEMU or `blkbackd`) over QMP on
//!   `/var/run/xen/qmp-libxenstat-<domid>` ([`qmp`]).
//!
//! [`format`] prints a sample with C xentop's columns, widths and `printf` formats.
//!
//! On the simulated host, with our xenstored in process and a `/proc/net/dev` of a machine
//! without vifs:
//!
//! ```
//! use xenbus::testing::TestXenstore;
//! use xenbus::Store;
//! use xentop::{Collector, Sources};
//!
//! let xs = TestXenstore::start()?;
//! xs.dom0().write("/local/domain/0/name", "Domain-0")?;
//! let xen = xenctrl::Xen::sim(xen_sim::Host::default());
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir_all(dir.path().join("proc/net"))?;
//! let lo = "    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n";
//! std::fs::write(dir.path().join("proc/net/dev"), format!("{}{lo}", xentop::netdev::HEADER))?;
//! let sources = Sources::under(dir.path());
//! let collector = Collector::new(xen, xs.dom0().clone(), sources);
//! let node = collector.node()?;
//! assert_eq!(node.domains[0].name, "Domain-0");
//! assert_eq!(node.xen_version, "4.17.0-sim");
//! assert!(node.domains[0].networks.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod collect;
mod error;
pub mod format;
mod model;
pub mod netdev;
pub mod qmp;
pub mod sysfs;

pub use collect::{Collector, Sources};
pub use error::{Error, Result};
pub use model::{Domain, Network, Node, Vbd, VbdBackend, VbdStats, Vcpu};
