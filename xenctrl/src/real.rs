//! The real backend: libxenctrl and libxenguest over `/dev/xen/privcmd`.

use std::ffi::{c_int, c_uint, CStr, CString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use parking_lot::Mutex;
use xen_sys::generated::xenctrl::XenCtrlLib;
use xen_sys::generated::xenguest::XenGuestLib;
use xen_types::{DomId, Errno, EvtchnPort, Mfn, Pages, Pfn, VcpuId};

use crate::{
    BuiltGuest, ConsoleRead, DomainConfig, DomainInfo, Error, ForeignMapping, GuestImage,
    ImageSource, PhysInfo, RestoreRings, RestoredGuest, Result, RingPage, ShutdownReason, VcpuInfo,
    WatchdogId, XenControl, XenVersion,
};

/// The privcmd device a dom0 has.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// Resolves a symbol of a loaded library, or fails with [`Error::MissingSymbol`].
macro_rules! sym {
    ($lib:expr, $library:literal, $name:ident) => {
        *$lib.$name.as_ref().map_err(|_| Error::MissingSymbol {
            library: $library,
            symbol: stringify!($name),
        })?
    };
}

mod save;

/// An open `xc_interface`.
struct Xch(NonNull<xen_sys::xc_interface>);

// SAFETY: an xc_interface handle is not tied to the thread that opened it; `Real` only
// uses it under its mutex, so calls through it never run concurrently.
unsafe impl Send for Xch {}

/// Control of the real hypervisor through libxenctrl (as dom0).
pub struct Real {
    lib: &'static XenCtrlLib,
    xch: Mutex<Xch>,
}

impl std::fmt::Debug for Real {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Real").finish_non_exhaustive()
    }
}

impl Real {
    /// Opens libxenctrl (`xc_interface_open`).
    ///
    /// Fails with [`Error::NotOnXen`] when `/dev/xen/privcmd` does not exist (not a Xen
    /// dom0), and with [`Error::LibraryMissing`] (naming the library and its package) when
    /// libxenctrl is not installed.
    pub fn open() -> Result<Real> {
        Real::open_privcmd(Path::new(PRIVCMD))
    }

    /// As [`Real::open`], with the privcmd device at `privcmd` (for tests and unusual
    /// setups; libxenctrl itself always opens `/dev/xen/privcmd`).
    pub fn open_privcmd(privcmd: &Path) -> Result<Real> {
        if !privcmd.exists() {
            return Err(Error::NotOnXen);
        }
        let lib = xen_sys::libs::xenctrl()?;
        let open = sym!(lib, "libxenctrl", xc_interface_open);
        // SAFETY: null loggers select libxenctrl's default (stderr) loggers; no flags.
        let xch = unsafe { open(ptr::null_mut(), ptr::null_mut(), 0) };
        match NonNull::new(xch) {
            Some(xch) => Ok(Real {
                lib,
                xch: Mutex::new(Xch(xch)),
            }),
            None => Err(Error::from_errno("xc_interface_open", None, Errno::last())),
        }
    }

    /// Runs `f` with the handle; a negative return is an error with the thread's errno.
    fn call(
        &self,
        op: &'static str,
        dom: Option<DomId>,
        f: impl FnOnce(*mut xen_sys::xc_interface) -> c_int,
    ) -> Result<c_int> {
        let xch = self.xch.lock();
        let rc = f(xch.0.as_ptr());
        if rc < 0 {
            Err(Error::from_errno(op, dom, Errno::last()))
        } else {
            Ok(rc)
        }
    }

    fn guest_lib() -> Result<&'static XenGuestLib> {
        Ok(xen_sys::libs::xenguest()?)
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        if let Ok(close) = self.lib.xc_interface_close.as_ref() {
            // SAFETY: the handle came from xc_interface_open and is closed once, here.
            unsafe { close(self.xch.get_mut().0.as_ptr()) };
        }
    }
}

fn cstring(op: &'static str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument { op })
}

/// Releases an `xc_dom_image` on every path out of the build.
struct DomImage<'a> {
    lib: &'a XenGuestLib,
    ptr: NonNull<xen_sys::xc_dom_image>,
}

