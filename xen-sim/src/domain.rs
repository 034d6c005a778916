//! Domains of the simulated host: ids, lifecycle, vCPUs, CPU time, memory accounting, and the
//! PV domain builder.
//!
//! Every operation follows what Xen 4.17 does for the matching hypercall and fails with the
//! errno Xen (or libxenctrl's `_exact` wrapper) returns:
//!
//! | operation | Xen | rules kept here |
//! |---|---|---|
//! | [`Host::create_domain`] | `XEN_DOMCTL_createdomain` | domid rover in `1..DOMID_FIRST_RESERVED` skipping ids in use and wrapping (`ENOMEM` when none is free); a requested id in use is `EEXIST`; id 0 or a reserved id means "pick one"; unknown flags, 0 vCPUs, HAP without HVM, HVM without hardware support, too many vCPUs, bad grant-table sizes or version: `EINVAL`; created paused (controller pause count 1) |
//! | [`Host::set_max_vcpus`] | `XEN_DOMCTL_max_vcpus` | must equal the creation-time maximum, not on the caller (dom0): `EINVAL`; creates the vCPUs, offline |
//! | [`Host::set_max_mem_kb`] | `XEN_DOMCTL_max_mem` | never fails; may go below `tot_pages` (then every allocation fails) |
//! | [`Host::populate_physmap`], [`Host::increase_reservation`] | `XENMEM_*` | over `max_pages`, past the host's free pages, or on a dying domain: `ENOMEM`; nothing is allocated then |
//! | [`Host::decrease_reservation`] | `XENMEM_decrease_reservation` | a frame not populated: `EINVAL`, nothing freed |
//! | [`Host::pause`] / [`Host::unpause`] | `XEN_DOMCTL_{pause,unpause}domain` | counted (at most 255: `EOVERFLOW`); unpause at count 0: `EINVAL`; pausing the caller (dom0): `EINVAL`; a dying domain never runs again whatever its count |
//! | [`Host::shutdown`] | `SCHEDOP_remote_shutdown` | the first reason sticks; raises `VIRQ_DOM_EXC` |
//! | [`Host::destroy`] | `XEN_DOMCTL_destroydomain` | the caller (dom0): `EINVAL`; the domain becomes dying and stays (a zombie, memory held) while another domain maps its pages or holds a [`DomainRef`]; destroying a dying domain again succeeds |
//! | [`Host::domain_info`], [`Host::domain_info_list`] | `XEN_DOMCTL_getdomaininfo`, `XEN_SYSCTL_getdomaininfolist` | filled exactly as Xen's `getdomaininfo()` fills `xen_domctl_getdomaininfo` |
//! | [`Host::vcpu_info`] | `XEN_DOMCTL_getvcpuinfo` | vCPU index past the maximum: `EINVAL`; not yet created: `ESRCH` |
//!
//! An unknown domain is `ESRCH` everywhere. CPU time is charged per vCPU, and only while the
//! vCPU is online and not blocked and its domain is unpaused, not shut down and not dying; it
//! is measured against the host's [`Clock`](crate::Clock), which tests can drive by hand.
//!
//! Domain exceptions (a shutdown, a domain becoming dying, a domain going away) are what
//! `VIRQ_DOM_EXC` signals to xenstored. They are recorded in [`HostState::exceptions`],
//! wake [`Host::wait_dom_exc`], and raise `VIRQ_DOM_EXC` in dom0 through
//! [`evtchn::send_global_virq`](crate::evtchn::send_global_virq).
//!
//! The simulated host does not power off: shutting down dom0, which on Xen halts or reboots
//! the machine, is refused with `EPERM`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use xen_types::{DomId, Errno, EvtchnPort, GrantRef, Mfn, Pages, Pfn, VcpuId};

use crate::host::{Host, HostState};
use crate::kernel_image::parse_kernel;
pub use crate::kernel_image::{sample_kernel, ImageKind};
pub use crate::p2m::P2m;

/// Most controller pause references Xen allows on one domain.
const MAX_CONTROLLER_PAUSE: u32 = 255;
/// How many recent domain exceptions [`DomainExceptions`] keeps.
const EXCEPTIONS_KEPT: usize = 1024;
/// Longest command line the PV start-info page holds (`MAX_GUEST_CMDLINE`).
const MAX_GUEST_CMDLINE: usize = 1024;

/// One virtual CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vcpu {
    /// Brought up (by the domain builder for vCPU 0, by the guest for the others).
    pub online: bool,
    /// Blocked by the guest (waiting for an event): not charged CPU time.
    pub blocked: bool,
    /// CPU time charged so far, in nanoseconds, up to the domain's last accounting point.
    pub cpu_time_ns: u64,
    /// The physical CPU it runs on.
    pub cpu: u32,
}

/// What the domain builder left in a domain: the pages and event channels the toolstack
/// hands to xenconsoled and xenstored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The kind of image that was loaded.
    pub image: ImageKind,
    /// The start-info page.
    pub start_info_pfn: Pfn,
    /// The console ring page (guest frame).
    pub console_pfn: Pfn,
    /// The console ring page (machine frame; equal to the pfn for translated guests).
    pub console_mfn: Mfn,
    /// The xenstore ring page (guest frame).
    pub store_pfn: Pfn,
    /// The xenstore ring page (machine frame; equal to the pfn for translated guests).
    pub store_mfn: Mfn,
    /// The console event channel (in the guest), as given to the builder.
    pub console_port: EvtchnPort,
    /// The xenstore event channel (in the guest), as given to the builder.
    pub store_port: EvtchnPort,
    /// Frames the kernel occupies.
    pub kernel_pages: Pages,
    /// Frames the initrd occupies.
    pub ramdisk_pages: Pages,
    /// The kernel command line.
    pub cmdline: String,
}

