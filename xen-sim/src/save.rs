//! Saving a suspended domain to a stream and restoring it into a new domain: the simulated
//! host's `xc_domain_save` / `xc_domain_restore`.
//!
//! As libxenguest's save stream (`tools/libs/guest/xg_sr_*`), the image carries what the
//! guest needs to run on: its vCPUs' state, its populated frames and their contents (pages
//! never written are left out, as zero), and where its start-info, xenstore and console
//! pages are. Machine frames, event channels and grants are not carried: the new domain
//! gets new ones, and the restore seeds its grant table for the console and xenstore
//! backends as `xc_dom_gnttab_seed` does. Only a domain shut down for suspend
//! (`SHUTDOWN_suspend`) can be saved, as `xc_domain_save` checks after its suspend callback.
//!
//! The format is the simulator's own (a magic of `XENSIMSV`); a stream of another kind, a
//! truncated one or one that does not fit the new domain fails with `EINVAL`, and a
//! restore past the domain's maximum or the host's free memory with `ENOMEM`.

use std::io::{Read, Write};

use xen_types::{DomId, Errno, EvtchnPort, GrantRef, Mfn, Pfn, PAGE_SIZE};

use crate::domain::{BuildInfo, ImageKind};
use crate::host::Host;
use crate::memory::window_pages;

/// The first bytes of a saved image.
pub const SAVE_MAGIC: &[u8; 8] = b"XENSIMSV";
/// The last bytes of a saved image.
const END_MAGIC: &[u8; 8] = b"XENSIMEN";
/// The format's version.
const VERSION: u32 = 1;
/// Upper bound on any count read from a stream (no allocation follows a corrupt length).
const MAX_COUNT: u64 = 1 << 32;

/// Where a restored guest's rings are served from: the arguments of `xc_domain_restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSpec {
    /// The guest's end of the new console event channel.
    pub console_port: EvtchnPort,
    /// The domain running the console backend.
    pub console_domid: DomId,
    /// The guest's end of the new xenstore event channel.
    pub store_port: EvtchnPort,
    /// The domain running xenstored.
    pub store_domid: DomId,
}

fn io_err(e: std::io::Error) -> Errno {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Errno::EINVAL,
        _ => e.raw_os_error().map_or(Errno::EIO, Errno),
    }
}

struct Out<W>(W);

impl<W: Write> Out<W> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), Errno> {
        self.0.write_all(b).map_err(io_err)
    }
    fn u8(&mut self, v: u8) -> Result<(), Errno> {
        self.bytes(&[v])
    }
    fn u32(&mut self, v: u32) -> Result<(), Errno> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), Errno> {
        self.bytes(&v.to_le_bytes())
    }
}

struct In<R>(R);

