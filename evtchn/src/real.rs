//! `/dev/xen/evtchn`, driven with its ioctls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use xen_types::{DomId, Errno, EvtchnPort, Virq};

use crate::{op, Error, EventChannel, Result, EVTCHN_DEVICE};

/// An open of `/dev/xen/evtchn` (non-blocking, close-on-exec): the real backend.
#[derive(Debug)]
pub struct RealEvtchn {
    fd: OwnedFd,
}

/// Runs one ioctl whose argument is `arg`, returning the non-negative result.
fn ioctl<T>(fd: &OwnedFd, request: u32, arg: &mut T) -> std::result::Result<u32, Errno> {
    // SAFETY: `request` is one of the evtchn ioctls whose argument type is `T` (the bindgen
    // struct of `xen/sys/evtchn.h` that the request number was computed from); `arg` is a
    // live, exclusive pointer for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as u32)
    }
}

/// Maps an `open` failure of a Xen device to [`Error::NotXen`] when the device is absent.
fn open_device(path: &'static str) -> Result<OwnedFd> {
    xen_types::open_device(path, libc::O_NONBLOCK).map_err(|errno| {
        if errno.means_no_device() {
            Error::NotXen { path, errno }
        } else {
            Error::Op { op: "open", errno }
        }
    })
}

impl RealEvtchn {
    /// Opens `/dev/xen/evtchn`. Fails with [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<RealEvtchn> {
        Ok(RealEvtchn {
            fd: open_device(EVTCHN_DEVICE)?,
        })
    }
}

impl EventChannel for RealEvtchn {
    fn restrict(&self, dom: DomId) -> Result<()> {
        let mut a = xen_sys::ioctl_evtchn_restrict_domid { domid: dom.get() };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_RESTRICT_DOMID, &mut a)
            .map(drop)
            .map_err(op("restrict"))
    }

    fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort> {
        let mut a = xen_sys::ioctl_evtchn_bind_unbound_port {
            remote_domain: remote.into(),
        };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut a)
            .map(EvtchnPort)
            .map_err(op("bind_unbound_port"))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort> {
        let mut a = xen_sys::ioctl_evtchn_bind_interdomain {
            remote_domain: remote.into(),
            remote_port: remote_port.get(),
        };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut a)
            .map(EvtchnPort)
            .map_err(op("bind_interdomain"))
    }

    fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort> {
        let mut a = xen_sys::ioctl_evtchn_bind_virq { virq: virq.get() };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_BIND_VIRQ, &mut a)
            .map(EvtchnPort)
            .map_err(op("bind_virq"))
    }

    fn unbind(&self, port: EvtchnPort) -> Result<()> {
        let mut a = xen_sys::ioctl_evtchn_unbind { port: port.get() };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_UNBIND, &mut a)
            .map(drop)
            .map_err(op("unbind"))
    }

    fn notify(&self, port: EvtchnPort) -> Result<()> {
        let mut a = xen_sys::ioctl_evtchn_notify { port: port.get() };
        ioctl(&self.fd, xen_sys::IOCTL_EVTCHN_NOTIFY, &mut a)
            .map(drop)
            .map_err(op("notify"))
    }

    fn unmask(&self, port: EvtchnPort) -> Result<()> {
        let p = port.get();
        // SAFETY: writes the 4 bytes of a live u32 (the driver reads an array of ports).
        let r = unsafe { libc::write(self.fd.as_raw_fd(), (&p as *const u32).cast(), 4) };
        if r < 0 {
            Err(op("unmask")(Errno::last()))
        } else {
            Ok(())
        }
    }

    fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
        let mut raw = [0u32; 64];
        let want = buf.len().min(raw.len());
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: reads at most `want * 4` bytes into our live array of `raw.len() >= want`
        // u32s; the descriptor is non-blocking.
        let r = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                raw.as_mut_ptr().cast(),
                want * size_of::<u32>(),
            )
        };
        if r < 0 {
            let e = Errno::last();
            return match e {
                Errno::EAGAIN | Errno::EINTR => Ok(0),
                e if e.get() == libc::EFBIG => Err(Error::Overflow),
                e => Err(Error::Op {
                    op: "read_pending",
                    errno: e,
                }),
            };
        }
        let n = r as usize / size_of::<u32>();
        for (dst, &p) in buf.iter_mut().zip(&raw[..n]) {
            *dst = EvtchnPort(p);
        }
        Ok(n)
    }
}

impl AsFd for RealEvtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RealEvtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
