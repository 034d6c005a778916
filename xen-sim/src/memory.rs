//! Domain memory of the simulated host as real shared memory.
//!
//! Each domain's pseudo-physical memory is one `memfd`, grown (sparsely, with `ftruncate`) as
//! pages are used: page `pfn` lives at byte offset `pfn * PAGE_SIZE`. The host keeps one large
//! `MAP_SHARED | MAP_NORESERVE` window over the file per domain (for grant copy), and every
//! mapping another domain makes of a granted page is a fresh `MAP_SHARED` mapping of the same
//! file page, so a write through one mapping is seen through all the others, exactly as a grant
//! mapping aliases a frontend's page on Xen.
//!
//! A simulated guest allocates pages of its memory with [`Host::alloc_pages`] (the guest
//! kernel's page allocator) and reaches them with [`Host::guest_pages`].

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, Pfn, PAGE_SIZE};

use crate::domain::P2m;
use crate::host::Host;

/// A domain's pages: a lazily created memfd, the host's window on it, and the pages a
/// simulated guest has taken from its allocator.
///
/// `DomainMemory::default()` (what the domain lifecycle uses) creates nothing: the memfd is
/// made on first use, sized to the highest page used so far.
#[derive(Default)]
pub struct DomainMemory {
    file: Option<Arc<OwnedFd>>,
    /// Current file size in pages.
    file_pages: u64,
    /// The host's window over the whole file (grant copy reads and writes through it).
    window: Option<Window>,
    /// Pages handed out by [`Host::alloc_pages`] and not freed.
    allocated: BTreeSet<u64>,
    /// Where the allocator looks next.
    next: u64,
}

impl fmt::Debug for DomainMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainMemory")
            .field("file_pages", &self.file_pages)
            .field("allocated", &self.allocated.len())
            .finish()
    }
}

