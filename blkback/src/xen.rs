//! [`Host`] over the project's `gnttab` and `evtchn` crates: real Xen (`/dev/xen/gntdev`,
//! `/dev/xen/evtchn`) or the simulated host of `xen-sim`.

use std::time::Duration;

use xen_types::{DomId, Errno, EvtchnPort, GrantRef};

use crate::host::{EventChannel, GrantMapper, Host};
use crate::Error;

/// Grant mappings and event channels through `gnttab`/`evtchn`.
pub struct XenHost {
    gnttab: gnttab::Gnttab,
    open_evtchn: Box<dyn Fn() -> evtchn::Result<evtchn::Evtchn> + Send + Sync>,
}

impl std::fmt::Debug for XenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenHost")
            .field("gnttab", &self.gnttab)
            .finish_non_exhaustive()
    }
}

impl XenHost {
    /// The real devices of a Xen dom0 (or driver domain). Fails with a clear "not Xen"
    /// error elsewhere.
    pub fn open() -> Result<XenHost, Error> {
        let gnttab = gnttab::Gnttab::open().map_err(|e| match e {
            gnttab::Error::NotXen { .. } => Error::NotXen(e.to_string()),
            e => Error::Host(e.errno()),
        })?;
        // Fail now, not at the first connection, if event channels are missing.
        drop(evtchn::Evtchn::open().map_err(|e| match e {
            evtchn::Error::NotXen { .. } => Error::NotXen(e.to_string()),
            e => Error::Host(e.errno()),
        })?);
        Ok(XenHost {
            gnttab,
            open_evtchn: Box::new(evtchn::Evtchn::open),
        })
    }

    /// Domain `dom` of the simulated host `host`.
    pub fn sim(host: &xen_sim::Host, dom: DomId) -> Result<XenHost, Error> {
        let gnttab = gnttab::Gnttab::open_sim(host, dom).map_err(|e| Error::Host(e.errno()))?;
        let h = host.clone();
        Ok(XenHost {
            gnttab,
            open_evtchn: Box::new(move || evtchn::Evtchn::open_sim(&h, dom)),
        })
    }
}

impl GrantMapper for XenHost {
    type Mapping = gnttab::Mapping;

    fn map_grants(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<gnttab::Mapping, Error> {
        let access = if writable {
            gnttab::Access::ReadWrite
        } else {
            gnttab::Access::ReadOnly
        };
        self.gnttab
            .map(domid, refs, access)
            .map_err(|e| Error::Host(e.errno()))
    }
}

/// A bound port on its own `evtchn` handle.
pub struct XenChannel {
    handle: evtchn::Evtchn,
    port: EvtchnPort,
}

impl std::fmt::Debug for XenChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenChannel")
            .field("port", &self.port)
            .finish()
    }
}

impl XenChannel {
    /// Takes a handle and a port bound through it.
    pub fn new(handle: evtchn::Evtchn, port: EvtchnPort) -> XenChannel {
        XenChannel { handle, port }
    }

    /// The local port.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }
}

fn ev(e: evtchn::Error) -> Error {
    match e.errno() {
        Errno::ENOTCONN => Error::Closed,
        errno => Error::Host(errno),
    }
}

impl EventChannel for XenChannel {
    fn notify(&self) -> Result<(), Error> {
        self.handle.notify(self.port).map_err(ev)
    }

    fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let mut buf = [EvtchnPort(0); 4];
        let n = self.handle.wait(&mut buf, Some(timeout)).map_err(ev)?;
        if n == 0 {
            return Ok(false);
        }
        self.handle.unmask(self.port).map_err(ev)?;
        Ok(true)
    }
}

impl Host for XenHost {
    type Channel = XenChannel;

    fn bind_interdomain(&self, domid: DomId, port: EvtchnPort) -> Result<XenChannel, Error> {
        let handle = (self.open_evtchn)().map_err(ev)?;
        let local = handle.bind_interdomain(domid, port).map_err(ev)?;
        Ok(XenChannel {
            handle,
            port: local,
        })
    }
}

/// A guest on the `xen-sim` host, as the test frontend sees it.
#[cfg(feature = "test-utils")]
#[derive(Debug, Clone)]
pub struct XenSimGuest {
    host: xen_sim::Host,
}

