//! Dynamic memory control for Xen guests, after XenServer's squeezed.
//!
//! Every domain has `dynamic-min ≤ target ≤ dynamic-max ≤ static-max`. The surplus (host free
//! memory plus what every balloonable domain could free down to its dynamic-min, less twice
//! each domain's inaccuracy allowance, less the host's free-memory target) is shared out so
//! that every domain gets `dynamic-min + γ·(dynamic-max − dynamic-min)` with one γ in `[0, 1]`
//! ([`policy`]). Targets that free memory are set before targets that take it, so the host
//! never over-commits ([`Squeezer::one_iteration`]). A domain that makes no progress toward
//! its target for 5 s is inactive and left out; one still stuck after 20 s is uncooperative.
//!
//! The decision is a pure function of a [`HostState`] snapshot and the time; the loop that
//! applies it ([`Squeezed`]) talks to the host through [`HostIo`], whose one implementation,
//! [`XenHost`], works through `xenctrl::XenControl` and xenstore, so the same code runs on a
//! real Xen host or on the simulated one (`xen-sim`, whose guests' balloon drivers tests
//! drive with a manual clock: `xenbus::testing::SimBalloons`).
//!
//! ```
//! use squeezed::policy::compute_targets;
//! use squeezed::{DomId, DomainMemory, Kib};
//!
//! // Two guests, each allowed 1 GiB to 2 GiB, holding 2 GiB; 512 MiB free on the host.
//! let guest = |id| DomainMemory {
//!     domid: DomId(id),
//!     can_balloon: true,
//!     dynamic_min: Kib(1 << 20),
//!     target: Kib(2 << 20),
//!     dynamic_max: Kib(2 << 20),
//!     actual: Kib(2 << 20),
//!     maxmem: Kib(2 << 20),
//!     inaccuracy: Kib(0),
//! };
//! let domains = [guest(1), guest(2)];
//! // Leave 1.5 GiB free: each guest gives up 512 MiB of its range (one γ = 1/2 for both).
//! let mut targets = Vec::new();
//! compute_targets(Kib(512 << 10), &domains, Kib(1536 << 10), false, &mut targets);
//! assert_eq!(targets, [Kib(1536 << 10), Kib(1536 << 10)]);
//! ```

#![deny(missing_docs)]

mod driver;
mod error;
pub mod policy;
mod squeezer;
mod units;
mod xen_host;

pub use driver::{Config, HostIo, Report, ReservationId, Squeezed};
pub use error::{Error, GivenUp, Result};
pub use squeezer::{
    Action, Decision, Fistpoint, Iteration, Squeezer, INACTIVE_AFTER, UNCOOPERATIVE_AFTER,
};
pub use units::{DomainMemory, HostState, Kib};
pub use xen_host::{Pacer, RealTime, XenHost};
pub use xen_types::{DomId, Pages};
