//! Grant tables: map and copy other domains' granted pages, and share our own.
//!
//! - [`Gnttab`] is the mapping side (a backend): [`Gnttab::map`] maps one or a batch of grant
//!   references read-only or read-write as a [`Mapping`] that unmaps on drop and implements
//!   [`SharedMemory`], so ring and backend code is written once over `M: SharedMemory`;
//!   [`Gnttab::copy`] runs a batch of grant copies (gref → local, local → gref, gref → gref)
//!   with a `GNTST_*` status per segment.
//! - [`Gntshr`] is the granting side (a frontend): [`Gntshr::share`] allocates pages, grants
//!   them to a domain and maps them for us; dropping the [`SharedPages`] revokes the grants.
//!   Both sides can ask to be "notified on unmap" ([`UnmapNotify`]): a byte cleared and/or an
//!   event sent when the mapping goes away, even if the process dies.
//!
//! Backends: **real** Xen through `/dev/xen/gntdev` and `/dev/xen/gntalloc`, driven with their
//! ioctls directly (libxengnttab/libxengntshr wrap the same ioctls; using them would add a
//! run-time library and logger without adding anything, and the ioctls give us the per-segment
//! statuses of a batched grant copy and the mapping index needed for unmap notification), and
//! the **simulated** host ([`xen_sim`]), where each domain's memory is a memfd and a mapping
//! aliases the granting domain's page, with Xen's grant rules and statuses (see
//! [`xen_sim::grant`]).
//!
//! ```
//! use gnttab::{Access, Gnttab};
//! use xen_types::mem::SharedMemoryExt;
//! use xen_types::{DomId, Pages};
//!
//! let host = xen_sim::Host::default();
//! // A guest page granted to dom0 (dom0 grants to itself here; see the tests for guests).
//! let pfn = host.alloc_pages(DomId::DOM0, 1).unwrap()[0];
//! let gref = host.grant_access(DomId::DOM0, DomId::DOM0, pfn, false).unwrap();
//! let guest_view = host.guest_pages(DomId::DOM0, &[pfn]).unwrap();
//!
//! let gt = Gnttab::open_sim(&host, DomId::DOM0).unwrap();
//! let map = gt.map(DomId::DOM0, &[gref], Access::ReadWrite).unwrap();
//! map.write_obj(0, 0x1234_u32).unwrap();
//! assert_eq!(guest_view.read_obj::<u32>(0).unwrap(), 0x1234); // the same page
//! ```

mod real;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, GrantRef};

pub use xen_sim::grant::{CopyDest, CopySegment, CopySource, GrantStatus, UnmapNotify};

/// The grant-mapping device.
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";
/// The grant-allocation (sharing) device.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Xen device is missing: this is not a Xen dom0 (or the driver is not loaded).
    #[error(
        "{path} cannot be opened ({errno}): not running in a Xen dom0, or the driver is not loaded"
    )]
    NotXen {
        /// The device path.
        path: &'static str,
        /// Why `open` failed.
        errno: Errno,
    },
    /// An operation failed with an errno.
    #[error("{op} failed: {errno}")]
    Op {
        /// What was attempted.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// Mapping a batch failed; nothing was mapped. `statuses` holds the `GNTST_*` status of
    /// each reference where the backend reports them (the simulated host does; gntdev only
    /// reports `EINVAL`, leaving it empty).
    #[error("grant map failed: {statuses:?}")]
    Map {
        /// Status of each reference, in order.
        statuses: Vec<GrantStatus>,
    },
}

impl Error {
    /// The errno behind the error (`EINVAL` for a failed map, as gntdev reports it).
    pub fn errno(&self) -> Errno {
        match self {
            Error::NotXen { errno, .. } | Error::Op { errno, .. } => *errno,
            Error::Map { .. } => Errno::EINVAL,
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn op(op: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Op { op, errno }
}

/// Read-only or read-write access to granted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only (`GNTMAP_readonly`, a read-only grant).
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

impl Access {
    fn writable(self) -> bool {
        self == Access::ReadWrite
    }
}

enum MapBackend {
    Real(Arc<OwnedFd>),
    Sim { host: xen_sim::Host, dom: DomId },
}

/// The mapping side of grant tables (`/dev/xen/gntdev`, or a simulated domain).
pub struct Gnttab {
    backend: MapBackend,
}

impl std::fmt::Debug for Gnttab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            MapBackend::Real(fd) => f
                .debug_tuple("Gnttab::Real")
                .field(&fd.as_raw_fd())
                .finish(),
            MapBackend::Sim { dom, .. } => f.debug_tuple("Gnttab::Sim").field(dom).finish(),
        }
    }
}

