//! Grant tables of the simulated host (version 1 semantics).
//!
//! Each domain has a grant table of `grant_entry_v1` entries (`flags`, `domid`, `frame`). A
//! simulated guest grants a page with [`Host::grant_access`] (`GTF_permit_access`, optionally
//! `GTF_readonly`) and ends access with [`Host::end_access`], which fails while the entry is
//! in use, as `gnttab_end_foreign_access_ref` does when `GTF_reading`/`GTF_writing` are set.
//! Another domain maps granted pages with [`Host::grant_map`] (the mapping aliases the
//! granter's memfd page) or copies through them with [`Host::grant_copy`]. Statuses follow
//! `xen/common/grant_table.c`:
//!
//! | condition | status |
//! |---|---|
//! | unknown granting domain | `GNTST_bad_domain` |
//! | reference beyond the grant table | `GNTST_bad_gntref` |
//! | entry not granted (never, or access ended), granted to another domain, or a read-only grant used for writing | `GNTST_general_error` (Xen's `_set_status` "Bad flags or dom") |
//! | copy segment crossing a page end | `GNTST_bad_copy_arg` |
//!
//! While a page is mapped, its entry carries `GTF_reading` (and `GTF_writing` for writable
//! mappings), the pin counts keep a dying granter alive (`has_foreign_mappings`), and the
//! last unmap of a dying domain's page lets the lifecycle reap it.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use xen_types::mem::SharedMemory;
pub use xen_types::{CopyDest, CopySegment, CopySource, GrantStatus, UnmapNotify};
use xen_types::{DomId, Errno, GrantRef, Pfn, PAGE_SIZE};

use crate::host::{Host, HostState};
use crate::memory::{window_pages, PageMapping};

/// Default table size: `max_grant_frames` (xl's default, 64) frames of v1 entries.
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;

const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / size_of::<xen_sys::grant_entry_v1>()) as u32;
const GTF_PERMIT_ACCESS: u16 = xen_sys::GTF_permit_access as u16;
const GTF_READONLY: u16 = xen_sys::GTF_readonly as u16;
const GTF_READING: u16 = xen_sys::GTF_reading as u16;
const GTF_WRITING: u16 = xen_sys::GTF_writing as u16;

#[derive(Debug, Clone, Default)]
struct Entry {
    flags: u16,
    domid: DomId,
    frame: u64,
    /// Read-only and writable mappings currently pinning the entry.
    pins_ro: u32,
    pins_rw: u32,
    /// Access was ended by a sharer that went away while the page was mapped (gntalloc's
    /// deferred end-access): free entry and page on the last unmap.
    deferred_end: bool,
    /// The page was allocated by `share_pages` and goes back to the allocator with the entry.
    owned_page: bool,
}

impl Entry {
    fn in_use(&self) -> bool {
        self.flags & (GTF_READING | GTF_WRITING) != 0
    }
    fn granted(&self) -> bool {
        self.flags & xen_sys::GTF_type_mask as u16 == GTF_PERMIT_ACCESS && !self.deferred_end
    }
    fn refresh_flags(&mut self) {
        self.flags &= !(GTF_READING | GTF_WRITING);
        if self.pins_ro + self.pins_rw > 0 {
            self.flags |= GTF_READING;
        }
        if self.pins_rw > 0 {
            self.flags |= GTF_WRITING;
        }
    }
}

/// A domain's grant table.
pub struct DomainGrants {
    entries: Vec<Entry>,
    max_entries: u32,
}

impl Default for DomainGrants {
    /// A table of [`DEFAULT_MAX_GRANT_FRAMES`] frames.
    fn default() -> Self {
        DomainGrants::new(DEFAULT_MAX_GRANT_FRAMES)
    }
}

impl fmt::Debug for DomainGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainGrants")
            .field("max_entries", &self.max_entries)
            .field(
                "granted",
                &self.entries.iter().filter(|e| e.granted()).count(),
            )
            .finish()
    }
}

impl DomainGrants {
    /// A table of `max_grant_frames` frames (`max_grant_frames` of `XEN_DOMCTL_createdomain`;
    /// the lifecycle passes it at creation), each holding `PAGE_SIZE / 8` v1 entries.
    pub fn new(max_grant_frames: u32) -> DomainGrants {
        DomainGrants {
            entries: Vec::new(),
            max_entries: max_grant_frames.saturating_mul(ENTRIES_PER_FRAME),
        }
    }

    /// Number of entries (`nr_grant_entries`).
    pub fn nr_entries(&self) -> u32 {
        self.max_entries
    }

