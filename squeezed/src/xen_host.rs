//! [`HostIo`] over a Xen host: `xenctrl` for memory, our xenstore client for the keys.
//!
//! The same code serves a real dom0 (`xenctrl::Xen::real`, a xenstored connection) and the
//! simulated host (`Xen::sim`, the project's xenstored in process); only the [`Pacer`]
//! differs: real time on a real host, a tick of the simulated guests on `xen-sim`.
//!
//! | squeezed needs | read from / written to |
//! |---|---|
//! | free memory | `xc_physinfo`: free pages less outstanding claims |
//! | a domain's memory (`actual`), maxmem | `xc_domain_getinfolist`: `tot_pages`, `max_pages` |
//! | dynamic-min, dynamic-max, target | `/local/domain/N/memory/{dynamic-min,dynamic-max,target}` (KiB) |
//! | whether it balloons | `/local/domain/N/control/feature-balloon` = `1` (written by the guest's driver) |
//! | set a target | write `memory/target` (KiB) |
//! | set maxmem | `xc_domain_setmaxmem`, rounded up to whole pages |
//! | mark uncooperative | write (or remove) `memory/uncooperative` |
//!
//! Only domains the toolstack manages (all three `memory/*` keys present) are balloon
//! domains; others (and shut-down or dying ones) are left alone, their memory simply not
//! free. A managed domain whose keys do not parse is left out too, with the reason kept
//! ([`XenHost::ignored`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_types::{DomId, Pages};
use xenbus::Store;
use xenctrl::Xen;

use crate::driver::HostIo;
use crate::error::{Error, GivenUp, Result};
use crate::units::{DomainMemory, HostState, Kib};

/// How time passes for [`XenHost`]: the real clock, or a simulated host's ticks.
pub trait Pacer: Send {
    /// The time now, from any fixed origin.
    fn now(&self) -> Duration;
    /// Lets `interval` pass.
    ///
    /// # Errors
    /// [`Error::Host`] when time cannot pass (a simulated host that refuses).
    fn wait(&mut self, interval: Duration) -> Result<()>;
}

/// Real time: `wait` sleeps.
#[derive(Debug, Clone, Copy)]
pub struct RealTime(Instant);

impl Default for RealTime {
    fn default() -> Self {
        RealTime(Instant::now())
    }
}

impl Pacer for RealTime {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn wait(&mut self, interval: Duration) -> Result<()> {
        std::thread::sleep(interval);
        Ok(())
    }
}

/// A domain's xenstore home.
fn home(domid: DomId) -> String {
    xenbus::paths::domain_path(domid)
}

/// Ballooning on a Xen host (real or simulated) through `xenctrl` and xenstore.
pub struct XenHost<P> {
    xen: Arc<Xen>,
    store: Arc<dyn Store>,
    pacer: P,
    inaccuracy: Kib,
    ignored: Vec<GivenUp>,
}

impl<P> std::fmt::Debug for XenHost<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenHost")
            .field("xen", &self.xen.describe())
            .field("inaccuracy", &self.inaccuracy)
            .field("ignored", &self.ignored)
            .finish_non_exhaustive()
    }
}

impl<P: Pacer> XenHost<P> {
    /// Ballooning on `xen` with dom0's xenstore connection `store`; every balloon driver is
    /// allowed to stop `inaccuracy` short of its target.
    pub fn new(xen: Arc<Xen>, store: Arc<dyn Store>, pacer: P, inaccuracy: Kib) -> Self {
        XenHost {
            xen,
            store,
            pacer,
            inaccuracy,
            ignored: Vec::new(),
        }
    }

    /// The hypervisor.
    pub fn xen(&self) -> &Arc<Xen> {
        &self.xen
    }

    /// The xenstore connection.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The pacer.
    pub fn pacer(&self) -> &P {
        &self.pacer
    }

    /// Managed domains left out of the last [`HostIo::host_state`], each with the reason.
    pub fn ignored(&self) -> &[GivenUp] {
        &self.ignored
    }

