//! The simulated-host backend: [`SimGnttab`] and [`SimGntshr`] over a `xen_sim::Host`.

use xen_sim::grant::{GrantMapping, SharedPages as SimPages};
use xen_sim::Host;
use xen_types::{DomId, Errno, GrantRef};

use crate::{
    op, Access, CopySegment, Error, GrantMap, GrantShare, Mapping, RawMapping, RawSharedPages,
    Result, SharedPages, UnmapNotify,
};

fn check_domain(host: &Host, dom: DomId) -> Result<()> {
    if host.lock().domains.contains_key(&dom) {
        Ok(())
    } else {
        Err(op("open")(Errno::ESRCH))
    }
}

/// Grant mapping and copying on a simulated host, acting as one domain.
#[derive(Debug, Clone)]
pub struct SimGnttab {
    host: Host,
    dom: DomId,
}

impl SimGnttab {
    /// A mapping handle on `host` acting as domain `dom` (`ESRCH` if unknown).
    pub fn open(host: &Host, dom: DomId) -> Result<SimGnttab> {
        check_domain(host, dom)?;
        Ok(SimGnttab {
            host: host.clone(),
            dom,
        })
    }
}

impl GrantMap for SimGnttab {
    fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping> {
        if refs.is_empty() {
            return Err(op("map")(Errno::EINVAL));
        }
        let m = self
            .host
            .grant_map(self.dom, dom, refs, access.writable())
            .map_err(|statuses| Error::Map { statuses })?;
        Mapping::new(Box::new(m))
    }

    fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()> {
        self.host.grant_copy(self.dom, segs);
        Ok(())
    }
}

impl RawMapping for GrantMapping {
    fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        GrantMapping::set_unmap_notify(self, notify).map_err(op("set_unmap_notify"))
    }
}

/// Page sharing on a simulated host, acting as one domain.
#[derive(Debug, Clone)]
pub struct SimGntshr {
    host: Host,
    dom: DomId,
}

impl SimGntshr {
    /// A sharing handle on `host` acting as domain `dom` (`ESRCH` if unknown).
    pub fn open(host: &Host, dom: DomId) -> Result<SimGntshr> {
        check_domain(host, dom)?;
        Ok(SimGntshr {
            host: host.clone(),
            dom,
        })
    }
}

impl GrantShare for SimGntshr {
    fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages> {
        if count == 0 {
            return Err(op("share")(Errno::EINVAL));
        }
        let pages = self
            .host
            .share_pages(self.dom, dom, count, access.writable())
            .map_err(op("share"))?;
        SharedPages::new(Box::new(pages))
    }
}

impl RawSharedPages for SimPages {
    fn refs(&self) -> &[GrantRef] {
        SimPages::refs(self)
    }
    fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        SimPages::set_unmap_notify(self, notify).map_err(op("set_unmap_notify"))
    }
}
