//! Safe domain and host control over libxenctrl/libxenguest, with a simulated-host backend.
//!
//! One trait, [`XenControl`], has two backends:
//!
//! - [`Real`]: libxenctrl and libxenguest (loaded at run time through `xen-sys`) over
//!   `/dev/xen/privcmd`, in a Xen dom0;
//! - `Sim` (feature `sim`, on by default): a `xen_sim::Host`, which keeps Xen's rules and
//!   errnos, for tests, examples and development on any Linux machine.
//!
//! [`Xen`] is a handle that holds either; [`Xen::describe`] says which. Errors are [`Error`]:
//! typed variants for what callers act on ([`Error::NoSuchDomain`], [`Error::OutOfMemory`],
//! [`Error::NotOnXen`], [`Error::PrivcmdUnusable`], ...), the errno always kept.
//!
//! ```
//! # #[cfg(feature = "sim")] {
//! use xenctrl::{DomainConfig, ShutdownReason, Xen};
//! use xen_types::Pages;
//!
//! let xen = Xen::sim(xen_sim::Host::default());
//! let before = xen.physinfo()?.free_pages;
//! let dom = xen.create_domain(&DomainConfig::pvh(2))?;
//! xen.set_max_vcpus(dom, 2)?;
//! xen.set_max_mem(dom, Pages::from_mib(64))?;
//! xen.increase_reservation(dom, Pages::from_mib(64))?;
//! assert!(xen.domain_info(dom)?.paused());
//! xen.unpause(dom)?;
//! xen.shutdown(dom, ShutdownReason::Poweroff)?;
//! assert_eq!(xen.domain_info(dom)?.shutdown_reason, Some(ShutdownReason::Poweroff));
//! xen.destroy(dom)?;
//! assert!(matches!(xen.pause(dom), Err(xenctrl::Error::NoSuchDomain { .. })));
//! assert_eq!(xen.physinfo()?.free_pages, before);
//! # }
//! # Ok::<(), xenctrl::Error>(())
//! ```

mod console;
mod error;
mod real;
#[cfg(feature = "sim")]
mod sim;
mod types;

use std::fmt;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

pub use console::{ConsoleRead, ForeignMapping};
pub use error::{Error, Result};
pub use real::{Real, PRIVCMD};
#[cfg(feature = "sim")]
pub use sim::Sim;
pub use types::*;
pub use xen_types::{DomId, EvtchnPort, Mfn, Pages, Pfn, VcpuId};

/// How many domains [`XenControl::list_domains`] asks for per `getinfolist` call.
pub const GETINFOLIST_CHUNK: u32 = 256;

/// Memory libxl adds to a guest's target for its maximum (`LIBXL_MAXMEM_CONSTANT`, 1 MiB).
pub const MAXMEM_SLACK: Pages = Pages::from_mib(1);

/// Host and domain control: what a toolstack asks of the hypervisor.
///
/// Every method says which libxenctrl call it wraps; the simulated backend applies the same
/// rules. Implementations are thread-safe.
pub trait XenControl: Send + Sync + fmt::Debug {
    /// The backend's name (`"real"`, `"sim"`).
    fn backend(&self) -> &'static str;

    /// True for a simulated host (no hypervisor behind it).
    fn is_simulated(&self) -> bool {
        false
    }

    /// The hypervisor version (`xc_version(XENVER_version)` and `XENVER_extraversion`).
    fn version(&self) -> Result<XenVersion>;

    /// The host's CPUs, memory and capabilities (`xc_physinfo`).
    fn physinfo(&self) -> Result<PhysInfo>;

