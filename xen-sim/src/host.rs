//! The simulated host: its configuration and the lock that guards all per-domain state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use xen_types::{DomId, Pages};

use crate::domain::Domain;

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
    /// Where Xen's domid rover will look next.
    pub next_domid: u16,
}

#[derive(Debug)]
pub(crate) struct HostInner {
    pub(crate) config: HostConfig,
    pub(crate) booted: Instant,
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
                booted: Instant::now(),
                state: Mutex::new(HostState {
                    domains: BTreeMap::new(),
                    free: config.memory,
                    next_domid: 1,
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

    /// Time since the host booted.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.booted.elapsed()
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
