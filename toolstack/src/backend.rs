//! The host below the toolstack: domain control, xenstore and device backends.
//!
//! [`HostBackend`] is what `VM.start` and friends drive. [`SimBackend`] is an in-process
//! simulated host that enforces memory accounting, keeps a xenstore tree and lets tests make
//! a guest die on its own.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use xen_types::DomId;

use crate::Error;

/// What a new domain is made with.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// The VM's UUID (the domain handle).
    pub uuid: String,
    /// The VM's name.
    pub name: String,
    /// Memory to allocate, bytes.
    pub memory: u64,
    /// Maximum vCPUs.
    pub max_vcpus: u32,
    /// PV kernel path (may be empty for the simulated host).
    pub kernel: String,
    /// PV ramdisk path.
    pub ramdisk: String,
    /// Kernel command line.
    pub cmdline: String,
}

/// Why a domain stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Powered off.
    Poweroff,
    /// Asked to reboot.
    Reboot,
    /// Suspended.
    Suspend,
    /// Crashed.
    Crash,
}

/// A kind of split device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Block device (`vbd`).
    Vbd,
    /// Network device (`vif`).
    Vif,
}

impl DeviceKind {
    /// The xenstore directory name.
    pub fn dir(self) -> &'static str {
        match self {
            DeviceKind::Vbd => "vbd",
            DeviceKind::Vif => "vif",
        }
    }
}

/// The host a toolstack drives.
pub trait HostBackend: Send + Sync {
    /// Total host memory, bytes.
    fn total_memory(&self) -> u64;
    /// Free host memory, bytes.
    fn free_memory(&self) -> u64;
    /// Creates a (paused) domain with its memory allocated (`xc_domain_create` + memory
    /// population); fails when the host lacks the memory.
    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId, Error>;
    /// Builds the domain's boot image (`xc_dom_*`).
    fn build_domain(&self, domid: DomId, cfg: &DomainConfig) -> Result<(), Error>;
    /// Unpauses (`xc_domain_unpause`).
    fn unpause(&self, domid: DomId) -> Result<(), Error>;
    /// Pauses (`xc_domain_pause`).
    fn pause(&self, domid: DomId) -> Result<(), Error>;
    /// Asks the guest to shut down cleanly (writes `control/shutdown`) and waits up to
    /// `timeout` for it; returns whether it did.
    fn clean_shutdown(
        &self,
        domid: DomId,
        reason: ShutdownReason,
        timeout: Duration,
    ) -> Result<bool, Error>;
    /// Destroys the domain and frees its memory (`xc_domain_destroy`).
    fn destroy_domain(&self, domid: DomId) -> Result<(), Error>;
    /// Whether the domain exists and is not shut down.
    fn is_alive(&self, domid: DomId) -> bool;
    /// Writes a xenstore key.
    fn xs_write(&self, path: &str, value: &str) -> Result<(), Error>;
    /// Removes a xenstore subtree.
    fn xs_rm(&self, path: &str) -> Result<(), Error>;
    /// Reads a xenstore key.
    fn xs_read(&self, path: &str) -> Option<String>;
    /// Starts the userspace backend for a device whose xenstore dirs are written.
    fn start_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32) -> Result<(), Error>;
    /// Stops a device backend.
    fn stop_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32);
    /// Waits up to `timeout` for domains that shut down on their own; returns them (each
    /// once).
    fn wait_shutdowns(&self, timeout: Duration) -> Vec<(DomId, ShutdownReason)>;
}

#[derive(Debug)]
struct SimDomain {
    memory: u64,
    paused: bool,
    shutdown: Option<ShutdownReason>,
    reported: bool,
    built: bool,
}

#[derive(Debug, Default)]
struct SimState {
    domains: HashMap<u16, SimDomain>,
    next_domid: u16,
    xenstore: BTreeMap<String, String>,
    backends: Vec<(DeviceKind, u16, u32)>,
    /// Guests ignore `control/shutdown` (to test the timeout path).
    ignore_shutdown: bool,
}

