//! Newtypes for the numbers of the Xen ABI, shared by every crate of the stack.
//!
//! A `u32` that crosses a public API of this project is always one of these: a [`DomId`], an
//! [`EvtchnPort`], a [`GrantRef`], a [`Pfn`]/[`Mfn`] or a [`Pages`] count. Reserved values come
//! from the Xen headers through `xen-sys`.
//!
//! ```
//! use xen_types::{DomId, Pages};
//! assert!(DomId::DOM0.is_dom0());
//! assert!(!DomId::SELF.is_ordinary());
//! assert_eq!(Pages::from_mib(1).bytes(), 1 << 20);
//! ```

mod dev;
mod errno;
mod grant;
pub mod mem;
mod port;

use std::fmt;

pub use dev::open_device;
pub use errno::Errno;
pub use grant::{CopyDest, CopySegment, CopySource, GrantStatus, UnmapNotify};
pub use port::PortStatus;

/// Size of a Xen page in bytes (x86: 4 KiB).
pub const PAGE_SIZE: usize = 1 << xen_sys::XC_PAGE_SHIFT;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = xen_sys::XC_PAGE_SHIFT;

/// A domain id (`domid_t`, 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DomId(pub u16);

impl DomId {
    /// The control domain.
    pub const DOM0: DomId = DomId(0);
    /// `DOMID_FIRST_RESERVED`: ids from here up are not ordinary domains.
    pub const FIRST_RESERVED: DomId = DomId(xen_sys::DOMID_FIRST_RESERVED as u16);
    /// `DOMID_SELF`: "the calling domain" in hypercalls.
    pub const SELF: DomId = DomId(xen_sys::DOMID_SELF as u16);
    /// `DOMID_IO`.
    pub const IO: DomId = DomId(xen_sys::DOMID_IO as u16);
    /// `DOMID_XEN`.
    pub const XEN: DomId = DomId(xen_sys::DOMID_XEN as u16);
    /// `DOMID_INVALID`.
    pub const INVALID: DomId = DomId(xen_sys::DOMID_INVALID as u16);
    /// `DOMID_IDLE`.
    pub const IDLE: DomId = DomId(xen_sys::DOMID_IDLE as u16);

    /// True for dom0.
    pub const fn is_dom0(self) -> bool {
        self.0 == 0
    }

    /// True for ids that can name a real domain (`< DOMID_FIRST_RESERVED`).
    pub const fn is_ordinary(self) -> bool {
        self.0 < xen_sys::DOMID_FIRST_RESERVED as u16
    }

    /// The raw value.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<DomId> for u32 {
    fn from(d: DomId) -> u32 {
        d.0.into()
    }
}

impl TryFrom<u32> for DomId {
    type Error = Errno;
    /// Accepts any 16-bit value; larger values are `EINVAL`.
    fn try_from(v: u32) -> Result<Self, Errno> {
        u16::try_from(v).map(DomId).map_err(|_| Errno::EINVAL)
    }
}

impl std::str::FromStr for DomId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u16>().map(DomId)
    }
}

macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $inner {
            fn from(v: $name) -> $inner {
                v.0
            }
        }
    };
}

number!(
    /// An event-channel port (`evtchn_port_t`).
    EvtchnPort(u32)
);
number!(
    /// A grant reference (`grant_ref_t`): an index into a domain's grant table.
    GrantRef(u32)
);
number!(
    /// A guest (pseudo-)physical frame number.
    Pfn(u64)
);
number!(
    /// A machine frame number.
    Mfn(u64)
);
number!(
    /// A virtual interrupt number (`VIRQ_*`).
    Virq(u32)
);
number!(
    /// A virtual CPU index within a domain.
    VcpuId(u32)
);

impl Virq {
    /// `VIRQ_DOM_EXC`: a domain has died or shut down (bound by xenstored).
    pub const DOM_EXC: Virq = Virq(xen_sys::VIRQ_DOM_EXC);
    /// `VIRQ_CON_RING`: the hypervisor's console ring has new output (bound by xenconsoled).
    pub const CON_RING: Virq = Virq(xen_sys::VIRQ_CON_RING);
}

/// A count of [`PAGE_SIZE`] pages (memory sizes, reservations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pages(pub u64);

impl Pages {
    /// Zero pages.
    pub const ZERO: Pages = Pages(0);

    /// The number of pages in `mib` MiB.
    pub const fn from_mib(mib: u64) -> Pages {
        Pages(mib << (20 - PAGE_SHIFT))
    }

    /// The number of pages in `kib` KiB, rounded down.
    pub const fn from_kib(kib: u64) -> Pages {
        Pages(kib >> (PAGE_SHIFT - 10))
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0 << PAGE_SHIFT
    }

    /// The size in KiB.
    pub const fn kib(self) -> u64 {
        self.0 << (PAGE_SHIFT - 10)
    }

    /// The size in MiB, rounded down.
    pub const fn mib(self) -> u64 {
        self.0 >> (20 - PAGE_SHIFT)
    }

    /// The raw count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self - other`, or `None` on underflow.
    pub const fn checked_sub(self, other: Pages) -> Option<Pages> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(Pages(v)),
            None => None,
        }
    }

    /// `self + other`, saturating.
    pub const fn saturating_add(self, other: Pages) -> Pages {
        Pages(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pages", self.0)
    }
}

impl std::ops::Add for Pages {
    type Output = Pages;
    fn add(self, o: Pages) -> Pages {
        Pages(self.0 + o.0)
    }
}

impl std::ops::Sub for Pages {
    type Output = Pages;
    fn sub(self, o: Pages) -> Pages {
        Pages(self.0 - o.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_domids_come_from_the_header() {
        assert_eq!(DomId::FIRST_RESERVED.0, 0x7ff0);
        assert_eq!(DomId::SELF.0, 0x7ff0);
        assert_eq!(DomId::INVALID.0, 0x7ff4);
        assert!(DomId(0x7fef).is_ordinary());
        assert!(!DomId::INVALID.is_ordinary());
        assert_eq!(DomId::try_from(70000u32), Err(Errno::EINVAL));
    }

    #[test]
    fn page_arithmetic() {
        assert_eq!(PAGE_SIZE, 4096);
        assert_eq!(Pages::from_mib(2).get(), 512);
        assert_eq!(Pages::from_kib(8).get(), 2);
        assert_eq!(Pages(256).mib(), 1);
        assert_eq!(Pages(3).kib(), 12);
        assert_eq!(Pages(1).checked_sub(Pages(2)), None);
    }
}
