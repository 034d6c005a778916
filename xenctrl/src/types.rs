//! What the control interface takes and returns.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;
use xen_types::{DomId, EvtchnPort, Mfn, Pages, Pfn, VcpuId};

/// The hypervisor's version (`XENVER_version`, `XENVER_extraversion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// The rest, e.g. `".0"` or `"-unstable"`.
    pub extra: String,
}

impl fmt::Display for XenVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}{}", self.major, self.minor, self.extra)
    }
}

bitflags::bitflags! {
    /// Host capabilities (`XEN_SYSCTL_PHYSCAP_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Capabilities: u32 {
        /// HVM (and PVH) guests.
        const HVM = xen_sys::XEN_SYSCTL_PHYSCAP_hvm;
        /// PV guests.
        const PV = xen_sys::XEN_SYSCTL_PHYSCAP_pv;
        /// Device pass-through.
        const DIRECTIO = xen_sys::XEN_SYSCTL_PHYSCAP_directio;
        /// Hardware-assisted paging.
        const HAP = xen_sys::XEN_SYSCTL_PHYSCAP_hap;
        /// Shadow paging.
        const SHADOW = xen_sys::XEN_SYSCTL_PHYSCAP_shadow;
        /// IOMMU and HAP page tables shared.
        const IOMMU_HAP_PT_SHARE = xen_sys::XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share;
        /// Processor trace.
        const VMTRACE = xen_sys::XEN_SYSCTL_PHYSCAP_vmtrace;
        /// Virtual PMU.
        const VPMU = xen_sys::XEN_SYSCTL_PHYSCAP_vpmu;
        /// Grant tables v1.
        const GNTTAB_V1 = xen_sys::XEN_SYSCTL_PHYSCAP_gnttab_v1;
        /// Grant tables v2.
        const GNTTAB_V2 = xen_sys::XEN_SYSCTL_PHYSCAP_gnttab_v2;
    }
}

/// The host's physical description (`XEN_SYSCTL_physinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysInfo {
    /// Logical CPUs.
    pub nr_cpus: u32,
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Sockets (derived: CPUs / (cores × threads)).
    pub sockets: u32,
    /// NUMA nodes.
    pub nr_nodes: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// All of the host's memory.
    pub total_pages: Pages,
    /// Memory not allocated to any domain.
    pub free_pages: Pages,
    /// Memory waiting to be scrubbed.
    pub scrub_pages: Pages,
    /// Memory claimed but not yet allocated.
    pub outstanding_pages: Pages,
    /// What the host can do.
    pub capabilities: Capabilities,
}

impl From<&xen_sys::xen_sysctl_physinfo> for PhysInfo {
    fn from(p: &xen_sys::xen_sysctl_physinfo) -> PhysInfo {
        let per_socket = p.threads_per_core.max(1) * p.cores_per_socket.max(1);
        PhysInfo {
            nr_cpus: p.nr_cpus,
            threads_per_core: p.threads_per_core,
            cores_per_socket: p.cores_per_socket,
            sockets: p.nr_cpus / per_socket,
            nr_nodes: p.nr_nodes,
            cpu_khz: p.cpu_khz,
            total_pages: Pages(p.total_pages),
            free_pages: Pages(p.free_pages),
            scrub_pages: Pages(p.scrub_pages),
            outstanding_pages: Pages(p.outstanding_pages),
            capabilities: Capabilities::from_bits_retain(p.capabilities),
        }
    }
}

bitflags::bitflags! {
    /// A domain's state flags (`XEN_DOMINF_*`, without the shutdown code).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DomainFlags: u32 {
        /// Being destroyed (a zombie, while others still hold its pages).
        const DYING = xen_sys::XEN_DOMINF_dying;
        /// An HVM or PVH container.
        const HVM = xen_sys::XEN_DOMINF_hvm_guest;
        /// Shut down (see [`DomainInfo::shutdown_reason`]).
        const SHUTDOWN = xen_sys::XEN_DOMINF_shutdown;
        /// Paused by the controller.
        const PAUSED = xen_sys::XEN_DOMINF_paused;
        /// Every online vCPU is blocked.
        const BLOCKED = xen_sys::XEN_DOMINF_blocked;
        /// Some vCPU is running.
        const RUNNING = xen_sys::XEN_DOMINF_running;
        /// Being debugged.
        const DEBUGGED = xen_sys::XEN_DOMINF_debugged;
        /// The xenstore domain.
        const XS_DOMAIN = xen_sys::XEN_DOMINF_xs_domain;
        /// Hardware-assisted paging.
        const HAP = xen_sys::XEN_DOMINF_hap;
    }
}

