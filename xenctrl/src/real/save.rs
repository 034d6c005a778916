//! Saving and restoring domains with libxenguest (`xc_domain_save`, `xc_domain_restore`,
//! `xc_domain_resume`), as libxl's `libxl_dom_save.c` drives them for `xl save`/`xl restore`.
//!
//! Each call runs on an `xc_interface` of its own: the save's suspend callback runs inside
//! `xc_domain_save` and asks for domain information through the shared handle, and a long
//! save must not hold up control of other domains.

use std::ffi::{c_int, c_ulong, c_void};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::panic::AssertUnwindSafe;
use std::ptr::{self, NonNull};

use xen_types::{DomId, Errno, Mfn};

use super::Real;
use crate::{Error, RestoreRings, RestoredGuest, Result, XenControl};

/// An `xc_interface` opened for one save or restore, closed on drop.
struct OwnHandle {
    real: &'static xen_sys::generated::xenctrl::XenCtrlLib,
    xch: NonNull<xen_sys::xc_interface>,
}

impl OwnHandle {
    fn open(real: &Real) -> Result<OwnHandle> {
        let open = sym!(real.lib, "libxenctrl", xc_interface_open);
        // SAFETY: null loggers select libxenctrl's default (stderr) loggers; no flags.
        let xch = unsafe { open(ptr::null_mut(), ptr::null_mut(), 0) };
        let xch = NonNull::new(xch)
            .ok_or_else(|| Error::from_errno("xc_interface_open", None, Errno::last()))?;
        Ok(OwnHandle {
            real: real.lib,
            xch,
        })
    }

    /// The error of a failed libxenguest call: libxenctrl's last error code, else errno.
    fn error(&self, op: &'static str, dom: DomId) -> Error {
        let errno = Errno::last();
        let code = self
            .real
            .xc_get_last_error
            .as_ref()
            .ok()
            // SAFETY: our open handle; the result points at its last error (or is null).
            .map(|f| unsafe { f(self.xch.as_ptr()) })
            .filter(|e| !e.is_null())
            // SAFETY: non-null, pointing at libxenctrl's xc_error for this handle.
            .map_or(xen_sys::XC_ERROR_NONE, |e| unsafe { (*e).code });
        let errno = match code {
            xen_sys::XC_OUT_OF_MEMORY => Errno::ENOMEM,
            xen_sys::XC_INVALID_PARAM => Errno::EINVAL,
            _ if errno.0 != 0 => errno,
            _ => Errno::EIO,
        };
        Error::from_errno(op, Some(dom), errno)
    }
}

impl Drop for OwnHandle {
    fn drop(&mut self) {
        if let Ok(close) = self.real.xc_interface_close.as_ref() {
            // SAFETY: opened by xc_interface_open in `open`, closed once, here.
            unsafe { close(self.xch.as_ptr()) };
        }
    }
}

/// What the suspend callback reaches through its `data` pointer.
struct SaveContext<'a> {
    real: &'a Real,
    dom: DomId,
    suspend: &'a mut dyn FnMut() -> Result<()>,
    /// Why the callback failed, for the caller.
    error: Option<Error>,
}

/// `save_callbacks.suspend`: runs the caller's suspend step, then checks the domain is
/// suspended. libxenguest wants non-zero for success.
unsafe extern "C" fn suspend_callback(data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `SaveContext` that `save` passed in `save_callbacks.data`, alive
    // and not otherwise borrowed while xc_domain_save runs.
    let ctx = unsafe { &mut *data.cast::<SaveContext<'_>>() };
    // No unwinding into C.
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        (ctx.suspend)()?;
        crate::check_suspended(ctx.real, ctx.dom)
    }));
    match r {
        Ok(Ok(())) => 1,
        Ok(Err(e)) => {
            ctx.error = Some(e);
            0
        }
        Err(_) => {
            ctx.error = Some(Error::Os {
                op: "the suspend callback of xc_domain_save",
                errno: Errno::EIO,
            });
            0
        }
    }
}

impl Real {
    pub(super) fn save(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        suspend: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        const OP: &str = "xc_domain_save";
        let g = Real::guest_lib()?;
        let save = sym!(g, "libxenguest", xc_domain_save);
        self.domain_info(dom)?;
        let h = OwnHandle::open(self)?;
        let mut ctx = SaveContext {
            real: self,
            dom,
            suspend,
            error: None,
        };
        let mut callbacks = xen_sys::save_callbacks {
            suspend: Some(suspend_callback),
            data: ptr::addr_of_mut!(ctx).cast(),
            ..Default::default()
        };
        // SAFETY: our own open handle; `fd` is open for the call; `callbacks` and the context
        // it points at outlive the call; flags 0 is a non-live save; a plain stream takes no
        // receive descriptor.
        let rc = unsafe {
            save(
                h.xch.as_ptr(),
                fd.as_raw_fd(),
                dom.into(),
                0,
                &mut callbacks,
                xen_sys::XC_STREAM_PLAIN,
                -1,
            )
        };
        if let Some(e) = ctx.error.take() {
            return Err(e);
        }
        if rc != 0 {
            return Err(h.error(OP, dom));
        }
        Ok(())
    }

    pub(super) fn restore(
        &self,
        dom: DomId,
        fd: BorrowedFd<'_>,
        rings: &RestoreRings,
    ) -> Result<RestoredGuest> {
        const OP: &str = "xc_domain_restore";
        let g = Real::guest_lib()?;
        let restore = sym!(g, "libxenguest", xc_domain_restore);
        let h = OwnHandle::open(self)?;
        let mut store_mfn: c_ulong = 0;
        let mut console_mfn: c_ulong = 0;
        let mut callbacks = xen_sys::restore_callbacks::default();
        // SAFETY: our own open handle; `fd` is open for the call; the frame outputs and the
        // (empty: a plain stream needs none) callbacks are live locals.
        let rc = unsafe {
            restore(
                h.xch.as_ptr(),
                fd.as_raw_fd(),
                dom.into(),
                rings.store_port.0,
                &mut store_mfn,
                rings.store_domid.into(),
                rings.console_port.0,
                &mut console_mfn,
                rings.console_domid.into(),
                xen_sys::XC_STREAM_PLAIN,
                &mut callbacks,
                -1,
            )
        };
        if rc != 0 {
            return Err(h.error(OP, dom));
        }
        Ok(RestoredGuest {
            console_mfn: Mfn(console_mfn as u64),
            store_mfn: Mfn(store_mfn as u64),
            console_port: rings.console_port,
            store_port: rings.store_port,
        })
    }

    pub(super) fn resume(&self, dom: DomId) -> Result<()> {
        let g = Real::guest_lib()?;
        let resume = sym!(g, "libxenguest", xc_domain_resume);
        let h = OwnHandle::open(self)?;
        // SAFETY: our own open handle; fast (cooperative) resume, as libxl's
        // `libxl__domain_resume` with `suspend_cancel`.
        let rc = unsafe { resume(h.xch.as_ptr(), dom.into(), 1) };
        if rc != 0 {
            return Err(h.error("xc_domain_resume", dom));
        }
        Ok(())
    }
}