/// What [`Host::build_pv`] loads into a domain (the arguments of libxenguest's `xc_dom_*`).
#[derive(Debug, Clone)]
pub struct BuildSpec<'a> {
    /// The kernel image (Xen ELF or bzImage).
    pub kernel: &'a [u8],
    /// An initrd, if any.
    pub ramdisk: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Memory to populate (`xc_dom_mem_init`).
    pub memory: Pages,
    /// The guest's end of the console event channel.
    pub console_port: EvtchnPort,
    /// The domain running the console backend.
    pub console_domid: DomId,
    /// The guest's end of the xenstore event channel.
    pub store_port: EvtchnPort,
    /// The domain running xenstored.
    pub store_domid: DomId,
}

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
    /// Pages claimed (`XENMEM_claim_pages`) and not yet allocated.
    pub outstanding_pages: Pages,
    /// The most vCPUs it may have (fixed at creation).
    pub max_vcpus: u32,
    /// Its vCPUs (created by [`Host::set_max_vcpus`]; dom0's at boot).
    pub vcpus: Vec<Vcpu>,
    /// Controller pause references: domains are created with one; running needs zero.
    pub pause_count: u32,
    /// Shut down, with the reason (`SHUTDOWN_*`).
    pub shutdown: Option<u32>,
    /// Being destroyed: kept while other domains still hold references to its pages.
    pub dying: bool,
    /// Created as an HVM/PVH container.
    pub hvm: bool,
    /// Created with hardware-assisted paging.
    pub hap: bool,
    /// Created as the xenstore domain (`XEN_DOMCTL_CDF_xs_domain`).
    pub xs_domain: bool,
    /// Highest event-channel port it may use (`max_evtchn_port`).
    pub max_evtchn_port: u32,
    /// Most grant-table frames.
    pub max_grant_frames: u32,
    /// Most maptrack frames.
    pub max_maptrack_frames: u32,
    /// Highest grant-table version it may use.
    pub max_grant_version: u32,
    /// Set once the controller pause count first drops to zero.
    pub creation_finished: bool,
    /// What the domain builder loaded, once built.
    pub built: Option<BuildInfo>,
    /// Its populated physical frames.
    pub p2m: P2m,
    /// Outstanding [`DomainRef`]s (references that keep a dying domain a zombie).
    pub(crate) refs: u32,
    /// Clock reading (ns) up to which CPU time has been charged.
    pub(crate) accounted_at: u64,
    /// Its pages, as shared memory.
    pub memory: crate::memory::DomainMemory,
    /// Its event-channel port table.
    pub evtchn: crate::evtchn::DomainPorts,
    /// Its grant table.
    pub grants: crate::grant::DomainGrants,
    /// The guest's balloon driver, once it loaded one ([`Host::balloon_load`]).
    pub balloon: Option<crate::balloon::BalloonDriver>,
    /// Its watchdog timers (`SCHEDOP_watchdog`).
    pub watchdogs: crate::watchdog::DomainWatchdogs,
}

impl Domain {
    fn new(id: DomId, now: u64) -> Domain {
        Domain {
            id,
            handle: uuid::Uuid::nil(),
            tot_pages: Pages::ZERO,
            max_pages: Pages::ZERO,
            outstanding_pages: Pages::ZERO,
            max_vcpus: 0,
            vcpus: Vec::new(),
            pause_count: 1,
            shutdown: None,
            dying: false,
            hvm: false,
            hap: false,
            xs_domain: false,
            max_evtchn_port: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
            max_grant_version: 1,
            creation_finished: false,
            built: None,
            p2m: P2m::default(),
            refs: 0,
            accounted_at: now,
            memory: crate::memory::DomainMemory::default(),
            evtchn: crate::evtchn::DomainPorts::default(),
            grants: crate::grant::DomainGrants::default(),
            balloon: None,
            watchdogs: crate::watchdog::DomainWatchdogs::default(),
        }
    }

    /// True while the domain is paused by the controller.
    pub fn paused(&self) -> bool {
        self.pause_count > 0
    }

    /// True when its vCPUs may run: unpaused, not shut down, not dying.
    pub fn runnable(&self) -> bool {
        self.pause_count == 0 && self.shutdown.is_none() && !self.dying
    }

    fn vcpu_running(&self, v: &Vcpu) -> bool {
        self.runnable() && v.online && !v.blocked
    }

