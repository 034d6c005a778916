//! `/dev/xen/gntdev` and `/dev/xen/gntalloc`, driven with their ioctls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, GrantRef, PAGE_SIZE};

use crate::{
    op, Access, CopyDest, CopySegment, CopySource, Error, GrantMap, GrantShare, GrantStatus,
    Mapping, RawMapping, RawSharedPages, Result, SharedPages, UnmapNotify, GNTALLOC_DEVICE,
    GNTDEV_DEVICE,
};

/// `/dev/xen/gntdev`: grant mapping and copying on real Xen.
#[derive(Debug, Clone)]
pub struct RealGnttab {
    fd: Arc<OwnedFd>,
}

impl RealGnttab {
    /// Opens `/dev/xen/gntdev`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<RealGnttab> {
        Ok(RealGnttab {
            fd: Arc::new(open_device(GNTDEV_DEVICE)?),
        })
    }
}

impl AsFd for RealGnttab {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl GrantMap for RealGnttab {
    fn map(&self, dom: DomId, refs: &[GrantRef], access: Access) -> Result<Mapping> {
        if refs.is_empty() {
            return Err(op("map")(Errno::EINVAL));
        }
        Mapping::new(Box::new(GntdevMapping::new(
            &self.fd,
            dom,
            refs,
            access.writable(),
        )?))
    }

    fn copy(&self, segs: &mut [CopySegment<'_>]) -> Result<()> {
        grant_copy(&self.fd, segs)
    }
}

/// `/dev/xen/gntalloc`: page sharing on real Xen.
#[derive(Debug, Clone)]
pub struct RealGntshr {
    fd: Arc<OwnedFd>,
}

impl RealGntshr {
    /// Opens `/dev/xen/gntalloc`. [`Error::NotXen`] on a machine without Xen.
    pub fn open() -> Result<RealGntshr> {
        Ok(RealGntshr {
            fd: Arc::new(open_device(GNTALLOC_DEVICE)?),
        })
    }
}

impl AsFd for RealGntshr {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl GrantShare for RealGntshr {
    fn share(&self, dom: DomId, count: usize, access: Access) -> Result<SharedPages> {
        if count == 0 {
            return Err(op("share")(Errno::EINVAL));
        }
        SharedPages::new(Box::new(GntallocArea::new(
            &self.fd,
            dom,
            count,
            access.writable(),
        )?))
    }
}

fn open_device(path: &'static str) -> Result<OwnedFd> {
    xen_types::open_device(path, 0).map_err(|errno| {
        if errno.means_no_device() {
            Error::NotXen { path, errno }
        } else {
            Error::Op { op: "open", errno }
        }
    })
}

/// A zeroed, 8-byte-aligned buffer big enough for a header struct `H` followed by `extra`
/// more `u32`s (the variable-length arrays of the gntdev/gntalloc ioctls).
fn var_buf<H>(extra: usize) -> Vec<u64> {
    let bytes = size_of::<H>() + extra * size_of::<u32>();
    vec![0u64; bytes.div_ceil(8)]
}

fn ioctl_raw(fd: &OwnedFd, request: u32, arg: *mut libc::c_void) -> std::result::Result<(), Errno> {
    // SAFETY: callers pass a request whose argument layout matches the buffer `arg` points
    // to (a bindgen struct of xen/sys/gntdev.h or gntalloc.h, with its trailing array sized
    // for the count it holds), live and exclusive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn mmap_shared(
    fd: &OwnedFd,
    len: usize,
    writable: bool,
    index: u64,
) -> std::result::Result<NonNull<u8>, Errno> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let off = libc::off_t::try_from(index).map_err(|_| Errno::EINVAL)?;
    // SAFETY: maps `len` bytes of the device at the offset the driver gave us; the kernel
    // picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    NonNull::new(p.cast()).ok_or(Errno::ENOMEM)
}

fn notify_action(n: &UnmapNotify) -> u32 {
    let mut a = 0;
    if n.clear_byte.is_some() {
        a |= xen_sys::UNMAP_NOTIFY_CLEAR_BYTE;
    }
    if n.send_event.is_some() {
        a |= xen_sys::UNMAP_NOTIFY_SEND_EVENT;
    }
    a
}

/// A gntdev mapping.
struct GntdevMapping {
    fd: Arc<OwnedFd>,
    ptr: NonNull<u8>,
    len: usize,
    index: u64,
    count: u32,
    writable: bool,
}

// SAFETY: an owned mapping; all access goes through volatile `SharedMemory` accessors.
unsafe impl Send for GntdevMapping {}
// SAFETY: as above.
unsafe impl Sync for GntdevMapping {}

impl GntdevMapping {
    fn new(fd: &Arc<OwnedFd>, dom: DomId, refs: &[GrantRef], writable: bool) -> Result<Self> {
        let count = u32::try_from(refs.len()).map_err(|_| op("map")(Errno::E2BIG))?;
        let mut buf = var_buf::<xen_sys::ioctl_gntdev_map_grant_ref>(2 * refs.len());
        let hdr = buf
            .as_mut_ptr()
            .cast::<xen_sys::ioctl_gntdev_map_grant_ref>();
        // SAFETY: `buf` is zeroed, 8-byte aligned and holds the header plus `count` refs
        // (each `ioctl_gntdev_grant_ref` is two u32s; we sized for 2 * count extra u32s).
        unsafe {
            (*hdr).count = count;
            let arr = std::ptr::addr_of_mut!((*hdr).refs).cast::<xen_sys::ioctl_gntdev_grant_ref>();
            for (i, r) in refs.iter().enumerate() {
                arr.add(i).write(xen_sys::ioctl_gntdev_grant_ref {
                    domid: dom.into(),
                    ref_: r.get(),
                });
            }
        }
        ioctl_raw(fd, xen_sys::IOCTL_GNTDEV_MAP_GRANT_REF, hdr.cast()).map_err(op("map"))?;
        // SAFETY: the ioctl filled in `index`.
        let index = unsafe { (*hdr).index };
        let len = refs.len() * PAGE_SIZE;
        let ptr = match mmap_shared(fd, len, writable, index) {
            Ok(p) => p,
            Err(e) => {
                let mut u = xen_sys::ioctl_gntdev_unmap_grant_ref {
                    index,
                    count,
                    pad: 0,
                };
                let _ = ioctl_raw(
                    fd,
                    xen_sys::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                    std::ptr::addr_of_mut!(u).cast(),
                );
                // gntdev reports a failed grant map as EINVAL from mmap.
                return Err(if e == Errno::EINVAL {
                    Error::Map {
                        statuses: Vec::new(),
                    }
                } else {
                    op("map")(e)
                });
            }
        };
        Ok(GntdevMapping {
            fd: fd.clone(),
            ptr,
            len,
            index,
            count,
            writable,
        })
    }
}

impl std::fmt::Debug for GntdevMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GntdevMapping")
            .field("index", &self.index)
            .field("count", &self.count)
            .finish()
    }
}