impl Gnttab {
    /// Opens `/dev/xen/gntdev`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Gnttab> {
        Ok(Gnttab {
            backend: MapBackend::Real(Arc::new(real::open_device(GNTDEV_DEVICE)?)),
        })
    }

    /// A mapping handle on the simulated `host`, acting as domain `dom` (`ESRCH` if unknown).
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Gnttab> {
        if !host.lock().domains.contains_key(&dom) {
            return Err(op("open")(Errno::ESRCH));
        }
        Ok(Gnttab {
            backend: MapBackend::Sim {
                host: host.clone(),
                dom,
            },
        })
    }

    /// Maps the pages `refs` granted by `dom`, contiguously and in order
    /// (`IOCTL_GNTDEV_MAP_GRANT_REF` + `mmap`). All or nothing.
    pub fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping> {
        if refs.is_empty() {
            return Err(op("map")(Errno::EINVAL));
        }
        match &self.backend {
            MapBackend::Real(fd) => Ok(Mapping {
                inner: MappingInner::Real(real::GntdevMapping::new(
                    fd,
                    dom,
                    refs,
                    access.writable(),
                )?),
            }),
            MapBackend::Sim { host, dom: me } => host
                .grant_map(*me, dom, refs, access.writable())
                .map(|m| Mapping {
                    inner: MappingInner::Sim(m),
                })
                .map_err(|statuses| Error::Map { statuses }),
        }
    }

    /// Maps one page (see [`map`](Gnttab::map)).
    pub fn map_one(&self, dom: DomId, gref: GrantRef, access: Access) -> Result<Mapping> {
        self.map(dom, &[gref], access)
    }

    /// Runs a batch of grant copies (`IOCTL_GNTDEV_GRANT_COPY` / `GNTTABOP_copy`). Each
    /// segment gets its own status; the call fails only if the batch could not be submitted.
    pub fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()> {
        match &self.backend {
            MapBackend::Real(fd) => real::grant_copy(fd, segs),
            MapBackend::Sim { host, dom } => {
                host.grant_copy(*dom, segs);
                Ok(())
            }
        }
    }

    /// The device descriptor (real backend only).
    pub fn raw_fd(&self) -> Option<RawFd> {
        match &self.backend {
            MapBackend::Real(fd) => Some(fd.as_raw_fd()),
            MapBackend::Sim { .. } => None,
        }
    }
}

enum MappingInner {
    Real(real::GntdevMapping),
    Sim(xen_sim::grant::GrantMapping),
}

/// Granted pages mapped into this process; unmapped on drop.
pub struct Mapping {
    inner: MappingInner,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len())
            .field("writable", &self.writable())
            .finish()
    }
}

impl Mapping {
    /// Asks for `notify` when this mapping goes away (`IOCTL_GNTDEV_SET_UNMAP_NOTIFY`): the
    /// frontend learns the backend is gone even if it crashes. Clearing a byte needs a
    /// writable mapping (`EINVAL` otherwise or if the offset is outside the mapping).
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        if notify.clear_byte.is_some_and(|o| o >= self.len()) {
            return Err(op("set_unmap_notify")(Errno::EINVAL));
        }
        match &mut self.inner {
            MappingInner::Real(m) => m.set_unmap_notify(notify),
            MappingInner::Sim(m) => m.set_unmap_notify(notify),
        }
        .map_err(op("set_unmap_notify"))
    }
}