    /// Charges CPU time up to `now` to every running vCPU. Call before any change to what
    /// is running.
    pub(crate) fn account(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.accounted_at);
        if self.runnable() {
            for v in self.vcpus.iter_mut().filter(|v| v.online && !v.blocked) {
                v.cpu_time_ns = v.cpu_time_ns.saturating_add(elapsed);
            }
        }
        self.accounted_at = now;
    }

    /// CPU time of vCPU `i` at clock reading `now` (ns).
    fn vcpu_time(&self, v: &Vcpu, now: u64) -> u64 {
        if self.vcpu_running(v) {
            v.cpu_time_ns + now.saturating_sub(self.accounted_at)
        } else {
            v.cpu_time_ns
        }
    }

    /// Fills `xen_domctl_getdomaininfo` as Xen's `getdomaininfo()` does.
    fn info(&self, now: u64) -> xen_sys::xen_domctl_getdomaininfo {
        let mut info = xen_sys::xen_domctl_getdomaininfo {
            domain: self.id.0,
            max_vcpu_id: xen_sys::XEN_INVALID_MAX_VCPU_ID as u32,
            ..Default::default()
        };
        let mut flags = xen_sys::XEN_DOMINF_blocked;
        let mut cpu_time = 0u64;
        for (i, v) in self.vcpus.iter().enumerate() {
            cpu_time = cpu_time.saturating_add(self.vcpu_time(v, now));
            info.max_vcpu_id = i as u32;
            if v.online {
                if !v.blocked {
                    flags &= !xen_sys::XEN_DOMINF_blocked;
                }
                if self.vcpu_running(v) {
                    flags |= xen_sys::XEN_DOMINF_running;
                }
                info.nr_online_vcpus += 1;
            }
        }
        info.cpu_time = cpu_time;
        let mut f = if info.nr_online_vcpus > 0 { flags } else { 0 };
        if self.dying {
            f |= xen_sys::XEN_DOMINF_dying;
        }
        if self.shutdown.is_some() {
            f |= xen_sys::XEN_DOMINF_shutdown;
        }
        if self.paused() {
            f |= xen_sys::XEN_DOMINF_paused;
        }
        if self.xs_domain {
            f |= xen_sys::XEN_DOMINF_xs_domain;
        }
        if self.hvm {
            f |= xen_sys::XEN_DOMINF_hvm_guest;
        }
        if self.hap {
            f |= xen_sys::XEN_DOMINF_hap;
        }
        // Xen's `shutdown_code` starts at SHUTDOWN_CODE_INVALID (~0, truncated to 8 bits).
        let code = self.shutdown.unwrap_or(xen_sys::XEN_DOMINF_shutdownmask);
        f |= (code & xen_sys::XEN_DOMINF_shutdownmask) << xen_sys::XEN_DOMINF_shutdownshift;
        info.flags = f;
        info.tot_pages = self.tot_pages.0;
        info.max_pages = self.max_pages.0;
        info.outstanding_pages = self.outstanding_pages.0;
        info.shared_info_frame = 0;
        info.handle = *self.handle.as_bytes();
        info
    }
}

/// Why a domain exception was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    /// The domain shut down, with this `SHUTDOWN_*` reason.
    Shutdown(u32),
    /// The domain is being destroyed (dying).
    Dying,
    /// The domain is gone: its id is free and its memory returned to the host.
    Destroyed,
}

/// One domain exception: what makes Xen raise `VIRQ_DOM_EXC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainException {
    /// Sequence number, from 1, in the order raised.
    pub seq: u64,
    /// The domain concerned.
    pub dom: DomId,
    /// What happened.
    pub kind: ExceptionKind,
}

/// The host's record of domain exceptions: a counter and the most recent events.
#[derive(Debug, Default)]
pub struct DomainExceptions {
    seq: u64,
    recent: VecDeque<DomainException>,
}

impl DomainExceptions {
    /// Number of exceptions raised so far (the sequence number of the last one).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The exceptions raised after sequence number `seq` that are still kept (the last 1024).
    pub fn since(&self, seq: u64) -> Vec<DomainException> {
        self.recent
            .iter()
            .filter(|e| e.seq > seq)
            .copied()
            .collect()
    }
}

/// Records a domain exception, wakes [`Host::wait_dom_exc`] and raises `VIRQ_DOM_EXC`.
pub(crate) fn raise_dom_exc(state: &mut HostState, dom: DomId, kind: ExceptionKind) {
    let ex = &mut state.exceptions;
    ex.seq += 1;
    if ex.recent.len() == EXCEPTIONS_KEPT {
        ex.recent.pop_front();
    }
    let seq = ex.seq;
    ex.recent.push_back(DomainException { seq, dom, kind });
    state.dom_exc_cond.notify_all();
    crate::evtchn::send_global_virq(state, xen_types::Virq::DOM_EXC);
}

/// Finishes destroying dying domains that nothing references any more: removes them, frees
/// their memory and raises a [`ExceptionKind::Destroyed`] exception for each.
///
/// The grant subsystem calls this after removing a mapping of another domain's pages;
/// [`DomainRef`] calls it when dropped.
pub(crate) fn reap_dying(state: &mut HostState) {
    let done: Vec<DomId> = state
        .domains
        .values()
        .filter(|d| d.dying && d.refs == 0)
        .map(|d| d.id)
        .filter(|id| !crate::grant::has_foreign_mappings(state, *id))
        .collect();
    for id in done {
        if let Some(d) = state.domains.remove(&id) {
            state.free = state.free.saturating_add(d.tot_pages);
            raise_dom_exc(state, id, ExceptionKind::Destroyed);
        }
    }
}

/// A reference on a domain (Xen's `get_domain()`): while one is held, destroying the domain
/// leaves it dying, with its memory, instead of removing it. Dropping the last reference of a
/// dying domain finishes its destruction.
#[derive(Debug)]
pub struct DomainRef {
    host: Host,
    dom: DomId,
}

impl DomainRef {
    /// The domain referenced.
    pub fn domid(&self) -> DomId {
        self.dom
    }
}

impl Drop for DomainRef {
    fn drop(&mut self) {
        let mut st = self.host.lock();
        if let Some(d) = st.domains.get_mut(&self.dom) {
            d.refs -= 1;
        }
        reap_dying(&mut st);
    }
}

