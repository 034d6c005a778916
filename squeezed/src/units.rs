//! Memory amounts and the per-domain, per-host snapshots the policy works on.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use xen_types::{DomId, Pages};

use crate::error::{Error, Result};

/// An amount of memory in KiB (the unit of xenstore's `memory/*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Kib(pub u64);

impl Kib {
    /// Zero KiB.
    pub const ZERO: Kib = Kib(0);

    /// `self − rhs`, or zero when `rhs` is larger.
    pub fn saturating_sub(self, rhs: Kib) -> Kib {
        Kib(self.0.saturating_sub(rhs.0))
    }

    /// `|self − rhs|`.
    pub fn abs_diff(self, rhs: Kib) -> Kib {
        Kib(self.0.abs_diff(rhs.0))
    }

    /// Whole pages in this amount (rounded down).
    pub fn to_pages(self) -> Pages {
        Pages::from_kib(self.0)
    }
}

impl From<Pages> for Kib {
    fn from(p: Pages) -> Kib {
        Kib(p.kib())
    }
}

impl Add for Kib {
    type Output = Kib;
    fn add(self, rhs: Kib) -> Kib {
        Kib(self.0 + rhs.0)
    }
}

impl AddAssign for Kib {
    fn add_assign(&mut self, rhs: Kib) {
        self.0 += rhs.0;
    }
}

impl Sub for Kib {
    type Output = Kib;
    /// Panics on underflow in debug builds, like `u64`; use [`Kib::saturating_sub`] when the
    /// result may be negative.
    fn sub(self, rhs: Kib) -> Kib {
        Kib(self.0 - rhs.0)
    }
}

impl std::iter::Sum for Kib {
    fn sum<I: Iterator<Item = Kib>>(iter: I) -> Kib {
        Kib(iter.map(|k| k.0).sum())
    }
}

impl fmt::Display for Kib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KiB", self.0)
    }
}

/// What squeezed knows of one domain's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainMemory {
    /// The domain.
    pub domid: DomId,
    /// Whether it has a working balloon driver (`control/feature-balloon`, not paused).
    pub can_balloon: bool,
    /// Admin-set lower limit of the balloon target (`memory/dynamic-min`).
    pub dynamic_min: Kib,
    /// The current balloon target (`memory/target`).
    pub target: Kib,
    /// Admin-set upper limit of the balloon target (`memory/dynamic-max`).
    pub dynamic_max: Kib,
    /// What the domain holds now (Xen's `tot_pages`).
    pub actual: Kib,
    /// Xen's `max_pages` for the domain.
    pub maxmem: Kib,
    /// How far `actual` may stay from `target` and still count as reached.
    pub inaccuracy: Kib,
}

impl DomainMemory {
    /// Checks `dynamic_min ≤ dynamic_max`.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] when it does not hold.
    pub fn validate(&self) -> Result<()> {
        if self.dynamic_min > self.dynamic_max {
            return Err(Error::InvalidRange {
                domid: self.domid,
                dynamic_min: self.dynamic_min,
                dynamic_max: self.dynamic_max,
            });
        }
        Ok(())
    }

    /// True when `actual` is within `inaccuracy` of `target`.
    pub fn has_hit(&self, target: Kib) -> bool {
        self.actual.abs_diff(target) <= self.inaccuracy
    }

    /// The least this domain frees if its target is set to dynamic-min.
    pub fn min_freeable(&self, compensate_inaccuracy: bool) -> Kib {
        let slack = if compensate_inaccuracy {
            Kib(2 * self.inaccuracy.0)
        } else {
            Kib::ZERO
        };
        self.actual
            .saturating_sub(self.dynamic_min)
            .saturating_sub(slack)
    }

    /// `dynamic_max − dynamic_min`: how far the target may move.
    pub fn range(&self) -> Kib {
        self.dynamic_max.saturating_sub(self.dynamic_min)
    }
}

/// A snapshot of a host: its free memory (less reservations) and its domains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// Free memory, not counting memory held by reservations.
    pub free: Kib,
    /// The domains, in a stable order.
    pub domains: Vec<DomainMemory>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_kib() {
        assert_eq!(Kib::from(Pages(3)), Kib(12));
        assert_eq!(Kib(13).to_pages(), Pages(3));
        assert_eq!(Kib(5).saturating_sub(Kib(7)), Kib(0));
        assert_eq!(Kib(5).abs_diff(Kib(7)), Kib(2));
        assert_eq!(Kib(1024).to_string(), "1024 KiB");
    }

    #[test]
    fn min_freeable_allows_twice_the_inaccuracy() {
        let d = DomainMemory {
            domid: DomId(1),
            can_balloon: true,
            dynamic_min: Kib(1000),
            target: Kib(1500),
            dynamic_max: Kib(2000),
            actual: Kib(1500),
            maxmem: Kib(1500),
            inaccuracy: Kib(4),
        };
        assert_eq!(d.min_freeable(true), Kib(492));
        assert_eq!(d.min_freeable(false), Kib(500));
        assert!(d.has_hit(Kib(1504)) && !d.has_hit(Kib(1505)));
        assert_eq!(d.range(), Kib(1000));
    }
}