struct Window {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the window is a shared file mapping owned by the DomainMemory; it is only reached
// under the host lock (or through `SharedMemory`-style volatile copies), so moving or sharing
// the owner between threads is sound.
unsafe impl Send for Window {}
// SAFETY: as above.
unsafe impl Sync for Window {}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing else unmaps it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl DomainMemory {
    /// The memfd, created and grown so that pages `0..=pfn` exist; `window_pages` bounds the
    /// host window (the host's memory size: no domain has more pages than the host).
    pub(crate) fn ensure(&mut self, pfn: u64, window_pages: u64) -> Result<Arc<OwnedFd>, Errno> {
        if pfn >= window_pages {
            return Err(Errno::EINVAL);
        }
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                // SAFETY: the name is a NUL-terminated literal; flags are valid.
                let fd =
                    unsafe { libc::memfd_create(c"xen-sim-domain".as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(Errno::last());
                }
                // SAFETY: memfd_create returned a fresh descriptor that we now own.
                let f = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
                self.file = Some(f.clone());
                f
            }
        };
        if self.window.is_none() {
            let len = usize::try_from(window_pages).map_err(|_| Errno::ENOMEM)? * PAGE_SIZE;
            // SAFETY: a fresh shared mapping of our memfd at an address the kernel picks;
            // MAP_NORESERVE because the file is sparse and only touched pages cost memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_NORESERVE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Errno::last());
            }
            self.window = Some(Window {
                ptr: NonNull::new(p.cast()).ok_or(Errno::ENOMEM)?,
                len,
            });
        }
        if pfn >= self.file_pages {
            // Grow in 1 MiB steps to keep ftruncate calls rare.
            let want = (pfn + 1).next_multiple_of(256).min(window_pages);
            let bytes =
                libc::off_t::try_from(want * PAGE_SIZE as u64).map_err(|_| Errno(libc::EFBIG))?;
            // SAFETY: plain syscall on a descriptor we own.
            if unsafe { libc::ftruncate(file.as_raw_fd(), bytes) } != 0 {
                return Err(Errno::last());
            }
            self.file_pages = want;
        }
        Ok(file)
    }

    /// The simulated guest's allocator: the pages it holds and where it looks next (what a
    /// saved image carries, as the guest kernel's own page tables would).
    pub(crate) fn allocator(&self) -> (Vec<u64>, u64) {
        (self.allocated.iter().copied().collect(), self.next)
    }

    /// Puts back an allocator saved with [`DomainMemory::allocator`].
    pub(crate) fn set_allocator(&mut self, allocated: Vec<u64>, next: u64) {
        self.allocated = allocated.into_iter().collect();
        self.next = next;
    }

    /// The number of pages backed by the memfd (pages past it were never touched: zero).
    pub(crate) fn file_pages(&self) -> u64 {
        self.file_pages
    }

    /// Whether a simulated guest holds `pfn` from [`Host::alloc_pages`] (the balloon driver
    /// leaves such pages alone).
    pub(crate) fn in_use(&self, pfn: u64) -> bool {
        self.allocated.contains(&pfn)
    }

    /// Pointer to page `pfn` in the host window; the page must exist (see [`ensure`]).
    pub(crate) fn page_ptr(&self, pfn: u64) -> Option<*mut u8> {
        let w = self.window.as_ref()?;
        if pfn >= self.file_pages {
            return None;
        }
        let off = usize::try_from(pfn).ok()?.checked_mul(PAGE_SIZE)?;
        if off + PAGE_SIZE > w.len {
            return None;
        }
        // SAFETY: in bounds of the window (checked above).
        Some(unsafe { w.ptr.as_ptr().add(off) })
    }

    /// Takes `count` free pages among the populated ones (`p2m`) from the allocator; the
    /// search stops at `bound` (no domain has more frames than the host).
    pub(crate) fn alloc_populated(
        &mut self,
        count: usize,
        p2m: &P2m,
        bound: u64,
    ) -> Result<Vec<u64>, Errno> {
        let populated = p2m.populated();
        if (self.allocated.len() as u64).saturating_add(count as u64) > populated {
            return Err(Errno::ENOMEM);
        }
        let mut out = Vec::with_capacity(count);
        let mut pfn = self.next;
        let mut seen = 0u64;
        let mut scanned = 0u64;
        while out.len() < count {
            if seen > populated || scanned > bound {
                // All or nothing.
                for p in &out {
                    self.allocated.remove(p);
                }
                return Err(Errno::ENOMEM);
            }
            if pfn >= bound {
                pfn = 0;
            }
            if p2m.lookup(Pfn(pfn)).is_some() {
                seen += 1;
                if self.allocated.insert(pfn) {
                    out.push(pfn);
                }
            }
            pfn += 1;
            scanned += 1;
        }
        self.next = pfn;
        Ok(out)
    }

    /// Takes `count` free pages below `limit` from the allocator (all frames below `limit`
    /// must be populated: the domain builder's use).
    pub(crate) fn alloc(&mut self, count: usize, limit: u64) -> Result<Vec<u64>, Errno> {
        if (self.allocated.len() as u64).saturating_add(count as u64) > limit {
            return Err(Errno::ENOMEM);
        }
        let mut out = Vec::with_capacity(count);
        let mut pfn = self.next;
        let mut scanned = 0u64;
        while out.len() < count {
            if scanned > limit {
                for p in &out {
                    self.allocated.remove(p);
                }
                return Err(Errno::ENOMEM);
            }
            if pfn >= limit {
                pfn = 0;
            }
            if self.allocated.insert(pfn) {
                out.push(pfn);
            }
            pfn += 1;
            scanned += 1;
        }
        self.next = pfn;
        Ok(out)
    }

    /// Returns pages to the allocator. Freed pages are zeroed, as a guest's allocator would
    /// hand out scrubbed pages to the next user.
    pub(crate) fn free(&mut self, pfns: &[u64]) {
        for &p in pfns {
            if self.allocated.remove(&p) {
                if let Some(ptr) = self.page_ptr(p) {
                    // SAFETY: a whole page inside the window.
                    unsafe { std::ptr::write_bytes(ptr, 0, PAGE_SIZE) };
                }
            }
        }
    }
}

