//! The xenstore ring page (`struct xenstore_domain_interface`, `docs/misc/xenstore-ring.txt`).
//!
//! Two byte queues of `XENSTORE_RING_SIZE` bytes with free-running 32-bit producer and
//! consumer offsets (index masked by the ring size), a server feature bitmap, a connection
//! state (reconnection) and an error indicator. [`Ring`] works on any
//! [`SharedMemory`] (a grant mapping, a simulated guest's page, a local [`PageBuf`]) from
//! either side; a [`Doorbell`] is the event channel. [`RingTransport`] turns a guest-side
//! ring into a [`Transport`] for [`Client`](crate::Client).
//!
//! The doorbell used by tests here is [`EventfdDoorbell`] (an eventfd pair); the `evtchn`
//! crate's ports can implement [`Doorbell`] the same way.
//!
//! [`PageBuf`]: xen_types::mem::PageBuf
//!
//! ```
//! use std::sync::Arc;
//! use xen_types::mem::PageBuf;
//! use xenstore::ring::{Ring, Side};
//!
//! let page = Arc::new(PageBuf::new(1).unwrap());
//! let guest = Ring::new(page.clone(), Side::Guest);
//! let server = Ring::new(page, Side::Server);
//! assert_eq!(guest.write(b"hello").unwrap(), 5);
//! let mut buf = [0u8; 16];
//! assert_eq!(server.read(&mut buf).unwrap(), 5);
//! assert_eq!(&buf[..5], b"hello");
//! ```

use std::io;
use std::mem::offset_of;
use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use xen_sys::xenstore_domain_interface as Intf;
use xen_types::mem::{MemError, SharedMemory, SharedMemoryExt};

use crate::transport::{RecvHalf, SendHalf, Transport};

/// Bytes in each direction's queue (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: u32 = xen_sys::XENSTORE_RING_SIZE;

const REQ: usize = offset_of!(Intf, req);
const RSP: usize = offset_of!(Intf, rsp);
const REQ_CONS: usize = offset_of!(Intf, req_cons);
const REQ_PROD: usize = offset_of!(Intf, req_prod);
const RSP_CONS: usize = offset_of!(Intf, rsp_cons);
const RSP_PROD: usize = offset_of!(Intf, rsp_prod);
const FEATURES: usize = offset_of!(Intf, server_features);
const CONNECTION: usize = offset_of!(Intf, connection);
const ERROR: usize = offset_of!(Intf, error);

/// Which end of the ring this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The guest: produces requests, consumes responses.
    Guest,
    /// xenstored: consumes requests, produces responses.
    Server,
}

/// "Notify the other end / wait for the other end": an event channel, or a stand-in.
pub trait Doorbell: Send + Sync {
    /// Signals the other end.
    fn notify(&self) -> io::Result<()>;
    /// Waits for a signal from the other end, at most `timeout` (`None`: forever).
    /// Returns `true` if signalled. Spurious returns are allowed.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool>;
}

/// A [`Doorbell`] made of two eventfds, for in-process simulated domains.
#[derive(Debug, Clone)]
pub struct EventfdDoorbell {
    mine: Arc<EventFd>,
    peer: Arc<EventFd>,
}

impl EventfdDoorbell {
    /// Two connected ends.
    pub fn pair() -> io::Result<(EventfdDoorbell, EventfdDoorbell)> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let a = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let b = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        Ok((
            EventfdDoorbell {
                mine: a.clone(),
                peer: b.clone(),
            },
            EventfdDoorbell { mine: b, peer: a },
        ))
    }
}

