//! Dynamic memory control of the host's VMs: squeezed over the backend's hypervisor and
//! xenstore.
//!
//! [`Memory`] runs [`squeezed::Squeezed`] on the same `xenctrl` handle and dom0 xenstore
//! connection as the rest of the toolstack (real Xen or `xen-sim`, through
//! [`squeezed::XenHost`]). A VM start reserves its memory first, squeezing running guests
//! toward their dynamic-min when the host lacks it; the domain, once built, gets its
//! `memory/*` keys (dom0's, guest-readable) and the reservation. On a simulated host the
//! guests' balloon drivers are `xen-sim`'s models, fed from xenstore by
//! [`xenbus::testing::SimBalloons`], and time passes for real.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use xen_sim::balloon::BalloonBehaviour;
use xen_types::{DomId, Pages};
use xenbus::testing::SimBalloons;
use xenbus::{Store, WatchEvent, WatchId, XsStore};
use xenstore::{Access, Perm};

use crate::backend::Backend;

/// How fast a simulated guest's balloon driver moves memory, KiB/s (1 GiB/s).
pub const SIM_BALLOON_RATE_KIB: u64 = 1 << 20;

/// Free memory squeezed keeps on a real host: Xen's low-memory pool (`low_mem_virq_limit`,
/// 64 MiB) and 8 MiB for the memory a domain build takes beyond the guest's pages, as
/// XenServer's squeezed (`low_mem_emergency_pool + extra_mem_to_keep`).
pub const REAL_HOST_FREE: squeezed::Kib = squeezed::Kib(72 << 10);

/// A VM's memory limits, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `memory_dynamic_min`.
    pub dynamic_min: u64,
    /// `memory_dynamic_max` (the first target).
    pub dynamic_max: u64,
    /// `memory_static_max`.
    pub static_max: u64,
}

fn kib(bytes: u64) -> squeezed::Kib {
    squeezed::Kib(bytes / 1024)
}

/// dom0's xenstore connection of a [`Backend`], as a [`Store`].
#[derive(Debug, Clone)]
pub struct BackendStore(pub Arc<Backend>);

impl Store for BackendStore {
    fn read(&self, path: &str) -> Result<Option<String>, xenbus::Error> {
        self.0.store().read(path)
    }
    fn write(&self, path: &str, value: &str) -> Result<(), xenbus::Error> {
        self.0.store().write(path, value)
    }
    fn write_all(&self, entries: &[(String, String)]) -> Result<(), xenbus::Error> {
        self.0.store().write_all(entries)
    }
    fn directory(&self, path: &str) -> Result<Vec<String>, xenbus::Error> {
        self.0.store().directory(path)
    }
    fn rm(&self, path: &str) -> Result<(), xenbus::Error> {
        self.0.store().rm(path)
    }
    fn watch(
        &self,
        path: &str,
        token: &str,
        tx: crossbeam_channel::Sender<WatchEvent>,
    ) -> Result<WatchId, xenbus::Error> {
        self.0.store().watch(path, token, tx)
    }
    fn unwatch(&self, id: WatchId) -> Result<(), xenbus::Error> {
        self.0.store().unwatch(id)
    }
    fn domain_alive(&self, domid: DomId) -> Result<bool, xenbus::Error> {
        self.0.store().domain_alive(domid)
    }
    fn set_perms(&self, path: &str, owner: DomId, readers: &[DomId]) -> Result<(), xenbus::Error> {
        self.0.store().set_perms(path, owner, readers)
    }
}

/// Time for squeezed: real time, or the simulated guests' ticks (which sleep, as the
/// simulated host's clock is the system's).
#[derive(Debug)]
pub enum Ticker {
    /// A real host.
    Real(squeezed::RealTime),
    /// A simulated host's balloon drivers.
    Sim(Arc<SimBalloons>),
}

impl squeezed::Pacer for Ticker {
    fn now(&self) -> Duration {
        match self {
            Ticker::Real(r) => r.now(),
            Ticker::Sim(b) => b.host().clock().now(),
        }
    }

