//! Event channels: bind, notify, and receive Xen event-channel notifications.
//!
//! One type, [`Evtchn`], over two backends:
//!
//! - **Real**: the Linux `/dev/xen/evtchn` device, driven with its ioctls
//!   (`IOCTL_EVTCHN_BIND_*`, `IOCTL_EVTCHN_UNBIND`, `IOCTL_EVTCHN_NOTIFY`), `read` for pending
//!   ports and `write` to unmask. We use the device directly rather than libxenevtchn because
//!   the library is a thin wrapper over the same ioctls that would add a run-time dependency
//!   and a logger, and its `xenevtchn_pending` returns one port per `read` system call, while
//!   [`Evtchn::read_pending`] drains a whole batch in one. The descriptor is ours, so it goes
//!   straight into poll/epoll, `mio` or tokio's `AsyncFd`.
//! - **Simulated**: a handle on a [`xen_sim::Host`] acting as a given domain (dom0 for
//!   backends and xenstored, a guest's id for simulated frontends), with Xen's port states
//!   and errors and the Linux driver's delivery semantics (see [`xen_sim::evtchn`]).
//!
//! A delivered port is masked until [`Evtchn::unmask`]: a notification that arrives meanwhile
//! stays pending and is delivered on unmask, so a backend's loop is
//! *read pending → unmask → process*.
//!
//! ```
//! use evtchn::Evtchn;
//! use std::time::Duration;
//! use xen_types::DomId;
//!
//! let host = xen_sim::Host::default();
//! let dom0 = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
//! // A loopback channel inside dom0: one end unbound for dom0, the other bound to it.
//! let a = dom0.bind_unbound_port(DomId::DOM0).unwrap();
//! let b = dom0.bind_interdomain(DomId::DOM0, a).unwrap();
//! # while dom0.pending().unwrap().is_some() {} // Xen marks a new interdomain port pending
//! # dom0.unmask(b).unwrap();
//! dom0.notify(a).unwrap();
//! let mut ports = [xen_types::EvtchnPort(0); 8];
//! let n = dom0.wait(&mut ports, Some(Duration::from_secs(5))).unwrap();
//! assert_eq!(&ports[..n], &[b]);
//! dom0.unmask(b).unwrap();
//! ```
//!
//! Many channels, one thread: bind them all on one handle, wait on its descriptor, and
//! dispatch on the ports read. On the simulated host, [`Evtchn::wait`] sleeps on a futex of
//! the handle (a wake-up costs one `FUTEX_WAKE`, like the `write` that wakes a blocking `read`
//! of an eventfd) and notify and unmask take no host-wide lock, while poll/epoll/async users
//! wait on the handle's eventfd, which is kept in step once the descriptor has been asked for
//! ([`AsRawFd`]/[`AsFd`]); use one style per handle at a time. With the `tokio` feature,
//! [`AsyncEvtchn`] does the same in an async task; with `mio`, register
//! `mio::unix::SourceFd(&evtchn.as_raw_fd())`.

mod real;
#[cfg(feature = "tokio")]
mod tokio_io;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use xen_types::{DomId, Errno, EvtchnPort, Virq};

#[cfg(feature = "tokio")]
pub use tokio_io::AsyncEvtchn;
pub use xen_sim::evtchn::PortStatus;

/// The event-channel device.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Xen device is missing: this is not a Xen dom0 (or the driver is not loaded).
    #[error("{path} cannot be opened ({errno}): not running in a Xen dom0, or the xen-evtchn driver is not loaded")]
    NotXen {
        /// The device path.
        path: &'static str,
        /// Why `open` failed (`ENOENT`, `ENODEV`, `ENXIO`).
        errno: Errno,
    },
    /// An operation failed with Xen's (or the driver's) errno.
    #[error("{op} failed: {errno}")]
    Op {
        /// What was attempted, e.g. `"bind_interdomain"`.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The kernel's queue of pending ports overflowed and events were lost (`EFBIG` from the
    /// driver): rescan every channel's ring.
    #[error("the event-channel queue overflowed: events were lost")]
    Overflow,
}

impl Error {
    /// The errno behind the error.
    pub fn errno(&self) -> Errno {
        match self {
            Error::NotXen { errno, .. } | Error::Op { errno, .. } => *errno,
            Error::Overflow => Errno(libc::EFBIG),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn op(op: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Op { op, errno }
}

enum Backend {
    Real(real::Device),
    Sim(xen_sim::evtchn::Handle),
}

/// An event-channel handle: the ports bound through it are delivered to it, and dropping it
/// unbinds them all.
pub struct Evtchn {
    backend: Backend,
}

impl std::fmt::Debug for Evtchn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Real(d) => f.debug_tuple("Evtchn::Real").field(&d.fd()).finish(),
            Backend::Sim(h) => f.debug_tuple("Evtchn::Sim").field(&h.domid()).finish(),
        }
    }
}

