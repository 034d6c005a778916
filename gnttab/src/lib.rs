//! Grant tables: map and copy other domains' granted pages, and share our own.
//!
//! Two traits, each with a real and a simulated implementation:
//!
//! - [`GrantMap`] is the mapping side (a backend): [`GrantMap::map`] maps one or a batch of
//!   grant references read-only or read-write as a [`Mapping`] that unmaps on drop and
//!   implements [`SharedMemory`], so ring and backend code is written once over
//!   `M: SharedMemory`; [`GrantMap::copy`] runs a batch of grant copies (gref → local,
//!   local → gref, gref → gref) with a `GNTST_*` status per segment.
//! - [`GrantShare`] is the granting side (a frontend): [`GrantShare::share`] allocates pages,
//!   grants them to a domain and maps them for us; dropping the [`SharedPages`] revokes the
//!   grants. Both sides can ask to be "notified on unmap" ([`UnmapNotify`]): a byte cleared
//!   and/or an event sent when the mapping goes away, even if the process dies.
//!
//! Real Xen: [`RealGnttab`] over `/dev/xen/gntdev` and [`RealGntshr`] over
//! `/dev/xen/gntalloc`, driven with their ioctls directly (libxengnttab/libxengntshr wrap the
//! same ioctls; using them would add a run-time library and logger without adding anything,
//! and the ioctls give us the per-segment statuses of a batched grant copy and the mapping
//! index needed for unmap notification). The simulated host (feature `sim`, on by default):
//! `SimGnttab` and `SimGntshr`, where each domain's memory is a memfd and a mapping aliases
//! the granting domain's page, with Xen's grant rules and statuses (see `xen_sim::grant`).
//! [`Gnttab`] and [`Gntshr`] are handles on either, chosen at run time.
//!
//! ```
//! # #[cfg(feature = "sim")] {
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
//! # }
//! ```

mod real;
#[cfg(feature = "sim")]
mod sim;

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, GrantRef};

pub use real::{RealGntshr, RealGnttab};
#[cfg(feature = "sim")]
pub use sim::{SimGntshr, SimGnttab};
pub use xen_types::{CopyDest, CopySegment, CopySource, GrantStatus, UnmapNotify};

/// The grant-mapping device.
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";
/// The grant-allocation (sharing) device.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

pub(crate) fn op(op: &'static str) -> impl FnOnce(Errno) -> Error {
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
    /// True for [`Access::ReadWrite`].
    pub fn writable(self) -> bool {
        self == Access::ReadWrite
    }
}

/// The mapping side of grant tables (`/dev/xen/gntdev`, `xengnttab_*`), acting as one
/// domain. Implementations are thread-safe.
pub trait GrantMap: Send + Sync + fmt::Debug {
    /// Maps the pages `refs` granted by `dom`, contiguously and in order
    /// (`IOCTL_GNTDEV_MAP_GRANT_REF` + `mmap`). All or nothing; `EINVAL` for no refs.
    fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping>;

    /// Runs a batch of grant copies (`IOCTL_GNTDEV_GRANT_COPY` / `GNTTABOP_copy`). Each
    /// segment gets its own status; the call fails only if the batch could not be submitted.
    fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()>;

    /// Maps one page (see [`map`](GrantMap::map)).
    fn map_one(&self, dom: DomId, gref: GrantRef, access: Access) -> Result<Mapping> {
        self.map(dom, &[gref], access)
    }
}

/// The granting side of grant tables (`/dev/xen/gntalloc`, `xengntshr_*`), acting as one
/// domain. Implementations are thread-safe.
pub trait GrantShare: Send + Sync + fmt::Debug {
    /// Allocates `count` zeroed pages, grants them to `dom` (read-only or read-write for it)
    /// and maps them read-write for us (`IOCTL_GNTALLOC_ALLOC_GREF` + `mmap`;
    /// `xengntshr_share_pages`). `EINVAL` for no pages.
    fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages>;
}

/// What a [`GrantMap`] implementation hands out for one mapping: granted pages mapped into
/// this process, fixed in place and unmapped when dropped. [`Mapping`] wraps it.
pub trait RawMapping: SharedMemory + fmt::Debug {
    /// Asks for `notify` when the mapping goes away (`IOCTL_GNTDEV_SET_UNMAP_NOTIFY`).
    /// [`Mapping::set_unmap_notify`] has checked that a byte to clear lies inside.
    fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()>;
}

/// What a [`GrantShare`] implementation hands out for one shared area: our pages, mapped
/// read-write and fixed in place; dropping it revokes the grants. [`SharedPages`] wraps it.
pub trait RawSharedPages: SharedMemory + fmt::Debug {
    /// The grant references, one per page, in order.
    fn refs(&self) -> &[GrantRef];
    /// Asks for `notify` when we release the pages (`IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`).
    /// [`SharedPages::set_unmap_notify`] has checked that a byte to clear lies inside.
    fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()>;
}

/// Granted pages mapped into this process; unmapped on drop. Reading and writing them
/// ([`SharedMemory`]) costs no call into the backend: the address is kept here.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    raw: Box<dyn RawMapping>,
}

// SAFETY: the pointer is into `raw`'s mapping, which is `Send + Sync` (a `SharedMemory`) and
// owned by self; all access goes through volatile `SharedMemory` accessors.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .field("raw", &self.raw)
            .finish()
    }
}

impl Mapping {
    /// Wraps a backend's mapping; `EINVAL` for an empty one (a null address).
    pub fn new(raw: Box<dyn RawMapping>) -> Result<Mapping> {
        let ptr = NonNull::new(raw.as_ptr()).ok_or_else(|| op("map")(Errno::EINVAL))?;
        Ok(Mapping {
            ptr,
            len: raw.len(),
            writable: raw.writable(),
            raw,
        })
    }

