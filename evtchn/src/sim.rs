//! The simulated-host backend: [`SimEvtchn`] over a `xen_sim` event-channel handle.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use xen_sim::evtchn::Handle;
use xen_sim::Host;
use xen_types::{DomId, EvtchnPort, Virq};

use crate::{op, EventChannel, Result};

/// An event-channel handle on a simulated host, acting as one domain: Xen's port states and
/// errnos, the Linux driver's delivery (see `xen_sim::evtchn`).
#[derive(Debug)]
pub struct SimEvtchn {
    handle: Handle,
}

impl SimEvtchn {
    /// Opens a handle on `host` acting as domain `dom` (dom0 for backends and xenstored, a
    /// guest's id for a simulated frontend). `ESRCH` if `dom` does not exist.
    pub fn open(host: &Host, dom: DomId) -> Result<SimEvtchn> {
        Ok(SimEvtchn {
            handle: host.evtchn_open(dom).map_err(op("open"))?,
        })
    }

    /// The domain this handle acts as.
    pub fn domid(&self) -> DomId {
        self.handle.domid()
    }

    /// The host this handle belongs to.
    pub fn host(&self) -> &Host {
        self.handle.host()
    }
}

impl EventChannel for SimEvtchn {
    fn restrict(&self, dom: DomId) -> Result<()> {
        self.handle.restrict(dom).map_err(op("restrict"))
    }
    fn bind_unbound_port(&self, remote: DomId) -> Result<EvtchnPort> {
        self.handle
            .bind_unbound_port(remote)
            .map_err(op("bind_unbound_port"))
    }
    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort> {
        self.handle
            .bind_interdomain(remote, remote_port)
            .map_err(op("bind_interdomain"))
    }
    fn bind_virq(&self, virq: Virq) -> Result<EvtchnPort> {
        self.handle.bind_virq(virq).map_err(op("bind_virq"))
    }
    fn unbind(&self, port: EvtchnPort) -> Result<()> {
        self.handle.unbind(port).map_err(op("unbind"))
    }
    #[inline]
    fn notify(&self, port: EvtchnPort) -> Result<()> {
        self.handle.notify(port).map_err(op("notify"))
    }
    #[inline]
    fn unmask(&self, port: EvtchnPort) -> Result<()> {
        self.handle.unmask(port).map_err(op("unmask"))
    }
    #[inline]
    fn read_pending(&self, buf: &mut [EvtchnPort]) -> Result<usize> {
        Ok(self.handle.read_pending(buf))
    }
    /// Takes delivery of a port of this domain that no handle owns (one the toolstack
    /// allocated with `Host::evtchn_alloc_unbound`). `EINVAL` for a free port, `EBUSY` if a
    /// handle owns it.
    fn attach(&self, port: EvtchnPort) -> Result<()> {
        self.handle.attach(port).map_err(op("attach"))
    }
    /// Sleeps on the handle's futex, not its eventfd (see `xen_sim::evtchn`).
    #[inline]
    fn wait(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        Ok(self.handle.wait(buf, timeout))
    }
    /// The same futex sleep as [`wait`](EventChannel::wait) (no system call to save).
    #[inline]
    fn wait_idle(&self, buf: &mut [EvtchnPort], timeout: Option<Duration>) -> Result<usize> {
        Ok(self.handle.wait(buf, timeout))
    }
}

impl AsFd for SimEvtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }
}

impl AsRawFd for SimEvtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }
}