/// Why a domain shut down (`SHUTDOWN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`.
    Poweroff,
    /// `SHUTDOWN_reboot`.
    Reboot,
    /// `SHUTDOWN_suspend`.
    Suspend,
    /// `SHUTDOWN_crash`.
    Crash,
    /// `SHUTDOWN_watchdog`.
    Watchdog,
    /// `SHUTDOWN_soft_reset`.
    SoftReset,
}

impl ShutdownReason {
    /// The `SHUTDOWN_*` code.
    pub const fn code(self) -> u32 {
        match self {
            ShutdownReason::Poweroff => xen_sys::SHUTDOWN_poweroff,
            ShutdownReason::Reboot => xen_sys::SHUTDOWN_reboot,
            ShutdownReason::Suspend => xen_sys::SHUTDOWN_suspend,
            ShutdownReason::Crash => xen_sys::SHUTDOWN_crash,
            ShutdownReason::Watchdog => xen_sys::SHUTDOWN_watchdog,
            ShutdownReason::SoftReset => xen_sys::SHUTDOWN_soft_reset,
        }
    }

    /// The reason for a `SHUTDOWN_*` code.
    pub const fn from_code(code: u32) -> Option<ShutdownReason> {
        Some(match code {
            xen_sys::SHUTDOWN_poweroff => ShutdownReason::Poweroff,
            xen_sys::SHUTDOWN_reboot => ShutdownReason::Reboot,
            xen_sys::SHUTDOWN_suspend => ShutdownReason::Suspend,
            xen_sys::SHUTDOWN_crash => ShutdownReason::Crash,
            xen_sys::SHUTDOWN_watchdog => ShutdownReason::Watchdog,
            xen_sys::SHUTDOWN_soft_reset => ShutdownReason::SoftReset,
            _ => return None,
        })
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft_reset",
        })
    }
}

/// One domain as `xc_domain_getinfolist` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its id.
    pub domid: DomId,
    /// The toolstack's handle.
    pub handle: Uuid,
    /// State flags.
    pub flags: DomainFlags,
    /// The shutdown code, when [`DomainFlags::SHUTDOWN`] is set (a code Xen does not
    /// name is kept raw in [`DomainInfo::shutdown_code`]).
    pub shutdown_reason: Option<ShutdownReason>,
    /// The raw shutdown code (`255` until a shutdown).
    pub shutdown_code: u32,
    /// Pages allocated.
    pub tot_pages: Pages,
    /// Most pages allowed.
    pub max_pages: Pages,
    /// Pages claimed and not yet allocated (`xc_domain_claim_pages`).
    pub outstanding_pages: Pages,
    /// Pages shared with other domains (memory sharing).
    pub shr_pages: Pages,
    /// Pages paged out.
    pub paged_pages: Pages,
    /// CPU time used by all vCPUs.
    pub cpu_time: Duration,
    /// vCPUs online.
    pub online_vcpus: u32,
    /// Highest vCPU id, `None` before the vCPUs are created.
    pub max_vcpu_id: Option<u32>,
    /// Its CPU pool.
    pub cpupool: u32,
    /// Its XSM security reference (`ssidref`; 0 without an XSM policy).
    pub ssidref: u32,
}

impl DomainInfo {
    /// Running on a CPU now.
    pub fn running(&self) -> bool {
        self.flags.contains(DomainFlags::RUNNING)
    }
    /// All online vCPUs blocked.
    pub fn blocked(&self) -> bool {
        self.flags.contains(DomainFlags::BLOCKED)
    }
    /// Paused by the controller.
    pub fn paused(&self) -> bool {
        self.flags.contains(DomainFlags::PAUSED)
    }
    /// Shut down.
    pub fn is_shutdown(&self) -> bool {
        self.flags.contains(DomainFlags::SHUTDOWN)
    }
    /// Being destroyed.
    pub fn dying(&self) -> bool {
        self.flags.contains(DomainFlags::DYING)
    }
    /// HVM or PVH.
    pub fn hvm(&self) -> bool {
        self.flags.contains(DomainFlags::HVM)
    }
    /// The six-letter state string of `xl list` / xentop (`r`, `b`, `p`, `s`, `c`, `d`).
    pub fn state_string(&self) -> String {
        let crashed = self.shutdown_reason == Some(ShutdownReason::Crash);
        [
            (self.running(), 'r'),
            (self.blocked(), 'b'),
            (self.paused(), 'p'),
            (self.is_shutdown() && !crashed, 's'),
            (self.is_shutdown() && crashed, 'c'),
            (self.dying(), 'd'),
        ]
        .iter()
        .map(|&(on, c)| if on { c } else { '-' })
        .collect()
    }
}