/// Pages of a domain's memfd mapped contiguously into this process.
///
/// Made for a guest's view of its own pages ([`Host::guest_pages`]) and for grant mappings;
/// unmapped on drop.
pub struct PageMapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: an owned mapping; all access goes through volatile `SharedMemory` accessors.
unsafe impl Send for PageMapping {}
// SAFETY: as above.
unsafe impl Sync for PageMapping {}

impl fmt::Debug for PageMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageMapping")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl PageMapping {
    /// Maps `pfns` of `file` (in order, contiguous in our address space).
    pub(crate) fn new(file: &OwnedFd, pfns: &[u64], writable: bool) -> Result<PageMapping, Errno> {
        if pfns.is_empty() {
            return Err(Errno::EINVAL);
        }
        let len = pfns.len() * PAGE_SIZE;
        // Reserve the range first, then map runs of consecutive pages over it.
        // SAFETY: anonymous PROT_NONE reservation at a kernel-chosen address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let mapping = PageMapping {
            ptr: NonNull::new(base.cast()).ok_or(Errno::ENOMEM)?,
            len,
            writable,
        };
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let mut i = 0;
        while i < pfns.len() {
            let mut j = i + 1;
            while j < pfns.len() && pfns[j] == pfns[j - 1] + 1 {
                j += 1;
            }
            let off =
                libc::off_t::try_from(pfns[i] * PAGE_SIZE as u64).map_err(|_| Errno::EINVAL)?;
            // SAFETY: MAP_FIXED over part of our own reservation (in bounds: i..j < pfns.len()),
            // replacing only pages this PageMapping owns.
            let p = unsafe {
                libc::mmap(
                    mapping.ptr.as_ptr().add(i * PAGE_SIZE).cast(),
                    (j - i) * PAGE_SIZE,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    off,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Errno::last()); // `mapping` drops and unmaps the whole range
            }
            i = j;
        }
        Ok(mapping)
    }
}

impl Drop for PageMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len cover exactly the reservation made in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is owned, page-aligned, `len` bytes long, fixed until drop, and mapped
// PROT_WRITE exactly when `writable()` is true.
unsafe impl SharedMemory for PageMapping {
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

pub(crate) fn window_pages(host: &Host) -> u64 {
    host.config().memory.get()
}

impl Host {
    /// A simulated guest's page allocator: takes `count` free pages among `dom`'s populated
    /// frames. Fails with `ESRCH` for an unknown domain and
    /// `ENOMEM` when the domain has no free pages left.
    pub fn alloc_pages(&self, dom: DomId, count: usize) -> Result<Vec<Pfn>, Errno> {
        let wp = window_pages(self);
        let mut st = self.lock();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let pfns = d.memory.alloc_populated(count, &d.p2m, wp)?;
        if let Some(&max) = pfns.iter().max() {
            if let Err(e) = d.memory.ensure(max, wp) {
                d.memory.free(&pfns);
                return Err(e);
            }
        }
        Ok(pfns.into_iter().map(Pfn).collect())
    }

    /// Returns pages taken with [`alloc_pages`](Host::alloc_pages) (zeroing them).
    pub fn free_pages(&self, dom: DomId, pfns: &[Pfn]) -> Result<(), Errno> {
        let mut st = self.lock();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let raw: Vec<u64> = pfns.iter().map(|p| p.get()).collect();
        d.memory.free(&raw);
        Ok(())
    }

    /// A domain's own view of its pages `pfns`, mapped read-write in order: how a simulated
    /// guest (a test frontend) reads and writes its memory. `EINVAL` for a frame the domain
    /// has not populated, `ESRCH` for an unknown domain.
    pub fn guest_pages(&self, dom: DomId, pfns: &[Pfn]) -> Result<PageMapping, Errno> {
        let raw: Vec<u64> = pfns.iter().map(|p| p.get()).collect();
        let file = {
            let wp = window_pages(self);
            let mut st = self.lock();
            let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
            let max = *raw.iter().max().ok_or(Errno::EINVAL)?;
            if raw.iter().any(|&p| d.p2m.lookup(Pfn(p)).is_none()) {
                return Err(Errno::EINVAL);
            }
            d.memory.ensure(max, wp)?
        };
        PageMapping::new(&file, &raw, true)
    }
}
