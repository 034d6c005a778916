//! The simulated host: its configuration and the lock that guards all per-domain state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use xen_types::{DomId, Pages};

use crate::domain::{Domain, DomainExceptions};

/// The host's time source: what CPU time and uptime are measured against.
///
/// [`Clock::system`] follows the monotonic clock; [`Clock::manual`] only moves when told to
/// ([`Clock::advance`]), so tests of CPU accounting need no sleeps.
///
/// ```
/// use std::time::Duration;
/// use xen_sim::Clock;
/// let c = Clock::manual();
/// assert_eq!(c.now(), Duration::ZERO);
/// c.advance(Duration::from_millis(5));
/// assert_eq!(c.now(), Duration::from_millis(5));
/// ```
#[derive(Debug, Clone)]
pub struct Clock(ClockKind);

#[derive(Debug, Clone)]
enum ClockKind {
    System(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A clock that follows the system's monotonic clock, starting now.
    pub fn system() -> Clock {
        Clock(ClockKind::System(Instant::now()))
    }

    /// A clock that starts at zero and moves only through [`Clock::advance`]. Clones share it.
    pub fn manual() -> Clock {
        Clock(ClockKind::Manual(Arc::new(AtomicU64::new(0))))
    }

    /// True for a [`Clock::manual`] clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.0, ClockKind::Manual(_))
    }

    /// Time since the clock started.
    pub fn now(&self) -> Duration {
        match &self.0 {
            ClockKind::System(t0) => t0.elapsed(),
            ClockKind::Manual(ns) => Duration::from_nanos(ns.load(Ordering::SeqCst)),
        }
    }

    /// Nanoseconds since the clock started (saturating).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Moves a manual clock forward by `by`. Returns false (and does nothing) on a system clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.0 {
            ClockKind::System(_) => false,
            ClockKind::Manual(ns) => {
                let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
                ns.fetch_add(by, Ordering::SeqCst);
                true
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// What the simulated machine looks like.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Physical CPU sockets.
    pub sockets: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Threads per core.
    pub threads_per_core: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// Total host memory.
    pub memory: Pages,
    /// Memory given to dom0 at boot.
    pub dom0_memory: Pages,
    /// vCPUs of dom0.
    pub dom0_vcpus: u32,
    /// Xen version reported (major, minor, extra).
    pub version: (u32, u32, String),
    /// Hardware virtualisation available (HVM and PVH guests can be created).
    pub hvm: bool,
    /// Hardware-assisted paging available.
    pub hap: bool,
    /// Most vCPUs of an HVM/PVH guest (`HVM_MAX_VCPUS` of `hvm_info_table.h`: 128).
    pub hvm_max_vcpus: u32,
    /// Most vCPUs of a PV guest (x86 `MAX_VIRT_CPUS`: 8192).
    pub pv_max_vcpus: u32,
    /// Xen's `gnttab_max_frames` command-line option: the default and the most grant-table
    /// frames a domain may have.
    pub max_grant_frames: u32,
    /// Xen's `gnttab_max_maptrack_frames` option.
    pub max_maptrack_frames: u32,
    /// Highest grant-table version the host supports (`gnttab=max-ver:`).
    pub max_grant_version: u32,
    /// The time source for CPU accounting and uptime.
    pub clock: Clock,
}

impl Default for HostConfig {
    /// A small host: 1 socket, 4 cores, 2 threads per core, 8 GiB, dom0 with 1 GiB.
    fn default() -> Self {
        HostConfig {
            sockets: 1,
            cores_per_socket: 4,
            threads_per_core: 2,
            cpu_khz: 2_400_000,
            memory: Pages::from_mib(8192),
            dom0_memory: Pages::from_mib(1024),
            dom0_vcpus: 2,
            version: (4, 17, ".0-sim".to_string()),
            hvm: true,
            hap: true,
            hvm_max_vcpus: 128,
            pv_max_vcpus: 8192,
            max_grant_frames: 64,
            max_maptrack_frames: 1024,
            max_grant_version: 2,
            clock: Clock::system(),
        }
    }
}

impl HostConfig {
    /// Number of logical CPUs.
    pub fn nr_cpus(&self) -> u32 {
        self.sockets * self.cores_per_socket * self.threads_per_core
    }
}

/// Everything the host knows, guarded by one lock.
///
/// Per-domain state of every subsystem hangs off [`Domain`]; host-wide state sits here.
#[derive(Debug)]
pub struct HostState {
    /// Live domains (including dying ones), by id.
    pub domains: BTreeMap<DomId, Domain>,
    /// Host pages not allocated to any domain.
    pub free: Pages,
    /// Pages claimed by domains and not yet allocated (`outstanding_claims`).
    pub outstanding: Pages,
    /// Where Xen's domid rover will look next.
    pub next_domid: u16,
    /// Domain exceptions (shutdowns, deaths) raised so far: what `VIRQ_DOM_EXC` signals.
    pub exceptions: DomainExceptions,
    /// The host's clock (a copy of the configuration's), for code that holds only the state.
    pub(crate) clock: Clock,
    /// Next machine frame number handed out by the simulated page allocator.
    pub(crate) next_mfn: u64,
    /// Signalled whenever a domain exception is raised (see [`Host::wait_dom_exc`]).
    pub(crate) dom_exc_cond: Arc<Condvar>,
    /// The hypervisor's console ring.
    pub(crate) conring: crate::console::ConRing,
    /// Clock reading at the last boot (the first, or a watchdog's reboot).
    pub(crate) booted: Duration,
    /// Boots so far: 1, plus one per reboot ([`Host::boots`]).
    pub(crate) boots: u32,
    /// Set while a thread fires watchdog timers on a system clock.
    pub(crate) timer_thread: bool,
}

#[derive(Debug)]
pub(crate) struct HostInner {
    pub(crate) config: HostConfig,
    pub(crate) state: Mutex<HostState>,
}

/// A handle on one simulated host. Clones share the host.
#[derive(Debug, Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl Host {
    /// Boots a host with `config`: dom0 exists from the start, running.
    pub fn new(config: HostConfig) -> Host {
        let host = Host {
            inner: Arc::new(HostInner {
                state: Mutex::new(HostState {
                    domains: BTreeMap::new(),
                    free: config.memory,
                    outstanding: Pages::ZERO,
                    next_domid: 1,
                    exceptions: DomainExceptions::default(),
                    clock: config.clock.clone(),
                    next_mfn: 0x1000,
                    dom_exc_cond: Arc::new(Condvar::new()),
                    conring: crate::console::ConRing::default(),
                    booted: config.clock.now(),
                    boots: 1,
                    timer_thread: false,
                }),
                config,
            }),
        };
        host.boot_dom0();
        host
    }

    /// The host's configuration.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Time since the host booted (last rebooted).
    pub fn uptime(&self) -> Duration {
        let booted = self.lock().booted;
        self.inner.config.clock.now().saturating_sub(booted)
    }

    /// How many times the host has booted: 1, plus one per reboot (a watchdog's).
    pub fn boots(&self) -> u32 {
        self.lock().boots
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.config.clock
    }

    /// Locks the host state. Subsystems use this; keep critical sections short and never
    /// block (no I/O that can wait) while holding it.
    pub fn lock(&self) -> MutexGuard<'_, HostState> {
        self.inner.state.lock()
    }

    /// True when `a` and `b` are handles on the same host.
    pub fn same_host(a: &Host, b: &Host) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new(HostConfig::default())
    }
}