/// A simulated host: memory accounting, domain ids as Xen allocates them, a xenstore tree.
#[derive(Debug)]
pub struct SimBackend {
    total: u64,
    dom0: u64,
    state: Mutex<SimState>,
    cv: Condvar,
}

impl SimBackend {
    /// A host with `total` bytes, `dom0` of which dom0 uses.
    pub fn new(total: u64, dom0: u64) -> Self {
        SimBackend {
            total,
            dom0,
            state: Mutex::new(SimState {
                next_domid: 1,
                ..SimState::default()
            }),
            cv: Condvar::new(),
        }
    }

    /// Makes a running guest stop on its own (as if it shut down or crashed).
    pub fn guest_shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), Error> {
        let mut st = self.state.lock();
        let d = st
            .domains
            .get_mut(&domid.0)
            .ok_or_else(|| Error::Backend(format!("no domain {}", domid.0)))?;
        d.shutdown = Some(reason);
        self.cv.notify_all();
        Ok(())
    }

    /// Whether guests honour `control/shutdown`.
    pub fn set_ignore_shutdown(&self, ignore: bool) {
        self.state.lock().ignore_shutdown = ignore;
    }

    /// A snapshot of the xenstore tree under `prefix`.
    pub fn xenstore_dump(&self, prefix: &str) -> BTreeMap<String, String> {
        self.state
            .lock()
            .xenstore
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Backends currently running: (kind, frontend domid, devid).
    pub fn backends(&self) -> Vec<(DeviceKind, DomId, u32)> {
        self.state
            .lock()
            .backends
            .iter()
            .map(|(k, d, i)| (*k, DomId(*d), *i))
            .collect()
    }

    /// Number of live domains (dom0 excluded).
    pub fn domain_count(&self) -> usize {
        self.state.lock().domains.len()
    }

    fn used(st: &SimState) -> u64 {
        st.domains.values().map(|d| d.memory).sum()
    }
}

impl HostBackend for SimBackend {
    fn total_memory(&self) -> u64 {
        self.total
    }

    fn free_memory(&self) -> u64 {
        let st = self.state.lock();
        self.total.saturating_sub(self.dom0 + Self::used(&st))
    }

    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId, Error> {
        let mut st = self.state.lock();
        let free = self.total.saturating_sub(self.dom0 + Self::used(&st));
        if cfg.memory > free {
            return Err(Error::Backend(format!(
                "out of memory: need {} bytes, {free} free (ENOMEM)",
                cfg.memory
            )));
        }
        // Xen hands out the next free id, wrapping below DOMID_FIRST_RESERVED.
        let mut id = st.next_domid;
        for _ in 0..0x7ff0 {
            if !st.domains.contains_key(&id) {
                break;
            }
            id = if id >= 0x7fef { 1 } else { id + 1 };
        }
        if st.domains.contains_key(&id) {
            return Err(Error::Backend("no free domain id".into()));
        }
        st.next_domid = if id >= 0x7fef { 1 } else { id + 1 };
        st.domains.insert(
            id,
            SimDomain {
                memory: cfg.memory,
                paused: true,
                shutdown: None,
                reported: false,
                built: false,
            },
        );
        Ok(DomId(id))
    }

    fn build_domain(&self, domid: DomId, _cfg: &DomainConfig) -> Result<(), Error> {
        let mut st = self.state.lock();
        let d = st
            .domains
            .get_mut(&domid.0)
            .ok_or_else(|| Error::Backend("no such domain".into()))?;
        d.built = true;
        Ok(())
    }

    fn unpause(&self, domid: DomId) -> Result<(), Error> {
        let mut st = self.state.lock();
        let d = st
            .domains
            .get_mut(&domid.0)
            .ok_or_else(|| Error::Backend("no such domain".into()))?;
        if !d.built {
            return Err(Error::Backend("domain not built".into()));
        }
        d.paused = false;
        Ok(())
    }