    /// A KiB value at `path`: `Ok(None)` when missing, the reason when it does not parse.
    fn read_kib(&self, path: &str) -> Result<Option<Kib>, String> {
        match self.store.read(path) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => v
                .trim()
                .parse()
                .map(|k| Some(Kib(k)))
                .map_err(|_| format!("{path} is not a number of KiB: {v:?}")),
            Err(e) => Err(format!("{path} cannot be read: {e}")),
        }
    }

    /// A domain's memory as squeezed sees it; `Ok(None)` when the toolstack does not manage
    /// its memory (no `memory/*` keys).
    fn domain(&self, info: &xenctrl::DomainInfo) -> Result<Option<DomainMemory>, String> {
        let h = home(info.domid);
        let min = self.read_kib(&format!("{h}/memory/dynamic-min"))?;
        let max = self.read_kib(&format!("{h}/memory/dynamic-max"))?;
        let target = self.read_kib(&format!("{h}/memory/target"))?;
        let (Some(dynamic_min), Some(dynamic_max), Some(target)) = (min, max, target) else {
            return Ok(None);
        };
        let feature = self
            .store
            .read(&format!("{h}/control/feature-balloon"))
            .map_err(|e| format!("control/feature-balloon cannot be read: {e}"))?;
        Ok(Some(DomainMemory {
            domid: info.domid,
            can_balloon: feature.as_deref().map(str::trim) == Some("1"),
            dynamic_min,
            target,
            dynamic_max,
            actual: Kib(info.tot_pages.kib()),
            maxmem: Kib(info.max_pages.kib()),
            inaccuracy: self.inaccuracy,
        }))
    }
}

fn xen_err(e: xenctrl::Error) -> Error {
    Error::Host(e.to_string())
}

fn store_err(e: xenbus::Error) -> Error {
    Error::Host(format!("xenstore: {e}"))
}

impl<P: Pacer> HostIo for XenHost<P> {
    fn host_state(&mut self) -> Result<HostState> {
        let phys = self.xen.physinfo().map_err(xen_err)?;
        let free = phys.free_pages.0.saturating_sub(phys.outstanding_pages.0);
        let mut domains = Vec::new();
        let mut ignored = Vec::new();
        for info in self.xen.list_domains().map_err(xen_err)? {
            if info.dying() || info.is_shutdown() {
                continue;
            }
            match self.domain(&info) {
                Ok(Some(d)) => domains.push(d),
                Ok(None) => {}
                Err(reason) => ignored.push(GivenUp {
                    domid: info.domid,
                    reason,
                }),
            }
        }
        self.ignored = ignored;
        Ok(HostState {
            free: Pages(free).into(),
            domains,
        })
    }

    fn set_target(&mut self, domid: DomId, target: Kib) -> Result<()> {
        // Never leave a key behind for a domain that is gone.
        self.xen.domain_info(domid).map_err(|e| match e {
            xenctrl::Error::NoSuchDomain { .. } => Error::UnknownDomain(domid),
            e => xen_err(e),
        })?;
        self.store
            .write(
                &format!("{}/memory/target", home(domid)),
                &target.0.to_string(),
            )
            .map_err(store_err)
    }

    fn set_maxmem(&mut self, domid: DomId, maxmem: Kib) -> Result<()> {
        // Xen keeps whole pages; rounding up keeps maxmem at or above the target.
        self.xen
            .set_max_mem(domid, Pages(maxmem.0.div_ceil(4)))
            .map_err(|e| match e {
                xenctrl::Error::NoSuchDomain { .. } => Error::UnknownDomain(domid),
                e => xen_err(e),
            })
    }

    fn set_uncooperative(&mut self, domid: DomId, uncooperative: bool) -> Result<()> {
        let path = format!("{}/memory/uncooperative", home(domid));
        if uncooperative {
            self.store.write(&path, "1")
        } else {
            self.store.rm(&path)
        }
        .map_err(store_err)
    }

    fn now(&self) -> Duration {
        self.pacer.now()
    }

    fn wait(&mut self, interval: Duration) -> Result<()> {
        self.pacer.wait(interval)
    }

    fn left_out(&self) -> Vec<GivenUp> {
        self.ignored.clone()
    }
}
