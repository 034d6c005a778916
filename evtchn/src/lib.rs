//! Event channels: bind, notify, and receive Xen event-channel notifications.
//!
//! One trait, [`EventChannel`], over two backends:
//!
//! - [`RealEvtchn`]: the Linux `/dev/xen/evtchn` device, driven with its ioctls
//!   (`IOCTL_EVTCHN_BIND_*`, `IOCTL_EVTCHN_UNBIND`, `IOCTL_EVTCHN_NOTIFY`), `read` for pending
//!   ports and `write` to unmask. We use the device directly rather than libxenevtchn because
//!   the library is a thin wrapper over the same ioctls that would add a run-time dependency
//!   and a logger, and its `xenevtchn_pending` returns one port per `read` system call, while
//!   [`EventChannel::read_pending`] drains a whole batch in one. The descriptor is ours, so it
//!   goes straight into poll/epoll, `mio` or tokio's `AsyncFd`.
//! - `SimEvtchn` (feature `sim`, on by default): a handle on a `xen_sim::Host` acting as a
//!   given domain (dom0 for backends and xenstored, a guest's id for simulated frontends),
//!   with Xen's port states and errors and the Linux driver's delivery semantics.
//!
//! Code written over `E: EventChannel` runs on either with static dispatch; [`Evtchn`] is a
//! handle on either chosen at run time (it implements the trait and dereferences to it).
//!
//! A delivered port is masked until [`EventChannel::unmask`]: a notification that arrives
//! meanwhile stays pending and is delivered on unmask, so a backend's loop is
//! *read pending → unmask → process*.
//!
//! ```
//! # #[cfg(feature = "sim")] {
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
//! # }
//! ```
//!
//! Many channels, one thread: bind them all on one handle, wait on its descriptor, and
//! dispatch on the ports read. On the simulated host, [`EventChannel::wait`] sleeps on a futex
//! of the handle (a wake-up costs one `FUTEX_WAKE`, like the `write` that wakes a blocking
//! `read` of an eventfd) and notify and unmask take no host-wide lock, while poll/epoll/async
//! users wait on the handle's eventfd, which is kept in step once the descriptor has been
//! asked for ([`AsFd`]/[`AsRawFd`]); use one style per handle at a time. With the `tokio`
//! feature, `AsyncEvtchn` does the same in an async task; with `mio`, register
//! `mio::unix::SourceFd(&evtchn.as_raw_fd())`.

mod real;
#[cfg(feature = "sim")]
mod sim;
#[cfg(feature = "tokio")]
mod tokio_io;

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_types::{DomId, Errno, EvtchnPort, Virq};

pub use real::RealEvtchn;
#[cfg(feature = "sim")]
pub use sim::SimEvtchn;
#[cfg(feature = "tokio")]
pub use tokio_io::AsyncEvtchn;
pub use xen_types::PortStatus;

/// The event-channel device.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

pub(crate) fn op(op: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Op { op, errno }
}

/// An event-channel handle (one open of `/dev/xen/evtchn`, or its simulated equivalent): the
/// ports bound through it are delivered to it, and dropping it unbinds them all.
///
/// Implementations are thread-safe. The descriptor ([`AsFd`]) polls readable while ports may
/// be pending.
pub trait EventChannel: AsFd + Send + Sync + fmt::Debug {
    /// Restricts this handle to binding interdomain channels with `dom` only
    /// (`IOCTL_EVTCHN_RESTRICT_DOMID`, for a deprivileged device model): unbound-port and
    /// VIRQ binds then fail with `EACCES`. `EINVAL` for dom0 or a reserved id; `EACCES` if
    /// already restricted.
    fn restrict(&self, dom: DomId) -> Result<()>;

    /// Allocates a port that domain `remote` may bind to (`IOCTL_EVTCHN_BIND_UNBOUND_PORT`,
    /// `EVTCHNOP_alloc_unbound`).
    fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort>;

    /// Connects a new local port to `remote_port` of `remote`, which must be an unbound port
    /// allocated for this domain (`IOCTL_EVTCHN_BIND_INTERDOMAIN`; `EINVAL` otherwise,
    /// `ESRCH` for an unknown domain). Xen marks the new port pending once, so an event sent
    /// before the bind is not lost.
    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort>;