// SAFETY: `ptr` is the start of our own `len`-byte mmap of the granted pages, fixed until
// drop unmaps it, and mapped writable exactly when `writable`.
unsafe impl SharedMemory for GntdevMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

impl RawMapping for GntdevMapping {
    fn set_unmap_notify(&mut self, n: UnmapNotify) -> Result<()> {
        if n.clear_byte.is_some() && !self.writable {
            return Err(op("set_unmap_notify")(Errno::EINVAL));
        }
        let mut a = xen_sys::ioctl_gntdev_unmap_notify {
            index: self.index + n.clear_byte.unwrap_or(0) as u64,
            action: notify_action(&n),
            event_channel_port: n.send_event.map_or(0, |p| p.get()),
        };
        ioctl_raw(
            &self.fd,
            xen_sys::IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
            std::ptr::addr_of_mut!(a).cast(),
        )
        .map_err(op("set_unmap_notify"))
    }
}

impl Drop for GntdevMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        let mut u = xen_sys::ioctl_gntdev_unmap_grant_ref {
            index: self.index,
            count: self.count,
            pad: 0,
        };
        let _ = ioctl_raw(
            &self.fd,
            xen_sys::IOCTL_GNTDEV_UNMAP_GRANT_REF,
            std::ptr::addr_of_mut!(u).cast(),
        );
    }
}

fn foreign(
    domid: DomId,
    gref: GrantRef,
    offset: u16,
) -> xen_sys::ioctl_gntdev_grant_copy_segment__bindgen_ty_1 {
    xen_sys::ioctl_gntdev_grant_copy_segment__bindgen_ty_1 {
        foreign: xen_sys::ioctl_gntdev_grant_copy_segment__bindgen_ty_1__bindgen_ty_1 {
            ref_: gref.get(),
            offset,
            domid: domid.get(),
        },
    }
}

