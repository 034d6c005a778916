//! The packet side of a vif: where transmitted packets go and received ones come from.
//!
//! Every queue is a [`PacketQueue`], a descriptor that carries one frame per read or write
//! behind a `virtio_net_hdr` ([`VnetHdr`]): a tap queue opened with
//! `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE` ([`TapPorts`], the real network), or one
//! end of a `SOCK_SEQPACKET` socket pair whose other end a test or bench holds
//! ([`SocketPorts`], a network peer in the same process). [`Ports`] makes them per device.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use xen_types::DomId;

use crate::wire::{vnet, VnetHdr};
use crate::Error;

/// A vif: frontend domain and device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VifId {
    /// The frontend's domain.
    pub domid: DomId,
    /// The device id (`handle`).
    pub devid: u32,
}

impl VifId {
    /// The interface name libxl's `vif-bridge` script expects: `vif<domid>.<devid>`.
    pub fn ifname(&self) -> String {
        format!("vif{}.{}", self.domid.get(), self.devid)
    }
}

/// What the frontend accepts on its rx path, so what the packet side may hand us
/// (`TUNSETOFFLOAD`'s `TUN_F_CSUM`, `TUN_F_TSO4`, `TUN_F_TSO6`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxOffloads {
    /// Partial checksums (the frontend did not write `feature-no-csum-offload=1`).
    pub csum: bool,
    /// TCPv4 segmentation (`feature-gso-tcpv4`).
    pub tso4: bool,
    /// TCPv6 segmentation (`feature-gso-tcpv6`).
    pub tso6: bool,
}

/// Makes the packet queues of each vif.
pub trait Ports: Send + Sync + 'static {
    /// The device appeared: create its interface (before the hotplug script runs).
    fn create(&self, vif: VifId) -> Result<(), Error>;
    /// Opens `queues` packet queues for a connection whose frontend accepts `rx`.
    fn open(&self, vif: VifId, queues: usize, rx: RxOffloads) -> Result<Vec<PacketQueue>, Error>;
    /// The device is gone: its interface goes away.
    fn remove(&self, vif: VifId);
}

/// One queue of frames, each behind a [`VnetHdr`], on a non-blocking descriptor.
#[derive(Debug)]
pub struct PacketQueue {
    fd: OwnedFd,
}

/// The most pieces a frame may come in ([`PacketQueue::send_iov`]): a packet's slots.
pub const MAX_PARTS: usize = crate::wire::FATAL_SLOTS + 1;

/// How long a send waits for room before the frame is dropped.
const SEND_WAIT: Duration = Duration::from_millis(200);

fn poll_fd(fd: BorrowedFd<'_>, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}

impl PacketQueue {
    /// A queue on `fd`, made non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<PacketQueue> {
        // SAFETY: fcntl F_GETFL on a descriptor we own.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl F_SETFL on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketQueue { fd })
    }

    /// A connected pair of queues (`socketpair(AF_UNIX, SOCK_SEQPACKET)`): what one end
    /// sends, the other receives, frame by frame.
    pub fn pair() -> io::Result<(PacketQueue, PacketQueue)> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded: both descriptors are new and ours.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&a, &b] {
            let size: libc::c_int = 4 << 20;
            // SAFETY: setsockopt with a c_int option value of the right size. Failure only
            // leaves the default buffer size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
        }
        Ok((PacketQueue::new(a)?, PacketQueue::new(b)?))
    }

    /// Sends one frame behind `hdr` (`writev`); waits a little for room, then reports
    /// `WouldBlock` (the caller drops the frame, as a full tap queue does).
    pub fn send(&self, hdr: &VnetHdr, data: &[u8]) -> io::Result<()> {
        let iov = [libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        }];
        // SAFETY: one iovec over `data`, readable for the call.
        unsafe { self.send_iov(hdr, &iov) }
    }

    /// Sends one frame made of the pieces `parts` behind `hdr` (one `writev`), as
    /// [`send`](PacketQueue::send).
    ///
    /// # Safety
    ///
    /// Each iovec must cover `iov_len` bytes readable for the duration of the call.
    pub unsafe fn send_iov(&self, hdr: &VnetHdr, parts: &[libc::iovec]) -> io::Result<()> {
        let h = hdr.to_bytes();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PARTS + 1];
        if parts.len() > MAX_PARTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} pieces", parts.len()),
            ));
        }
        iov[0] = libc::iovec {
            iov_base: h.as_ptr() as *mut _,
            iov_len: h.len(),
        };
        iov[1..=parts.len()].copy_from_slice(parts);
        let n = parts.len() + 1;
        let deadline = Instant::now() + SEND_WAIT;
        loop {
            // SAFETY: `n` iovecs: the header (a live local) and the caller's pieces,
            // readable (the caller's contract); writev only reads them.
            let r = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), n as i32) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    poll_fd(self.fd.as_fd(), libc::POLLOUT, left)?;
                }
                _ => return Err(e),
            }
        }
    }

    /// Receives one frame into `buf` without blocking: its header and length, or `None`
    /// when none is queued. A frame longer than `buf` is cut (and reported as such by its
    /// length exceeding none of `buf`: the caller sizes `buf` for the largest frame).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(VnetHdr, usize)>> {
        let mut h = [0u8; vnet::LEN];
        let mut iov = [
            libc::iovec {
                iov_base: h.as_mut_ptr().cast(),
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        loop {
            // SAFETY: two iovecs over live, writable buffers.
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_mut_ptr(), 2) };
            if r >= 0 {
                let n = r as usize;
                if n < vnet::LEN {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{n}-byte frame has no virtio_net_hdr"),
                    ));
                }
                let hdr = VnetHdr::from_bytes(&h).unwrap_or_default();
                return Ok(Some((hdr, n - vnet::LEN)));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for a frame to read; true if one may be there.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_fd(self.fd.as_fd(), libc::POLLIN, timeout)
    }

    /// Receives one frame, waiting up to `timeout`: `Ok(None)` on time-out.
    pub fn recv_timeout(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(VnetHdr, usize)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.recv(buf)? {
                return Ok(Some(r));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_readable(left)?;
        }
    }
}

