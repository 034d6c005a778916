//! A small simulated host: guest memory in memfds, grant tables, event channels.
//!
//! Grant mappings alias the granting domain's memfd pages (as on Xen, both sides see the
//! same page), so the backend and a test frontend in one process exchange data exactly as
//! they would across domains. The simulation enforces Xen's rules that matter to a
//! backend: only granted pages map, read-only grants map read-only, only the grantee
//! maps, a grant in use cannot be ended, a dead domain's grants and ports are gone
//! (existing mappings stay valid until unmapped).
//!
//! (Stands in until `xen-sim`/`gnttab`/`evtchn` provide the same; see
//! `/work/notes/api-requests.md`.)

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use xen_types::mem::SharedMemory;
use xen_types::{DomId, Errno, EvtchnPort, GrantRef, PAGE_SIZE};

use crate::host::{EventChannel, GrantMapper, Host};
use crate::Error;

/// A domain's memory: a memfd of `pages` pages, mapped whole for the domain's own use.
pub struct GuestMemory {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the raw pointer is a shared mapping owned by the value; all access goes through
// volatile `SharedMemoryExt` calls.
unsafe impl Send for GuestMemory {}
// SAFETY: as above.
unsafe impl Sync for GuestMemory {}

fn mmap_fd(
    addr: *mut u8,
    len: usize,
    writable: bool,
    fd: i32,
    off: u64,
    fixed: bool,
) -> std::io::Result<*mut u8> {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let flags = libc::MAP_SHARED | if fixed { libc::MAP_FIXED } else { 0 };
    let off =
        libc::off_t::try_from(off).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mmap of a file we own; with MAP_FIXED, `addr..addr+len` lies inside a
    // reservation this module made and owns, so nothing else is replaced.
    let p = unsafe { libc::mmap(addr.cast(), len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

fn munmap(ptr: *mut u8, len: usize) {
    // SAFETY: unmaps a region this module mapped and no longer uses.
    unsafe { libc::munmap(ptr.cast(), len) };
}

impl GuestMemory {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> Result<GuestMemory, Error> {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"xen-sim-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = pages.max(1) * PAGE_SIZE;
        let file = std::fs::File::from(fd);
        file.set_len(len as u64)?;
        let fd = OwnedFd::from(file);
        let ptr = mmap_fd(std::ptr::null_mut(), len, true, fd.as_raw_fd(), 0, false)?;
        Ok(GuestMemory { fd, ptr, len })
    }

    /// Pages.
    pub fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        munmap(self.ptr, self.len);
    }
}

// SAFETY: a shared file mapping owned by the value, page-aligned, `len` bytes, read-write
// until dropped.
unsafe impl SharedMemory for GuestMemory {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// `pages` pages of a domain's memory starting at page `first`: a domain's own view of,
/// say, its ring pages.
#[derive(Debug)]
pub struct Region<M: SharedMemory> {
    mem: Arc<M>,
    first: usize,
    pages: usize,
}

impl<M: SharedMemory> Clone for Region<M> {
    fn clone(&self) -> Self {
        Region {
            mem: self.mem.clone(),
            first: self.first,
            pages: self.pages,
        }
    }
}

impl<M: SharedMemory> Region<M> {
    /// Pages `first..first+pages` of `mem`.
    pub fn new(mem: Arc<M>, first: usize, pages: usize) -> Result<Region<M>, Error> {
        let total = mem.len() / PAGE_SIZE;
        if first.checked_add(pages).is_none_or(|e| e > total) || pages == 0 {
            return Err(Error::Config(format!(
                "pages {first}+{pages} outside guest memory of {total} pages"
            )));
        }
        Ok(Region { mem, first, pages })
    }
}

// SAFETY: a page-aligned sub-range of a SharedMemory region (which is page-aligned), in
// bounds (checked in `new`), kept alive by the Arc.
unsafe impl<M: SharedMemory> SharedMemory for Region<M> {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: in bounds (checked in `new`).
        unsafe { self.mem.as_ptr().add(self.first * PAGE_SIZE) }
    }
    fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }
    fn writable(&self) -> bool {
        self.mem.writable()
    }
}

struct GrantEntry {
    pfn: usize,
    to: DomId,
    readonly: bool,
    maps: u32,
}

struct SimDom {
    mem: Arc<GuestMemory>,
    grants: HashMap<u32, GrantEntry>,
    free_refs: Vec<u32>,
    next_ref: u32,
    ports: HashMap<u32, Arc<Pair>>,
    next_port: u32,
}

#[derive(Default)]
struct SimState {
    doms: HashMap<DomId, SimDom>,
    dead: Vec<DomId>,
}

/// The simulated host. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SimHost {
    st: Arc<Mutex<SimState>>,
    me: DomId,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("me", &self.me).finish()
    }
}