impl From<&xen_sys::xen_domctl_getdomaininfo> for DomainInfo {
    fn from(i: &xen_sys::xen_domctl_getdomaininfo) -> DomainInfo {
        let flags = DomainFlags::from_bits_retain(
            i.flags & !(xen_sys::XEN_DOMINF_shutdownmask << xen_sys::XEN_DOMINF_shutdownshift),
        );
        let code =
            (i.flags >> xen_sys::XEN_DOMINF_shutdownshift) & xen_sys::XEN_DOMINF_shutdownmask;
        DomainInfo {
            domid: DomId(i.domain),
            handle: Uuid::from_bytes(i.handle),
            flags,
            shutdown_reason: if flags.contains(DomainFlags::SHUTDOWN) {
                ShutdownReason::from_code(code)
            } else {
                None
            },
            shutdown_code: code,
            tot_pages: Pages(i.tot_pages),
            max_pages: Pages(i.max_pages),
            outstanding_pages: Pages(i.outstanding_pages),
            shr_pages: Pages(i.shr_pages),
            paged_pages: Pages(i.paged_pages),
            cpu_time: Duration::from_nanos(i.cpu_time),
            online_vcpus: i.nr_online_vcpus,
            max_vcpu_id: (i.max_vcpu_id != xen_sys::XEN_INVALID_MAX_VCPU_ID as u32)
                .then_some(i.max_vcpu_id),
            cpupool: i.cpupool,
            ssidref: i.ssidref,
        }
    }
}

/// One vCPU (`xc_vcpu_getinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Its index.
    pub vcpu: VcpuId,
    /// Brought up.
    pub online: bool,
    /// Blocked, waiting for an event.
    pub blocked: bool,
    /// Running on a CPU now.
    pub running: bool,
    /// CPU time used.
    pub cpu_time: Duration,
    /// The physical CPU it is on.
    pub cpu: u32,
}

impl From<&xen_sys::xen_domctl_getvcpuinfo> for VcpuInfo {
    fn from(v: &xen_sys::xen_domctl_getvcpuinfo) -> VcpuInfo {
        VcpuInfo {
            vcpu: VcpuId(v.vcpu),
            online: v.online != 0,
            blocked: v.blocked != 0,
            running: v.running != 0,
            cpu_time: Duration::from_nanos(v.cpu_time),
            cpu: v.cpu,
        }
    }
}

/// The kind of domain container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// Paravirtualised.
    Pv,
    /// PVH: an HVM container without emulated devices but the local APIC.
    Pvh,
    /// Fully virtualised (emulated devices; needs a device model).
    Hvm,
}

/// How to create a domain (`xen_domctl_createdomain`, with libxl's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// Container kind.
    pub kind: DomainKind,
    /// The toolstack's handle (a UUID).
    pub handle: Uuid,
    /// Most vCPUs.
    pub max_vcpus: u32,
    /// Highest event-channel port (libxl's default: 1023).
    pub max_evtchn_port: u32,
    /// Grant-table frames; `None` takes the hypervisor's default (libxl: 64 by default).
    pub max_grant_frames: Option<u32>,
    /// Maptrack frames; `None` takes the hypervisor's default.
    pub max_maptrack_frames: Option<u32>,
    /// Highest grant-table version (1 or 2).
    pub max_grant_version: u32,
    /// A specific domain id, or `None` to let Xen choose.
    pub domid: Option<DomId>,
    /// Create the xenstore domain.
    pub xenstore_domain: bool,
}

impl DomainConfig {
    /// A PV domain with `max_vcpus` vCPUs and a fresh random handle.
    pub fn pv(max_vcpus: u32) -> DomainConfig {
        DomainConfig {
            kind: DomainKind::Pv,
            handle: Uuid::new_v4(),
            max_vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: None,
            max_maptrack_frames: None,
            max_grant_version: 1,
            domid: None,
            xenstore_domain: false,
        }
    }

    /// A PVH domain with `max_vcpus` vCPUs and a fresh random handle.
    pub fn pvh(max_vcpus: u32) -> DomainConfig {
        DomainConfig {
            kind: DomainKind::Pvh,
            ..DomainConfig::pv(max_vcpus)
        }
    }