impl AsFd for PacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Socket-pair queues: the backend gets one end of each pair, the other end waits for a
/// test or bench to [`take`](SocketPorts::take) it. A network peer in the same process.
#[derive(Debug, Default)]
pub struct SocketPorts {
    peers: Mutex<HashMap<VifId, (Vec<PacketQueue>, RxOffloads)>>,
    cond: Condvar,
    created: Mutex<Vec<VifId>>,
}

impl SocketPorts {
    /// No devices yet.
    pub fn new() -> SocketPorts {
        SocketPorts::default()
    }

    /// The peer ends of `vif`'s queues and the offloads its frontend accepts, once it
    /// connects (waits up to `timeout`).
    pub fn take(&self, vif: VifId, timeout: Duration) -> Option<(Vec<PacketQueue>, RxOffloads)> {
        let deadline = Instant::now() + timeout;
        let mut g = self.peers.lock();
        loop {
            if let Some(p) = g.remove(&vif) {
                return Some(p);
            }
            if self.cond.wait_until(&mut g, deadline).timed_out() {
                return g.remove(&vif);
            }
        }
    }

    /// Devices created and not removed.
    pub fn created(&self) -> Vec<VifId> {
        self.created.lock().clone()
    }
}

impl Ports for SocketPorts {
    fn create(&self, vif: VifId) -> Result<(), Error> {
        let mut c = self.created.lock();
        if !c.contains(&vif) {
            c.push(vif);
        }
        Ok(())
    }

    fn open(&self, vif: VifId, queues: usize, rx: RxOffloads) -> Result<Vec<PacketQueue>, Error> {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..queues {
            let (a, b) = PacketQueue::pair()?;
            ours.push(a);
            theirs.push(b);
        }
        self.peers.lock().insert(vif, (theirs, rx));
        self.cond.notify_all();
        Ok(ours)
    }

    fn remove(&self, vif: VifId) {
        self.created.lock().retain(|v| *v != vif);
        self.peers.lock().remove(&vif);
    }
}

/// Tap devices named `vif<domid>.<devid>` (`/dev/net/tun`), one tap queue per ring queue.
#[derive(Debug, Default)]
pub struct TapPorts {
    /// The first queue of each device, opened at `create` and kept so that the interface
    /// lives (for the hotplug script and the bridge) across reconnections.
    taps: Mutex<HashMap<VifId, OwnedFd>>,
}

const TUN_DEVICE: &str = "/dev/net/tun";

/// Opens one queue of tap `name` (`TUNSETIFF` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
/// IFF_MULTI_QUEUE`).
fn open_tap_queue(name: &str) -> Result<OwnedFd, Error> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(Error::Config(format!("interface name {name:?} too long")));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("{TUN_DEVICE}: {e}"))))?;
    let fd = OwnedFd::from(f);
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE) as i16;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return Err(Error::Io(io::Error::new(
            e.kind(),
            format!("TUNSETIFF {name}: {e}"),
        )));
    }
    let hdr: libc::c_int = vnet::LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one c_int, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) } < 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    Ok(fd)
}

impl TapPorts {
    /// No devices yet.
    pub fn new() -> TapPorts {
        TapPorts::default()
    }
}

impl Ports for TapPorts {
    fn create(&self, vif: VifId) -> Result<(), Error> {
        if let std::collections::hash_map::Entry::Vacant(v) = self.taps.lock().entry(vif) {
            v.insert(open_tap_queue(&vif.ifname())?);
        }
        Ok(())
    }

    fn open(&self, vif: VifId, queues: usize, rx: RxOffloads) -> Result<Vec<PacketQueue>, Error> {
        self.create(vif)?;
        let first = self
            .taps
            .lock()
            .get(&vif)
            .ok_or_else(|| Error::Config(format!("{} was removed", vif.ifname())))?
            .try_clone()?;
        let mut flags = 0;
        if rx.csum {
            flags |= libc::TUN_F_CSUM;
            if rx.tso4 {
                flags |= libc::TUN_F_TSO4;
            }
            if rx.tso6 {
                flags |= libc::TUN_F_TSO6;
            }
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe {
            libc::ioctl(
                first.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        } < 0
        {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        let mut v = vec![PacketQueue::new(first)?];
        for _ in 1..queues {
            v.push(PacketQueue::new(open_tap_queue(&vif.ifname())?)?);
        }
        Ok(v)
    }

    fn remove(&self, vif: VifId) {
        self.taps.lock().remove(&vif);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_pair_carries_header_and_frame() {
        let (a, b) = PacketQueue::pair().unwrap();
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let frame: Vec<u8> = (0..65_000u32).map(|i| i as u8).collect();
        a.send(&h, &frame).unwrap();
        let mut buf = vec![0u8; 70_000];
        let (got, n) = b
            .recv_timeout(&mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(got, h);
        assert_eq!(&buf[..n], &frame[..]);
        assert!(b.recv(&mut buf).unwrap().is_none());
    }

    #[test]
    fn tap_names_follow_libxl() {
        let v = VifId {
            domid: DomId(7),
            devid: 1,
        };
        assert_eq!(v.ifname(), "vif7.1");
        let e = open_tap_queue("a-name-longer-than-ifnamsiz").unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }
}
