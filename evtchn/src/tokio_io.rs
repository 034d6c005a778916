//! Async readiness with tokio.

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use xen_types::EvtchnPort;

use crate::{Evtchn, Result};

/// An [`Evtchn`] registered with the tokio reactor: [`read_pending`](AsyncEvtchn::read_pending)
/// waits without a thread of its own, so one task can serve many channels.
///
/// ```
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
/// ```
#[derive(Debug)]
pub struct AsyncEvtchn {
    inner: AsyncFd<Evtchn>,
}

impl AsyncEvtchn {
    /// Registers `evtchn` with the current tokio runtime's reactor.
    pub fn new(evtchn: Evtchn) -> std::io::Result<AsyncEvtchn> {
        // SAFETY: an `Evtchn` owns its descriptor for its whole life and `as_raw_fd` always
        // returns that same descriptor; the AsyncFd owns the Evtchn, so the descriptor stays
        // open until the registration is dropped or `into_inner` deregisters it.
        let inner = unsafe { AsyncFd::register_with_interest(evtchn, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(AsyncEvtchn { inner })
    }

    /// The handle, for binding, notifying and unmasking.
    pub fn get_ref(&self) -> &Evtchn {
        self.inner.get_ref()
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
            let n = self.inner.get_ref().read_pending(buf)?;
            if n > 0 {
                return Ok(n);
            }
            guard.clear_ready();
        }
    }

    /// Gives the handle back, deregistering it.
    pub fn into_inner(self) -> Evtchn {
        self.inner.into_inner()
    }
}
