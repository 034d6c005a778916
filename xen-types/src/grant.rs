//! Plain types of the grant-table ABI shared by the real and simulated grant tables: the
//! `GNTST_*` status of an operation, the segments of a batched grant copy, and what to do
//! when a mapping goes away.

use std::fmt;

use crate::{DomId, EvtchnPort, GrantRef};

/// A grant operation status (`GNTST_*`, an `int16_t` in the ABI).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GrantStatus(pub i16);

impl GrantStatus {
    /// `GNTST_okay`.
    pub const OKAY: GrantStatus = GrantStatus(xen_sys::GNTST_okay as i16);
    /// `GNTST_general_error`.
    pub const GENERAL_ERROR: GrantStatus = GrantStatus(xen_sys::GNTST_general_error as i16);
    /// `GNTST_bad_domain`.
    pub const BAD_DOMAIN: GrantStatus = GrantStatus(xen_sys::GNTST_bad_domain as i16);
    /// `GNTST_bad_gntref`.
    pub const BAD_GNTREF: GrantStatus = GrantStatus(xen_sys::GNTST_bad_gntref as i16);
    /// `GNTST_bad_handle`.
    pub const BAD_HANDLE: GrantStatus = GrantStatus(xen_sys::GNTST_bad_handle as i16);
    /// `GNTST_permission_denied`.
    pub const PERMISSION_DENIED: GrantStatus = GrantStatus(xen_sys::GNTST_permission_denied as i16);
    /// `GNTST_bad_page`.
    pub const BAD_PAGE: GrantStatus = GrantStatus(xen_sys::GNTST_bad_page as i16);
    /// `GNTST_bad_copy_arg`.
    pub const BAD_COPY_ARG: GrantStatus = GrantStatus(xen_sys::GNTST_bad_copy_arg as i16);
    /// `GNTST_eagain`.
    pub const EAGAIN: GrantStatus = GrantStatus(xen_sys::GNTST_eagain as i16);

    /// True for `GNTST_okay`.
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// The symbolic name, when known.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            GrantStatus::OKAY => "GNTST_okay",
            GrantStatus::GENERAL_ERROR => "GNTST_general_error",
            GrantStatus::BAD_DOMAIN => "GNTST_bad_domain",
            GrantStatus::BAD_GNTREF => "GNTST_bad_gntref",
            GrantStatus::BAD_HANDLE => "GNTST_bad_handle",
            GrantStatus::PERMISSION_DENIED => "GNTST_permission_denied",
            GrantStatus::BAD_PAGE => "GNTST_bad_page",
            GrantStatus::BAD_COPY_ARG => "GNTST_bad_copy_arg",
            GrantStatus::EAGAIN => "GNTST_eagain",
            _ => return None,
        })
    }
}

impl fmt::Debug for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "GrantStatus({})", self.0),
        }
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What to do when a mapping or shared area goes away (`IOCTL_GNTDEV_SET_UNMAP_NOTIFY`,
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`): tell the peer we are gone even if we crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// `UNMAP_NOTIFY_CLEAR_BYTE`: zero the byte at this offset of the area.
    pub clear_byte: Option<usize>,
    /// `UNMAP_NOTIFY_SEND_EVENT`: notify this local event channel.
    pub send_event: Option<EvtchnPort>,
}

/// One segment of a grant copy (`GNTTABOP_copy`): `len` bytes from `source` to `dest`, each
/// within one page. `status` is set by the copy.
#[derive(Debug)]
pub struct CopySegment<'a> {
    /// Where to copy from.
    pub source: CopySource<'a>,
    /// Where to copy to.
    pub dest: CopyDest<'a>,
    /// Bytes to copy.
    pub len: u16,
    /// The result, set by the copy (`GNTST_*`).
    pub status: GrantStatus,
}

/// The source of a [`CopySegment`].
#[derive(Debug)]
pub enum CopySource<'a> {
    /// A page granted to us by `domid`, from byte `offset`.
    Gref {
        /// The granting domain.
        domid: DomId,
        /// The reference.
        gref: GrantRef,
        /// Offset within the page.
        offset: u16,
    },
    /// Our own memory (its first `len` bytes).
    Local(&'a [u8]),
}

/// The destination of a [`CopySegment`].
#[derive(Debug)]
pub enum CopyDest<'a> {
    /// A page granted (writable) to us by `domid`, at byte `offset`.
    Gref {
        /// The granting domain.
        domid: DomId,
        /// The reference.
        gref: GrantRef,
        /// Offset within the page.
        offset: u16,
    },
    /// Our own memory (its first `len` bytes).
    Local(&'a mut [u8]),
}