    /// Up to `max` domains with ids from `first` up (`xc_domain_getinfolist`).
    fn domain_info_chunk(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>>;

    /// Creates a domain, paused and empty (`xc_domain_create`).
    fn create_domain(&self, config: &DomainConfig) -> Result<DomId>;

    /// Creates the domain's vCPUs; `max` must be the creation maximum
    /// (`xc_domain_max_vcpus`).
    fn set_max_vcpus(&self, dom: DomId, max: u32) -> Result<()>;

    /// Sets the most memory the domain may have (`xc_domain_setmaxmem`).
    fn set_max_mem(&self, dom: DomId, max: Pages) -> Result<()>;

    /// Claims memory for the domain (`xc_domain_claim_pages`, Xen 4.17's
    /// `XENMEM_claim_pages`): `pages` is its total once the claim is used, and the difference
    /// to its current pages is held out of other domains' reach ([`PhysInfo::outstanding_pages`],
    /// [`DomainInfo::outstanding_pages`]); `Pages::ZERO` drops the claim. A second claim, or
    /// one not above the domain's pages or above its maximum, is [`Error::InvalidArgument`];
    /// more than is free and unclaimed, [`Error::OutOfMemory`].
    fn claim_pages(&self, dom: DomId, pages: Pages) -> Result<()>;

    /// Populates guest frames (`xc_domain_populate_physmap`); anything short of all of them
    /// is [`Error::OutOfMemory`].
    fn populate_physmap(&self, dom: DomId, pfns: &[Pfn]) -> Result<()>;

    /// Gives the domain more pages (`xc_domain_increase_reservation_exact`).
    fn increase_reservation(&self, dom: DomId, pages: Pages) -> Result<()>;

    /// Takes frames away from the domain (`xc_domain_decrease_reservation_exact`).
    fn decrease_reservation(&self, dom: DomId, pfns: &[Pfn]) -> Result<()>;

    /// Pauses the domain (`xc_domain_pause`); pauses nest.
    fn pause(&self, dom: DomId) -> Result<()>;

    /// Undoes one pause (`xc_domain_unpause`); a domain not paused is
    /// [`Error::InvalidArgument`].
    fn unpause(&self, dom: DomId) -> Result<()>;

    /// Shuts the domain down with `reason` (`xc_domain_shutdown`).
    fn shutdown(&self, dom: DomId, reason: ShutdownReason) -> Result<()>;

    /// Destroys the domain (`xc_domain_destroy`).
    fn destroy(&self, dom: DomId) -> Result<()>;

    /// One vCPU's state (`xc_vcpu_getinfo`).
    fn vcpu_info(&self, dom: DomId, vcpu: VcpuId) -> Result<VcpuInfo>;

    /// Allocates an unbound event channel in `dom` for `remote` to bind
    /// (`xc_evtchn_alloc_unbound`).
    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<EvtchnPort>;

    /// Loads a guest into a created domain with the given console and xenstore event
    /// channels (libxenguest's `xc_dom_*` sequence, as libxl's `libxl__build_pv`). Most
    /// callers want [`XenControl::build`].
    fn build_image(
        &self,
        dom: DomId,
        image: &GuestImage,
        console_port: EvtchnPort,
        store_port: EvtchnPort,
    ) -> Result<BuiltGuest>;

    /// Reads the hypervisor's console ring from `index` (`xc_readconsolering`,
    /// incremental, not clearing): up to `max` bytes and the index after them. An index no
    /// longer in the ring (0 at first) reads from the oldest byte kept.
    fn read_console_ring(&self, index: u32, max: usize) -> Result<ConsoleRead> {
        let _ = (index, max);
        Err(Error::Unsupported {
            op: "xc_readconsolering",
            backend: self.backend(),
        })
    }

    /// Maps `frames` of `dom` into this process, in order (`xenforeignmemory_map`):
    /// machine frames of a PV guest, guest frames of a translated one.
    fn map_foreign(&self, dom: DomId, frames: &[u64], writable: bool) -> Result<ForeignMapping> {
        let _ = (dom, frames, writable);
        Err(Error::Unsupported {
            op: "xenforeignmemory_map",
            backend: self.backend(),
        })
    }

    /// Arms a new watchdog timer of dom0 (`xc_watchdog(xch, 0, secs)`, as `xenwatchdogd`
    /// does): unless kicked ([`XenControl::watchdog_kick`]) or disarmed within `timeout`
    /// (whole seconds, at least 1), Xen shuts dom0 down with `SHUTDOWN_watchdog`, which
    /// reboots the machine and with it every domain. Xen has two timers per domain; a third
    /// is `ENOSPC` ([`Error::Os`]).
    fn watchdog_arm(&self, timeout: std::time::Duration) -> Result<WatchdogId> {
        let _ = timeout;
        Err(Error::Unsupported {
            op: "xc_watchdog",
            backend: self.backend(),
        })
    }

    /// Restarts watchdog `id` with `timeout` from now (`xc_watchdog(xch, id, secs)`). An id
    /// not armed is [`Error::InvalidArgument`].
    fn watchdog_kick(&self, id: WatchdogId, timeout: std::time::Duration) -> Result<()> {
        let _ = (id, timeout);
        Err(Error::Unsupported {
            op: "xc_watchdog",
            backend: self.backend(),
        })
    }

    /// Stops and frees watchdog `id` (`xc_watchdog(xch, id, 0)`). An id not armed is
    /// [`Error::InvalidArgument`].
    fn watchdog_disarm(&self, id: WatchdogId) -> Result<()> {
        let _ = id;
        Err(Error::Unsupported {
            op: "xc_watchdog",
            backend: self.backend(),
        })
    }

    /// Saves `dom` to `fd` as `xl save` does (libxenguest's `xc_domain_save`, non-live): first
    /// `suspend` runs, which must get the guest to suspend itself (the toolstack writes
    /// `control/shutdown` = `suspend` and waits, as libxl's `libxl__domain_suspend`);
    /// then the domain must be shut down for suspend ([`Error::NotSuspended`] otherwise,
    /// as `xc_domain_save` checks), and its memory and vCPU state are written to `fd`. The
    /// domain is left shut down: the caller destroys it, or resumes it
    /// ([`XenControl::resume_domain`]) when the save failed after the guest suspended.
    /// An error of `suspend` is returned as it is.
    fn save_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        suspend: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let _ = (dom, fd, suspend);
        Err(Error::Unsupported {
            op: "xc_domain_save",
            backend: self.backend(),
        })
    }

