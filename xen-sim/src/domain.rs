//! Domains of the simulated host: ids, lifecycle, vCPUs, memory accounting.
//!
//! (Lifecycle operations are being filled in; see the crate docs for the rules.)

use xen_types::{DomId, Pages};

use crate::host::Host;

/// One domain and all per-domain state of every subsystem.
#[derive(Debug)]
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// The toolstack's handle (a UUID).
    pub handle: uuid::Uuid,
    /// Pages currently allocated to the domain.
    pub tot_pages: Pages,
    /// The most pages it may have (`setmaxmem`).
    pub max_pages: Pages,
    /// Its vCPUs.
    pub max_vcpus: u32,
    /// Paused by the controller (domains are created paused).
    pub paused: bool,
    /// Shut down, with the reason (`SHUTDOWN_*`).
    pub shutdown: Option<u32>,
    /// Being destroyed: kept while other domains still hold references to its pages.
    pub dying: bool,
    /// Created as an HVM/PVH container.
    pub hvm: bool,
    /// Its pages, as shared memory.
    pub memory: crate::memory::DomainMemory,
    /// Its event-channel port table.
    pub evtchn: crate::evtchn::DomainPorts,
    /// Its grant table.
    pub grants: crate::grant::DomainGrants,
}

impl Host {
    pub(crate) fn boot_dom0(&self) {
        let cfg = self.config().clone();
        let mut st = self.lock();
        st.free = st.free.checked_sub(cfg.dom0_memory).unwrap_or(Pages::ZERO);
        st.domains.insert(
            DomId::DOM0,
            Domain {
                id: DomId::DOM0,
                handle: uuid::Uuid::nil(),
                tot_pages: cfg.dom0_memory,
                max_pages: cfg.dom0_memory,
                max_vcpus: cfg.dom0_vcpus,
                paused: false,
                shutdown: None,
                dying: false,
                hvm: false,
                memory: crate::memory::DomainMemory::default(),
                evtchn: crate::evtchn::DomainPorts::default(),
                grants: crate::grant::DomainGrants::default(),
            },
        );
    }
}