    /// Binds virtual interrupt `virq` (`IOCTL_EVTCHN_BIND_VIRQ`; e.g. [`Virq::DOM_EXC`],
    /// which xenstored needs).
    fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort>;

    /// Closes `port` (`IOCTL_EVTCHN_UNBIND`); its interdomain peer becomes unbound.
    /// `ENOTCONN` if this handle did not bind it.
    fn unbind(&self, port: EvtchnPort) -> Result<()>;

    /// Notifies the remote end of `port` (`IOCTL_EVTCHN_NOTIFY`). `ENOTCONN` if this handle
    /// did not bind it.
    fn notify(&self, port: EvtchnPort) -> Result<()>;

    /// Unmasks `port` after handling it (a `write` of the port to the device); a
    /// notification that arrived while it was masked is delivered now.
    fn unmask(&self, port: EvtchnPort) -> Result<()>;

    /// Reads pending ports into `buf` without blocking (a `read` of the device); returns how
    /// many (0 if none). Each port read is masked until [`unmask`](EventChannel::unmask).
    fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize>;

    /// Takes delivery of a port of this domain that no handle owns: a simulated guest taking
    /// the ports the toolstack allocated for it. Only the simulated host can do this; the
    /// default is `EOPNOTSUPP`, as on real Xen.
    fn attach(&self, port: EvtchnPort) -> Result<()> {
        let _ = port;
        Err(op("attach")(Errno::EOPNOTSUPP))
    }

    /// One pending port, if any, without blocking (`xenevtchn_pending`).
    fn pending(&self) -> Result<Option<EvtchnPort>> {
        let mut one = [EvtchnPort(0)];
        Ok((self.read_pending(&mut one)? == 1).then_some(one[0]))
    }

    /// Waits up to `timeout` (forever for `None`) for pending ports and reads them into
    /// `buf`; returns how many, 0 on timeout. The default polls the descriptor.
    fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        poll_wait(self, buf, timeout, true)
    }

    /// [`wait`](EventChannel::wait) for a caller that has handled every port it read and
    /// expects none pending (a backend whose ring ran empty): sleeps before the first read,
    /// which would most likely find nothing. The default polls the descriptor, then reads:
    /// two system calls per wake-up instead of three.
    fn wait_idle(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        poll_wait(self, buf, timeout, false)
    }
}

/// [`EventChannel::wait`] by `poll` on the handle's descriptor between non-blocking reads
/// (the first read before the first poll when `read_first`). The clock is read only when a
/// poll returns early and the read finds nothing (another reader took the port, or a
/// signal): the time-out then starts again from there, so such a wait may last up to twice
/// `timeout`. (In a PV dom0 on the `xen` clocksource every clock read is a system call.)
fn poll_wait<E: EventChannel + ?Sized>(
    e: &E,
    buf: &mut [EvtchnPort],
    timeout: Option<Duration>,
    mut read_first: bool,
) -> Result<usize> {
    let ms_of = |t: Duration| i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // Set once the first poll is over.
    let mut deadline: Option<Instant> = None;
    let mut first = true;
    loop {
        let read = read_first || buf.is_empty();
        if read {
            let n = e.read_pending(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
        }
        read_first = true;
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let left = if first {
                    t
                } else {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + t);
                    d.saturating_duration_since(Instant::now())
                };
                if left.is_zero() {
                    // (Time is up: one read, unless one just found nothing.)
                    return if read { Ok(0) } else { e.read_pending(buf) };
                }
                // Round up so we never spin on a sub-millisecond remainder.
                ms_of(left)
            }
        };
        let mut pfd = libc::pollfd {
            fd: e.as_fd().as_raw_fd(),
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
        if r == 0 && timeout.is_some() {
            // Timed out: one last read.
            return e.read_pending(buf);
        }
        first = false;
    }
}