    /// Restores a guest saved by [`XenControl::save_domain`] from `fd` into `dom`, a
    /// created, empty domain with its vCPUs and maximum memory set
    /// (`xc_domain_restore`); its rings use `rings`' event channels. The domain stays
    /// paused. Most callers want [`XenControl::restore`].
    fn restore_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        rings: &RestoreRings,
    ) -> Result<RestoredGuest> {
        let _ = (dom, fd, rings);
        Err(Error::Unsupported {
            op: "xc_domain_restore",
            backend: self.backend(),
        })
    }

    /// Resumes a domain its guest shut down for suspend, in place (`xc_domain_resume`,
    /// cooperative: the guest sees its suspend cancelled and runs on).
    fn resume_domain(&self, dom: DomId) -> Result<()> {
        let _ = dom;
        Err(Error::Unsupported {
            op: "xc_domain_resume",
            backend: self.backend(),
        })
    }

    /// Restores a guest as libxl does (`libxl__build_pre`, then
    /// [`XenControl::restore_domain`]): raises the domain's maximum memory to `memory` plus
    /// [`MAXMEM_SLACK`] and allocates the console and xenstore event channels for
    /// `console_domid` and `store_domid`.
    fn restore(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        memory: Pages,
        store_domid: DomId,
        console_domid: DomId,
    ) -> Result<RestoredGuest> {
        self.set_max_mem(dom, memory + MAXMEM_SLACK)?;
        let store_port = self.evtchn_alloc_unbound(dom, store_domid)?;
        let console_port = self.evtchn_alloc_unbound(dom, console_domid)?;
        self.restore_domain(
            dom,
            fd,
            &RestoreRings {
                console_port,
                console_domid,
                store_port,
                store_domid,
            },
        )
    }

    /// One domain's information.
    fn domain_info(&self, dom: DomId) -> Result<DomainInfo> {
        self.domain_info_chunk(dom, 1)?
            .into_iter()
            .find(|i| i.domid == dom)
            .ok_or(Error::NoSuchDomain {
                op: "xc_domain_getinfolist",
                dom,
            })
    }

    /// All domains, dying ones included, in id order (`xc_domain_getinfolist` in chunks of
    /// [`GETINFOLIST_CHUNK`]).
    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let mut all = Vec::new();
        let mut first = DomId(0);
        loop {
            let chunk = self.domain_info_chunk(first, GETINFOLIST_CHUNK)?;
            let full = chunk.len() == GETINFOLIST_CHUNK as usize;
            let next = chunk.last().map(|i| DomId(i.domid.0.saturating_add(1)));
            all.extend(chunk);
            match next {
                Some(n) if full && n.is_ordinary() => first = n,
                _ => break,
            }
        }
        Ok(all)
    }

    /// Builds a guest as libxl does: raises the domain's maximum memory to the guest's memory
    /// plus [`MAXMEM_SLACK`], allocates the console and xenstore event channels (unbound,
    /// for their backend domains), and loads the image ([`XenControl::build_image`]).
    fn build(&self, dom: DomId, image: &GuestImage) -> Result<BuiltGuest> {
        self.set_max_mem(dom, image.memory + MAXMEM_SLACK)?;
        let store_port = self.evtchn_alloc_unbound(dom, image.store_domid)?;
        let console_port = self.evtchn_alloc_unbound(dom, image.console_domid)?;
        self.build_image(dom, image, console_port, store_port)
    }
}

