//! The simulated-host backend.

use std::os::fd::BorrowedFd;

use xen_sim::domain::BuildSpec;
use xen_sim::Host;
use xen_types::{DomId, Errno, EvtchnPort, Pages, Pfn, VcpuId};

use crate::{
    BuiltGuest, ConsoleRead, DomainConfig, DomainInfo, Error, ForeignMapping, GuestImage, PhysInfo,
    RestoreRings, RestoredGuest, Result, RingPage, ShutdownReason, VcpuInfo, WatchdogId,
    XenControl, XenVersion,
};

/// Control of a [`xen_sim::Host`] (as dom0 of that host).
#[derive(Debug, Clone)]
pub struct Sim {
    host: Host,
}

impl Sim {
    /// A backend on `host`.
    pub fn new(host: Host) -> Sim {
        Sim { host }
    }

    /// The simulated host.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

fn err(op: &'static str, dom: DomId) -> impl Fn(Errno) -> Error {
    move |e| Error::from_errno(op, Some(dom), e)
}

impl XenControl for Sim {
    fn backend(&self) -> &'static str {
        "sim"
    }

    fn is_simulated(&self) -> bool {
        true
    }

    fn version(&self) -> Result<XenVersion> {
        let (major, minor, extra) = self.host.config().version.clone();
        Ok(XenVersion {
            major,
            minor,
            extra,
        })
    }

    fn physinfo(&self) -> Result<PhysInfo> {
        Ok(PhysInfo::from(&self.host.physinfo()))
    }

    fn domain_info_chunk(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>> {
        Ok(self
            .host
            .domain_info_list(first, max as usize)
            .iter()
            .map(DomainInfo::from)
            .collect())
    }

    fn create_domain(&self, config: &DomainConfig) -> Result<DomId> {
        let want = config.domid.unwrap_or(DomId::INVALID);
        self.host
            .create_domain(want, &config.to_raw())
            .map_err(err("xc_domain_create", want))
    }

    fn set_max_vcpus(&self, dom: DomId, max: u32) -> Result<()> {
        self.host
            .set_max_vcpus(dom, max)
            .map_err(err("xc_domain_max_vcpus", dom))
    }

    fn set_max_mem(&self, dom: DomId, max: Pages) -> Result<()> {
        self.host
            .set_max_mem_kb(dom, max.kib())
            .map_err(err("xc_domain_setmaxmem", dom))
    }

    fn claim_pages(&self, dom: DomId, pages: Pages) -> Result<()> {
        self.host
            .claim_pages(dom, pages)
            .map_err(err("xc_domain_claim_pages", dom))
    }

    fn populate_physmap(&self, dom: DomId, pfns: &[Pfn]) -> Result<()> {
        self.host
            .populate_physmap(dom, pfns)
            .map_err(err("xc_domain_populate_physmap", dom))
    }

    fn increase_reservation(&self, dom: DomId, pages: Pages) -> Result<()> {
        self.host
            .increase_reservation(dom, pages)
            .map_err(err("xc_domain_increase_reservation_exact", dom))
    }

    fn decrease_reservation(&self, dom: DomId, pfns: &[Pfn]) -> Result<()> {
        self.host
            .decrease_reservation(dom, pfns)
            .map_err(err("xc_domain_decrease_reservation_exact", dom))
    }

    fn pause(&self, dom: DomId) -> Result<()> {
        self.host.pause(dom).map_err(err("xc_domain_pause", dom))
    }

    fn unpause(&self, dom: DomId) -> Result<()> {
        self.host
            .unpause(dom)
            .map_err(err("xc_domain_unpause", dom))
    }

    fn shutdown(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        self.host
            .shutdown(dom, reason.code())
            .map_err(err("xc_domain_shutdown", dom))
    }

    fn destroy(&self, dom: DomId) -> Result<()> {
        self.host
            .destroy(dom)
            .map_err(err("xc_domain_destroy", dom))
    }

    fn vcpu_info(&self, dom: DomId, vcpu: VcpuId) -> Result<VcpuInfo> {
        self.host
            .vcpu_info(dom, vcpu)
            .map(|v| VcpuInfo::from(&v))
            .map_err(err("xc_vcpu_getinfo", dom))
    }

    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<EvtchnPort> {
        self.host
            .evtchn_alloc_unbound(dom, remote)
            .map_err(err("xc_evtchn_alloc_unbound", dom))
    }

    fn read_console_ring(&self, index: u32, max: usize) -> Result<ConsoleRead> {
        let (data, index) = self
            .host
            .read_console_ring(DomId::DOM0, Some(index), max, false)
            .map_err(|e| Error::from_errno("xc_readconsolering", None, e))?;
        Ok(ConsoleRead { data, index })
    }

    fn map_foreign(&self, dom: DomId, frames: &[u64], writable: bool) -> Result<ForeignMapping> {
        let m = self
            .host
            .map_foreign(DomId::DOM0, dom, frames, writable)
            .map_err(err("xenforeignmemory_map", dom))?;
        Ok(ForeignMapping::new(Box::new(m)))
    }

    fn watchdog_arm(&self, timeout: std::time::Duration) -> Result<WatchdogId> {
        let secs = crate::types::watchdog_secs("xc_watchdog", timeout)?;
        self.host
            .watchdog(DomId::DOM0, 0, secs)
            .map(WatchdogId)
            .map_err(|e| Error::from_errno("xc_watchdog", None, e))
    }

    fn watchdog_kick(&self, id: WatchdogId, timeout: std::time::Duration) -> Result<()> {
        let secs = crate::types::watchdog_secs("xc_watchdog", timeout)?;
        if id.0 == 0 {
            return Err(Error::InvalidArgument { op: "xc_watchdog" });
        }
        self.host
            .watchdog(DomId::DOM0, id.0, secs)
            .map(drop)
            .map_err(|e| Error::from_errno("xc_watchdog", None, e))
    }

    fn watchdog_disarm(&self, id: WatchdogId) -> Result<()> {
        if id.0 == 0 {
            return Err(Error::InvalidArgument { op: "xc_watchdog" });
        }
        self.host
            .watchdog(DomId::DOM0, id.0, 0)
            .map(drop)
            .map_err(|e| Error::from_errno("xc_watchdog", None, e))
    }

    fn save_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        suspend: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        const OP: &str = "xc_domain_save";
        let out = crate::stream_file(OP, fd)?;
        self.host.domain_info(dom).map_err(err(OP, dom))?;
        suspend()?;
        crate::check_suspended(self, dom)?;
        self.host.save_domain(dom, out).map_err(err(OP, dom))
    }