    /// Asks for `notify` when this mapping goes away (`IOCTL_GNTDEV_SET_UNMAP_NOTIFY`): the
    /// frontend learns the backend is gone even if it crashes. Clearing a byte needs a
    /// writable mapping (`EINVAL` otherwise or if the offset is outside the mapping).
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        if notify
            .clear_byte
            .is_some_and(|o| o >= self.len || !self.writable)
        {
            return Err(op("set_unmap_notify")(Errno::EINVAL));
        }
        self.raw.set_unmap_notify(notify)
    }
}

// SAFETY: the backend's mapping is owned by self, valid and fixed until drop (its
// `SharedMemory` contract); address, length and writability were read from it once.
unsafe impl SharedMemory for Mapping {
    #[inline]
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn writable(&self) -> bool {
        self.writable
    }
}

/// Pages we share with another domain: the grant references to hand over (through
/// xenstore), and our own read-write mapping. Dropping it revokes the grants (deferred by
/// the driver while the peer still maps them) and frees the pages.
pub struct SharedPages {
    ptr: NonNull<u8>,
    len: usize,
    raw: Box<dyn RawSharedPages>,
}

// SAFETY: the pointer is into `raw`'s area, which is `Send + Sync` (a `SharedMemory`) and
// owned by self; all access goes through volatile `SharedMemory` accessors.
unsafe impl Send for SharedPages {}
// SAFETY: as above.
unsafe impl Sync for SharedPages {}

impl fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("refs", &self.refs())
            .finish()
    }
}

impl SharedPages {
    /// Wraps a backend's shared area; `EINVAL` for an empty one (a null address).
    pub fn new(raw: Box<dyn RawSharedPages>) -> Result<SharedPages> {
        let ptr = NonNull::new(raw.as_ptr()).ok_or_else(|| op("share")(Errno::EINVAL))?;
        Ok(SharedPages {
            ptr,
            len: raw.len(),
            raw,
        })
    }

    /// The grant references, one per page, in order.
    pub fn refs(&self) -> &[GrantRef] {
        self.raw.refs()
    }

    /// Asks for `notify` when we release the pages (`IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`): the
    /// peer learns we are gone even if we crash. `EINVAL` for an offset outside the area.
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        if notify.clear_byte.is_some_and(|o| o >= self.len) {
            return Err(op("set_unmap_notify")(Errno::EINVAL));
        }
        self.raw.set_unmap_notify(notify)
    }
}

// SAFETY: the backend's area is owned by self, mapped read-write and fixed until drop (its
// `SharedMemory` contract); address and length were read from it once.
unsafe impl SharedMemory for SharedPages {
    #[inline]
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
}

/// Forwards every method, so `Box<G>` and `Arc<G>` (and `Box<dyn GrantMap>`) map too.
macro_rules! forward {
    ($($ptr:ident),*) => { $(
        impl<G: GrantMap + ?Sized> GrantMap for $ptr<G> {
            fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping> {
                (**self).map(dom, refs, access)
            }
            fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()> {
                (**self).copy(segs)
            }
        }
        impl<G: GrantShare + ?Sized> GrantShare for $ptr<G> {
            fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages> {
                (**self).share(dom, count, access)
            }
        }
    )* };
}
forward!(Box, Arc);

/// A [`GrantMap`] on whichever backend was opened: the real device ([`Gnttab::open`]), the
/// simulated host (`Gnttab::open_sim`, feature `sim`), or any implementation
/// ([`Gnttab::new`]). It implements the trait and dereferences to it.
#[derive(Debug)]
pub struct Gnttab {
    inner: Box<dyn GrantMap>,
}

impl Gnttab {
    /// Opens `/dev/xen/gntdev`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Gnttab> {
        Ok(Gnttab::new(RealGnttab::open()?))
    }

    /// A mapping handle on the simulated `host`, acting as domain `dom` (`ESRCH` if unknown).
    #[cfg(feature = "sim")]
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Gnttab> {
        Ok(Gnttab::new(SimGnttab::open(host, dom)?))
    }

    /// A handle on any backend.
    pub fn new(backend: impl GrantMap + 'static) -> Gnttab {
        Gnttab {
            inner: Box::new(backend),
        }
    }
}

impl std::ops::Deref for Gnttab {
    type Target = dyn GrantMap;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl GrantMap for Gnttab {
    fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping> {
        self.inner.map(dom, refs, access)
    }
    fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()> {
        self.inner.copy(segs)
    }
}

/// A [`GrantShare`] on whichever backend was opened: the real device ([`Gntshr::open`]), the
/// simulated host (`Gntshr::open_sim`, feature `sim`), or any implementation
/// ([`Gntshr::new`]). It implements the trait and dereferences to it.
#[derive(Debug)]
pub struct Gntshr {
    inner: Box<dyn GrantShare>,
}

impl Gntshr {
    /// Opens `/dev/xen/gntalloc`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<Gntshr> {
        Ok(Gntshr::new(RealGntshr::open()?))
    }

    /// A sharing handle on the simulated `host`, acting as domain `dom` (`ESRCH` if unknown).
    #[cfg(feature = "sim")]
    pub fn open_sim(host: &xen_sim::Host, dom: DomId) -> Result<Gntshr> {
        Ok(Gntshr::new(SimGntshr::open(host, dom)?))
    }

    /// A handle on any backend.
    pub fn new(backend: impl GrantShare + 'static) -> Gntshr {
        Gntshr {
            inner: Box::new(backend),
        }
    }
}

impl std::ops::Deref for Gntshr {
    type Target = dyn GrantShare;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl GrantShare for Gntshr {
    fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages> {
        self.inner.share(dom, count, access)
    }
}