/// After a save's suspend step: the domain must be shut down for suspend, as
/// `xc_domain_save` checks ([`Error::NotSuspended`]).
pub(crate) fn check_suspended(x: &(impl XenControl + ?Sized), dom: DomId) -> Result<()> {
    let info = x.domain_info(dom)?;
    if info.is_shutdown() && info.shutdown_reason == Some(ShutdownReason::Suspend) {
        Ok(())
    } else {
        Err(Error::NotSuspended {
            dom,
            reason: info.shutdown_reason.filter(|_| info.is_shutdown()),
        })
    }
}

/// A file on a duplicate of `fd` (same open file and offset), for a saved image.
pub(crate) fn stream_file(op: &'static str, fd: BorrowedFd<'_>) -> Result<std::fs::File> {
    fd.try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|source| Error::Stream { op, source })
}

/// Which backend [`Xen::open`] uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// The real hypervisor (libxenctrl).
    Real,
    /// A simulated host.
    #[cfg(feature = "sim")]
    Sim(xen_sim::Host),
}

/// A handle on either backend, used through [`XenControl`] (it dereferences to it).
#[derive(Debug)]
pub struct Xen {
    inner: Box<dyn XenControl>,
    description: String,
    /// The simulated host behind a `Sim` backend.
    #[cfg(feature = "sim")]
    sim: Option<xen_sim::Host>,
}

/// What [`Xen::describe`] says of the real hypervisor.
const REAL: &str = "the Xen hypervisor (libxenctrl over /dev/xen/privcmd)";
/// What [`Xen::describe`] says of a simulated host.
#[cfg(feature = "sim")]
const SIMULATED: &str = "a simulated Xen host (xen-sim), not a hypervisor";

impl Xen {
    /// Opens `backend`.
    pub fn open(backend: Backend) -> Result<Xen> {
        match backend {
            Backend::Real => Xen::real(),
            #[cfg(feature = "sim")]
            Backend::Sim(h) => Ok(Xen::sim(h)),
        }
    }

    /// The real hypervisor; [`Error::NotOnXen`] when this is not a Xen dom0,
    /// [`Error::LibraryMissing`] when libxenctrl is not installed.
    pub fn real() -> Result<Xen> {
        Ok(Xen {
            inner: Box::new(Real::open()?),
            description: REAL.to_string(),
            #[cfg(feature = "sim")]
            sim: None,
        })
    }