impl Doorbell for EventfdDoorbell {
    fn notify(&self) -> io::Result<()> {
        self.peer.write(1)?;
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::from(u16::try_from(t.as_millis()).unwrap_or(u16::MAX))
        });
        let mut fds = [PollFd::new(self.mine.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => Ok(false),
            Ok(_) => {
                // Drain the counter (non-blocking).
                let _ = self.mine.read();
                Ok(true)
            }
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// A [`Doorbell`] on an event channel: `notify` signals `port`, `wait` waits for any port
/// of the handle (use one handle per ring) and unmasks what it received.
#[cfg(feature = "evtchn")]
#[derive(Debug)]
pub struct EvtchnDoorbell {
    ev: evtchn::Evtchn,
    port: xen_types::EvtchnPort,
}

#[cfg(feature = "evtchn")]
impl EvtchnDoorbell {
    /// A doorbell on the local `port` of handle `ev`.
    pub fn new(ev: evtchn::Evtchn, port: xen_types::EvtchnPort) -> EvtchnDoorbell {
        EvtchnDoorbell { ev, port }
    }

    /// The local port.
    pub fn port(&self) -> xen_types::EvtchnPort {
        self.port
    }
}

#[cfg(feature = "evtchn")]
fn evtchn_io(e: evtchn::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno().0)
}

#[cfg(feature = "evtchn")]
impl Doorbell for EvtchnDoorbell {
    fn notify(&self) -> io::Result<()> {
        self.ev.notify(self.port).map_err(evtchn_io)
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut ports = [xen_types::EvtchnPort(0); 8];
        let n = self.ev.wait(&mut ports, timeout).map_err(evtchn_io)?;
        for p in &ports[..n] {
            self.ev.unmask(*p).map_err(evtchn_io)?;
        }
        Ok(n > 0)
    }
}

/// Errors peculiar to rings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The page is too small or read-only.
    #[error(transparent)]
    Mem(#[from] MemError),
    /// The producer is more than a ring ahead of the consumer: the peer corrupted the
    /// indexes (`XENSTORE_ERROR_RINGIDX`).
    #[error("inconsistent ring indexes (prod {prod}, cons {cons})")]
    BadIndexes {
        /// Producer.
        prod: u32,
        /// Consumer.
        cons: u32,
    },
}

impl From<RingError> for io::Error {
    fn from(e: RingError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// One end of a xenstore ring page.
#[derive(Debug)]
pub struct Ring<M> {
    mem: M,
    side: Side,
}

impl<M: SharedMemory> Ring<M> {
    /// The ring in `mem` (at least `sizeof(struct xenstore_domain_interface)` bytes).
    pub fn new(mem: M, side: Side) -> Ring<M> {
        Ring { mem, side }
    }

    /// The side.
    pub fn side(&self) -> Side {
        self.side
    }

    fn idx(&self, off: usize) -> Result<&std::sync::atomic::AtomicU32, RingError> {
        Ok(self.mem.atomic_u32(off)?)
    }

    /// Writes as much of `data` as fits into this side's outgoing queue; returns the count.
    /// Call [`Doorbell::notify`] afterwards.
    pub fn write(&self, data: &[u8]) -> Result<usize, RingError> {
        let (base, cons_off, prod_off) = match self.side {
            Side::Guest => (REQ, REQ_CONS, REQ_PROD),
            Side::Server => (RSP, RSP_CONS, RSP_PROD),
        };
        let cons = self.idx(cons_off)?.load(Ordering::Acquire);
        let prod = self.idx(prod_off)?.load(Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(RingError::BadIndexes { prod, cons });
        }
        let n = data.len().min((RING_SIZE - used) as usize);
        let mut done = 0;
        while done < n {
            let at = (prod.wrapping_add(done as u32) & (RING_SIZE - 1)) as usize;
            let chunk = (n - done).min(RING_SIZE as usize - at);
            self.mem.write_bytes(base + at, &data[done..done + chunk])?;
            done += chunk;
        }
        fence(Ordering::Release);
        self.idx(prod_off)?
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// Reads available bytes of this side's incoming queue into `buf`; returns the count.
    /// Call [`Doorbell::notify`] afterwards if it was non-zero (space was freed).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        let (base, cons_off, prod_off) = match self.side {
            Side::Guest => (RSP, RSP_CONS, RSP_PROD),
            Side::Server => (REQ, REQ_CONS, REQ_PROD),
        };
        let prod = self.idx(prod_off)?.load(Ordering::Acquire);
        let cons = self.idx(cons_off)?.load(Ordering::Relaxed);
        let avail = prod.wrapping_sub(cons);
        if avail > RING_SIZE {
            return Err(RingError::BadIndexes { prod, cons });
        }
        fence(Ordering::Acquire);
        let n = buf.len().min(avail as usize);
        let mut done = 0;
        while done < n {
            let at = (cons.wrapping_add(done as u32) & (RING_SIZE - 1)) as usize;
            let chunk = (n - done).min(RING_SIZE as usize - at);
            self.mem
                .read_bytes(base + at, &mut buf[done..done + chunk])?;
            done += chunk;
        }
        self.idx(cons_off)?
            .store(cons.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// Bytes waiting in the incoming queue.
    pub fn readable(&self) -> Result<u32, RingError> {
        let (cons_off, prod_off) = match self.side {
            Side::Guest => (RSP_CONS, RSP_PROD),
            Side::Server => (REQ_CONS, REQ_PROD),
        };
        let prod = self.idx(prod_off)?.load(Ordering::Acquire);
        let cons = self.idx(cons_off)?.load(Ordering::Relaxed);
        Ok(prod.wrapping_sub(cons).min(RING_SIZE))
    }

    /// The server feature bitmap (`XENSTORE_SERVER_FEATURE_*`).
    pub fn server_features(&self) -> Result<u32, RingError> {
        Ok(self.idx(FEATURES)?.load(Ordering::Acquire))
    }

    /// Server: advertises features (bits are only ever added).
    pub fn advertise_features(&self, bits: u32) -> Result<(), RingError> {
        self.idx(FEATURES)?.fetch_or(bits, Ordering::AcqRel);
        Ok(())
    }

    /// The connection state (`XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`).
    pub fn connection(&self) -> Result<u32, RingError> {
        Ok(self.idx(CONNECTION)?.load(Ordering::Acquire))
    }

    /// Guest: asks for a reconnection (set state to `XENSTORE_RECONNECT`, then notify and
    /// wait for it to return to `XENSTORE_CONNECTED`).
    pub fn request_reconnect(&self) -> Result<(), RingError> {
        self.idx(CONNECTION)?
            .store(xen_sys::XENSTORE_RECONNECT, Ordering::Release);
        Ok(())
    }

    /// Server: if the guest asked for a reconnection, empties both queues and marks the
    /// ring connected again. Returns true if it did (the caller drops its per-connection
    /// state and notifies).
    pub fn server_handle_reconnect(&self) -> Result<bool, RingError> {
        if self.connection()? != xen_sys::XENSTORE_RECONNECT {
            return Ok(false);
        }
        let req_prod = self.idx(REQ_PROD)?.load(Ordering::Acquire);
        self.idx(REQ_CONS)?.store(req_prod, Ordering::Release);
        let rsp_prod = self.idx(RSP_PROD)?.load(Ordering::Acquire);
        self.idx(RSP_CONS)?.store(rsp_prod, Ordering::Release);
        self.idx(CONNECTION)?
            .store(xen_sys::XENSTORE_CONNECTED, Ordering::Release);
        Ok(true)
    }

    /// The connection error indicator (`XENSTORE_ERROR_*`).
    pub fn error(&self) -> Result<u32, RingError> {
        Ok(self.idx(ERROR)?.load(Ordering::Acquire))
    }

    /// Server: records a fatal connection error.
    pub fn set_error(&self, e: u32) -> Result<(), RingError> {
        self.idx(ERROR)?.store(e, Ordering::Release);
        Ok(())
    }
}

/// Longest single doorbell wait: both directions share one doorbell, so a notification
/// consumed by one half is made up for by re-checking the ring this often.
const POLL_SLICE: Duration = Duration::from_millis(10);

/// A guest-side (or server-side) ring as a byte-stream [`Transport`].
pub struct RingTransport<M, D> {
    ring: Arc<Ring<M>>,
    bell: Arc<D>,
}

impl<M: SharedMemory + 'static, D: Doorbell + 'static> RingTransport<M, D> {
    /// A transport over `ring`, signalling with `bell`.
    pub fn new(ring: Ring<M>, bell: D) -> RingTransport<M, D> {
        RingTransport {
            ring: Arc::new(ring),
            bell: Arc::new(bell),
        }
    }
}

struct RingHalf<M, D> {
    ring: Arc<Ring<M>>,
    bell: Arc<D>,
}

impl<M: SharedMemory, D: Doorbell> SendHalf for RingHalf<M, D> {
    fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.ring.write(bytes)?;
            bytes = &bytes[n..];
            if n > 0 {
                self.bell.notify()?;
            } else {
                self.bell.wait(Some(POLL_SLICE))?;
            }
        }
        Ok(())
    }
}

impl<M: SharedMemory, D: Doorbell> RecvHalf for RingHalf<M, D> {
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let n = self.ring.read(buf)?;
            if n > 0 {
                self.bell.notify()?;
                return Ok(n);
            }
            let slice = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => r.min(POLL_SLICE),
                    _ => return Err(io::ErrorKind::TimedOut.into()),
                },
                None => POLL_SLICE,
            };
            self.bell.wait(Some(slice))?;
        }
    }
}