impl Drop for DomImage<'_> {
    fn drop(&mut self) {
        if let Ok(release) = self.lib.xc_dom_release.as_ref() {
            // SAFETY: the image came from xc_dom_allocate and is released once, here.
            unsafe { release(self.ptr.as_ptr()) };
        }
    }
}

impl XenControl for Real {
    fn backend(&self) -> &'static str {
        "real"
    }

    fn version(&self) -> Result<XenVersion> {
        let f = sym!(self.lib, "libxenctrl", xc_version);
        // SAFETY: XENVER_version takes no argument buffer.
        let v = self.call("xc_version", None, |x| unsafe {
            f(x, xen_sys::XENVER_version as c_int, ptr::null_mut())
        })?;
        let mut extra: xen_sys::xen_extraversion_t = [0; 16];
        // SAFETY: XENVER_extraversion fills a xen_extraversion_t, which `extra` is.
        self.call("xc_version", None, |x| unsafe {
            f(
                x,
                xen_sys::XENVER_extraversion as c_int,
                extra.as_mut_ptr().cast(),
            )
        })?;
        let bytes: Vec<u8> = extra.iter().map(|&c| c as u8).chain([0]).collect();
        let extra = CStr::from_bytes_until_nul(&bytes)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let v = v as u32;
        Ok(XenVersion {
            major: v >> 16,
            minor: v & 0xffff,
            extra,
        })
    }

    fn physinfo(&self) -> Result<PhysInfo> {
        let f = sym!(self.lib, "libxenctrl", xc_physinfo);
        let mut p = xen_sys::xc_physinfo_t::default();
        // SAFETY: `p` is a valid xc_physinfo_t to fill.
        self.call("xc_physinfo", None, |x| unsafe { f(x, &mut p) })?;
        Ok(PhysInfo::from(&p))
    }

    fn domain_info_chunk(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_getinfolist);
        let mut buf = vec![xen_sys::xc_domaininfo_t::default(); max as usize];
        // SAFETY: `buf` holds `max` entries for libxenctrl to fill.
        let n = self.call("xc_domain_getinfolist", Some(first), |x| unsafe {
            f(x, first.into(), max, buf.as_mut_ptr())
        })?;
        buf.truncate(n as usize);
        Ok(buf.iter().map(DomainInfo::from).collect())
    }

    fn create_domain(&self, config: &DomainConfig) -> Result<DomId> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_create);
        let want = config.domid.unwrap_or(DomId::INVALID);
        let mut domid = u32::from(want);
        let mut raw = config.to_raw();
        // SAFETY: `domid` and `raw` are valid for libxenctrl to read and write.
        self.call("xc_domain_create", Some(want), |x| unsafe {
            f(x, &mut domid, &mut raw)
        })?;
        DomId::try_from(domid).map_err(|e| Error::from_errno("xc_domain_create", None, e))
    }

    fn set_max_vcpus(&self, dom: DomId, max: u32) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_max_vcpus);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_max_vcpus", Some(dom), |x| unsafe {
            f(x, dom.into(), max)
        })
        .map(drop)
    }

    fn set_max_mem(&self, dom: DomId, max: Pages) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_setmaxmem);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_setmaxmem", Some(dom), |x| unsafe {
            f(x, dom.into(), max.kib())
        })
        .map(drop)
    }

    fn claim_pages(&self, dom: DomId, pages: Pages) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_claim_pages);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_claim_pages", Some(dom), |x| unsafe {
            f(x, dom.into(), pages.0 as _)
        })
        .map(drop)
    }

    fn populate_physmap(&self, dom: DomId, pfns: &[Pfn]) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_populate_physmap);
        let mut list: Vec<xen_sys::xen_pfn_t> = pfns.iter().map(|p| p.0).collect();
        let n = list.len();
        // SAFETY: `list` holds `n` frame numbers for Xen to read and update.
        let done = self.call("xc_domain_populate_physmap", Some(dom), |x| unsafe {
            f(x, dom.into(), n as _, 0, 0, list.as_mut_ptr())
        })?;
        if done as usize == n {
            Ok(())
        } else {
            Err(Error::OutOfMemory {
                op: "xc_domain_populate_physmap",
            })
        }
    }

    fn increase_reservation(&self, dom: DomId, pages: Pages) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_increase_reservation_exact);
        // SAFETY: a null extent list asks Xen to allocate without reporting the frames.
        self.call(
            "xc_domain_increase_reservation_exact",
            Some(dom),
            |x| unsafe { f(x, dom.into(), pages.0 as _, 0, 0, ptr::null_mut()) },
        )
        .map(drop)
    }

    fn decrease_reservation(&self, dom: DomId, pfns: &[Pfn]) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_decrease_reservation_exact);
        let mut list: Vec<xen_sys::xen_pfn_t> = pfns.iter().map(|p| p.0).collect();
        let n = list.len();
        // SAFETY: `list` holds `n` frame numbers for Xen to read.
        self.call(
            "xc_domain_decrease_reservation_exact",
            Some(dom),
            |x| unsafe { f(x, dom.into(), n as _, 0, list.as_mut_ptr()) },
        )
        .map(drop)
    }

    fn pause(&self, dom: DomId) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_pause);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_pause", Some(dom), |x| unsafe {
            f(x, dom.into())
        })
        .map(drop)
    }

    fn unpause(&self, dom: DomId) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_unpause);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_unpause", Some(dom), |x| unsafe {
            f(x, dom.into())
        })
        .map(drop)
    }

    fn shutdown(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_shutdown);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_shutdown", Some(dom), |x| unsafe {
            f(x, dom.into(), reason.code() as c_int)
        })
        .map(drop)
    }

    fn destroy(&self, dom: DomId) -> Result<()> {
        let f = sym!(self.lib, "libxenctrl", xc_domain_destroy);
        // SAFETY: plain integer arguments.
        self.call("xc_domain_destroy", Some(dom), |x| unsafe {
            f(x, dom.into())
        })
        .map(drop)
    }

    fn vcpu_info(&self, dom: DomId, vcpu: VcpuId) -> Result<VcpuInfo> {
        let f = sym!(self.lib, "libxenctrl", xc_vcpu_getinfo);
        let mut v = xen_sys::xc_vcpuinfo_t::default();
        // SAFETY: `v` is a valid xc_vcpuinfo_t to fill.
        self.call("xc_vcpu_getinfo", Some(dom), |x| unsafe {
            f(x, dom.into(), vcpu.0, &mut v)
        })?;
        Ok(VcpuInfo::from(&v))
    }

    fn evtchn_alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<EvtchnPort> {
        let f = sym!(self.lib, "libxenctrl", xc_evtchn_alloc_unbound);
        // SAFETY: plain integer arguments.
        let port = self.call("xc_evtchn_alloc_unbound", Some(dom), |x| unsafe {
            f(x, dom.into(), remote.into())
        })?;
        Ok(EvtchnPort(port as u32))
    }

    fn read_console_ring(&self, index: u32, max: usize) -> Result<ConsoleRead> {
        let mut buf = vec![0u8; max];
        let mut count = c_uint::try_from(max).unwrap_or(c_uint::MAX);
        let mut index = index;
        let f = sym!(self.lib, "libxenctrl", xc_readconsolering);
        self.call("xc_readconsolering", None, |x| {
            // SAFETY: `buf` holds `count` bytes; `count` and `index` are live locals; not
            // clearing, incremental from `index`.
            unsafe { f(x, buf.as_mut_ptr().cast(), &mut count, 0, 1, &mut index) }
        })?;
        buf.truncate(count as usize);
        Ok(ConsoleRead { data: buf, index })
    }

    fn map_foreign(&self, dom: DomId, frames: &[u64], writable: bool) -> Result<ForeignMapping> {
        Ok(ForeignMapping::new(Box::new(RealForeign::map(
            dom, frames, writable,
        )?)))
    }

    fn watchdog_arm(&self, timeout: std::time::Duration) -> Result<WatchdogId> {
        let secs = crate::types::watchdog_secs("xc_watchdog", timeout)?;
        let f = sym!(self.lib, "libxenctrl", xc_watchdog);
        // SAFETY: plain integer arguments; id 0 arms a new timer.
        let id = self.call("xc_watchdog", None, |x| unsafe { f(x, 0, secs) })?;
        Ok(WatchdogId(id as u32))
    }

    fn watchdog_kick(&self, id: WatchdogId, timeout: std::time::Duration) -> Result<()> {
        let secs = crate::types::watchdog_secs("xc_watchdog", timeout)?;
        if id.0 == 0 {
            return Err(Error::InvalidArgument { op: "xc_watchdog" });
        }
        let f = sym!(self.lib, "libxenctrl", xc_watchdog);
        // SAFETY: plain integer arguments; a non-zero id and timeout restart that timer.
        self.call("xc_watchdog", None, |x| unsafe { f(x, id.0, secs) })
            .map(drop)
    }

    fn watchdog_disarm(&self, id: WatchdogId) -> Result<()> {
        // Id 0 with timeout 0 would arm a timer that fires at once: refused here.
        if id.0 == 0 {
            return Err(Error::InvalidArgument { op: "xc_watchdog" });
        }
        let f = sym!(self.lib, "libxenctrl", xc_watchdog);
        // SAFETY: plain integer arguments; timeout 0 stops and frees timer `id`.
        self.call("xc_watchdog", None, |x| unsafe { f(x, id.0, 0) })
            .map(drop)
    }

    fn save_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        suspend: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        self.save(dom, fd, suspend)
    }

    fn restore_domain(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        rings: &RestoreRings,
    ) -> Result<RestoredGuest> {
        self.restore(dom, fd, rings)
    }

    fn resume_domain(&self, dom: DomId) -> Result<()> {
        self.resume(dom)
    }

    fn build_image(
        &self,
        dom: DomId,
        image: &GuestImage,
        console_port: EvtchnPort,
        store_port: EvtchnPort,
    ) -> Result<BuiltGuest> {
        let info = self.domain_info(dom)?;
        if info.hvm() {
            return Err(Error::Unsupported {
                op: "building a PVH guest",
                backend: "real",
            });
        }
        let max_vcpus = info.max_vcpu_id.map_or(0, |m| m + 1);
        let g = Real::guest_lib()?;
        let cmdline = cstring("xc_dom_allocate", image.cmdline.as_bytes())?;
        let xch = self.xch.lock();
        let x = xch.0.as_ptr();
        let get_last_error = self.lib.xc_get_last_error.as_ref().ok().copied();
        if let Ok(clear) = self.lib.xc_clear_last_error.as_ref() {
            // SAFETY: `x` is our open handle.
            unsafe { clear(x) };
        }
        // libxenguest reports through libxenctrl's last error (often leaving errno at 0):
        // prefer its code, then errno.
        let fail = |op: &'static str| {
            let errno = Errno::last();
            let code = get_last_error
                // SAFETY: `x` is our open handle; the result points at its last error.
                .map(|f| unsafe { f(x) })
                .filter(|e| !e.is_null())
                // SAFETY: non-null, pointing at libxenctrl's xc_error for this handle/thread.
                .map_or(xen_sys::XC_ERROR_NONE, |e| unsafe { (*e).code });
            let errno = match code {
                xen_sys::XC_OUT_OF_MEMORY => Errno::ENOMEM,
                xen_sys::XC_INVALID_KERNEL | xen_sys::XC_INVALID_PARAM => Errno::EINVAL,
                _ if errno.0 != 0 => errno,
                _ => Errno::EIO,
            };
            Error::from_errno(op, Some(dom), errno)
        };

        let allocate = sym!(g, "libxenguest", xc_dom_allocate);
        // SAFETY: `x` is our open handle; the command line is copied by libxenguest.
        let d = unsafe { allocate(x, cmdline.as_ptr(), ptr::null()) };
        let d = DomImage {
            lib: g,
            ptr: NonNull::new(d).ok_or_else(|| fail("xc_dom_allocate"))?,
        };
        let p = d.ptr.as_ptr();
        // SAFETY: `p` is a live xc_dom_image owned by `d`; these are plain fields libxl
        // sets the same way before building.
        unsafe {
            (*p).container_type = xen_sys::XC_DOM_PV_CONTAINER;
            (*p).flags = 0;
            (*p).console_evtchn = console_port.0;
            (*p).console_domid = image.console_domid.into();
            (*p).xenstore_evtchn = store_port.0;
            (*p).xenstore_domid = image.store_domid.into();
            (*p).claim_enabled = 0;
            (*p).max_vcpus = max_vcpus;
        }

        // Kernel and initrd; in-memory images must outlive the build (they do: `image`
        // is borrowed for the whole call).
        let rc = match &image.kernel {
            ImageSource::File(path) => {
                let path = cstring("xc_dom_kernel_file", path.as_os_str().as_bytes())?;
                let f = sym!(g, "libxenguest", xc_dom_kernel_file);
                // SAFETY: `p` is live; the path is a valid C string.
                unsafe { f(p, path.as_ptr()) }
            }
            ImageSource::Bytes(b) => {
                let f = sym!(g, "libxenguest", xc_dom_kernel_mem);
                // SAFETY: `b` stays alive and unchanged until `d` is released.
                unsafe { f(p, b.as_ptr().cast(), b.len()) }
            }
        };
        if rc != 0 {
            return Err(fail("xc_dom_kernel_file"));
        }
        if let Some(r) = &image.ramdisk {
            let rc = match r {
                ImageSource::File(path) => {
                    let path = cstring("xc_dom_module_file", path.as_os_str().as_bytes())?;
                    let f = sym!(g, "libxenguest", xc_dom_module_file);
                    // SAFETY: `p` is live; the path is a valid C string; no module cmdline.
                    unsafe { f(p, path.as_ptr(), ptr::null()) }
                }
                ImageSource::Bytes(b) => {
                    let f = sym!(g, "libxenguest", xc_dom_module_mem);
                    // SAFETY: `b` outlives `d`, as above.
                    unsafe { f(p, b.as_ptr().cast(), b.len(), ptr::null()) }
                }
            };
            if rc != 0 {
                return Err(fail("xc_dom_module_file"));
            }
        }

        let boot_xen_init = sym!(g, "libxenguest", xc_dom_boot_xen_init);
        // SAFETY: `p` is live and `x` is the handle it will use.
        if unsafe { boot_xen_init(p, x, dom.into()) } != 0 {
            return Err(fail("xc_dom_boot_xen_init"));
        }
        type Step = unsafe extern "C" fn(*mut xen_sys::xc_dom_image) -> c_int;
        let parse: Step = sym!(g, "libxenguest", xc_dom_parse_image);
        // SAFETY: `p` is live with a kernel loaded.
        if unsafe { parse(p) } != 0 {
            return Err(fail("xc_dom_parse_image"));
        }
        let mem_init = sym!(g, "libxenguest", xc_dom_mem_init);
        let mib = c_uint::try_from(image.memory.mib()).unwrap_or(c_uint::MAX);
        // SAFETY: `p` is live; the size is in MiB.
        if unsafe { mem_init(p, mib) } != 0 {
            return Err(fail("xc_dom_mem_init"));
        }
        let steps: [(&'static str, Step); 4] = [
            (
                "xc_dom_boot_mem_init",
                sym!(g, "libxenguest", xc_dom_boot_mem_init),
            ),
            (
                "xc_dom_build_image",
                sym!(g, "libxenguest", xc_dom_build_image),
            ),
            (
                "xc_dom_boot_image",
                sym!(g, "libxenguest", xc_dom_boot_image),
            ),
            (
                "xc_dom_gnttab_init",
                sym!(g, "libxenguest", xc_dom_gnttab_init),
            ),
        ];
        for (op, step) in steps {
            // SAFETY: `p` is live and went through the previous steps in libxl's order.
            if unsafe { step(p) } != 0 {
                return Err(fail(op));
            }
        }
        // SAFETY: `p` is live; for a PV guest `pv_p2m` holds `p2m_size` entries (xc_dom_p2m).
        let (console_pfn, store_pfn, console_mfn, store_mfn) = unsafe {
            let p2m = |pfn: u64| -> Mfn {
                if (*p).pv_p2m.is_null() || pfn >= (*p).p2m_size {
                    Mfn(u64::MAX)
                } else {
                    Mfn(*(*p).pv_p2m.add(pfn as usize))
                }
            };
            let c = (*p).console_pfn;
            let s = (*p).xenstore_pfn;
            (c, s, p2m(c), p2m(s))
        };
        drop(d);
        drop(xch);
        Ok(BuiltGuest {
            console: RingPage {
                pfn: Pfn(console_pfn),
                mfn: console_mfn,
                port: console_port,
                backend: image.console_domid,
            },
            store: RingPage {
                pfn: Pfn(store_pfn),
                mfn: store_mfn,
                port: store_port,
                backend: image.store_domid,
            },
        })
    }
}