fn errno(e: Errno) -> Error {
    Error::Host(e)
}

impl SimHost {
    /// A host whose backend runs in `backend` (normally dom0).
    pub fn new(backend: DomId) -> SimHost {
        SimHost {
            st: Arc::default(),
            me: backend,
        }
    }

    /// Creates domain `domid` with `pages` pages of memory.
    pub fn create_domain(&self, domid: DomId, pages: usize) -> Result<Arc<GuestMemory>, Error> {
        let mem = Arc::new(GuestMemory::new(pages)?);
        let mut g = self.st.lock();
        if g.doms.contains_key(&domid) {
            return Err(errno(Errno::EEXIST));
        }
        g.dead.retain(|d| *d != domid);
        g.doms.insert(
            domid,
            SimDom {
                mem: mem.clone(),
                grants: HashMap::new(),
                free_refs: Vec::new(),
                // Refs 0..8 are reserved by convention (GNTTAB_NR_RESERVED_ENTRIES).
                next_ref: 8,
                ports: HashMap::new(),
                next_port: 1,
            },
        );
        Ok(mem)
    }

    /// Destroys a domain: its grants and event channels go away (peers see
    /// [`Error::Closed`]); mappings others hold of its pages stay valid until unmapped.
    pub fn destroy_domain(&self, domid: DomId) {
        let mut g = self.st.lock();
        if let Some(d) = g.doms.remove(&domid) {
            for p in d.ports.values() {
                p.close();
            }
        }
        g.dead.push(domid);
    }

    /// True while `domid` exists.
    pub fn domain_alive(&self, domid: DomId) -> bool {
        self.st.lock().doms.contains_key(&domid)
    }

    /// Domain `domid` grants page `pfn` of its memory to `to` (`gnttab_grant_foreign_access`).
    pub fn grant(
        &self,
        domid: DomId,
        pfn: usize,
        to: DomId,
        readonly: bool,
    ) -> Result<GrantRef, Error> {
        let mut g = self.st.lock();
        let d = g.doms.get_mut(&domid).ok_or(errno(Errno::ESRCH))?;
        if pfn >= d.mem.pages() {
            return Err(errno(Errno::EINVAL));
        }
        let r = match d.free_refs.pop() {
            Some(r) => r,
            None => {
                d.next_ref += 1;
                d.next_ref - 1
            }
        };
        d.grants.insert(
            r,
            GrantEntry {
                pfn,
                to,
                readonly,
                maps: 0,
            },
        );
        Ok(GrantRef(r))
    }

    /// Ends a grant (`gnttab_end_foreign_access_ref`): fails with `EBUSY` while mapped.
    pub fn end_grant(&self, domid: DomId, gref: GrantRef) -> Result<(), Error> {
        let mut g = self.st.lock();
        let d = g.doms.get_mut(&domid).ok_or(errno(Errno::ESRCH))?;
        match d.grants.get(&gref.0) {
            None => Err(errno(Errno::ENOENT)),
            Some(e) if e.maps > 0 => Err(errno(Errno::EBUSY)),
            Some(_) => {
                d.grants.remove(&gref.0);
                d.free_refs.push(gref.0);
                Ok(())
            }
        }
    }

    /// Mappings currently held of `domid`'s grants (leak checks).
    pub fn mapped_count(&self, domid: DomId) -> u32 {
        let g = self.st.lock();
        g.doms
            .get(&domid)
            .map_or(0, |d| d.grants.values().map(|e| e.maps).sum())
    }

    /// Domain `domid` allocates an unbound port for `remote`
    /// (`EVTCHNOP_alloc_unbound`), returning the port and its end of the channel.
    pub fn alloc_unbound(
        &self,
        domid: DomId,
        remote: DomId,
    ) -> Result<(EvtchnPort, SimChannel), Error> {
        let mut g = self.st.lock();
        let d = g.doms.get_mut(&domid).ok_or(errno(Errno::ESRCH))?;
        let port = d.next_port;
        d.next_port += 1;
        let pair = Arc::new(Pair {
            sides: [Side::default(), Side::default()],
            closed: AtomicBool::new(false),
            remote,
            bound: AtomicBool::new(false),
        });
        d.ports.insert(port, pair.clone());
        Ok((EvtchnPort(port), SimChannel { pair, me: 0 }))
    }

