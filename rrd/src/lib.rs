//! Metrics with history, the xcp-rrdd role: round-robin databases as xapi-rrd defines them
//! ([`Rrd`]), xcp-rrdd's archive layout ([`archive`]), save and restore in xapi-rrd's XML
//! ([`Rrd::to_xml`], [`Rrd::from_xml`]), the `/rrd_updates` export ([`updates`]), the rrdd
//! plugin protocol v2 ([`plugin`]) and perfmon's alarms ([`perfmon`]).
//!
//! ```
//! use rrd::{Cf, Ds, DsType, DsValue, Rra, Rrd, Transform};
//!
//! let ds = Ds::new("cpu0", DsType::Gauge, 0.0, 1.0, 300.0, DsValue::Unknown);
//! let mut rrd = Rrd::new(vec![ds], vec![Rra::new(Cf::Average, 120, 1, 0.5)], 5, 1000.0);
//! for i in 1..=10 {
//!     rrd.update(1000.0 + 5.0 * i as f64, &[(0, DsValue::Float(0.25), Transform::Identity)], false);
//! }
//! assert_eq!(rrd.rras[0].data[0].peek(0), 0.25);
//! let back = Rrd::from_xml(&rrd.to_xml(true)).unwrap();
//! assert_eq!(back.rras[0].data[0].peek(0), 0.25);
//! ```

pub mod archive;
mod error;
mod fmt;
pub mod fring;
pub mod perfmon;
pub mod plugin;
pub mod prometheus;
mod rrd;
pub mod updates;
mod xml;

pub use error::Error;
pub use fmt::f_to_s;
pub use fring::Fring;
pub use rrd::{CdpPrep, Cf, Ds, DsType, DsValue, Rra, Rrd, Transform};