/// Frames mapped with libxenforeignmemory (one handle per mapping: the console daemon maps
/// a page per guest, rarely).
struct RealForeign {
    lib: &'static xen_sys::generated::xenforeignmemory::XenForeignMemoryLib,
    fmem: NonNull<xen_sys::xenforeignmemory_handle>,
    addr: NonNull<u8>,
    pages: usize,
    writable: bool,
}

// SAFETY: the handle and mapping are owned by the value and not tied to a thread; the
// mapping is reached only through volatile `SharedMemory` accessors.
unsafe impl Send for RealForeign {}
// SAFETY: as above.
unsafe impl Sync for RealForeign {}

impl RealForeign {
    fn map(dom: DomId, frames: &[u64], writable: bool) -> Result<RealForeign> {
        const OP: &str = "xenforeignmemory_map";
        if frames.is_empty() {
            return Err(Error::InvalidArgument { op: OP });
        }
        let lib = xen_sys::libs::xenforeignmemory()?;
        let open = sym!(lib, "libxenforeignmemory", xenforeignmemory_open);
        let map = sym!(lib, "libxenforeignmemory", xenforeignmemory_map);
        let close = sym!(lib, "libxenforeignmemory", xenforeignmemory_close);
        // SAFETY: null logger selects the library's default; no flags.
        let fmem = NonNull::new(unsafe { open(ptr::null_mut(), 0) })
            .ok_or_else(|| Error::from_errno("xenforeignmemory_open", None, Errno::last()))?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let pfns: Vec<xen_sys::xen_pfn_t> = frames.to_vec();
        // SAFETY: `fmem` is open; `pfns` holds `frames.len()` entries; no per-page errors
        // asked for (a failure fails the whole map).
        let addr = unsafe {
            map(
                fmem.as_ptr(),
                dom.0.into(),
                prot,
                pfns.len(),
                pfns.as_ptr(),
                ptr::null_mut(),
            )
        };
        match NonNull::new(addr.cast::<u8>()) {
            Some(addr) => Ok(RealForeign {
                lib,
                fmem,
                addr,
                pages: frames.len(),
                writable,
            }),
            None => {
                let e = Errno::last();
                // SAFETY: the handle is open and closed once, here.
                unsafe { close(fmem.as_ptr()) };
                Err(Error::from_errno(OP, Some(dom), e))
            }
        }
    }
}

impl Drop for RealForeign {
    fn drop(&mut self) {
        if let (Ok(unmap), Ok(close)) = (
            self.lib.xenforeignmemory_unmap.as_ref(),
            self.lib.xenforeignmemory_close.as_ref(),
        ) {
            // SAFETY: `addr`/`pages` are what xenforeignmemory_map returned on this open
            // handle; both are released once, here.
            unsafe {
                unmap(self.fmem.as_ptr(), self.addr.as_ptr().cast(), self.pages);
                close(self.fmem.as_ptr());
            }
        }
    }
}

// SAFETY: a live mapping of `pages` pages at a fixed, page-aligned address until drop,
// writable exactly when mapped with PROT_WRITE.
unsafe impl xen_types::mem::SharedMemory for RealForeign {
    fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }
    fn len(&self) -> usize {
        self.pages * xen_types::PAGE_SIZE
    }
    fn writable(&self) -> bool {
        self.writable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_privcmd_is_one_clear_error() {
        let e = Real::open_privcmd(Path::new("/nonexistent/xen/privcmd")).unwrap_err();
        assert!(matches!(e, Error::NotOnXen));
        assert_eq!(e.to_string(), "not a Xen dom0: /dev/xen/privcmd is missing");
    }
}
