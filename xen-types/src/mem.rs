//! Volatile and atomic access to memory shared with another domain.
//!
//! A shared page (a grant mapping, a `gntalloc` page, a simulated host's memfd page, a
//! xenstore or console ring) can change under us at any time, so it is never turned into a
//! Rust reference to plain data. [`SharedMemory`] is the one `unsafe` contract a mapping type
//! signs (pointer and length valid for its lifetime); every access then goes through
//! [`SharedMemoryExt`]: bounds-checked volatile reads and writes of plain-data values
//! ([`Pod`]), volatile byte copies, and [`AtomicU32`] views of ring indexes.
//!
//! Ring and backend code is written once over `M: SharedMemory` and runs unchanged on real
//! grant mappings and on simulated memory.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use xen_types::mem::{PageBuf, SharedMemoryExt};
//!
//! let page = PageBuf::new(1).unwrap();
//! page.write_obj(16, 0xdead_beef_u32).unwrap();
//! assert_eq!(page.read_obj::<u32>(16).unwrap(), 0xdead_beef);
//! page.atomic_u32(16).unwrap().fetch_add(1, Ordering::SeqCst);
//! assert_eq!(page.read_obj::<u32>(16).unwrap(), 0xdead_bef0);
//! assert!(page.read_obj::<u64>(4093).is_err());
//! ```

use std::fmt;
use std::sync::atomic::AtomicU32;

use crate::PAGE_SIZE;

/// A region of memory that may be shared with, and changed by, another domain.
///
/// # Safety
///
/// Implementors guarantee that `as_ptr()` is non-null, page-aligned, and valid for volatile
/// reads (and, when [`writable`](SharedMemory::writable) is true, writes) of `len()` bytes for
/// as long as the value lives, and that the address does not change while it lives.
pub unsafe trait SharedMemory: Send + Sync {
    /// Start of the region.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// True when the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// False for read-only mappings: writes through [`SharedMemoryExt`] then fail.
    fn writable(&self) -> bool {
        true
    }
}

/// Plain data: any bit pattern is a valid value and it has no padding that matters, so it may
/// be copied to or from shared memory byte for byte.
///
/// # Safety
///
/// Implement only for `Copy` types made of integers (and arrays and `repr(C)` structs of
/// them) for which every bit pattern is valid.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: integer types: every bit pattern is valid.
        unsafe impl Pod for $t {}
    )* };
}
pod!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize);
// SAFETY: an array of plain data is plain data.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

macro_rules! pod_abi {
    ($($t:ident),*) => { $(
        // SAFETY: bindgen struct of the Xen ABI made only of integers and arrays of integers.
        unsafe impl Pod for xen_sys::$t {}
    )* };
}
pod_abi!(
    blkif_request,
    blkif_response,
    blkif_request_segment,
    blkif_request_discard,
    blkif_request_indirect,
    netif_tx_request,
    netif_tx_response,
    netif_rx_request,
    netif_rx_response,
    netif_extra_info,
    xsd_sockmsg,
    grant_entry_v1
);

/// An access outside a [`SharedMemory`] region, or a write to a read-only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemError {
    /// `offset..offset+len` is not inside the region of `size` bytes.
    OutOfBounds {
        /// First byte accessed.
        offset: usize,
        /// Bytes accessed.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// The offset is not aligned for the access.
    Misaligned {
        /// The offset.
        offset: usize,
        /// The alignment required.
        align: usize,
    },
    /// A write to a read-only mapping.
    ReadOnly,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::OutOfBounds { offset, len, size } => write!(
                f,
                "access of {len} bytes at offset {offset} is outside a region of {size} bytes"
            ),
            MemError::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not aligned to {align} bytes")
            }
            MemError::ReadOnly => write!(f, "write to a read-only mapping"),
        }
    }
}

impl std::error::Error for MemError {}

fn check(size: usize, offset: usize, len: usize) -> Result<(), MemError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutOfBounds { offset, len, size }),
    }
}