    fn wait(&mut self, interval: Duration) -> squeezed::Result<()> {
        match self {
            Ticker::Real(r) => r.wait(interval),
            Ticker::Sim(b) => b
                .tick(interval)
                .map_err(|e| squeezed::Error::Host(e.to_string())),
        }
    }
}

/// squeezed on this host.
pub type Squeezer = squeezed::Squeezed<squeezed::XenHost<Ticker>>;

/// The host's memory service.
pub struct Memory {
    sq: Mutex<Squeezer>,
    backend: Arc<Backend>,
    balloons: Option<Arc<SimBalloons>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("simulated", &self.balloons.is_some())
            .finish_non_exhaustive()
    }
}

impl Memory {
    /// The service on `backend`, polling every 250 ms (50 ms on a simulated host).
    pub fn new(backend: &Arc<Backend>) -> Memory {
        let sim = backend.xen().sim_host();
        let balloons = sim.map(|h| Arc::new(SimBalloons::new(h)));
        let ticker = match &balloons {
            Some(b) => Ticker::Sim(b.clone()),
            None => Ticker::Real(squeezed::RealTime::default()),
        };
        let config = squeezed::Config {
            poll_interval: if balloons.is_some() {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(250)
            },
            // A real host keeps what Xen needs besides guests' pages free, as squeezed does
            // (`target_host_free_mem_kib`): Xen's low-memory pool and the "special" memory
            // a domain build takes beyond the domain's own pages.
            target_host_free: if balloons.is_some() {
                squeezed::Kib(0)
            } else {
                REAL_HOST_FREE
            },
            ..squeezed::Config::default()
        };
        let store: Arc<dyn Store> = Arc::new(BackendStore(backend.clone()));
        let io = squeezed::XenHost::new(backend.xen_shared(), store, ticker, squeezed::Kib(4));
        Memory {
            sq: Mutex::new(squeezed::Squeezed::new(io, config)),
            backend: backend.clone(),
            balloons,
        }
    }

    /// On a simulated host, the guests' balloon drivers run up to now (they run all the
    /// time on a real host; here they are brought up to date before every reading).
    fn catch_up(&self) {
        if let Some(b) = &self.balloons {
            let _ = b.read_targets();
            b.host().balloon_step();
        }
    }