impl Evtchn {
    /// Opens `/dev/xen/evtchn` (non-blocking, close-on-exec). Fails with
    /// [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Evtchn> {
        Ok(Evtchn {
            backend: Backend::Real(real::Device::open(EVTCHN_DEVICE)?),
        })
    }

    /// Opens a handle on the simulated `host`, acting as domain `dom`.
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Evtchn> {
        Ok(Evtchn {
            backend: Backend::Sim(host.evtchn_open(dom).map_err(op("open"))?),
        })
    }

    /// True for the simulated backend.
    pub fn is_sim(&self) -> bool {
        matches!(self.backend, Backend::Sim(_))
    }

    /// Restricts this handle to binding interdomain channels with `dom` only
    /// (`IOCTL_EVTCHN_RESTRICT_DOMID`, for a deprivileged device model): unbound-port and
    /// VIRQ binds then fail with `EACCES`. `EINVAL` for dom0 or a reserved id; `EACCES` if
    /// already restricted.
    pub fn restrict(&self, dom: DomId) -> Result<()> {
        match &self.backend {
            Backend::Real(d) => d.restrict(dom),
            Backend::Sim(h) => h.restrict(dom),
        }
        .map_err(op("restrict"))
    }

    /// Allocates a port that domain `remote` may bind to (`EVTCHNOP_alloc_unbound`).
    pub fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort> {
        match &self.backend {
            Backend::Real(d) => d.bind_unbound_port(remote),
            Backend::Sim(h) => h.bind_unbound_port(remote),
        }
        .map_err(op("bind_unbound_port"))
    }

    /// Connects a new local port to `remote_port` of `remote`, which must be an unbound port
    /// allocated for this domain (`EVTCHNOP_bind_interdomain`; `EINVAL` otherwise, `ESRCH`
    /// for an unknown domain). Xen marks the new port pending once, so an event sent before
    /// the bind is not lost.
    pub fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort> {
        match &self.backend {
            Backend::Real(d) => d.bind_interdomain(remote, remote_port),
            Backend::Sim(h) => h.bind_interdomain(remote, remote_port),
        }
        .map_err(op("bind_interdomain"))
    }

    /// Binds virtual interrupt `virq` (e.g. [`Virq::DOM_EXC`], which xenstored needs).
    pub fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort> {
        match &self.backend {
            Backend::Real(d) => d.bind_virq(virq),
            Backend::Sim(h) => h.bind_virq(virq),
        }
        .map_err(op("bind_virq"))
    }

    /// Closes `port`; its interdomain peer becomes unbound. `ENOTCONN` if this handle did not
    /// bind it.
    pub fn unbind(&self, port: EvtchnPort) -> Result<()> {
        match &self.backend {
            Backend::Real(d) => d.unbind(port),
            Backend::Sim(h) => h.unbind(port),
        }
        .map_err(op("unbind"))
    }

    /// Notifies the remote end of `port`. `ENOTCONN` if this handle did not bind it.
    pub fn notify(&self, port: EvtchnPort) -> Result<()> {
        match &self.backend {
            Backend::Real(d) => d.notify(port),
            Backend::Sim(h) => h.notify(port),
        }
        .map_err(op("notify"))
    }

    /// Unmasks `port` after handling it; a notification that arrived while it was masked is
    /// delivered now.
    pub fn unmask(&self, port: EvtchnPort) -> Result<()> {
        match &self.backend {
            Backend::Real(d) => d.unmask(port),
            Backend::Sim(h) => h.unmask(port),
        }
        .map_err(op("unmask"))
    }

    /// Takes delivery of a port of this domain that no handle owns (simulated host only: a
    /// guest taking the ports the toolstack allocated for it). `EOPNOTSUPP` on real Xen.
    pub fn attach(&self, port: EvtchnPort) -> Result<()> {
        match &self.backend {
            Backend::Real(_) => Err(Errno::EOPNOTSUPP),
            Backend::Sim(h) => h.attach(port),
        }
        .map_err(op("attach"))
    }

    /// Reads pending ports into `buf` without blocking; returns how many (0 if none).
    /// Each port read is masked until [`unmask`](Evtchn::unmask).
    pub fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
        match &self.backend {
            Backend::Real(d) => d.read_pending(buf),
            Backend::Sim(h) => Ok(h.read_pending(buf)),
        }
    }

    /// One pending port, if any, without blocking (`xenevtchn_pending`).
    pub fn pending(&self) -> Result<Option<EvtchnPort>> {
        let mut one = [EvtchnPort(0)];
        Ok((self.read_pending(&mut one)? == 1).then_some(one[0]))
    }

    /// Waits up to `timeout` (forever for `None`) for pending ports and reads them into
    /// `buf`; returns how many, 0 on timeout.
    pub fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        if let Backend::Sim(h) = &self.backend {
            return Ok(h.wait(buf, timeout));
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let n = self.read_pending(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(0);
                    }
                    // Round up so we never spin on a sub-millisecond remainder.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = Errno::last();
                if e != Errno::EINTR {
                    return Err(op("poll")(e));
                }
            }
        }
    }
}

impl AsRawFd for Evtchn {
    /// The descriptor that polls readable while ports may be pending.
    fn as_raw_fd(&self) -> RawFd {
        match &self.backend {
            Backend::Real(d) => d.fd(),
            Backend::Sim(h) => h.fd(),
        }
    }
}

impl AsFd for Evtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.backend {
            Backend::Real(d) => d.as_fd(),
            Backend::Sim(h) => h.as_fd(),
        }
    }
}