/// Forwards every method, so `Box<E>` and `Arc<E>` (and `Box<dyn EventChannel>`) are handles
/// too.
macro_rules! forward {
    ($($ptr:ident),*) => { $(
        impl<E: EventChannel + ?Sized> EventChannel for $ptr<E> {
            fn restrict(&self, dom: DomId) -> Result<()> {
                (**self).restrict(dom)
            }
            fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort> {
                (**self).bind_unbound_port(remote)
            }
            fn bind_interdomain(&self, remote: DomId, port: EvtchnPort) -> Result<EvtchnPort> {
                (**self).bind_interdomain(remote, port)
            }
            fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort> {
                (**self).bind_virq(virq)
            }
            fn unbind(&self, port: EvtchnPort) -> Result<()> {
                (**self).unbind(port)
            }
            #[inline]
            fn notify(&self, port: EvtchnPort) -> Result<()> {
                (**self).notify(port)
            }
            #[inline]
            fn unmask(&self, port: EvtchnPort) -> Result<()> {
                (**self).unmask(port)
            }
            #[inline]
            fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
                (**self).read_pending(buf)
            }
            fn attach(&self, port: EvtchnPort) -> Result<()> {
                (**self).attach(port)
            }
            fn pending(&self) -> Result<Option<EvtchnPort>> {
                (**self).pending()
            }
            #[inline]
            fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
                (**self).wait(buf, timeout)
            }
            #[inline]
            fn wait_idle(
                &self,
                buf: &mut [EvtchnPort],
                timeout: Option<Duration>,
            ) -> Result<usize> {
                (**self).wait_idle(buf, timeout)
            }
        }
    )* };
}
forward!(Box, Arc);

/// An event-channel handle on whichever backend was opened: the real device
/// ([`Evtchn::open`]), the simulated host (`Evtchn::open_sim`, feature `sim`), or any
/// [`EventChannel`] ([`Evtchn::new`]). It implements [`EventChannel`] and dereferences to it,
/// so its methods need no import.
pub struct Evtchn {
    inner: Box<dyn EventChannel>,
}

impl fmt::Debug for Evtchn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Evtchn").field(&self.inner).finish()
    }
}

impl Evtchn {
    /// Opens `/dev/xen/evtchn` (non-blocking, close-on-exec). Fails with
    /// [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Evtchn> {
        Ok(Evtchn::new(RealEvtchn::open()?))
    }

    /// Opens a handle on the simulated `host`, acting as domain `dom` (`ESRCH` if unknown).
    #[cfg(feature = "sim")]
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Evtchn> {
        Ok(Evtchn::new(SimEvtchn::open(host, dom)?))
    }

    /// A handle on any backend.
    pub fn new(backend: impl EventChannel + 'static) -> Evtchn {
        Evtchn {
            inner: Box::new(backend),
        }
    }
}

impl std::ops::Deref for Evtchn {
    type Target = dyn EventChannel;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl EventChannel for Evtchn {
    fn restrict(&self, dom: DomId) -> Result<()> {
        self.inner.restrict(dom)
    }
    fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort> {
        self.inner.bind_unbound_port(remote)
    }
    fn bind_interdomain(&self, remote: DomId, port: EvtchnPort) -> Result<EvtchnPort> {
        self.inner.bind_interdomain(remote, port)
    }
    fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort> {
        self.inner.bind_virq(virq)
    }
    fn unbind(&self, port: EvtchnPort) -> Result<()> {
        self.inner.unbind(port)
    }
    #[inline]
    fn notify(&self, port: EvtchnPort) -> Result<()> {
        self.inner.notify(port)
    }
    #[inline]
    fn unmask(&self, port: EvtchnPort) -> Result<()> {
        self.inner.unmask(port)
    }
    #[inline]
    fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
        self.inner.read_pending(buf)
    }
    fn attach(&self, port: EvtchnPort) -> Result<()> {
        self.inner.attach(port)
    }
    fn pending(&self) -> Result<Option<EvtchnPort>> {
        self.inner.pending()
    }
    #[inline]
    fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        self.inner.wait(buf, timeout)
    }
    #[inline]
    fn wait_idle(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        self.inner.wait_idle(buf, timeout)
    }
}

impl AsFd for Evtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for Evtchn {
    /// The descriptor that polls readable while ports may be pending.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_fd().as_raw_fd()
    }
}