/// Safe, bounds-checked access to any [`SharedMemory`].
pub trait SharedMemoryExt: SharedMemory {
    /// Read of a `T` at `offset`: volatile when `offset` is aligned for `T`, one byte copy
    /// otherwise (packed layouts such as x86_32 blkif entries).
    fn read_obj<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
        check(self.len(), offset, size_of::<T>())?;
        // SAFETY: in bounds (checked above) of a region valid for reads (SharedMemory
        // contract).
        let src = unsafe { self.as_ptr().add(offset) };
        if src.align_offset(align_of::<T>()) == 0 {
            // SAFETY: in bounds, aligned for T; T is Pod so any bytes form a valid value.
            Ok(unsafe { std::ptr::read_volatile(src.cast::<T>()) })
        } else {
            // Misaligned (e.g. the packed x86_32 blkif layout): one copy of the bytes.
            let mut v = std::mem::MaybeUninit::<T>::uninit();
            // SAFETY: `src` is valid for size_of::<T>() bytes; `v` is a distinct local buffer
            // of that size; T is Pod, so the copied bytes are a valid T.
            unsafe {
                std::ptr::copy_nonoverlapping(src, v.as_mut_ptr().cast::<u8>(), size_of::<T>());
                Ok(v.assume_init())
            }
        }
    }

    /// Write of a `T` at `offset`: volatile when `offset` is aligned for `T`, one byte copy
    /// otherwise.
    fn write_obj<T: Pod>(&self, offset: usize, value: T) -> Result<(), MemError> {
        if !self.writable() {
            return Err(MemError::ReadOnly);
        }
        check(self.len(), offset, size_of::<T>())?;
        // SAFETY: in bounds of a writable region (checked above, SharedMemory contract).
        let dst = unsafe { self.as_ptr().add(offset) };
        if dst.align_offset(align_of::<T>()) == 0 {
            // SAFETY: in bounds, writable, aligned for T.
            unsafe { std::ptr::write_volatile(dst.cast::<T>(), value) };
        } else {
            // SAFETY: `dst` is valid for size_of::<T>() writable bytes; `value` is a distinct
            // local of that size.
            unsafe {
                std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), dst, size_of::<T>())
            };
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes from `offset` into `dst`.
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        check(self.len(), offset, dst.len())?;
        // SAFETY: source in bounds of a readable region; `dst` is a distinct Rust buffer
        // (shared memory is never borrowed as a Rust slice), so the ranges do not overlap.
        // The peer may write concurrently: we copy whatever bytes are there, as `memcpy`
        // from a grant mapping does in C backends, and callers validate what they read.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        if !self.writable() {
            return Err(MemError::ReadOnly);
        }
        check(self.len(), offset, src.len())?;
        // SAFETY: destination in bounds of a writable region; `src` is a distinct buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        if !self.writable() {
            return Err(MemError::ReadOnly);
        }
        check(self.len(), offset, len)?;
        // SAFETY: in bounds of a writable region (checked above).
        unsafe { std::ptr::write_bytes(self.as_ptr().add(offset), byte, len) };
        Ok(())
    }

    /// The 32-bit word at `offset` (4-byte aligned) as an atomic: ring producer/consumer
    /// indexes and event counters, read and written with explicit orderings.
    fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, MemError> {
        check(self.len(), offset, 4)?;
        if offset % 4 != 0 {
            return Err(MemError::Misaligned { offset, align: 4 });
        }
        // SAFETY: in bounds and 4-byte aligned (the region is page-aligned); AtomicU32 has the
        // layout of u32 and may alias memory that another party accesses atomically; the
        // region outlives the returned borrow of `self`. Read-only mappings only read it
        // (stores would fault, as they would in C).
        Ok(unsafe { &*self.as_ptr().add(offset).cast::<AtomicU32>() })
    }
}

impl<M: SharedMemory + ?Sized> SharedMemoryExt for M {}

// SAFETY: forwards to the boxed/shared value, whose contract holds while it lives.
unsafe impl<M: SharedMemory + ?Sized> SharedMemory for std::sync::Arc<M> {
    fn as_ptr(&self) -> *mut u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn writable(&self) -> bool {
        (**self).writable()
    }
}

// SAFETY: as for Arc.
unsafe impl<M: SharedMemory + ?Sized> SharedMemory for Box<M> {
    fn as_ptr(&self) -> *mut u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn writable(&self) -> bool {
        (**self).writable()
    }
}

/// Private, zeroed, page-aligned anonymous memory: local buffers, tests and benches.
pub struct PageBuf {
    map: memmap2::MmapMut,
}

impl PageBuf {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> std::io::Result<PageBuf> {
        let len = pages.max(1) * PAGE_SIZE;
        Ok(PageBuf {
            map: memmap2::MmapMut::map_anon(len)?,
        })
    }
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBuf")
            .field("len", &self.map.len())
            .finish()
    }
}

// SAFETY: an anonymous mapping owned by the value: valid, page-aligned, fixed address,
// readable and writable until dropped.
unsafe impl SharedMemory for PageBuf {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_alignment_are_checked() {
        let p = PageBuf::new(1).unwrap();
        assert_eq!(p.len(), 4096);
        assert!(p.write_obj(4092, 1u32).is_ok());
        assert_eq!(
            p.write_obj(4093, 1u32),
            Err(MemError::OutOfBounds {
                offset: 4093,
                len: 4,
                size: 4096
            })
        );
        assert_eq!(
            p.atomic_u32(2).err(),
            Some(MemError::Misaligned {
                offset: 2,
                align: 4
            })
        );
        assert!(p.read_bytes(usize::MAX, &mut [0u8; 2]).is_err());
        let mut out = [0u8; 3];
        p.write_bytes(10, b"abc").unwrap();
        p.read_bytes(10, &mut out).unwrap();
        assert_eq!(&out, b"abc");
    }

    #[test]
    fn misaligned_values_round_trip() {
        let p = PageBuf::new(1).unwrap();
        for off in [1usize, 2, 4, 5, 4087] {
            p.write_obj(off, 0x0102_0304_0506_0708_u64 + off as u64)
                .unwrap();
            assert_eq!(
                p.read_obj::<u64>(off).unwrap(),
                0x0102_0304_0506_0708 + off as u64
            );
        }
        let mut raw = [0u8; 8];
        p.read_bytes(5, &mut raw).unwrap();
        assert_eq!(u64::from_ne_bytes(raw), 0x0102_0304_0506_0708 + 5);
    }

    #[test]
    fn abi_structs_round_trip() {
        let p = PageBuf::new(1).unwrap();
        let req = xen_sys::blkif_request {
            operation: 1,
            nr_segments: 2,
            id: 77,
            ..Default::default()
        };
        p.write_obj(64, req).unwrap();
        let back: xen_sys::blkif_request = p.read_obj(64).unwrap();
        assert_eq!((back.operation, back.nr_segments, back.id), (1, 2, 77));
    }
}