    fn entry_mut(&mut self, gref: GrantRef) -> Option<&mut Entry> {
        let i = gref.get() as usize;
        if gref.get() >= self.max_entries {
            return None;
        }
        if i >= self.entries.len() {
            self.entries.resize(i + 1, Entry::default());
        }
        self.entries.get_mut(i)
    }

    fn free_ref(&mut self) -> Result<GrantRef, Errno> {
        let first = xen_sys::GNTTAB_NR_RESERVED_ENTRIES as usize;
        for i in first..self.entries.len() {
            if self.entries[i].flags == 0 && !self.entries[i].deferred_end {
                return Ok(GrantRef(i as u32));
            }
        }
        let next = self.entries.len().max(first) as u32;
        if next >= self.max_entries {
            return Err(Errno::ENOSPC);
        }
        Ok(GrantRef(next))
    }
}

/// A grant entry as the granting guest sees it in its shared table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantEntry {
    /// `GTF_*` flags, including `GTF_reading`/`GTF_writing` while mapped.
    pub flags: u16,
    /// The domain allowed to use the grant.
    pub domid: DomId,
    /// The granted page.
    pub frame: Pfn,
}

/// Called by the domain lifecycle when `dom` is destroyed: drop the grants it holds and the
/// mappings it made of other domains' pages.
///
/// Mappings `dom` made are objects owned by whoever holds them ([`GrantMapping`]); they
/// release their pins when dropped. The dying domain's own table is cleared of entries no
/// one maps; mapped entries stay until their last unmap.
pub(crate) fn on_domain_destroy(state: &mut HostState, dom: DomId) {
    if let Some(d) = state.domains.get_mut(&dom) {
        for e in d.grants.entries.iter_mut() {
            if !e.in_use() {
                *e = Entry::default();
            }
        }
    }
}

/// True while another domain still maps a page of `dom`: Xen keeps such a domain dying (a
/// zombie) until the last mapping goes; the lifecycle then frees it.
pub(crate) fn has_foreign_mappings(state: &HostState, dom: DomId) -> bool {
    state
        .domains
        .get(&dom)
        .is_some_and(|d| d.grants.entries.iter().any(Entry::in_use))
}

/// Pages of another domain mapped through its grants (the simulated gntdev mapping).
/// Unmapped on drop, which releases the pins.
pub struct GrantMapping {
    pages: Option<PageMapping>,
    host: Host,
    mapper: DomId,
    granter: DomId,
    refs: Vec<GrantRef>,
    writable: bool,
    notify: UnmapNotify,
}

impl fmt::Debug for GrantMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantMapping")
            .field("granter", &self.granter)
            .field("refs", &self.refs)
            .field("writable", &self.writable)
            .finish()
    }
}

impl GrantMapping {
    /// The granting domain.
    pub fn granter(&self) -> DomId {
        self.granter
    }
    /// The mapped references, in mapping order (page `i` is `refs()[i]`).
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }
    /// Sets what happens on unmap. `EINVAL` if the byte offset is outside the mapping or the
    /// mapping is read-only (the driver requires a writable page to clear).
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<(), Errno> {
        if let Some(off) = notify.clear_byte {
            if off >= self.len() || !self.writable {
                return Err(Errno::EINVAL);
            }
        }
        self.notify = notify;
        Ok(())
    }
}