impl<M: SharedMemory + 'static, D: Doorbell + 'static> Transport for RingTransport<M, D> {
    fn split(self) -> io::Result<(Box<dyn SendHalf>, Box<dyn RecvHalf>)> {
        Ok((
            Box::new(RingHalf {
                ring: self.ring.clone(),
                bell: self.bell.clone(),
            }),
            Box::new(RingHalf {
                ring: self.ring,
                bell: self.bell,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use xen_types::mem::PageBuf;

    use super::*;

    #[test]
    fn wraps_and_respects_capacity() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        // Indexes need not start at zero: start near u32 wrap-around.
        page.write_obj(REQ_PROD, u32::MAX - 10).unwrap();
        page.write_obj(REQ_CONS, u32::MAX - 10).unwrap();
        let g = Ring::new(page.clone(), Side::Guest);
        let s = Ring::new(page.clone(), Side::Server);
        let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        assert_eq!(g.write(&data).unwrap(), RING_SIZE as usize);
        assert_eq!(g.write(&data).unwrap(), 0);
        let mut out = vec![0u8; 600];
        assert_eq!(s.read(&mut out).unwrap(), 600);
        assert_eq!(&out[..], &data[..600]);
        assert_eq!(g.write(&data[1024..]).unwrap(), 476);
        let mut rest = vec![0u8; 2000];
        assert_eq!(s.read(&mut rest).unwrap(), 900);
        assert_eq!(&rest[..900], &data[600..1500]);
    }

    #[test]
    fn corrupt_indexes_are_an_error() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        page.write_obj(REQ_PROD, 5000u32).unwrap();
        let s = Ring::new(page.clone(), Side::Server);
        assert!(matches!(
            s.read(&mut [0u8; 4]),
            Err(RingError::BadIndexes {
                prod: 5000,
                cons: 0
            })
        ));
        let g = Ring::new(page, Side::Guest);
        assert!(g.write(b"x").is_err());
    }

    #[test]
    fn reconnect_empties_queues() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        let g = Ring::new(page.clone(), Side::Guest);
        let s = Ring::new(page, Side::Server);
        g.write(b"abc").unwrap();
        assert!(!s.server_handle_reconnect().unwrap());
        g.request_reconnect().unwrap();
        assert!(s.server_handle_reconnect().unwrap());
        assert_eq!(s.readable().unwrap(), 0);
        assert_eq!(g.connection().unwrap(), xen_sys::XENSTORE_CONNECTED);
    }

    #[test]
    fn too_small_memory_is_an_error() {
        struct Tiny(PageBuf);
        // SAFETY: forwards to a PageBuf but claims fewer bytes: still valid.
        unsafe impl SharedMemory for Tiny {
            fn as_ptr(&self) -> *mut u8 {
                self.0.as_ptr()
            }
            fn len(&self) -> usize {
                100
            }
        }
        let r = Ring::new(Tiny(PageBuf::new(1).unwrap()), Side::Guest);
        assert!(matches!(r.write(b"x"), Err(RingError::Mem(_))));
    }
}