// SAFETY: forwards to the backend mapping, owned by self, valid and fixed until drop, and
// writable exactly when mapped writable.
unsafe impl SharedMemory for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        match &self.inner {
            MappingInner::Real(m) => m.as_ptr(),
            MappingInner::Sim(m) => m.as_ptr(),
        }
    }
    fn len(&self) -> usize {
        match &self.inner {
            MappingInner::Real(m) => m.len(),
            MappingInner::Sim(m) => m.len(),
        }
    }
    fn writable(&self) -> bool {
        match &self.inner {
            MappingInner::Real(m) => m.writable(),
            MappingInner::Sim(m) => m.writable(),
        }
    }
}

enum ShareBackend {
    Real(Arc<OwnedFd>),
    Sim { host: xen_sim::Host, dom: DomId },
}

/// The granting side (`/dev/xen/gntalloc`, or a simulated domain).
pub struct Gntshr {
    backend: ShareBackend,
}

impl std::fmt::Debug for Gntshr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            ShareBackend::Real(fd) => f
                .debug_tuple("Gntshr::Real")
                .field(&fd.as_raw_fd())
                .finish(),
            ShareBackend::Sim { dom, .. } => f.debug_tuple("Gntshr::Sim").field(dom).finish(),
        }
    }
}

impl Gntshr {
    /// Opens `/dev/xen/gntalloc`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Gntshr> {
        Ok(Gntshr {
            backend: ShareBackend::Real(Arc::new(real::open_device(GNTALLOC_DEVICE)?)),
        })
    }

    /// A sharing handle on the simulated `host`, acting as domain `dom`.
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Gntshr> {
        if !host.lock().domains.contains_key(&dom) {
            return Err(op("open")(Errno::ESRCH));
        }
        Ok(Gntshr {
            backend: ShareBackend::Sim {
                host: host.clone(),
                dom,
            },
        })
    }

    /// Allocates `count` zeroed pages, grants them to `dom` (read-only or read-write for it)
    /// and maps them read-write for us (`IOCTL_GNTALLOC_ALLOC_GREF` + `mmap`;
    /// `xengntshr_share_pages`).
    pub fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages> {
        if count == 0 {
            return Err(op("share")(Errno::EINVAL));
        }
        Ok(SharedPages {
            inner: match &self.backend {
                ShareBackend::Real(fd) => {
                    SharedInner::Real(real::GntallocArea::new(fd, dom, count, access.writable())?)
                }
                ShareBackend::Sim { host, dom: me } => SharedInner::Sim(
                    host.share_pages(*me, dom, count, access.writable())
                        .map_err(op("share"))?,
                ),
            },
        })
    }
}

enum SharedInner {
    Real(real::GntallocArea),
    Sim(xen_sim::grant::SharedPages),
}

/// Pages we share with another domain: the grant references to hand over (through
/// xenstore), and our own read-write mapping. Dropping it revokes the grants (deferred by
/// the driver while the peer still maps them) and frees the pages.
pub struct SharedPages {
    inner: SharedInner,
}

impl std::fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPages")
            .field("refs", &self.refs())
            .finish()
    }
}

impl SharedPages {
    /// The grant references, one per page, in order.
    pub fn refs(&self) -> &[GrantRef] {
        match &self.inner {
            SharedInner::Real(a) => a.refs(),
            SharedInner::Sim(s) => s.refs(),
        }
    }

    /// Asks for `notify` when we release the pages (`IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`): the
    /// peer learns we are gone even if we crash. `EINVAL` for an offset outside the area.
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        if notify.clear_byte.is_some_and(|o| o >= self.len()) {
            return Err(op("set_unmap_notify")(Errno::EINVAL));
        }
        match &mut self.inner {
            SharedInner::Real(a) => a.set_unmap_notify(notify),
            SharedInner::Sim(s) => s.set_unmap_notify(notify),
        }
        .map_err(op("set_unmap_notify"))
    }
}

// SAFETY: forwards to the backend area, owned by self, mapped read-write and fixed until drop.
unsafe impl SharedMemory for SharedPages {
    fn as_ptr(&self) -> *mut u8 {
        match &self.inner {
            SharedInner::Real(a) => a.as_ptr(),
            SharedInner::Sim(s) => s.as_ptr(),
        }
    }
    fn len(&self) -> usize {
        match &self.inner {
            SharedInner::Real(a) => a.len(),
            SharedInner::Sim(s) => s.len(),
        }
    }
}