    /// The hypercall argument, as libxl fills it.
    pub fn to_raw(&self) -> xen_sys::xen_domctl_createdomain {
        let (flags, emulation) = match self.kind {
            DomainKind::Pv => (0, 0),
            DomainKind::Pvh => (
                xen_sys::XEN_DOMCTL_CDF_hvm | xen_sys::XEN_DOMCTL_CDF_hap,
                xen_sys::XEN_X86_EMU_LAPIC,
            ),
            DomainKind::Hvm => (
                xen_sys::XEN_DOMCTL_CDF_hvm | xen_sys::XEN_DOMCTL_CDF_hap,
                xen_sys::XEN_X86_EMU_ALL & !xen_sys::XEN_X86_EMU_VPCI,
            ),
        };
        let xs = if self.xenstore_domain {
            xen_sys::XEN_DOMCTL_CDF_xs_domain
        } else {
            0
        };
        let frames = |f: Option<u32>| f.map_or(-1, |f| i32::try_from(f).unwrap_or(i32::MAX));
        xen_sys::xen_domctl_createdomain {
            handle: *self.handle.as_bytes(),
            flags: flags | xs,
            max_vcpus: self.max_vcpus,
            max_evtchn_port: self.max_evtchn_port,
            max_grant_frames: frames(self.max_grant_frames),
            max_maptrack_frames: frames(self.max_maptrack_frames),
            grant_opts: self.max_grant_version & xen_sys::XEN_DOMCTL_GRANT_version_mask,
            arch: xen_sys::xen_arch_domainconfig {
                emulation_flags: emulation,
                misc_flags: 0,
            },
            ..Default::default()
        }
    }
}

/// Where a kernel or initrd comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file (`xc_dom_kernel_file`, `xc_dom_module_file`).
    File(PathBuf),
    /// Bytes in memory (`xc_dom_kernel_mem`, `xc_dom_module_mem`).
    Bytes(Vec<u8>),
}

impl ImageSource {
    /// The bytes (reading the file if needed).
    pub fn load(&self) -> crate::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            ImageSource::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b)),
            ImageSource::File(p) => {
                std::fs::read(p)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|source| crate::Error::Image {
                        path: p.clone(),
                        source,
                    })
            }
        }
    }
}

/// What to build into a domain (libxl's `libxl__build_pv` inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (a Xen ELF or a bzImage).
    pub kernel: ImageSource,
    /// The initrd, if any.
    pub ramdisk: Option<ImageSource>,
    /// The kernel command line.
    pub cmdline: String,
    /// Memory to give the guest.
    pub memory: Pages,
    /// The domain running the console backend (xenconsoled).
    pub console_domid: DomId,
    /// The domain running xenstored.
    pub store_domid: DomId,
}

impl GuestImage {
    /// A guest with `kernel`, no initrd, and the console and xenstore backends in dom0.
    pub fn new(kernel: ImageSource, memory: Pages) -> GuestImage {
        GuestImage {
            kernel,
            ramdisk: None,
            cmdline: String::new(),
            memory,
            console_domid: DomId::DOM0,
            store_domid: DomId::DOM0,
        }
    }
}

/// A shared ring page the builder set up, and its event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPage {
    /// The guest frame.
    pub pfn: Pfn,
    /// The machine frame (the pfn for translated guests): what goes into xenstore's
    /// `console/ring-ref` and what `XS_INTRODUCE` takes.
    pub mfn: Mfn,
    /// The guest's end of the event channel.
    pub port: EvtchnPort,
    /// The domain serving the ring.
    pub backend: DomId,
}

/// What building a guest produced: what the toolstack hands to xenconsoled and xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltGuest {
    /// The console ring.
    pub console: RingPage,
    /// The xenstore ring.
    pub store: RingPage,
}

/// A watchdog timer of dom0, from 1 (what `xc_watchdog(xch, 0, timeout)` answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchdogId(pub u32);

impl fmt::Display for WatchdogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watchdog {}", self.0)
    }
}

/// A watchdog timeout in whole seconds, as `SCHEDOP_watchdog` takes it: rounded down (a
/// fencing timeout must not grow), and refused when under one second (0 would stop a timer,
/// or fire a new one at once) or past `u32::MAX` seconds.
pub(crate) fn watchdog_secs(op: &'static str, timeout: Duration) -> crate::Result<u32> {
    match u32::try_from(timeout.as_secs()) {
        Ok(s) if s > 0 => Ok(s),
        _ => Err(crate::Error::InvalidArgument { op }),
    }
}

/// The event channels and backends of a guest being restored (the ring arguments of
/// `xc_domain_restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreRings {
    /// The guest's end of its new console event channel.
    pub console_port: EvtchnPort,
    /// The domain serving the console.
    pub console_domid: DomId,
    /// The guest's end of its new xenstore event channel.
    pub store_port: EvtchnPort,
    /// The domain running xenstored.
    pub store_domid: DomId,
}

/// What restoring a guest produced: where its rings are now, for xenconsoled and
/// `XS_INTRODUCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredGuest {
    /// The console ring's machine frame (`console/ring-ref`).
    pub console_mfn: Mfn,
    /// The xenstore ring's machine frame (what `XS_INTRODUCE` takes).
    pub store_mfn: Mfn,
    /// The guest's console event channel.
    pub console_port: EvtchnPort,
    /// The guest's xenstore event channel.
    pub store_port: EvtchnPort,
}