    fn pause(&self, domid: DomId) -> Result<(), Error> {
        let mut st = self.state.lock();
        let d = st
            .domains
            .get_mut(&domid.0)
            .ok_or_else(|| Error::Backend("no such domain".into()))?;
        d.paused = true;
        Ok(())
    }

    fn clean_shutdown(
        &self,
        domid: DomId,
        reason: ShutdownReason,
        _timeout: Duration,
    ) -> Result<bool, Error> {
        let word = match reason {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
        };
        self.xs_write(&format!("/local/domain/{}/control/shutdown", domid.0), word)?;
        let mut st = self.state.lock();
        let ignore = st.ignore_shutdown;
        let d = st
            .domains
            .get_mut(&domid.0)
            .ok_or_else(|| Error::Backend("no such domain".into()))?;
        // The simulated PV guest acknowledges at once, unless told to ignore requests; a
        // paused guest cannot act on it.
        if ignore || d.paused {
            return Ok(false);
        }
        d.shutdown = Some(reason);
        // The toolstack asked for it, so the reaper does not report it.
        d.reported = true;
        Ok(true)
    }

    fn destroy_domain(&self, domid: DomId) -> Result<(), Error> {
        let mut st = self.state.lock();
        st.domains
            .remove(&domid.0)
            .ok_or_else(|| Error::Backend("no such domain".into()))?;
        let prefix = format!("/local/domain/{}/", domid.0);
        st.xenstore.retain(|k, _| !k.starts_with(&prefix));
        st.backends.retain(|(_, d, _)| *d != domid.0);
        Ok(())
    }

    fn is_alive(&self, domid: DomId) -> bool {
        self.state
            .lock()
            .domains
            .get(&domid.0)
            .is_some_and(|d| d.shutdown.is_none())
    }

    fn xs_write(&self, path: &str, value: &str) -> Result<(), Error> {
        if !path.starts_with('/') || path.contains("//") {
            return Err(Error::Backend(format!(
                "bad xenstore path {path:?} (EINVAL)"
            )));
        }
        self.state
            .lock()
            .xenstore
            .insert(path.to_owned(), value.to_owned());
        Ok(())
    }

    fn xs_rm(&self, path: &str) -> Result<(), Error> {
        let sub = format!("{path}/");
        self.state
            .lock()
            .xenstore
            .retain(|k, _| k != path && !k.starts_with(&sub));
        Ok(())
    }

    fn xs_read(&self, path: &str) -> Option<String> {
        self.state.lock().xenstore.get(path).cloned()
    }

    fn start_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32) -> Result<(), Error> {
        let be = format!(
            "/local/domain/0/backend/{}/{}/{}",
            kind.dir(),
            frontend.0,
            devid
        );
        let mut st = self.state.lock();
        if !st.xenstore.contains_key(&format!("{be}/frontend")) {
            return Err(Error::Backend(format!("{be} not written (ENOENT)")));
        }
        // XenbusStateInitWait: the backend is up and waits for the frontend.
        st.xenstore.insert(format!("{be}/state"), "2".into());
        st.backends.push((kind, frontend.0, devid));
        Ok(())
    }

    fn stop_backend(&self, kind: DeviceKind, frontend: DomId, devid: u32) {
        self.state
            .lock()
            .backends
            .retain(|b| *b != (kind, frontend.0, devid));
    }

    fn wait_shutdowns(&self, timeout: Duration) -> Vec<(DomId, ShutdownReason)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            let mut out = Vec::new();
            for (id, d) in st.domains.iter_mut() {
                if let (Some(r), false) = (d.shutdown, d.reported) {
                    d.reported = true;
                    out.push((DomId(*id), r));
                }
            }
            if !out.is_empty() || self.cv.wait_until(&mut st, deadline).timed_out() {
                return out;
            }
        }
    }
}
