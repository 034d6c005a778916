//! A userspace network backend (netif) that Linux's xen-netfront accepts.
//!
//! The backend half of Xen's split network driver, as Linux's `xen-netback` implements it,
//! in safe Rust above the mapping edge:
//!
//! - [`wire`]: `xen/io/netif.h` (tx/rx slots, extra-info slots, flags) and its mapping to
//!   and from the `virtio_net_hdr` of a tap opened with `IFF_VNET_HDR`;
//! - [`queue`]: a queue's tx path (multi-slot packets, extra-info GSO slots, checksum flags,
//!   grant copy out of the guest in batches of packets, or grant mapping of the data of
//!   large ones, every request validated) and rx path (grant copy into the
//!   guest's posted buffers in batches, each response in its request's slot, GSO extra
//!   info), over `xen-ring`'s typed rings;
//! - [`ctrl`] and [`hash`]: the control ring (`feature-ctrl-ring`) and the Toeplitz hashing
//!   it sets up, which picks the rx queue of each frame ([`steer`]) and is reported to the
//!   frontend in a hash extra-info slot;
//! - [`stats`]: counters and a profile of where the queue threads spend their time;
//! - [`port`]: the packet side ([`port::Ports`]): tap devices `vif<domid>.<devid>`
//!   ([`port::TapPorts`]) or in-process socket pairs ([`port::SocketPorts`]);
//! - [`NetBack`]: the [`xenbus::BackendDriver`] for `vif` devices: the features Linux's
//!   netback offers (`feature-sg`, `feature-gso-tcpv4/v6`, `feature-ipv6-csum-offload`,
//!   `feature-rx-copy`, `feature-split-event-channels`, `multi-queue-max-queues`,
//!   `feature-ctrl-ring`), the wait
//!   for the hotplug script's `hotplug-status` before Connected, one thread per queue (a
//!   ring pair and one or two event channels each), the `rate` key's transmit limit;
//! - the host underneath through [`gnttab::GrantMap`] and [`evtchn::EventChannel`]: the real
//!   devices ([`NetBack::open`]) or, with the `sim` feature, `xen-sim` (`NetBack::sim`);
//! - `netfront` (feature `test-utils`): a verifying Rust frontend, a guest of `xen-sim`.
//!
//! # Example
//!
//! dom0 serves `vif` devices with a [`xenbus::Backend`] over a [`NetBack`]; the toolstack
//! gives a guest a vif ([`xenbus::create_device`], libxl's keys), the hotplug script reports
//! in, and the guest's netfront connects and sends a frame, which the network (here a
//! socket-pair peer standing for the tap) receives. On a Xen dom0 the driver is
//! `NetBack::open(Config::default())?` (tap devices) and the store an [`xenbus::XsStore`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use netback::netfront::{tcp_frame, FrontConfig, Netfront, TxPacket};
//! use netback::port::{SocketPorts, VifId};
//! use netback::wire::Offload;
//! use netback::{Config, NetBack};
//! use xen_types::DomId;
//! use xenbus::testing::TestXenstore;
//! use xenbus::{create_device, Backend};
//!
//! let host = xen_sim::Host::default();
//! let xs = TestXenstore::start()?;
//! let ports = Arc::new(SocketPorts::new());
//! let driver = Arc::new(NetBack::sim(&host, DomId::DOM0, ports.clone(), Config::default())?);
//! let backend = Backend::start(xs.dom0().clone(), DomId::DOM0, driver)?;
//!
//! let guest = DomId(1);
//! create_device(
//!     &**xs.dom0(),
//!     DomId::DOM0,
//!     guest,
//!     "vif",
//!     0,
//!     &[("handle", "0"), ("hotplug-status", "connected")],
//!     &[("handle", "0"), ("mac", "00:16:3e:00:00:01")],
//! )?;
//! let mut front = Netfront::connect(&host, xs.guest(guest)?, guest, 0, FrontConfig::default())?;
//! let vif = VifId { domid: guest, devid: 0 };
//! let (peers, _) = ports.take(vif, Duration::from_secs(10)).ok_or("no peer")?;
//!
//! let frame = tcp_frame(false, 1, b"hello", false);
//! front.send(0, &[TxPacket { data: frame.clone(), off: Offload::default() }])?;
//! let mut buf = vec![0; 2048];
//! let (_, n) = peers[0].recv_timeout(&mut buf, Duration::from_secs(10))?.ok_or("no frame")?;
//! assert_eq!(buf[..n], frame[..]);
//! front.close()?;
//! backend.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not yet: multicast control, static grant mappings (`*_GREF_MAPPING` control requests).

pub mod ctrl;
pub mod driver;
#[cfg(feature = "test-utils")]
pub mod fuzzing;
pub mod hash;
#[cfg(feature = "test-utils")]
pub mod netfront;
pub mod port;
pub mod queue;
pub mod stats;
pub mod steer;
pub mod wake;
pub mod wire;
pub mod xen;

pub use driver::{Config, Connection, NetBack};
pub use stats::Stats;
use xen_types::mem::MemError;
use xen_types::Errno;

/// Errors of the network backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An access outside shared memory.
    #[error("shared memory: {0}")]
    Mem(#[from] MemError),
    /// A packet broke the netif protocol (it is dropped).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The frontend broke the netif protocol beyond a dropped packet: its queue stops.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The Xen devices are missing: not a Xen dom0 or driver domain (or the `xen-gntdev` /
    /// `xen-evtchn` drivers are not loaded).
    #[error("{0}")]
    NotXen(String),
    /// A host operation (grant map or copy, event channel) failed.
    #[error("host operation failed: {0:?}")]
    Host(Errno),
    /// The peer's event channel closed.
    #[error("event channel closed")]
    Closed,
    /// The frontend broke the shared ring's index protocol (or the ring memory is unusable).
    #[error("ring: {0}")]
    Ring(#[from] xen_ring::RingError),
    /// Bad or missing configuration in xenstore.
    #[error("configuration: {0}")]
    Config(String),
    /// The packet side (tap device, socket).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// XenStore / XenBus.
    #[error(transparent)]
    Xenbus(#[from] xenbus::Error),
}