#[cfg(feature = "test-utils")]
impl XenSimGuest {
    /// Guests of `host`.
    pub fn new(host: &xen_sim::Host) -> XenSimGuest {
        XenSimGuest { host: host.clone() }
    }
}

#[cfg(feature = "test-utils")]
impl crate::blkfront::FrontHost for XenSimGuest {
    type Memory = xen_sim::memory::PageMapping;
    type Channel = XenChannel;

    fn create_guest(&self, domid: DomId, pages: usize) -> Result<Self::Memory, Error> {
        let cfg = xen_sys::xen_domctl_createdomain {
            max_vcpus: 1,
            max_evtchn_port: 1023,
            max_grant_frames: 64,
            max_maptrack_frames: 16,
            grant_opts: 1,
            ..Default::default()
        };
        let h = &self.host;
        let d = h.create_domain(domid, &cfg).map_err(Error::Host)?;
        h.set_max_mem_kb(d, (pages as u64 + 16) * 4)
            .map_err(Error::Host)?;
        let pfns: Vec<xen_types::Pfn> = (0..pages as u64).map(xen_types::Pfn).collect();
        h.populate_physmap(d, &pfns).map_err(Error::Host)?;
        h.guest_pages(d, &pfns).map_err(Error::Host)
    }

    fn grant(
        &self,
        domid: DomId,
        pfn: usize,
        to: DomId,
        readonly: bool,
    ) -> Result<GrantRef, Error> {
        self.host
            .grant_access(domid, to, xen_types::Pfn(pfn as u64), readonly)
            .map_err(Error::Host)
    }

    fn end_grant(&self, domid: DomId, gref: GrantRef) -> Result<(), Error> {
        self.host.end_access(domid, gref).map_err(Error::Host)
    }

    fn alloc_unbound(
        &self,
        domid: DomId,
        remote: DomId,
    ) -> Result<(EvtchnPort, XenChannel), Error> {
        let handle = evtchn::Evtchn::open_sim(&self.host, domid).map_err(ev)?;
        let port = handle.bind_unbound_port(remote).map_err(ev)?;
        Ok((port, XenChannel { handle, port }))
    }

    fn destroy_guest(&self, domid: DomId) {
        let _ = self.host.destroy(domid);
    }
}

/// dom0 as its own test frontend on real Xen: its "guest memory" is shared through
/// gntalloc (every page granted read-write to dom0 once, so [`FrontHost::grant`] returns the
/// existing grant and [`FrontHost::end_grant`] keeps it), its ports come from
/// `/dev/xen/evtchn`. For loopback tests inside a dom0.
#[cfg(feature = "test-utils")]
#[derive(Debug, Clone, Default)]
pub struct Dom0Front {
    refs: Arc<parking_lot::Mutex<Vec<GrantRef>>>,
}

#[cfg(feature = "test-utils")]
use std::sync::Arc;

#[cfg(feature = "test-utils")]
impl crate::blkfront::FrontHost for Dom0Front {
    type Memory = gnttab::SharedPages;
    type Channel = XenChannel;

    fn create_guest(&self, domid: DomId, pages: usize) -> Result<gnttab::SharedPages, Error> {
        if !domid.is_dom0() {
            return Err(Error::Config("Dom0Front serves dom0 only".into()));
        }
        let shr = gnttab::Gntshr::open().map_err(|e| Error::Host(e.errno()))?;
        let sp = shr
            .share(DomId::DOM0, pages, gnttab::Access::ReadWrite)
            .map_err(|e| Error::Host(e.errno()))?;
        *self.refs.lock() = sp.refs().to_vec();
        Ok(sp)
    }

    fn grant(&self, _domid: DomId, pfn: usize, _to: DomId, _ro: bool) -> Result<GrantRef, Error> {
        self.refs
            .lock()
            .get(pfn)
            .copied()
            .ok_or(Error::Host(Errno::EINVAL))
    }

    fn end_grant(&self, _domid: DomId, _gref: GrantRef) -> Result<(), Error> {
        Ok(())
    }

    fn alloc_unbound(
        &self,
        _domid: DomId,
        remote: DomId,
    ) -> Result<(EvtchnPort, XenChannel), Error> {
        let handle = evtchn::Evtchn::open().map_err(ev)?;
        let port = handle.bind_unbound_port(remote).map_err(ev)?;
        Ok((port, XenChannel { handle, port }))
    }

    fn destroy_guest(&self, _domid: DomId) {}
}