    fn restore_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        rings: &RestoreRings,
    ) -> Result<RestoredGuest> {
        const OP: &str = "xc_domain_restore";
        let input = crate::stream_file(OP, fd)?;
        let spec = xen_sim::save::RestoreSpec {
            console_port: rings.console_port,
            console_domid: rings.console_domid,
            store_port: rings.store_port,
            store_domid: rings.store_domid,
        };
        let b = self
            .host
            .restore_domain(dom, input, &spec)
            .map_err(err(OP, dom))?;
        Ok(RestoredGuest {
            console_mfn: b.console_mfn,
            store_mfn: b.store_mfn,
            console_port: rings.console_port,
            store_port: rings.store_port,
        })
    }

    fn resume_domain(&self, dom: DomId) -> Result<()> {
        self.host
            .resume_domain(dom)
            .map_err(err("xc_domain_resume", dom))
    }

    fn build_image(
        &self,
        dom: DomId,
        image: &GuestImage,
        console_port: EvtchnPort,
        store_port: EvtchnPort,
    ) -> Result<BuiltGuest> {
        let kernel = image.kernel.load()?;
        let ramdisk = image.ramdisk.as_ref().map(|r| r.load()).transpose()?;
        let spec = BuildSpec {
            kernel: &kernel,
            ramdisk: ramdisk.as_deref(),
            cmdline: &image.cmdline,
            memory: image.memory,
            console_port,
            console_domid: image.console_domid,
            store_port,
            store_domid: image.store_domid,
        };
        let b = self
            .host
            .build_pv(dom, &spec)
            .map_err(err("xc_dom_build_image", dom))?;
        Ok(BuiltGuest {
            console: RingPage {
                pfn: b.console_pfn,
                mfn: b.console_mfn,
                port: console_port,
                backend: image.console_domid,
            },
            store: RingPage {
                pfn: b.store_pfn,
                mfn: b.store_mfn,
                port: store_port,
                backend: image.store_domid,
            },
        })
    }
}
