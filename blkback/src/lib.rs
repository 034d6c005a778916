//! A userspace block backend (blkif) that Linux's xen-blkfront accepts.
//!
//! The backend half of Xen's split block driver, as QEMU's `xen-block` and Linux's
//! `xen-blkback` implement it, in safe Rust above the mapping edge:
//!
//! - [`abi`]: the blkif request/response layouts of the three x86 ABIs (`protocol` key);
//! - [`ring`]: `xen-ring`'s shared rings with the entry size of the negotiated ABI, single-
//!   or multi-page;
//! - [`request`]: validation and execution of requests over abstract segment memory;
//! - [`disk`]: raw images and block devices (`preadv`/`pwritev` into grant mappings,
//!   `fdatasync`, hole punching / `BLKDISCARD`), and qcow2 images with their backing chains
//!   (the storage manager's VDIs, through `sm::image`);
//! - [`BlkBack`]: the [`xenbus::BackendDriver`] for `vbd` devices: features
//!   (`feature-persistent`, `feature-max-indirect-segments`, `feature-flush-cache`,
//!   `feature-discard`, `max-ring-page-order`, `multi-queue-max-queues`), the handshake,
//!   one thread per ring, which runs fast reads and writes itself (no thread hop at queue
//!   depth 1) and hands slow ones, flushes and discards to a pool of I/O threads per device;
//!   responses in completion order, one notification per batch;
//! - the host underneath through the `gnttab` and `evtchn` traits ([`gnttab::GrantMap`],
//!   [`evtchn::EventChannel`]): the real devices ([`BlkBack::open`]) or, with the `sim`
//!   feature, the simulated host of `xen-sim` (`BlkBack::sim`); [`xen`] holds a ring's
//!   event channel;
//! - `blkfront` (feature `test-utils`): a Rust frontend for tests, benches and fuzzing.
//!
//! # Example
//!
//! dom0 serves `vbd` devices with a [`xenbus::Backend`] over a [`BlkBack`]; the toolstack
//! gives a guest a disk ([`xenbus::create_device`], libxl's keys), and the guest's blkfront
//! connects, writes a block and reads it back. Here on the simulated host (features `sim`
//! and `test-utils`, with the Rust frontend standing for the guest's kernel and xenbus's
//! in-process xenstored); on a Xen dom0 the driver is `BlkBack::open(Config::default())?` and
//! the store an [`xenbus::XsStore`] on the system's xenstored.
//!
//! ```
//! use std::sync::Arc;
//!
//! use blkback::blkfront::{Blkfront, FrontConfig, IoReq, Op};
//! use blkback::xen::XenSimGuest;
//! use blkback::{BlkBack, Config};
//! use xen_types::DomId;
//! use xenbus::testing::TestXenstore;
//! use xenbus::{create_device, Backend};
//!
//! // dom0: xenstored and the block backend.
//! let host = xen_sim::Host::default();
//! let xs = TestXenstore::start()?;
//! let driver = Arc::new(BlkBack::sim(&host, DomId::DOM0, Config::default())?);
//! let backend = Backend::start(xs.dom0().clone(), DomId::DOM0, driver)?;
//!
//! // The toolstack: a 1 MiB raw image as guest 1's xvda.
//! let dir = tempfile::tempdir()?;
//! let image = dir.path().join("disk.img");
//! std::fs::File::create(&image)?.set_len(1 << 20)?;
//! let params = image.to_str().ok_or("path not UTF-8")?;
//! let guest = DomId(1);
//! create_device(
//!     &**xs.dom0(),
//!     DomId::DOM0,
//!     guest,
//!     "vbd",
//!     51712,
//!     &[("params", params), ("mode", "w"), ("type", "phy")],
//!     &[("virtual-device", "51712")],
//! )?;
//!
//! // The guest's blkfront.
//! let guests = XenSimGuest::new(&host);
//! let front = Blkfront::connect(&guests, xs.guest(guest)?, guest, 51712, FrontConfig::default())?;
//! assert_eq!(front.sectors, 2048);
//! front.run(0, &mut [IoReq::new(Op::Write, 8, vec![0x5a; 4096])])?;
//! let mut read = [IoReq::new(Op::Read, 8, vec![0; 4096])];
//! front.run(0, &mut read)?;
//! assert_eq!(read[0].buf, vec![0x5a; 4096]);
//! front.close()?;
//! backend.stop();
//! assert_eq!(std::fs::read(&image)?[4096..8192], [0x5a; 4096]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `blkbackd` program (crate `blkbackd`) is a thin daemon over this library: it serves
//! xenstore's `qdisk` (or `vbd`) backend directories, for every domain or, with
//! `--domid N`, as domain N's device model for libxl
//! (`xl block-attach <dom> 'vdev=xvdb, backendtype=qdisk, target=/images/a.img'`).

pub mod abi;
#[cfg(feature = "test-utils")]
pub mod blkfront;
pub mod disk;
mod driver;
mod queue;
pub mod request;
pub mod ring;
pub mod xen;

#[cfg(feature = "test-utils")]
pub mod fuzzing;

pub use driver::{BlkBack, Config, ConnectedDisk, Connection, DiskSpec, Stats};
use xen_types::mem::MemError;
use xen_types::Errno;

/// Errors of the block backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An access outside shared memory.
    #[error("shared memory: {0}")]
    Mem(#[from] MemError),
    /// The frontend broke the ring protocol.
    #[error("bad ring: {0}")]
    BadRing(String),
    /// An unknown `protocol` value.
    #[error("unsupported protocol {0:?}")]
    Protocol(String),
    /// The Xen devices are missing: not a Xen dom0 or driver domain (or the `xen-gntdev` /
    /// `xen-evtchn` drivers are not loaded).
    #[error("{0}")]
    NotXen(String),
    /// A host operation (grant map, event channel) failed.
    #[error("host operation failed: {0:?}")]
    Host(Errno),
    /// The peer's event channel closed (its domain died or it disconnected).
    #[error("event channel closed")]
    Closed,
    /// The frontend broke the shared ring's index protocol (or the ring memory is unusable).
    #[error("ring: {0}")]
    Ring(#[from] xen_ring::RingError),
    /// Bad or missing configuration in xenstore.
    #[error("configuration: {0}")]
    Config(String),
    /// Disk I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// XenStore / XenBus.
    #[error(transparent)]
    Xenbus(#[from] xenbus::Error),
}
