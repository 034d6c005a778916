//! The crate's error type.

use std::fmt;

use xen_types::DomId;

use crate::driver::ReservationId;
use crate::units::Kib;

/// A domain squeezed gave up on, with a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenUp {
    /// The domain.
    pub domid: DomId,
    /// Why it was given up on.
    pub reason: String,
}

impl fmt::Display for GivenUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}: {}", self.domid, self.reason)
    }
}

fn list(given_up: &[GivenUp]) -> String {
    given_up
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in squeezed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A domain's dynamic-min is above its dynamic-max.
    #[error("domain {domid}: dynamic-min {dynamic_min} is above dynamic-max {dynamic_max}")]
    InvalidRange {
        /// The domain.
        domid: DomId,
        /// Its dynamic-min.
        dynamic_min: Kib,
        /// Its dynamic-max.
        dynamic_max: Kib,
    },
    /// No such domain on the host.
    #[error("no domain {0} on this host")]
    UnknownDomain(DomId),
    /// No such reservation.
    #[error("no reservation {0}")]
    UnknownReservation(ReservationId),
    /// A reservation asked for more memory than the host has at all.
    #[error("cannot reserve {requested}: the host has {host_total} in all")]
    ReservationTooLarge {
        /// What was asked for.
        requested: Kib,
        /// Free memory plus every domain's memory, less other reservations.
        host_total: Kib,
    },
    /// Even with every balloonable domain at its dynamic-min, not enough would be free.
    #[error(
        "cannot free {required}: {free} is free and at most {max_possible} could be with every \
         balloonable domain at its dynamic-min"
    )]
    CannotFree {
        /// Free memory wanted.
        required: Kib,
        /// Free memory when squeezed gave up.
        free: Kib,
        /// Free memory if every active domain reached its dynamic-min.
        max_possible: Kib,
    },
    /// Domains did not release memory, so not enough could be freed.
    #[error("cannot free {required}: domains did not cooperate: {}", list(.given_up))]
    DomainsRefused {
        /// Free memory wanted.
        required: Kib,
        /// The domains given up on, each with a reason.
        given_up: Vec<GivenUp>,
    },
    /// The host rejected an operation (a failed hypercall or xenstore write, or a rule of the
    /// simulated host).
    #[error("host: {0}")]
    Host(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