fn dom_mut(state: &mut HostState, dom: DomId) -> Result<&mut Domain, Errno> {
    state.domains.get_mut(&dom).ok_or(Errno::ESRCH)
}

/// The controller (the caller of every control operation) is dom0: Xen refuses some
/// operations on `current->domain`.
fn not_self(dom: DomId) -> Result<(), Errno> {
    if dom.is_dom0() {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

impl Host {
    pub(crate) fn boot_dom0(&self) {
        let cfg = self.config().clone();
        let mut st = self.lock();
        boot_dom0(&mut st, &cfg);
    }
}

/// Boots dom0: its memory, vCPUs, running.
pub(crate) fn boot_dom0(st: &mut HostState, cfg: &crate::HostConfig) {
    let now = st.clock.now_ns();
    let nr_cpus = cfg.nr_cpus().max(1);
    let mut d = Domain::new(DomId::DOM0, now);
    let pages = cfg.dom0_memory.min(st.free);
    st.free = st.free.checked_sub(pages).unwrap_or(Pages::ZERO);
    let mfn = alloc_mfns(st, pages.0);
    d.p2m.insert(0, pages.0, mfn);
    d.tot_pages = pages;
    d.max_pages = pages;
    d.max_vcpus = cfg.dom0_vcpus;
    d.vcpus = (0..cfg.dom0_vcpus)
        .map(|i| Vcpu {
            online: true,
            cpu: i % nr_cpus,
            ..Vcpu::default()
        })
        .collect();
    d.pause_count = 0;
    d.creation_finished = true;
    d.max_evtchn_port = crate::evtchn::DEFAULT_MAX_PORT.get();
    d.max_grant_frames = cfg.max_grant_frames;
    d.max_maptrack_frames = cfg.max_maptrack_frames;
    d.max_grant_version = cfg.max_grant_version;
    d.grants = crate::grant::DomainGrants::new(cfg.max_grant_frames);
    st.domains.insert(DomId::DOM0, d);
}

impl Host {
    /// Creates a domain (`XEN_DOMCTL_createdomain`), paused, with no memory and no vCPUs yet.
    ///
    /// `domid` 0 or a reserved id (e.g. `DomId::INVALID`) lets the host pick one with Xen's
    /// rover; an ordinary id in use is `EEXIST`. See the module docs for the `EINVAL` cases.
    pub fn create_domain(
        &self,
        domid: DomId,
        config: &xen_sys::xen_domctl_createdomain,
    ) -> Result<DomId, Errno> {
        let cfg = self.config();
        let mut st = self.lock();
        // Xen picks (or checks) the id first, then sanitises the configuration.
        let id = if domid.0 > 0 && domid.is_ordinary() {
            if st.domains.contains_key(&domid) {
                return Err(Errno::EEXIST);
            }
            domid
        } else {
            // Xen's rover: the last id handed out; search after it, wrapping to 1.
            let first_reserved = DomId::FIRST_RESERVED.0;
            let rover = st.next_domid.wrapping_sub(1) % first_reserved;
            let mut dom = rover;
            let mut found = None;
            for _ in 1..first_reserved {
                dom += 1;
                if dom >= first_reserved {
                    dom = 1;
                }
                if !st.domains.contains_key(&DomId(dom)) {
                    found = Some(dom);
                    break;
                }
            }
            let Some(dom) = found else {
                return Err(Errno::ENOMEM);
            };
            // As in Xen, the rover moves before the configuration is checked.
            st.next_domid = dom + 1;
            DomId(dom)
        };

        let known = xen_sys::XEN_DOMCTL_CDF_hvm
            | xen_sys::XEN_DOMCTL_CDF_hap
            | xen_sys::XEN_DOMCTL_CDF_s3_integrity
            | xen_sys::XEN_DOMCTL_CDF_oos_off
            | xen_sys::XEN_DOMCTL_CDF_xs_domain
            | xen_sys::XEN_DOMCTL_CDF_iommu
            | xen_sys::XEN_DOMCTL_CDF_nested_virt
            | xen_sys::XEN_DOMCTL_CDF_vpmu;
        let flags = config.flags;
        let hvm = flags & xen_sys::XEN_DOMCTL_CDF_hvm != 0;
        let hap = flags & xen_sys::XEN_DOMCTL_CDF_hap != 0;
        let invalid = flags & !known != 0
            || config.grant_opts & !xen_sys::XEN_DOMCTL_GRANT_version_mask != 0
            || config.max_vcpus < 1
            || (hap && !hvm)
            // No IOMMU, vmtrace or vPMU on the simulated host.
            || flags & (xen_sys::XEN_DOMCTL_CDF_iommu | xen_sys::XEN_DOMCTL_CDF_vpmu) != 0
            || config.iommu_opts != 0
            || config.vmtrace_size != 0
            || (hvm && !cfg.hvm)
            || config.max_vcpus > if hvm { cfg.hvm_max_vcpus } else { cfg.pv_max_vcpus }
            || (hap && !cfg.hap)
            || (flags & xen_sys::XEN_DOMCTL_CDF_nested_virt != 0 && !hap)
            || (flags & xen_sys::XEN_DOMCTL_CDF_s3_integrity != 0);
        if invalid {
            return Err(Errno::EINVAL);
        }
        // grant_table_init()
        let version = config.grant_opts & xen_sys::XEN_DOMCTL_GRANT_version_mask;
        let gframes = if config.max_grant_frames < 0 {
            cfg.max_grant_frames
        } else {
            config.max_grant_frames as u32
        };
        let mframes = if config.max_maptrack_frames < 0 {
            cfg.max_maptrack_frames
        } else {
            config.max_maptrack_frames as u32
        };
        if version == 0
            || version > cfg.max_grant_version
            || gframes < 1
            || gframes > cfg.max_grant_frames
            || mframes > cfg.max_maptrack_frames
        {
            return Err(Errno::EINVAL);
        }

        let now = st.clock.now_ns();
        let mut d = Domain::new(id, now);
        d.handle = uuid::Uuid::from_bytes(config.handle);
        d.max_vcpus = config.max_vcpus;
        d.hvm = hvm;
        d.hap = hap;
        d.xs_domain = flags & xen_sys::XEN_DOMCTL_CDF_xs_domain != 0;
        d.max_evtchn_port = config.max_evtchn_port;
        d.max_grant_frames = gframes;
        d.max_maptrack_frames = mframes;
        d.max_grant_version = version;
        d.evtchn = crate::evtchn::DomainPorts::new(EvtchnPort(config.max_evtchn_port));
        d.grants = crate::grant::DomainGrants::new(gframes);
        st.domains.insert(id, d);
        Ok(id)
    }

    /// Creates the vCPUs of `dom` (`XEN_DOMCTL_max_vcpus`): `max` must be the maximum given at
    /// creation. They start offline; calling again is harmless.
    pub fn set_max_vcpus(&self, dom: DomId, max: u32) -> Result<(), Errno> {
        let nr_cpus = self.config().nr_cpus().max(1);
        let mut st = self.lock();
        let d = dom_mut(&mut st, dom)?;
        not_self(dom)?;
        if max != d.max_vcpus {
            return Err(Errno::EINVAL);
        }
        // New vCPUs start offline, so nothing that runs changes: no accounting needed.
        while (d.vcpus.len() as u32) < max {
            let i = d.vcpus.len() as u32;
            d.vcpus.push(Vcpu {
                cpu: (u32::from(dom.0) + i) % nr_cpus,
                ..Vcpu::default()
            });
        }
        Ok(())
    }

    /// Sets the most memory `dom` may have, in KiB (`XEN_DOMCTL_max_mem`), rounded down to
    /// pages. Lowering it below the current allocation is allowed: the domain must then
    /// give memory back before it can allocate again.
    pub fn set_max_mem_kb(&self, dom: DomId, max_kb: u64) -> Result<(), Errno> {
        let mut st = self.lock();
        let d = dom_mut(&mut st, dom)?;
        d.max_pages = Pages::from_kib(max_kb);
        Ok(())
    }

    /// Stakes a claim (`XENMEM_claim_pages`, as Xen 4.17's `domain_set_outstanding_pages()`):
    /// `pages` is the domain's total once the claim is used; the difference to its current
    /// pages is held for it, out of other domains' reach. `pages` 0 drops the claim.
    /// A second claim, or `pages` not above the domain's current pages or above its
    /// `max_pages`: `EINVAL`; more than is free and unclaimed: `ENOMEM`.
    pub fn claim_pages(&self, dom: DomId, pages: Pages) -> Result<(), Errno> {
        let mut st = self.lock();
        let (free, claims) = (st.free, st.outstanding);
        let d = dom_mut(&mut st, dom)?;
        if pages == Pages::ZERO {
            let old = std::mem::take(&mut d.outstanding_pages);
            st.outstanding = st.outstanding - old;
            return Ok(());
        }
        if d.outstanding_pages > Pages::ZERO || pages <= d.tot_pages || pages > d.max_pages {
            return Err(Errno::EINVAL);
        }
        let claim = pages - d.tot_pages;
        if claim.0 > free.0.saturating_sub(claims.0) {
            return Err(Errno::ENOMEM);
        }
        d.outstanding_pages = claim;
        st.outstanding = st.outstanding + claim;
        Ok(())
    }

    /// Populates the given guest frames of `dom` (`XENMEM_populate_physmap`). Frames already
    /// populated stay as they are. All or nothing: `ENOMEM` past `max_pages`, past the host's
    /// free memory or on a dying domain.
    pub fn populate_physmap(&self, dom: DomId, pfns: &[Pfn]) -> Result<(), Errno> {
        let mut st = self.lock();
        // Sort and deduplicate, coalesce into runs of consecutive frames, then find which
        // parts are not populated yet.
        let mut sorted: Vec<u64> = pfns.iter().map(|p| p.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for p in sorted {
            match runs.last_mut() {
                Some((s, l)) if *s + *l == p => *l += 1,
                _ => runs.push((p, 1)),
            }
        }
        let d = dom_mut(&mut st, dom)?;
        let holes: Vec<(u64, u64)> = runs
            .into_iter()
            .flat_map(|(s, l)| d.p2m.holes(s, l))
            .collect();
        populate_holes(&mut st, dom, &holes)
    }

    /// Gives `dom` `pages` more pages (`XENMEM_increase_reservation`), placed at the lowest
    /// unpopulated frames. All or nothing, `ENOMEM` as [`Host::populate_physmap`].
    pub fn increase_reservation(&self, dom: DomId, pages: Pages) -> Result<(), Errno> {
        let mut st = self.lock();
        let d = dom_mut(&mut st, dom)?;
        let mut want = pages.0;
        let mut holes = Vec::new();
        let mut start = 0u64;
        while want > 0 {
            // Search windows of the address space for holes until enough are found.
            let window = want.max(1024);
            for (s, l) in d.p2m.holes(start, window) {
                let take = l.min(want);
                holes.push((s, take));
                want -= take;
                if want == 0 {
                    break;
                }
            }
            start += window;
        }
        populate_holes(&mut st, dom, &holes)
    }

    /// Takes the given frames away from `dom` (`XENMEM_decrease_reservation`) and returns
    /// them to the host. All or nothing: a frame that is not populated (or listed twice) is
    /// `EINVAL`.
    pub fn decrease_reservation(&self, dom: DomId, pfns: &[Pfn]) -> Result<(), Errno> {
        let mut st = self.lock();
        let d = dom_mut(&mut st, dom)?;
        let mut sorted: Vec<u64> = pfns.iter().map(|p| p.0).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1])
            || sorted.iter().any(|p| d.p2m.lookup(Pfn(*p)).is_none())
        {
            return Err(Errno::EINVAL);
        }
        for p in &sorted {
            d.p2m.remove(*p);
        }
        let n = Pages(sorted.len() as u64);
        d.tot_pages = d.tot_pages - n;
        st.free = st.free + n;
        Ok(())
    }

    /// Takes a controller pause reference on `dom` (`XEN_DOMCTL_pausedomain`).
    pub fn pause(&self, dom: DomId) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        not_self(dom)?;
        if d.pause_count >= MAX_CONTROLLER_PAUSE {
            return Err(Errno::EOVERFLOW);
        }
        d.account(now);
        d.pause_count += 1;
        Ok(())
    }

    /// Drops a controller pause reference (`XEN_DOMCTL_unpausedomain`); at zero the domain
    /// runs (unless shut down or dying). At zero already: `EINVAL`.
    pub fn unpause(&self, dom: DomId) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        if d.pause_count == 0 {
            return Err(Errno::EINVAL);
        }
        d.account(now);
        d.pause_count -= 1;
        if d.pause_count == 0 {
            d.creation_finished = true;
        }
        Ok(())
    }

    /// Shuts `dom` down with `reason` (`SHUTDOWN_*`; `SCHEDOP_remote_shutdown`). The first
    /// reason recorded sticks. A reason past `SHUTDOWN_MAX`: `EINVAL`; dom0: `EPERM`.
    pub fn shutdown(&self, dom: DomId, reason: u32) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        if reason > xen_sys::SHUTDOWN_MAX {
            return Err(Errno::EINVAL);
        }
        if dom.is_dom0() {
            return Err(Errno::EPERM);
        }
        if d.shutdown.is_some() {
            return Ok(());
        }
        d.account(now);
        d.shutdown = Some(reason);
        raise_dom_exc(&mut st, dom, ExceptionKind::Shutdown(reason));
        Ok(())
    }

    /// Destroys `dom` (`XEN_DOMCTL_destroydomain`): it becomes dying, its event channels and
    /// grants are torn down, and it is removed (its memory returned to the host) as soon as
    /// no other domain maps its pages and no [`DomainRef`] is held.
    pub fn destroy(&self, dom: DomId) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        not_self(dom)?;
        if d.dying {
            return Ok(());
        }
        d.account(now);
        d.dying = true;
        // domain_kill() drops the domain's claim.
        let claim = std::mem::take(&mut d.outstanding_pages);
        st.outstanding = st.outstanding - claim;
        crate::evtchn::on_domain_destroy(&mut st, dom);
        crate::grant::on_domain_destroy(&mut st, dom);
        raise_dom_exc(&mut st, dom, ExceptionKind::Dying);
        reap_dying(&mut st);
        Ok(())
    }

    /// Takes a reference on `dom` that keeps it (dying, with its memory) after destruction
    /// until dropped, as a foreign mapping of its pages does on Xen.
    pub fn domain_ref(&self, dom: DomId) -> Result<DomainRef, Errno> {
        let mut st = self.lock();
        let d = dom_mut(&mut st, dom)?;
        d.refs += 1;
        Ok(DomainRef {
            host: self.clone(),
            dom,
        })
    }

    /// Information on one domain (`XEN_DOMCTL_getdomaininfo`), dying ones included.
    pub fn domain_info(&self, dom: DomId) -> Result<xen_sys::xen_domctl_getdomaininfo, Errno> {
        let st = self.lock();
        let now = st.clock.now_ns();
        st.domains
            .get(&dom)
            .map(|d| d.info(now))
            .ok_or(Errno::ESRCH)
    }

    /// Up to `max` domains with ids from `first` up, in id order
    /// (`XEN_SYSCTL_getdomaininfolist`).
    pub fn domain_info_list(
        &self,
        first: DomId,
        max: usize,
    ) -> Vec<xen_sys::xen_domctl_getdomaininfo> {
        // On the system clock, a timer already due has fired on a running machine (the
        // timer thread may lag: the process was stopped, or the machine is loaded).
        if !self.clock().is_manual() {
            self.run_timers();
        }
        let st = self.lock();
        let now = st.clock.now_ns();
        st.domains
            .range(first..)
            .take(max)
            .map(|(_, d)| d.info(now))
            .collect()
    }

    /// Information on one vCPU (`XEN_DOMCTL_getvcpuinfo`).
    pub fn vcpu_info(
        &self,
        dom: DomId,
        vcpu: VcpuId,
    ) -> Result<xen_sys::xen_domctl_getvcpuinfo, Errno> {
        let st = self.lock();
        let now = st.clock.now_ns();
        let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
        if vcpu.0 >= d.max_vcpus {
            return Err(Errno::EINVAL);
        }
        let v = d.vcpus.get(vcpu.0 as usize).ok_or(Errno::ESRCH)?;
        Ok(xen_sys::xen_domctl_getvcpuinfo {
            vcpu: vcpu.0,
            online: u8::from(v.online),
            blocked: u8::from(v.blocked),
            running: u8::from(d.vcpu_running(v)),
            cpu_time: d.vcpu_time(v, now),
            cpu: v.cpu,
        })
    }

    /// Physical information (`XEN_SYSCTL_physinfo`).
    pub fn physinfo(&self) -> xen_sys::xen_sysctl_physinfo {
        let cfg = self.config();
        let st = self.lock();
        let mut caps = xen_sys::XEN_SYSCTL_PHYSCAP_pv
            | xen_sys::XEN_SYSCTL_PHYSCAP_shadow
            | xen_sys::XEN_SYSCTL_PHYSCAP_gnttab_v1;
        if cfg.hvm {
            caps |= xen_sys::XEN_SYSCTL_PHYSCAP_hvm;
        }
        if cfg.hap {
            caps |= xen_sys::XEN_SYSCTL_PHYSCAP_hap;
        }
        if cfg.max_grant_version >= 2 {
            caps |= xen_sys::XEN_SYSCTL_PHYSCAP_gnttab_v2;
        }
        xen_sys::xen_sysctl_physinfo {
            threads_per_core: cfg.threads_per_core,
            cores_per_socket: cfg.cores_per_socket,
            nr_cpus: cfg.nr_cpus(),
            max_cpu_id: cfg.nr_cpus().saturating_sub(1),
            nr_nodes: 1,
            max_node_id: 0,
            cpu_khz: cfg.cpu_khz,
            capabilities: caps,
            total_pages: cfg.memory.0,
            free_pages: st.free.0,
            max_mfn: st.next_mfn,
            outstanding_pages: st.outstanding.0,
            ..Default::default()
        }
    }

    /// Builds a PV (or, on an HVM container, PVH) guest into `dom` as libxenguest's
    /// `xc_dom_*` sequence does: checks the kernel image, populates `spec.memory`, lays out
    /// kernel, initrd, start-info, xenstore and console pages, brings vCPU 0 online, and
    /// seeds the grant table as `xc_dom_gnttab_init` does (`GNTTAB_RESERVED_CONSOLE` and
    /// `GNTTAB_RESERVED_XENSTORE` granted read-write to `console_domid` and `store_domid`).
    ///
    /// Errors: a kernel that is neither a Xen ELF image nor a bzImage, an empty initrd, an
    /// already built domain or a domain without vCPUs (`set_max_vcpus` not called):
    /// `EINVAL`; memory too small for the image, or past `max_pages` or the host's free
    /// memory: `ENOMEM`; unknown domain: `ESRCH`.
    pub fn build_pv(&self, dom: DomId, spec: &BuildSpec<'_>) -> Result<BuildInfo, Errno> {
        let image = parse_kernel(spec.kernel)?;
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        not_self(dom)?;
        if d.dying || d.built.is_some() || d.p2m.populated() > 0 || d.vcpus.is_empty() {
            return Err(Errno::EINVAL);
        }
        if spec.ramdisk.is_some_and(<[u8]>::is_empty) {
            return Err(Errno::EINVAL);
        }
        let kernel_pages = pages_for(image.mem_size);
        let ramdisk_pages = pages_for(spec.ramdisk.map_or(0, |r| r.len() as u64));
        let used = kernel_pages + ramdisk_pages;
        // start info, xenstore, console, boot stack, and page tables for the mapped area.
        let page_tables = used / 512 + 4;
        let needed = used + 4 + page_tables;
        if spec.memory.0 < needed {
            return Err(Errno::ENOMEM);
        }
        let hvm = d.hvm;
        // PVH boots ELF images only (libxenguest has no bzImage loader for HVM containers).
        if hvm && image.kind == ImageKind::BzImage {
            return Err(Errno::EINVAL);
        }
        populate_holes(&mut st, dom, &[(0, spec.memory.0)])?;
        let d = dom_mut(&mut st, dom)?;
        // Take the image's pages from the guest's page allocator, so that a simulated guest
        // never hands out its own rings or kernel.
        let taken = d
            .memory
            .alloc(needed as usize, spec.memory.0)
            .map_err(|_| Errno::ENOMEM)?;
        let start_info_pfn = Pfn(taken[used as usize]);
        let store_pfn = Pfn(taken[used as usize + 1]);
        let console_pfn = Pfn(taken[used as usize + 2]);
        let mfn = |p: Pfn| {
            if hvm {
                Mfn(p.0)
            } else {
                d.p2m.lookup(p).unwrap_or(Mfn(u64::MAX))
            }
        };
        let cmdline: String = spec.cmdline.chars().take(MAX_GUEST_CMDLINE - 1).collect();
        let info = BuildInfo {
            image: image.kind,
            start_info_pfn,
            console_pfn,
            console_mfn: mfn(console_pfn),
            store_pfn,
            store_mfn: mfn(store_pfn),
            console_port: spec.console_port,
            store_port: spec.store_port,
            kernel_pages: Pages(kernel_pages),
            ramdisk_pages: Pages(ramdisk_pages),
            cmdline,
        };
        d.account(now);
        d.vcpus[0].online = true;
        d.built = Some(info.clone());
        // xc_dom_gnttab_init: the reserved grant entries give the console and xenstore
        // backends the guest's ring pages (skipped when the backend is the guest itself).
        for (gref, backend, pfn) in [
            (
                xen_sys::GNTTAB_RESERVED_CONSOLE,
                spec.console_domid,
                console_pfn,
            ),
            (
                xen_sys::GNTTAB_RESERVED_XENSTORE,
                spec.store_domid,
                store_pfn,
            ),
        ] {
            if backend != dom {
                self.grant_at(&mut st, dom, GrantRef(gref), backend, pfn, false, false)?;
            }
        }
        Ok(info)
    }

    /// Guest action (`VCPUOP_up`/`VCPUOP_down`): brings vCPU `vcpu` of `dom` online or
    /// offline. `EINVAL` past the maximum, `ESRCH` when not created.
    pub fn guest_vcpu_set_online(
        &self,
        dom: DomId,
        vcpu: VcpuId,
        online: bool,
    ) -> Result<(), Errno> {
        self.with_vcpu(dom, vcpu, |v| v.online = online)
    }

    /// Guest action (`SCHEDOP_block` / an event arriving): marks vCPU `vcpu` of `dom`
    /// blocked or runnable. A blocked vCPU is not charged CPU time.
    pub fn guest_vcpu_set_blocked(
        &self,
        dom: DomId,
        vcpu: VcpuId,
        blocked: bool,
    ) -> Result<(), Errno> {
        self.with_vcpu(dom, vcpu, |v| v.blocked = blocked)
    }

    fn with_vcpu(&self, dom: DomId, vcpu: VcpuId, f: impl FnOnce(&mut Vcpu)) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = dom_mut(&mut st, dom)?;
        if vcpu.0 >= d.max_vcpus {
            return Err(Errno::EINVAL);
        }
        if vcpu.0 as usize >= d.vcpus.len() {
            return Err(Errno::ESRCH);
        }
        d.account(now);
        f(&mut d.vcpus[vcpu.0 as usize]);
        Ok(())
    }

    /// Number of domain exceptions raised so far.
    pub fn dom_exc_seq(&self) -> u64 {
        self.lock().exceptions.seq()
    }

    /// The domain exceptions raised after sequence number `seq` (the last 1024 are kept).
    pub fn dom_exc_since(&self, seq: u64) -> Vec<DomainException> {
        self.lock().exceptions.since(seq)
    }

    /// Waits until a domain exception past sequence number `seq` is raised, or `timeout`
    /// passes. Returns the current sequence number, or `None` on timeout.
    pub fn wait_dom_exc(&self, seq: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.exceptions.seq() > seq {
                return Some(st.exceptions.seq());
            }
            let cond = st.dom_exc_cond.clone();
            if cond.wait_until(&mut st, deadline).timed_out() {
                return (st.exceptions.seq() > seq).then(|| st.exceptions.seq());
            }
        }
    }
}

fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(xen_types::PAGE_SIZE as u64)
}

/// Hands out `n` consecutive simulated machine frames.
pub(crate) fn alloc_mfns(state: &mut HostState, n: u64) -> u64 {
    let m = state.next_mfn;
    state.next_mfn += n;
    m
}

/// Allocates the (disjoint, unpopulated) `holes` to `dom`, all or nothing.
pub(crate) fn populate_holes(
    state: &mut HostState,
    dom: DomId,
    holes: &[(u64, u64)],
) -> Result<(), Errno> {
    let need: u64 = holes.iter().map(|(_, l)| l).sum();
    check_alloc(state, dom, Pages(need))?;
    for &(s, l) in holes {
        let m = alloc_mfns(state, l);
        let d = dom_mut(state, dom)?;
        d.p2m.insert(s, l, m);
    }
    charge_alloc(state, dom, Pages(need))
}

/// Whether `dom` may be given `need` more pages, as Xen's `alloc_heap_pages()` and
/// `assign_pages()` decide: not dying, within `max_pages`, within the host's free pages, and
/// not into memory other domains have claimed (a domain's own claim covers its allocation).
pub(crate) fn check_alloc(state: &mut HostState, dom: DomId, need: Pages) -> Result<(), Errno> {
    let (free, claims) = (state.free, state.outstanding);
    let d = dom_mut(state, dom)?;
    let beyond_claims = claims.0 + need.0 > free.0 && d.outstanding_pages < need;
    if d.dying || d.tot_pages.0 + need.0 > d.max_pages.0 || need > free || beyond_claims {
        return Err(Errno::ENOMEM);
    }
    Ok(())
}

/// Accounts `n` pages allocated to `dom` (checked by [`check_alloc`]): they leave the host's
/// free pages and use up the domain's claim first (`domain_adjust_tot_pages()`).
pub(crate) fn charge_alloc(state: &mut HostState, dom: DomId, n: Pages) -> Result<(), Errno> {
    let d = dom_mut(state, dom)?;
    d.tot_pages = d.tot_pages + n;
    let used = d.outstanding_pages.min(n);
    d.outstanding_pages = d.outstanding_pages - used;
    state.outstanding = state.outstanding - used;
    state.free = state.free - n;
    Ok(())
}

/// The `createdomain` configuration of a small PV guest, as tests, benches and demos create
/// one to grant pages and bind event channels from: one vCPU, ports up to `max_evtchn_port`,
/// 4 grant frames, 16 maptrack frames, grant table v1.
pub fn small_pv_guest(max_evtchn_port: u32) -> xen_sys::xen_domctl_createdomain {
    xen_sys::xen_domctl_createdomain {
        max_vcpus: 1,
        max_evtchn_port,
        max_grant_frames: 4,
        max_maptrack_frames: 16,
        grant_opts: 1,
        ..Default::default()
    }
}
