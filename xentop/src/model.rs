//! One sample of the host and its domains (libxenstat's `xenstat_node` and what hangs off it).

use xen_types::DomId;
use xenctrl::{DomainInfo, ShutdownReason};

/// The size of a page, as libxenstat multiplies page counts by it (x86).
pub const PAGE_SIZE: u64 = 4096;

/// `max_pages` of a domain without a memory limit (libxenstat compares with `UINT_MAX`).
pub const NO_LIMIT_PAGES: u64 = u32::MAX as u64;

/// The host at one moment (`xenstat_node`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `major.minor` and the extra version (`xenstat_node_xen_version`).
    pub xen_version: String,
    /// CPU frequency in Hz (`cpu_khz * 1000`).
    pub cpu_hz: u64,
    /// Logical CPUs.
    pub num_cpus: u32,
    /// Host memory in bytes.
    pub tot_mem: u64,
    /// Free host memory in bytes.
    pub free_mem: u64,
    /// Domains with a name, in id order.
    pub domains: Vec<Domain>,
    /// Things libxenstat prints to stderr while collecting (a vif of a domain that does
    /// not exist, a malformed `/proc/net/dev` line, an unreachable QMP socket).
    pub warnings: Vec<String>,
}

impl Node {
    /// The domain with id `id`.
    pub fn domain(&self, id: DomId) -> Option<&Domain> {
        self.domains.iter().find(|d| d.info.domid == id)
    }
}

/// One domain (`xenstat_domain`).
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    /// What `xc_domain_getinfolist` said.
    pub info: DomainInfo,
    /// Its name in xenstore.
    pub name: String,
    /// One entry per vCPU id up to the highest.
    pub vcpus: Vec<Vcpu>,
    /// Its vifs, in `/proc/net/dev` order.
    pub networks: Vec<Network>,
    /// Its disks: qdisk ones (QMP) first, then the kernel's.
    pub vbds: Vec<Vbd>,
}

impl Domain {
    /// Its id.
    pub fn id(&self) -> DomId {
        self.info.domid
    }

    /// CPU time in ns (`xenstat_domain_cpu_ns`).
    pub fn cpu_ns(&self) -> u64 {
        u64::try_from(self.info.cpu_time.as_nanos()).unwrap_or(u64::MAX)
    }

    /// vCPUs configured: the highest vCPU id + 1, 0 before any (`xenstat_domain_num_vcpus`).
    pub fn num_vcpus(&self) -> u32 {
        self.info.max_vcpu_id.map_or(0, |m| m.wrapping_add(1))
    }

    /// Current memory in bytes (`xenstat_domain_cur_mem`).
    pub fn cur_mem(&self) -> u64 {
        self.info.tot_pages.0.saturating_mul(PAGE_SIZE)
    }

    /// Memory limit in bytes; `None` for "no limit" (`xenstat_domain_max_mem` == -1).
    pub fn max_mem(&self) -> Option<u64> {
        (self.info.max_pages.0 != NO_LIMIT_PAGES)
            .then(|| self.info.max_pages.0.wrapping_mul(PAGE_SIZE))
    }

    /// The XSM security id (`xenstat_domain_ssid`).
    pub fn ssid(&self) -> u32 {
        self.info.ssidref
    }

    /// Being destroyed.
    pub fn dying(&self) -> bool {
        self.info.dying()
    }

    /// Shut down for a reason other than a crash.
    pub fn shutdown(&self) -> bool {
        self.info.is_shutdown() && !self.crashed()
    }

    /// Shut down by a crash.
    pub fn crashed(&self) -> bool {
        self.info.is_shutdown()
            && (self.info.shutdown_reason == Some(ShutdownReason::Crash)
                || self.info.shutdown_code == ShutdownReason::Crash.code())
    }

    /// Paused by the controller.
    pub fn paused(&self) -> bool {
        self.info.paused()
    }

    /// Every online vCPU blocked.
    pub fn blocked(&self) -> bool {
        self.info.blocked()
    }

    /// A vCPU running.
    pub fn running(&self) -> bool {
        self.info.running()
    }

    /// The states in xentop's order, each with its letter: `d`ying, `s`hutdown, `b`locked,
    /// `c`rashed, `p`aused, `r`unning.
    pub fn states(&self) -> [(bool, char); 6] {
        [
            (self.dying(), 'd'),
            (self.shutdown(), 's'),
            (self.blocked(), 'b'),
            (self.crashed(), 'c'),
            (self.paused(), 'p'),
            (self.running(), 'r'),
        ]
    }

    /// Bytes sent (`tx`) or received (`rx`) over all vifs (xentop's `tot_net_bytes`).
    pub fn net_bytes(&self, rx: bool) -> u64 {
        self.networks
            .iter()
            .map(|n| if rx { n.rbytes } else { n.tbytes })
            .fold(0u64, u64::wrapping_add)
    }

    /// The sum of `f` over the disks whose counters could be read, and whether there is
    /// something to show: no disks, or at least one readable (xentop's `tot_vbd_reqs`).
    pub fn vbd_total(&self, f: impl Fn(&VbdStats) -> u64) -> (u64, bool) {
        let mut total = 0u64;
        let mut show = self.vbds.is_empty();
        for s in self.vbds.iter().filter_map(|v| v.stats.as_ref()) {
            show = true;
            total = total.wrapping_add(f(s));
        }
        (total, show)
    }
}

/// One vCPU (`xenstat_vcpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vcpu {
    /// Brought up.
    pub online: bool,
    /// CPU time used, ns.
    pub ns: u64,
}

/// One vif's counters as dom0 sees them (`xenstat_network`): dom0's receive is the
/// guest's transmit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Network {
    /// The vif's device id (`N` of `vifD.N`).
    pub id: u32,
    /// Bytes received.
    pub rbytes: u64,
    /// Packets received.
    pub rpackets: u64,
    /// Receive errors.
    pub rerrs: u64,
    /// Receive drops.
    pub rdrop: u64,
    /// Bytes transmitted.
    pub tbytes: u64,
    /// Packets transmitted.
    pub tpackets: u64,
    /// Transmit errors.
    pub terrs: u64,
    /// Transmit drops.
    pub tdrop: u64,
}

/// Which backend serves a disk (`xenstat_vbd_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VbdBackend {
    /// A qdisk backend over QMP (type 0, "Unidentified").
    Unidentified,
    /// The kernel's blkback (`vbd-*`, type 1).
    BlkBack,
    /// blktap (`tap-*`, type 2).
    BlkTap,
}

impl VbdBackend {
    /// The name xentop shows.
    pub fn name(self) -> &'static str {
        match self {
            VbdBackend::Unidentified => "Unidentified",
            VbdBackend::BlkBack => "BlkBack",
            VbdBackend::BlkTap => "BlkTap",
        }
    }
}

/// One disk (`xenstat_vbd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vbd {
    /// Who serves it.
    pub backend: VbdBackend,
    /// Its device id (the `virtual-device` number, e.g. 51712 for xvda).
    pub dev: u32,
    /// Its counters; `None` when they could not be read (`xenstat_vbd_error`).
    pub stats: Option<VbdStats>,
}

/// A disk's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VbdStats {
    /// Requests that found the ring's request slots exhausted (blkback's `oo_req`).
    pub oo_reqs: u64,
    /// Read requests.
    pub rd_reqs: u64,
    /// Write requests.
    pub wr_reqs: u64,
    /// Sectors read.
    pub rd_sects: u64,
    /// Sectors written.
    pub wr_sects: u64,
}