    /// squeezed itself (locked), for what this service does not wrap.
    pub fn squeezed(&self) -> parking_lot::MutexGuard<'_, Squeezer> {
        self.sq.lock()
    }

    /// Frees `bytes` (squeezing guests when needed) and holds them for a domain being built.
    ///
    /// # Errors
    /// squeezed's: [`squeezed::Error::CannotFree`] and [`squeezed::Error::DomainsRefused`]
    /// (with a reason per domain) when the memory cannot be had.
    pub fn reserve(&self, bytes: u64) -> squeezed::Result<squeezed::ReservationId> {
        self.catch_up();
        let mut sq = self.sq.lock();
        let r = sq.reserve_memory(kib(bytes.next_multiple_of(4096)));
        if r.is_err() {
            // Give back to the guests what was squeezed in vain.
            let _ = sq.balance_memory();
        }
        r
    }

    /// Gives a reservation back (a start that failed).
    pub fn release(&self, id: squeezed::ReservationId) {
        let _ = self.sq.lock().delete_reservation(id);
    }

    /// The domain built with reservation `id` is running: its `memory/*` keys are written
    /// (owned by dom0, readable by the guest), the reservation becomes its memory, and on a
    /// simulated host its guest loads a balloon driver.
    ///
    /// # Errors
    /// A xenstore write, or squeezed's when the domain is not on the host.
    pub fn domain_built(
        &self,
        id: squeezed::ReservationId,
        domid: DomId,
        limits: Limits,
    ) -> Result<(), crate::Error> {
        let mem = format!("{}/memory", xenbus::paths::domain_path(domid));
        let ro = [
            Perm::new(DomId::DOM0, Access::None),
            Perm::new(domid, Access::Read),
        ];
        let c = self.backend.xenstore();
        c.transaction(|tx| {
            tx.write(&mem, "")?;
            tx.set_perms(&mem, &ro)?;
            for (k, v) in [
                ("static-max", limits.static_max),
                ("dynamic-min", limits.dynamic_min),
                ("dynamic-max", limits.dynamic_max),
                ("target", limits.dynamic_max),
                ("initial-reservation", limits.static_max),
            ] {
                let p = format!("{mem}/{k}");
                tx.write(&p, (v / 1024).to_string())?;
                tx.set_perms(&p, &ro)?;
            }
            Ok(())
        })?;
        if let Some(b) = &self.balloons {
            let store = self.guest_store(domid)?;
            b.load(
                domid,
                store,
                BalloonBehaviour::Ideal {
                    rate_kib: SIM_BALLOON_RATE_KIB,
                },
                Pages::ZERO,
            )?;
        }
        self.sq
            .lock()
            .transfer_reservation_to_domain(id, domid)
            .map_err(|e| crate::Error::Corrupt(format!("memory reservation: {e}")))
    }

    /// The guest's own xenstore connection (dom0's when the daemon runs elsewhere).
    fn guest_store(&self, domid: DomId) -> Result<Arc<dyn Store>, crate::Error> {
        let Some(daemon) = self.backend.xenstored() else {
            return Ok(Arc::new(BackendStore(self.backend.clone())));
        };
        let conn = daemon
            .connect_as(domid)
            .map_err(|e| crate::Error::Io("guest xenstore connection".into(), e))?;
        let client = xenstore::Client::with_transport(xenstore::FdTransport::from(conn))?;
        Ok(Arc::new(XsStore::new(client)?))
    }

    /// A domain is gone: forget its driver.
    pub fn domain_gone(&self, domid: DomId) {
        if let Some(b) = &self.balloons {
            b.remove(domid);
        }
    }

    /// Sets a running domain's dynamic range (bytes) and rebalances the host.
    ///
    /// # Errors
    /// A xenstore write; squeezed's when rebalancing fails.
    pub fn set_dynamic_range(
        &self,
        domid: DomId,
        min: u64,
        max: u64,
    ) -> Result<(), squeezed::Error> {
        let mem = format!("{}/memory", xenbus::paths::domain_path(domid));
        let store = BackendStore(self.backend.clone());
        let w = |k: &str, v: u64| {
            store
                .write(&format!("{mem}/{k}"), &(v / 1024).to_string())
                .map_err(|e| squeezed::Error::Host(format!("xenstore: {e}")))
        };
        w("dynamic-min", min)?;
        w("dynamic-max", max)?;
        self.balance()
    }

    /// Shares free memory out to the guests (squeezed's `balance_memory`).
    ///
    /// # Errors
    /// squeezed's, naming every domain given up on with a reason.
    pub fn balance(&self) -> Result<(), squeezed::Error> {
        self.catch_up();
        self.sq.lock().balance_memory()
    }

    /// One round of the balancing daemon: every domain given up on comes with its reason.
    pub fn balance_round(&self) -> squeezed::Report {
        self.catch_up();
        self.sq.lock().balance_round()
    }

    /// Free memory, bytes, with every balloon domain squeezed to its dynamic-min (XAPI's
    /// `host.compute_free_memory`, "maximum compression"), less reservations.
    ///
    /// # Errors
    /// squeezed's reading of the host.
    pub fn compute_free(&self) -> Result<u64, squeezed::Error> {
        self.catch_up();
        let mut sq = self.sq.lock();
        let host = sq.host_state()?;
        let balloon: Vec<squeezed::DomainMemory> =
            host.domains.into_iter().filter(|d| d.can_balloon).collect();
        Ok(squeezed::policy::maximum_free(host.free, &balloon, false).0 * 1024)
    }

    /// Memory the domain holds now, bytes (`tot_pages`).
    pub fn actual(&self, domid: DomId) -> Option<u64> {
        self.catch_up();
        self.backend
            .xen()
            .domain_info(domid)
            .ok()
            .map(|i| i.tot_pages.bytes())
    }
}
