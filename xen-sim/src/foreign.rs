//! Foreign mappings: a privileged domain mapping another domain's frames by number
//! (`xenforeignmemory_map`, privcmd's `IOCTL_PRIVCMD_MMAPBATCH_V2`), without a grant.
//!
//! Frames are named as the hypercall names them: machine frames for a PV guest (what the
//! toolstack writes to `console/ring-ref` and `store/ring-ref`), guest frames for an HVM or
//! PVH guest. Only dom0 may map (`EPERM` otherwise, Xen's XSM check on `DOMID_SELF`'s
//! privilege); an unknown domain is `ESRCH`, a frame the domain does not own `EINVAL`
//! (privcmd's per-frame error). As on Xen, the mapping holds a reference on the domain:
//! destroyed meanwhile, it stays dying (its memory held) until the mapping is dropped.

use std::fmt;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, Mfn, Pfn};

use crate::domain::DomainRef;
use crate::host::Host;
use crate::memory::{window_pages, PageMapping};

/// Frames of another domain mapped into this process by a privileged domain. Unmapped (and
/// the domain reference dropped) on drop.
pub struct ForeignMapping {
    // Declared first: unmapped before the domain reference goes.
    pages: PageMapping,
    domain: DomainRef,
}

impl fmt::Debug for ForeignMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignMapping")
            .field("dom", &self.domain.domid())
            .field("len", &self.pages.len())
            .finish()
    }
}

impl ForeignMapping {
    /// The domain whose frames these are.
    pub fn domid(&self) -> DomId {
        self.domain.domid()
    }
}

// SAFETY: forwards to the owned PageMapping, which lives (at a fixed address) as long as self.
unsafe impl SharedMemory for ForeignMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.pages.as_ptr()
    }
    fn len(&self) -> usize {
        self.pages.len()
    }
    fn writable(&self) -> bool {
        self.pages.writable()
    }
}

impl Host {
    /// Domain `mapper` maps `frames` of `dom` (machine frames for a PV guest, guest frames
    /// for a translated one), in order, read-only or writable (`xenforeignmemory_map`).
    /// `EPERM` unless `mapper` is dom0, `ESRCH` for an unknown domain, `EINVAL` for no
    /// frames or a frame `dom` does not own.
    pub fn map_foreign(
        &self,
        mapper: DomId,
        dom: DomId,
        frames: &[u64],
        writable: bool,
    ) -> Result<ForeignMapping, Errno> {
        if !mapper.is_dom0() {
            return Err(Errno::EPERM);
        }
        if frames.is_empty() {
            return Err(Errno::EINVAL);
        }
        let domain = self.domain_ref(dom)?;
        let (file, pfns) = {
            let wp = window_pages(self);
            let mut st = self.lock();
            let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
            let mut pfns = Vec::with_capacity(frames.len());
            for &f in frames {
                let pfn = if d.hvm {
                    d.p2m.lookup(Pfn(f)).map(|_| f)
                } else {
                    d.p2m.reverse(Mfn(f)).map(|p| p.0)
                };
                pfns.push(pfn.ok_or(Errno::EINVAL)?);
            }
            let max = pfns.iter().copied().max().unwrap_or(0);
            (d.memory.ensure(max, wp)?, pfns)
        };
        let pages = PageMapping::new(&file, &pfns, writable)?;
        Ok(ForeignMapping { pages, domain })
    }
}