    /// This host seen from another domain (e.g. a driver domain).
    pub fn as_domain(&self, domid: DomId) -> SimHost {
        SimHost {
            st: self.st.clone(),
            me: domid,
        }
    }
}

/// A grant mapping on the simulated host; unmapped (and the grant released) on drop.
pub struct SimMapping {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    st: Weak<Mutex<SimState>>,
    domid: DomId,
    refs: Vec<u32>,
}

// SAFETY: the pointer is a mapping owned by the value; access is volatile through
// SharedMemoryExt.
unsafe impl Send for SimMapping {}
// SAFETY: as above.
unsafe impl Sync for SimMapping {}

// SAFETY: a MAP_SHARED mapping of `len` bytes made in `map_grants`, page-aligned, valid
// until drop; writable only when mapped writable.
unsafe impl SharedMemory for SimMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        munmap(self.ptr, self.len);
        if let Some(st) = self.st.upgrade() {
            let mut g = st.lock();
            if let Some(d) = g.doms.get_mut(&self.domid) {
                for r in &self.refs {
                    if let Some(e) = d.grants.get_mut(r) {
                        e.maps = e.maps.saturating_sub(1);
                    }
                }
            }
        }
    }
}

impl GrantMapper for SimHost {
    type Mapping = SimMapping;

    fn map_grants(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<SimMapping, Error> {
        if refs.is_empty() {
            return Err(errno(Errno::EINVAL));
        }
        let mut g = self.st.lock();
        let d = g.doms.get_mut(&domid).ok_or(errno(Errno::ESRCH))?;
        let mut pfns = Vec::with_capacity(refs.len());
        for r in refs {
            let e = d.grants.get(&r.0).ok_or(errno(Errno::ENOENT))?;
            if e.to != self.me {
                return Err(errno(Errno::EPERM));
            }
            if writable && e.readonly {
                return Err(errno(Errno::EACCES));
            }
            pfns.push(e.pfn);
        }
        let len = refs.len() * PAGE_SIZE;
        let fd = d.mem.fd.as_raw_fd();
        let consecutive = pfns.windows(2).all(|w| w[1] == w[0] + 1);
        let ptr = if consecutive {
            mmap_fd(
                std::ptr::null_mut(),
                len,
                writable,
                fd,
                (pfns[0] * PAGE_SIZE) as u64,
                false,
            )?
        } else {
            // Reserve the range, then place each page in it.
            // SAFETY: anonymous PROT_NONE reservation, no file involved.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().into());
            }
            let base: *mut u8 = base.cast();
            for (i, pfn) in pfns.iter().enumerate() {
                // SAFETY: page `i` of the reservation just made (in bounds).
                let at = unsafe { base.add(i * PAGE_SIZE) };
                if let Err(e) = mmap_fd(at, PAGE_SIZE, writable, fd, (pfn * PAGE_SIZE) as u64, true)
                {
                    munmap(base, len);
                    return Err(e.into());
                }
            }
            base
        };
        for r in refs {
            if let Some(e) = d.grants.get_mut(&r.0) {
                e.maps += 1;
            }
        }
        Ok(SimMapping {
            ptr,
            len,
            writable,
            st: Arc::downgrade(&self.st),
            domid,
            refs: refs.iter().map(|r| r.0).collect(),
        })
    }
}

#[derive(Default)]
struct Side {
    pending: Mutex<bool>,
    cv: Condvar,
}

struct Pair {
    sides: [Side; 2],
    closed: AtomicBool,
    remote: DomId,
    bound: AtomicBool,
}

impl Pair {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for s in &self.sides {
            let _g = s.pending.lock();
            s.cv.notify_all();
        }
    }
}

/// One end of a simulated event channel; closing (dropping) it closes the channel.
pub struct SimChannel {
    pair: Arc<Pair>,
    me: usize,
}

impl std::fmt::Debug for SimChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimChannel").field("end", &self.me).finish()
    }
}

impl Drop for SimChannel {
    fn drop(&mut self) {
        self.pair.close();
    }
}

impl EventChannel for SimChannel {
    fn notify(&self) -> Result<(), Error> {
        if self.pair.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let s = &self.pair.sides[1 - self.me];
        *s.pending.lock() = true;
        s.cv.notify_one();
        Ok(())
    }

    fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let s = &self.pair.sides[self.me];
        let mut p = s.pending.lock();
        loop {
            if *p {
                *p = false;
                return Ok(true);
            }
            if self.pair.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if s.cv.wait_for(&mut p, timeout).timed_out() {
                return Ok(std::mem::replace(&mut *p, false));
            }
        }
    }
}

impl Host for SimHost {
    type Channel = SimChannel;

    fn bind_interdomain(&self, domid: DomId, port: EvtchnPort) -> Result<SimChannel, Error> {
        let g = self.st.lock();
        let d = g.doms.get(&domid).ok_or(errno(Errno::ESRCH))?;
        let pair = d.ports.get(&port.0).ok_or(errno(Errno::EINVAL))?;
        if pair.remote != self.me || pair.closed.load(Ordering::SeqCst) {
            return Err(errno(Errno::EINVAL));
        }
        if pair.bound.swap(true, Ordering::SeqCst) {
            return Err(errno(Errno::EBUSY));
        }
        Ok(SimChannel {
            pair: pair.clone(),
            me: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use xen_types::mem::SharedMemoryExt;

    use super::*;

    #[test]
    fn grants_alias_guest_pages_and_follow_xen_rules() {
        let host = SimHost::new(DomId::DOM0);
        let mem = host.create_domain(DomId(3), 8).unwrap();
        mem.write_obj(5 * PAGE_SIZE + 8, 0xabcdu32).unwrap();
        mem.write_obj(2 * PAGE_SIZE, 0x1111u32).unwrap();
        let rw = host.grant(DomId(3), 5, DomId::DOM0, false).unwrap();
        let ro = host.grant(DomId(3), 2, DomId::DOM0, true).unwrap();
        let other = host.grant(DomId(3), 1, DomId(9), false).unwrap();
        // Non-consecutive batch: pages 5 then 2.
        let m = host.map_grants(DomId(3), &[rw, ro], false).unwrap();
        assert_eq!(m.read_obj::<u32>(8).unwrap(), 0xabcd);
        assert_eq!(m.read_obj::<u32>(PAGE_SIZE).unwrap(), 0x1111);
        assert!(m.write_obj(0, 1u32).is_err(), "read-only mapping");
        let w = host.map_grants(DomId(3), &[rw], true).unwrap();
        w.write_obj(16, 77u64).unwrap();
        assert_eq!(mem.read_obj::<u64>(5 * PAGE_SIZE + 16).unwrap(), 77);
        assert!(matches!(
            host.map_grants(DomId(3), &[ro], true),
            Err(Error::Host(Errno::EACCES))
        ));
        assert!(matches!(
            host.map_grants(DomId(3), &[GrantRef(999)], false),
            Err(Error::Host(Errno::ENOENT))
        ));
        assert!(matches!(
            host.map_grants(DomId(3), &[other], false),
            Err(Error::Host(Errno::EPERM))
        ));
        assert!(matches!(
            host.end_grant(DomId(3), rw),
            Err(Error::Host(Errno::EBUSY))
        ));
        assert_eq!(host.mapped_count(DomId(3)), 3);
        drop((m, w));
        assert_eq!(host.mapped_count(DomId(3)), 0);
        host.end_grant(DomId(3), rw).unwrap();
        assert!(host.map_grants(DomId(3), &[rw], false).is_err());
    }

    #[test]
    fn event_channels_signal_and_close_with_the_domain() {
        let host = SimHost::new(DomId::DOM0);
        host.create_domain(DomId(4), 1).unwrap();
        let (port, fe) = host.alloc_unbound(DomId(4), DomId::DOM0).unwrap();
        let be = host.bind_interdomain(DomId(4), port).unwrap();
        assert!(matches!(
            host.bind_interdomain(DomId(4), port),
            Err(Error::Host(Errno::EBUSY))
        ));
        assert!(!be.wait(Duration::from_millis(1)).unwrap());
        fe.notify().unwrap();
        assert!(be.wait(Duration::from_secs(5)).unwrap());
        be.notify().unwrap();
        assert!(fe.wait(Duration::from_secs(5)).unwrap());
        host.destroy_domain(DomId(4));
        assert!(matches!(
            be.wait(Duration::from_secs(5)),
            Err(Error::Closed)
        ));
        assert!(matches!(be.notify(), Err(Error::Closed)));
        assert!(!host.domain_alive(DomId(4)));
    }
}