fn grant_copy(fd: &OwnedFd, segs: &mut [CopySegment<'_>]) -> Result<()> {
    let mut raw = Vec::with_capacity(segs.len());
    for (i, s) in segs.iter_mut().enumerate() {
        let len = s.len as usize;
        let mut flags = 0u16;
        let source = match &s.source {
            CopySource::Gref {
                domid,
                gref,
                offset,
            } => {
                flags |= xen_sys::GNTCOPY_source_gref as u16;
                foreign(*domid, *gref, *offset)
            }
            CopySource::Local(b) => {
                if b.len() < len {
                    s.status = GrantStatus::BAD_COPY_ARG;
                    continue;
                }
                xen_sys::ioctl_gntdev_grant_copy_segment__bindgen_ty_1 {
                    virt: b.as_ptr().cast_mut().cast(),
                }
            }
        };
        let dest = match &mut s.dest {
            CopyDest::Gref {
                domid,
                gref,
                offset,
            } => {
                flags |= xen_sys::GNTCOPY_dest_gref as u16;
                foreign(*domid, *gref, *offset)
            }
            CopyDest::Local(b) => {
                if b.len() < len {
                    s.status = GrantStatus::BAD_COPY_ARG;
                    continue;
                }
                xen_sys::ioctl_gntdev_grant_copy_segment__bindgen_ty_1 {
                    virt: b.as_mut_ptr().cast(),
                }
            }
        };
        raw.push((
            i,
            xen_sys::ioctl_gntdev_grant_copy_segment {
                source,
                dest,
                len: s.len,
                flags,
                status: 0,
            },
        ));
    }
    let mut arr: Vec<xen_sys::ioctl_gntdev_grant_copy_segment> =
        raw.iter().map(|(_, r)| *r).collect();
    if arr.is_empty() {
        return Ok(());
    }
    let mut a = xen_sys::ioctl_gntdev_grant_copy {
        count: u32::try_from(arr.len()).map_err(|_| op("copy")(Errno::E2BIG))?,
        segments: arr.as_mut_ptr(),
    };
    // The local buffers in `arr` borrow from `segs`, which outlives this call.
    ioctl_raw(
        fd,
        xen_sys::IOCTL_GNTDEV_GRANT_COPY,
        std::ptr::addr_of_mut!(a).cast(),
    )
    .map_err(op("copy"))?;
    for ((i, _), r) in raw.iter().zip(&arr) {
        segs[*i].status = GrantStatus(r.status);
    }
    Ok(())
}

/// A gntalloc area.
struct GntallocArea {
    fd: Arc<OwnedFd>,
    ptr: NonNull<u8>,
    len: usize,
    index: u64,
    refs: Vec<GrantRef>,
}

// SAFETY: an owned mapping; all access goes through volatile `SharedMemory` accessors.
unsafe impl Send for GntallocArea {}
// SAFETY: as above.
unsafe impl Sync for GntallocArea {}

impl GntallocArea {
    fn new(fd: &Arc<OwnedFd>, dom: DomId, count: usize, writable: bool) -> Result<Self> {
        let n = u32::try_from(count).map_err(|_| op("share")(Errno::E2BIG))?;
        let mut buf = var_buf::<xen_sys::ioctl_gntalloc_alloc_gref>(count);
        let hdr = buf
            .as_mut_ptr()
            .cast::<xen_sys::ioctl_gntalloc_alloc_gref>();
        // SAFETY: `buf` is zeroed, aligned, and sized for the header plus `count` more u32s.
        unsafe {
            (*hdr).domid = dom.get();
            (*hdr).flags = if writable {
                xen_sys::GNTALLOC_FLAG_WRITABLE as u16
            } else {
                0
            };
            (*hdr).count = n;
        }
        ioctl_raw(fd, xen_sys::IOCTL_GNTALLOC_ALLOC_GREF, hdr.cast()).map_err(op("share"))?;
        // SAFETY: the ioctl filled in `index` and `count` grant ids after the header.
        let (index, refs) = unsafe {
            let ids = std::ptr::addr_of!((*hdr).gref_ids).cast::<u32>();
            (
                (*hdr).index,
                (0..count)
                    .map(|i| GrantRef(ids.add(i).read()))
                    .collect::<Vec<_>>(),
            )
        };
        let len = count * PAGE_SIZE;
        let ptr = match mmap_shared(fd, len, true, index) {
            Ok(p) => p,
            Err(e) => {
                let mut d = xen_sys::ioctl_gntalloc_dealloc_gref { index, count: n };
                let _ = ioctl_raw(
                    fd,
                    xen_sys::IOCTL_GNTALLOC_DEALLOC_GREF,
                    std::ptr::addr_of_mut!(d).cast(),
                );
                return Err(op("share")(e));
            }
        };
        Ok(GntallocArea {
            fd: fd.clone(),
            ptr,
            len,
            index,
            refs,
        })
    }
}

impl std::fmt::Debug for GntallocArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GntallocArea")
            .field("index", &self.index)
            .field("refs", &self.refs)
            .finish()
    }
}

// SAFETY: `ptr` is the start of our own read-write `len`-byte mmap of the allocated pages,
// fixed until drop unmaps it.
unsafe impl SharedMemory for GntallocArea {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl RawSharedPages for GntallocArea {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    fn set_unmap_notify(&mut self, n: UnmapNotify) -> Result<()> {
        let mut a = xen_sys::ioctl_gntalloc_unmap_notify {
            index: self.index + n.clear_byte.unwrap_or(0) as u64,
            action: notify_action(&n),
            event_channel_port: n.send_event.map_or(0, |p| p.get()),
        };
        ioctl_raw(
            &self.fd,
            xen_sys::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
            std::ptr::addr_of_mut!(a).cast(),
        )
        .map_err(op("set_unmap_notify"))
    }
}

impl Drop for GntallocArea {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        let mut d = xen_sys::ioctl_gntalloc_dealloc_gref {
            index: self.index,
            count: self.refs.len() as u32,
        };
        let _ = ioctl_raw(
            &self.fd,
            xen_sys::IOCTL_GNTALLOC_DEALLOC_GREF,
            std::ptr::addr_of_mut!(d).cast(),
        );
    }
}