impl<R: Read> In<R> {
    fn bytes(&mut self, b: &mut [u8]) -> Result<(), Errno> {
        self.0.read_exact(b).map_err(io_err)
    }
    fn u8(&mut self) -> Result<u8, Errno> {
        let mut b = [0; 1];
        self.bytes(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> Result<u32, Errno> {
        let mut b = [0; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, Errno> {
        let mut b = [0; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn count(&mut self) -> Result<u64, Errno> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(Errno::EINVAL);
        }
        Ok(n)
    }
}

fn kind_code(k: ImageKind) -> u8 {
    match k {
        ImageKind::Elf64 => 0,
        ImageKind::Elf32 => 1,
        ImageKind::BzImage => 2,
    }
}

fn kind_from(c: u8) -> Result<ImageKind, Errno> {
    Ok(match c {
        0 => ImageKind::Elf64,
        1 => ImageKind::Elf32,
        2 => ImageKind::BzImage,
        _ => return Err(Errno::EINVAL),
    })
}

/// What a saved image holds, read from the domain under the host lock.
struct Image {
    hvm: bool,
    vcpus: Vec<(bool, bool)>,
    built: BuildInfo,
    allocated: Vec<u64>,
    next: u64,
    extents: Vec<(u64, u64)>,
    /// Non-zero pages: pfn and contents.
    pages: Vec<(u64, Vec<u8>)>,
}

impl Host {
    /// Writes `dom`'s image to `out` (`xc_domain_save`, non-live). The domain must be shut
    /// down for suspend (`SHUTDOWN_suspend`) and built, else `EINVAL`, as
    /// `xc_domain_save` refuses a domain its suspend callback did not suspend; an unknown
    /// domain is `ESRCH`; a write error is its errno. The domain is left as it is (the
    /// toolstack destroys it, or resumes it with [`Host::resume_domain`]).
    pub fn save_domain(&self, dom: DomId, out: impl Write) -> Result<(), Errno> {
        let image = {
            let st = self.lock();
            let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
            if dom.is_dom0() || d.dying || d.shutdown != Some(xen_sys::SHUTDOWN_suspend) {
                return Err(Errno::EINVAL);
            }
            let built = d.built.clone().ok_or(Errno::EINVAL)?;
            let (allocated, next) = d.memory.allocator();
            let extents: Vec<(u64, u64)> = d.p2m.extents().map(|(p, l)| (p.get(), l)).collect();
            let mut pages = Vec::new();
            let backed = d.memory.file_pages();
            for &(start, len) in &extents {
                for pfn in start..(start + len).min(backed) {
                    let Some(ptr) = d.memory.page_ptr(pfn) else {
                        continue;
                    };
                    let mut page = vec![0u8; PAGE_SIZE];
                    // SAFETY: `ptr` is a whole page inside the domain's window (page_ptr
                    // checks the bounds), read under the host lock.
                    unsafe { std::ptr::copy_nonoverlapping(ptr, page.as_mut_ptr(), PAGE_SIZE) };
                    if page.iter().any(|&b| b != 0) {
                        pages.push((pfn, page));
                    }
                }
            }
            Image {
                hvm: d.hvm,
                vcpus: d.vcpus.iter().map(|v| (v.online, v.blocked)).collect(),
                built,
                allocated,
                next,
                extents,
                pages,
            }
        };
        let mut o = Out(std::io::BufWriter::new(out));
        o.bytes(SAVE_MAGIC)?;
        o.u32(VERSION)?;
        o.u8(u8::from(image.hvm))?;
        o.u32(image.vcpus.len() as u32)?;
        for (online, blocked) in &image.vcpus {
            o.u8(u8::from(*online))?;
            o.u8(u8::from(*blocked))?;
        }
        let b = &image.built;
        o.u8(kind_code(b.image))?;
        for v in [
            b.start_info_pfn.get(),
            b.console_pfn.get(),
            b.store_pfn.get(),
            b.kernel_pages.get(),
            b.ramdisk_pages.get(),
        ] {
            o.u64(v)?;
        }
        o.u32(b.cmdline.len() as u32)?;
        o.bytes(b.cmdline.as_bytes())?;
        o.u64(image.allocated.len() as u64)?;
        for p in &image.allocated {
            o.u64(*p)?;
        }
        o.u64(image.next)?;
        o.u64(image.extents.len() as u64)?;
        for (s, l) in &image.extents {
            o.u64(*s)?;
            o.u64(*l)?;
        }
        o.u64(image.pages.len() as u64)?;
        for (pfn, page) in &image.pages {
            o.u64(*pfn)?;
            o.bytes(page)?;
        }
        o.bytes(END_MAGIC)?;
        o.0.flush().map_err(io_err)
    }

    /// Restores an image written by [`Host::save_domain`] from `input` into `dom`
    /// (`xc_domain_restore`): a created, empty domain with its vCPUs (`set_max_vcpus`) and
    /// a maximum that holds the image. Populates and fills its frames, puts its vCPUs and
    /// boot pages back, and seeds its grant table for the console and xenstore backends of
    /// `spec`. Returns where its pages are now (new machine frames, `spec`'s ports).
    ///
    /// Errors: a stream that is not a whole image of this format, a guest type or vCPU count
    /// that does not fit `dom`, or a `dom` already built or populated: `EINVAL`; more memory
    /// than `dom` may have or the host has: `ENOMEM`; unknown domain: `ESRCH`. On error the
    /// domain may hold part of the image; the toolstack destroys it.
    pub fn restore_domain(
        &self,
        dom: DomId,
        input: impl Read,
        spec: &RestoreSpec,
    ) -> Result<BuildInfo, Errno> {
        {
            let st = self.lock();
            let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
            if dom.is_dom0() || d.dying || d.built.is_some() || d.p2m.populated() > 0 {
                return Err(Errno::EINVAL);
            }
        }
        let mut i = In(std::io::BufReader::new(input));
        let mut magic = [0u8; 8];
        i.bytes(&mut magic)?;
        if &magic != SAVE_MAGIC || i.u32()? != VERSION {
            return Err(Errno::EINVAL);
        }
        let hvm = i.u8()? != 0;
        let nvcpus = i.u32()?;
        if u64::from(nvcpus) > MAX_COUNT {
            return Err(Errno::EINVAL);
        }
        let mut vcpus = Vec::new();
        for _ in 0..nvcpus {
            vcpus.push((i.u8()? != 0, i.u8()? != 0));
        }
        let image = kind_from(i.u8()?)?;
        let (start_info_pfn, console_pfn, store_pfn, kernel_pages, ramdisk_pages) =
            (i.u64()?, i.u64()?, i.u64()?, i.u64()?, i.u64()?);
        let len = i.u32()? as usize;
        if len >= 1024 {
            return Err(Errno::EINVAL);
        }
        let mut cmdline = vec![0u8; len];
        i.bytes(&mut cmdline)?;
        let cmdline = String::from_utf8(cmdline).map_err(|_| Errno::EINVAL)?;
        let n = i.count()?;
        let mut allocated = Vec::new();
        for _ in 0..n {
            allocated.push(i.u64()?);
        }
        let next = i.u64()?;
        let n = i.count()?;
        let mut extents = Vec::new();
        for _ in 0..n {
            extents.push((i.u64()?, i.u64()?));
        }
        let wp = window_pages(self);
        let in_extents = |pfn: u64| extents.iter().any(|&(s, l)| (s..s + l).contains(&pfn));
        if extents
            .iter()
            .any(|&(s, l)| l == 0 || s.checked_add(l).is_none_or(|e| e > wp))
            || [start_info_pfn, console_pfn, store_pfn]
                .iter()
                .any(|&p| !in_extents(p))
        {
            return Err(Errno::EINVAL);
        }
        {
            let mut st = self.lock();
            let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
            if d.hvm != hvm || vcpus.len() > d.vcpus.len() || vcpus.is_empty() {
                return Err(Errno::EINVAL);
            }
            // Xen's populate_physmap per extent, each checked against the domain's maximum.
            let mut holes = Vec::new();
            for &(s, l) in &extents {
                holes.extend(d.p2m.holes(s, l));
            }
            crate::domain::populate_holes(&mut st, dom, &holes)?;
        }
        // Page contents, written as they arrive.
        let n = i.count()?;
        let mut page = vec![0u8; PAGE_SIZE];
        for _ in 0..n {
            let pfn = i.u64()?;
            i.bytes(&mut page)?;
            let mut st = self.lock();
            let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
            if d.p2m.lookup(Pfn(pfn)).is_none() {
                return Err(Errno::EINVAL);
            }
            d.memory.ensure(pfn, wp)?;
            let ptr = d.memory.page_ptr(pfn).ok_or(Errno::EINVAL)?;
            // SAFETY: a whole page inside the domain's window, written under the host lock.
            unsafe { std::ptr::copy_nonoverlapping(page.as_ptr(), ptr, PAGE_SIZE) };
        }
        i.bytes(&mut magic)?;
        if &magic != END_MAGIC {
            return Err(Errno::EINVAL);
        }
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let mfn = |p: u64| {
            if hvm {
                Mfn(p)
            } else {
                d.p2m.lookup(Pfn(p)).unwrap_or(Mfn(u64::MAX))
            }
        };
        let info = BuildInfo {
            image,
            start_info_pfn: Pfn(start_info_pfn),
            console_pfn: Pfn(console_pfn),
            console_mfn: mfn(console_pfn),
            store_pfn: Pfn(store_pfn),
            store_mfn: mfn(store_pfn),
            console_port: spec.console_port,
            store_port: spec.store_port,
            kernel_pages: xen_types::Pages(kernel_pages),
            ramdisk_pages: xen_types::Pages(ramdisk_pages),
            cmdline,
        };
        if let Some(&max) = allocated.iter().max() {
            d.memory.ensure(max, wp)?;
        }
        d.memory.set_allocator(allocated, next);
        d.account(now);
        for (v, (online, blocked)) in d.vcpus.iter_mut().zip(&vcpus) {
            v.online = *online;
            v.blocked = *blocked;
        }
        d.built = Some(info.clone());
        for (gref, backend, pfn) in [
            (
                xen_sys::GNTTAB_RESERVED_CONSOLE,
                spec.console_domid,
                info.console_pfn,
            ),
            (
                xen_sys::GNTTAB_RESERVED_XENSTORE,
                spec.store_domid,
                info.store_pfn,
            ),
        ] {
            if backend != dom {
                self.grant_at(&mut st, dom, GrantRef(gref), backend, pfn, false, false)?;
            }
        }
        Ok(info)
    }

    /// Resumes a domain that shut down (`XEN_DOMCTL_resumedomain`, what `xc_domain_resume`
    /// ends with): its shutdown is cleared and it runs on where it stopped, as after a
    /// cancelled suspend. `EINVAL` for a domain not shut down, dying, or dom0; `ESRCH`
    /// for an unknown domain.
    pub fn resume_domain(&self, dom: DomId) -> Result<(), Errno> {
        let mut st = self.lock();
        let now = st.clock.now_ns();
        let d = st.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        if dom.is_dom0() || d.dying || d.shutdown.is_none() {
            return Err(Errno::EINVAL);
        }
        d.account(now);
        d.shutdown = None;
        Ok(())
    }
}