// SAFETY: forwards to the owned PageMapping, which lives (at a fixed address) as long as self.
unsafe impl SharedMemory for GrantMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.pages
            .as_ref()
            .map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }
    fn len(&self) -> usize {
        self.pages.as_ref().map_or(0, |p| p.len())
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

fn clear_notify_byte<M: SharedMemory + ?Sized>(m: &M, notify: &UnmapNotify) {
    if let Some(off) = notify.clear_byte {
        if off < m.len() && m.writable() {
            // SAFETY: in bounds of a writable live mapping (checked above).
            unsafe { std::ptr::write_volatile(m.as_ptr().add(off), 0u8) };
        }
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        clear_notify_byte(self, &self.notify);
        // Unmap before unpinning, as gntdev does.
        self.pages = None;
        let mut st = self.host.lock();
        if let Some(port) = self.notify.send_event {
            let _ = crate::evtchn::send(&mut st, self.mapper, port);
        }
        unpin(&mut st, self.granter, &self.refs, self.writable);
    }
}

fn unpin(st: &mut HostState, granter: DomId, refs: &[GrantRef], writable: bool) {
    let mut dying = false;
    if let Some(d) = st.domains.get_mut(&granter) {
        dying = d.dying;
        let mut freed = Vec::new();
        for &r in refs {
            if let Some(e) = d.grants.entries.get_mut(r.get() as usize) {
                if writable {
                    e.pins_rw = e.pins_rw.saturating_sub(1);
                } else {
                    e.pins_ro = e.pins_ro.saturating_sub(1);
                }
                e.refresh_flags();
                if !e.in_use() && (e.deferred_end || dying) {
                    if e.owned_page {
                        freed.push(e.frame);
                    }
                    *e = Entry::default();
                }
            }
        }
        d.memory.free(&freed);
    }
    if dying && !has_foreign_mappings(st, granter) {
        crate::domain::reap_dying(st);
    }
}

/// Checks a grant for use by `ld` and returns the page pointer in the host window.
fn acquire(
    st: &mut HostState,
    ld: DomId,
    rd: DomId,
    gref: GrantRef,
    write: bool,
) -> Result<*mut u8, GrantStatus> {
    let d = st.domains.get_mut(&rd).ok_or(GrantStatus::BAD_DOMAIN)?;
    if gref.get() >= d.grants.max_entries {
        return Err(GrantStatus::BAD_GNTREF);
    }
    let e = match d.grants.entries.get(gref.get() as usize) {
        Some(e) => e,
        None => return Err(GrantStatus::GENERAL_ERROR),
    };
    if !e.granted() || e.domid != ld || (write && e.flags & GTF_READONLY != 0) {
        return Err(GrantStatus::GENERAL_ERROR);
    }
    d.memory.page_ptr(e.frame).ok_or(GrantStatus::BAD_PAGE)
}

impl Host {
    /// A simulated guest `dom` grants `to` access to its page `pfn`
    /// (`gnttab_grant_foreign_access`): returns the reference, taken above the reserved
    /// entries. `ESRCH` unknown domain, `EINVAL` for a frame the domain has not populated, `ENOSPC` table full.
    pub fn grant_access(
        &self,
        dom: DomId,
        to: DomId,
        pfn: Pfn,
        readonly: bool,
    ) -> Result<GrantRef, Errno> {
        let mut st = self.lock();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let gref = d.grants.free_ref()?;
        self.grant_at(&mut st, dom, gref, to, pfn, readonly, false)?;
        Ok(gref)
    }

    /// Like [`grant_access`](Host::grant_access) at a chosen reference (the toolstack fills
    /// `GNTTAB_RESERVED_XENSTORE` and `GNTTAB_RESERVED_CONSOLE` this way). `EBUSY` if the
    /// entry is in use, `EINVAL` beyond the table.
    pub fn grant_access_at(
        &self,
        dom: DomId,
        gref: GrantRef,
        to: DomId,
        pfn: Pfn,
        readonly: bool,
    ) -> Result<(), Errno> {
        let mut st = self.lock();
        self.grant_at(&mut st, dom, gref, to, pfn, readonly, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn grant_at(
        &self,
        st: &mut HostState,
        dom: DomId,
        gref: GrantRef,
        to: DomId,
        pfn: Pfn,
        readonly: bool,
        owned_page: bool,
    ) -> Result<(), Errno> {
        let wp = window_pages(self);
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        if d.p2m.lookup(pfn).is_none() {
            return Err(Errno::EINVAL);
        }
        d.memory.ensure(pfn.get(), wp)?;
        let e = d.grants.entry_mut(gref).ok_or(Errno::EINVAL)?;
        if e.flags != 0 || e.deferred_end {
            return Err(Errno::EBUSY);
        }
        *e = Entry {
            flags: GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 },
            domid: to,
            frame: pfn.get(),
            owned_page,
            ..Entry::default()
        };
        Ok(())
    }

    /// A simulated guest ends access to `gref` (`gnttab_end_foreign_access_ref`). Fails with
    /// `EBUSY` while the page is mapped (`GTF_reading`/`GTF_writing` set) and `EINVAL` if
    /// the entry is not granted.
    pub fn end_access(&self, dom: DomId, gref: GrantRef) -> Result<(), Errno> {
        let mut st = self.lock();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let e = d
            .grants
            .entries
            .get_mut(gref.get() as usize)
            .ok_or(Errno::EINVAL)?;
        if !e.granted() {
            return Err(Errno::EINVAL);
        }
        if e.in_use() {
            return Err(Errno::EBUSY);
        }
        *e = Entry::default();
        Ok(())
    }

    /// The grant entry `gref` of `dom` as its shared table shows it.
    pub fn grant_entry(&self, dom: DomId, gref: GrantRef) -> Result<GrantEntry, Errno> {
        let st = self.lock();
        let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
        if gref.get() >= d.grants.max_entries {
            return Err(Errno::EINVAL);
        }
        let e = d
            .grants
            .entries
            .get(gref.get() as usize)
            .cloned()
            .unwrap_or_default();
        Ok(GrantEntry {
            flags: e.flags,
            domid: e.domid,
            frame: Pfn(e.frame),
        })
    }

    /// `GNTTABOP_map_grant_ref` for a batch, as domain `mapper`: maps `refs` of `granter`
    /// contiguously, read-only or writable. All or nothing: on failure, returns the status
    /// of every reference (okay for the ones that would have mapped) and maps nothing.
    pub fn grant_map(
        &self,
        mapper: DomId,
        granter: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMapping, Vec<GrantStatus>> {
        if refs.is_empty() {
            return Err(Vec::new());
        }
        let (file, frames) = {
            let mut st = self.lock();
            let mut statuses = Vec::with_capacity(refs.len());
            let mut frames = Vec::with_capacity(refs.len());
            for &r in refs {
                match acquire(&mut st, mapper, granter, r, writable) {
                    Ok(_) => {
                        statuses.push(GrantStatus::OKAY);
                        let d = &st.domains[&granter];
                        frames.push(d.grants.entries[r.get() as usize].frame);
                    }
                    Err(s) => statuses.push(s),
                }
            }
            if statuses.iter().any(|s| !s.is_ok()) {
                return Err(statuses);
            }
            let wp = window_pages(self);
            let d = st
                .domains
                .get_mut(&granter)
                .ok_or_else(|| vec![GrantStatus::BAD_DOMAIN])?;
            let max = frames.iter().copied().max().unwrap_or(0);
            let file: Arc<OwnedFd> = d
                .memory
                .ensure(max, wp)
                .map_err(|_| vec![GrantStatus::GENERAL_ERROR; refs.len()])?;
            for &r in refs {
                let e = &mut d.grants.entries[r.get() as usize];
                if writable {
                    e.pins_rw += 1;
                } else {
                    e.pins_ro += 1;
                }
                e.refresh_flags();
            }
            (file, frames)
        };
        match PageMapping::new(&file, &frames, writable) {
            Ok(pages) => Ok(GrantMapping {
                pages: Some(pages),
                host: self.clone(),
                mapper,
                granter,
                refs: refs.to_vec(),
                writable,
                notify: UnmapNotify::default(),
            }),
            Err(_) => {
                unpin(&mut self.lock(), granter, refs, writable);
                Err(vec![GrantStatus::GENERAL_ERROR; refs.len()])
            }
        }
    }

    /// `GNTTABOP_copy` as domain `caller`: copies every segment, setting its status.
    /// Segments are independent: one failing does not stop the others.
    pub fn grant_copy(&self, caller: DomId, segs: &mut [CopySegment<'_>]) {
        let mut st = self.lock();
        for seg in segs.iter_mut() {
            seg.status = copy_one(&mut st, caller, seg);
        }
    }

    /// The granting side of gntalloc for a simulated domain `dom`: allocates `count` pages,
    /// grants them to `to` and maps them for `dom`'s own access. Dropping the result ends
    /// access (deferred until the peer unmaps, as gntalloc defers it) and frees the pages.
    pub fn share_pages(
        &self,
        dom: DomId,
        to: DomId,
        count: usize,
        writable: bool,
    ) -> Result<SharedPages, Errno> {
        if count == 0 {
            return Err(Errno::EINVAL);
        }
        let pfns = self.alloc_pages(dom, count)?;
        let mut refs = Vec::with_capacity(count);
        let file = {
            let mut st = self.lock();
            let mut result = Ok(());
            for &pfn in &pfns {
                let r = match st.domains.get_mut(&dom) {
                    Some(d) => d.grants.free_ref(),
                    None => Err(Errno::ESRCH),
                };
                match r.and_then(|r| {
                    self.grant_at(&mut st, dom, r, to, pfn, !writable, true)
                        .map(|()| r)
                }) {
                    Ok(r) => refs.push(r),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let wp = window_pages(self);
            let file = match (result, st.domains.get_mut(&dom)) {
                (Ok(()), Some(d)) => d.memory.ensure(0, wp),
                (Err(e), _) => Err(e),
                (_, None) => Err(Errno::ESRCH),
            };
            match file {
                Ok(f) => f,
                Err(e) => {
                    release_shared(&mut st, dom, &refs, &pfns);
                    return Err(e);
                }
            }
        };
        let raw: Vec<u64> = pfns.iter().map(|p| p.get()).collect();
        match PageMapping::new(&file, &raw, true) {
            Ok(pages) => Ok(SharedPages {
                pages: Some(pages),
                host: self.clone(),
                dom,
                refs,
                pfns,
                notify: UnmapNotify::default(),
            }),
            Err(e) => {
                release_shared(&mut self.lock(), dom, &refs, &pfns);
                Err(e)
            }
        }
    }
}

fn release_shared(st: &mut HostState, dom: DomId, refs: &[GrantRef], pfns: &[Pfn]) {
    let Some(d) = st.domains.get_mut(&dom) else {
        return;
    };
    let mut free_now = Vec::new();
    for (i, &r) in refs.iter().enumerate() {
        if let Some(e) = d.grants.entries.get_mut(r.get() as usize) {
            if e.in_use() {
                e.deferred_end = true;
            } else {
                *e = Entry::default();
                free_now.push(pfns[i].get());
            }
        }
    }
    // Pages whose grant was never made go back too.
    for p in &pfns[refs.len()..] {
        free_now.push(p.get());
    }
    d.memory.free(&free_now);
}

fn copy_one(st: &mut HostState, caller: DomId, seg: &mut CopySegment<'_>) -> GrantStatus {
    let len = seg.len as usize;
    let src: *const u8 = match &seg.source {
        CopySource::Gref {
            domid,
            gref,
            offset,
        } => {
            if *offset as usize + len > PAGE_SIZE {
                return GrantStatus::BAD_COPY_ARG;
            }
            match acquire(st, caller, *domid, *gref, false) {
                // SAFETY: offset + len <= PAGE_SIZE (checked above): inside the page.
                Ok(p) => unsafe { p.add(*offset as usize) },
                Err(s) => return s,
            }
        }
        CopySource::Local(b) => {
            if b.len() < len {
                return GrantStatus::BAD_COPY_ARG;
            }
            b.as_ptr()
        }
    };
    let dst: *mut u8 = match &mut seg.dest {
        CopyDest::Gref {
            domid,
            gref,
            offset,
        } => {
            if *offset as usize + len > PAGE_SIZE {
                return GrantStatus::BAD_COPY_ARG;
            }
            match acquire(st, caller, *domid, *gref, true) {
                // SAFETY: offset + len <= PAGE_SIZE (checked above): inside the page.
                Ok(p) => unsafe { p.add(*offset as usize) },
                Err(s) => return s,
            }
        }
        CopyDest::Local(b) => {
            if b.len() < len {
                return GrantStatus::BAD_COPY_ARG;
            }
            b.as_mut_ptr()
        }
    };
    // SAFETY: both ranges are `len` bytes inside live memory (a page of a host window, which
    // lives while the host lock is held, or a caller's buffer of at least `len` bytes). They
    // may overlap only when both are the same granted page; `copy` allows overlap.
    unsafe { std::ptr::copy(src, dst, len) };
    GrantStatus::OKAY
}

/// Pages a simulated domain shares with another (the simulated gntalloc area). Dropping it
/// ends access (deferred while the peer still maps a page) and frees the pages.
pub struct SharedPages {
    pages: Option<PageMapping>,
    host: Host,
    dom: DomId,
    refs: Vec<GrantRef>,
    pfns: Vec<Pfn>,
    notify: UnmapNotify,
}

impl fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("dom", &self.dom)
            .field("refs", &self.refs)
            .finish()
    }
}

impl SharedPages {
    /// The grant references, one per page, in order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }
    /// The sharing domain's frames, one per page.
    pub fn pfns(&self) -> &[Pfn] {
        &self.pfns
    }
    /// Sets what happens when the area is released. `EINVAL` if the offset is outside it.
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<(), Errno> {
        if notify.clear_byte.is_some_and(|off| off >= self.len()) {
            return Err(Errno::EINVAL);
        }
        self.notify = notify;
        Ok(())
    }
}

// SAFETY: forwards to the owned, writable PageMapping, which lives as long as self.
unsafe impl SharedMemory for SharedPages {
    fn as_ptr(&self) -> *mut u8 {
        self.pages
            .as_ref()
            .map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }
    fn len(&self) -> usize {
        self.pages.as_ref().map_or(0, |p| p.len())
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        clear_notify_byte(self, &self.notify);
        self.pages = None;
        let mut st = self.host.lock();
        if let Some(port) = self.notify.send_event {
            let _ = crate::evtchn::send(&mut st, self.dom, port);
        }
        release_shared(&mut st, self.dom, &self.refs, &self.pfns);
    }
}