    /// The real hypervisor on a Xen host, a new simulated host (default configuration,
    /// feature `sim`) elsewhere; never the simulator in place of a hypervisor that is there
    /// but unusable. See [`Xen::auto_at`]; [`Xen::describe`] says which was chosen and why.
    pub fn auto() -> Result<Xen> {
        Xen::auto_at(Path::new("/"))
    }

    /// [`Xen::auto`] with the machine's files under `root` (`/` for this machine; another
    /// directory for tests):
    ///
    /// - `root/dev/xen/privcmd` exists: it must open read-write and be a character device
    ///   ([`Error::PrivcmdUnusable`] with the reason otherwise); then the real hypervisor
    ///   ([`Xen::real`], which opens the machine's own `/dev/xen/privcmd`);
    /// - no privcmd but `root/proc/xen` exists (this machine runs on Xen):
    ///   [`Error::PrivcmdUnusable`];
    /// - neither: not a Xen host, so a simulated host with the `sim` feature
    ///   ([`Error::NotOnXen`] without it).
    pub fn auto_at(root: &Path) -> Result<Xen> {
        let privcmd = root.join("dev/xen/privcmd");
        let proc_xen = root.join("proc/xen");
        if privcmd.symlink_metadata().is_ok() {
            check_privcmd(&privcmd)?;
            return Xen::real();
        }
        if proc_xen.exists() {
            return Err(Error::PrivcmdUnusable {
                path: privcmd,
                reason: format!(
                    "it is missing, though {} exists (is the xen-privcmd driver loaded?)",
                    proc_xen.display()
                ),
                errno: Some(xen_types::Errno::ENOENT),
            });
        }
        #[cfg(feature = "sim")]
        {
            let host = xen_sim::Host::default();
            Ok(Xen {
                inner: Box::new(Sim::new(host.clone())),
                sim: Some(host),
                description: format!(
                    "{SIMULATED}: chosen because neither {} nor {} exists",
                    privcmd.display(),
                    proc_xen.display()
                ),
            })
        }
        #[cfg(not(feature = "sim"))]
        Err(Error::NotOnXen)
    }

    /// The simulated host `host`.
    #[cfg(feature = "sim")]
    pub fn sim(host: xen_sim::Host) -> Xen {
        Xen {
            inner: Box::new(Sim::new(host.clone())),
            description: SIMULATED.to_string(),
            sim: Some(host),
        }
    }

    /// The simulated host behind this handle, if it is one (what tests and simulated guests
    /// drive: its clock, its guests' balloon drivers).
    #[cfg(feature = "sim")]
    pub fn sim_host(&self) -> Option<xen_sim::Host> {
        self.sim.clone()
    }

    /// Wraps any backend.
    pub fn from_backend(backend: Box<dyn XenControl>) -> Xen {
        let description = format!("the {} backend", backend.backend());
        Xen {
            inner: backend,
            description,
            #[cfg(feature = "sim")]
            sim: None,
        }
    }

    /// Which hypervisor serves this handle, and for [`Xen::auto`] why it was chosen, as a
    /// sentence to show users (e.g. "a simulated Xen host (xen-sim), not a hypervisor:
    /// chosen because neither /dev/xen/privcmd nor /proc/xen exists").
    pub fn describe(&self) -> &str {
        &self.description
    }
}

/// Checks that the privcmd device at `path` opens read-write and is a character device.
fn check_privcmd(path: &Path) -> Result<()> {
    let unusable = |reason: String, errno: Option<xen_types::Errno>| Error::PrivcmdUnusable {
        path: path.to_path_buf(),
        reason,
        errno,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            unusable(
                format!("it cannot be opened: {e}"),
                e.raw_os_error().map(xen_types::Errno),
            )
        })?;
    let meta = file.metadata().map_err(|e| {
        unusable(
            format!("it cannot be examined: {e}"),
            e.raw_os_error().map(xen_types::Errno),
        )
    })?;
    if !meta.file_type().is_char_device() {
        return Err(unusable(
            "it is not a character device".to_string(),
            Some(xen_types::Errno::ENODEV),
        ));
    }
    Ok(())
}

impl std::ops::Deref for Xen {
    type Target = dyn XenControl;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}
