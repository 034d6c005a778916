//! Async readiness with tokio.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use xen_types::EvtchnPort;

use crate::{EventChannel, Evtchn, Result};

/// An event-channel handle ([`Evtchn`] unless said otherwise) registered with the tokio
/// reactor: [`read_pending`](AsyncEvtchn::read_pending) waits without a thread of its own, so
/// one task can serve many channels.
///
/// ```
/// # #[cfg(feature = "sim")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use evtchn::{AsyncEvtchn, Evtchn};
/// use xen_types::{DomId, EvtchnPort};
///
/// let host = xen_sim::Host::default();
/// let backend = AsyncEvtchn::new(Evtchn::open_sim(&host, DomId::DOM0).unwrap()).unwrap();
/// let front = Evtchn::open_sim(&host, DomId::DOM0).unwrap();
/// let fp = front.bind_unbound_port(DomId::DOM0).unwrap();
/// let bp = backend.get_ref().bind_interdomain(DomId::DOM0, fp).unwrap();
/// let mut buf = [EvtchnPort(0); 4];
/// // The bind itself marks the new port pending once.
/// assert_eq!(backend.read_pending(&mut buf).await.unwrap(), 1);
/// backend.get_ref().unmask(bp).unwrap();
/// front.notify(fp).unwrap();
/// let n = backend.read_pending(&mut buf).await.unwrap();
/// assert_eq!(&buf[..n], &[bp]);
/// # }
/// # #[cfg(not(feature = "sim"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct AsyncEvtchn<E: EventChannel = Evtchn> {
    inner: AsyncFd<Registered<E>>,
}

/// The handle and a duplicate of its descriptor, which the reactor watches: ours, so it
/// stays open and the same for as long as the registration lasts, whatever the handle does.
#[derive(Debug)]
struct Registered<E> {
    fd: OwnedFd,
    evtchn: E,
}

impl<E> AsRawFd for Registered<E> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl<E: EventChannel> AsyncEvtchn<E> {
    /// Registers `evtchn` with the current tokio runtime's reactor (watching a duplicate of
    /// its descriptor, which shares its readiness).
    pub fn new(evtchn: E) -> std::io::Result<AsyncEvtchn<E>> {
        let fd = evtchn.as_fd().try_clone_to_owned()?;
        // SAFETY: `fd` is a descriptor we own, stored in the registered value and returned
        // by every `as_raw_fd` call, so it stays open and the same until the AsyncFd is
        // dropped or `into_inner` deregisters it.
        let inner = unsafe {
            AsyncFd::register_with_interest(Registered { fd, evtchn }, Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(AsyncEvtchn { inner })
    }

    /// The handle, for binding, notifying and unmasking.
    pub fn get_ref(&self) -> &E {
        &self.inner.get_ref().evtchn
    }

    /// Waits until ports are pending and reads them into `buf`; returns how many (at least
    /// one unless `buf` is empty).
    pub async fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mut guard = self.inner.readable().await.map_err(|e| crate::Error::Op {
                op: "readable",
                errno: xen_types::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            let n = self.get_ref().read_pending(buf)?;
            if n > 0 {
                return Ok(n);
            }
            guard.clear_ready();
        }
    }

    /// Gives the handle back, deregistering it.
    pub fn into_inner(self) -> E {
        self.inner.into_inner().evtchn
    }
}
