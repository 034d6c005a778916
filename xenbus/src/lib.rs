//! XenBus device framework: state machine, directory conventions, backend and frontend drivers.
//!
//! In Xen's split-driver model a frontend in a guest and a backend (usually in dom0) meet in
//! xenstore: each end has a directory ([`paths`]) holding a `state` node ([`XenbusState`])
//! and the details of its rings and features. This crate provides
//!
//! - [`XenbusState`] with the transitions Linux's xenbus drivers and QEMU's xen-bus allow;
//! - [`Store`], the small xenstore interface the framework needs;
//! - [`Backend`], which watches `/local/domain/<self>/backend/<type>`, notices devices,
//!   runs each device's handshake on its own thread through a [`BackendDriver`], and tears
//!   it down when either end closes, the device is removed, or the frontend's domain dies
//!   (`@releaseDomain`);
//! - [`FrontendDevice`], the frontend end of the same handshake, for Rust frontends;
//! - [`create_device`]/[`destroy_device`], the toolstack's part (writing both directories);
//! - [`XsStore`], the [`Store`] over a xenstored connection (`xenstore` crate);
//! - `testing` (feature `test-utils`): the project's xenstored in process, with dom0's and
//!   guests' connections, for tests, benches and examples.
//!
//! # Example
//!
//! The toolstack (dom0) creates a guest's disk; the guest, on its own connection, opens its
//! end, reads the backend's keys and state, and moves its own state on (with the `test-utils`
//! feature for the in-process xenstored; on a dom0, [`XsStore`] over
//! `xenstore::Client::connect_socket` of the system's xenstored takes its place).
//!
//! ```
//! use xen_types::DomId;
//! use xenbus::testing::TestXenstore;
//! use xenbus::{create_device, paths, FrontendDevice, Store, XenbusState};
//!
//! let xs = TestXenstore::start()?;
//! let guest = DomId(1);
//! create_device(
//!     &**xs.dom0(),
//!     DomId::DOM0,
//!     guest,
//!     "vbd",
//!     51712,
//!     &[("params", "/images/guest.img"), ("mode", "w")],
//!     &[("virtual-device", "51712")],
//! )?;
//!
//! let mut dev = FrontendDevice::open(xs.guest(guest)?, guest, "vbd", 51712)?;
//! assert_eq!(dev.backend_id, DomId::DOM0);
//! assert_eq!(dev.read_backend("mode")?.as_deref(), Some("w"));
//! assert_eq!(dev.backend_state()?, XenbusState::Initialising);
//! dev.switch_state(XenbusState::Initialised)?;
//!
//! // dom0 sees the frontend's new state.
//! let state = xs.dom0().read(&format!("{}/state", paths::frontend_path(guest, "vbd", 51712)))?;
//! assert_eq!(XenbusState::from_node(state.as_deref()), XenbusState::Initialised);
//! # Ok::<(), xenbus::Error>(())
//! ```

mod backend;
mod frontend;
pub mod paths;
#[cfg(feature = "test-utils")]
mod sim_balloon;
mod state;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;
mod xs;

pub use backend::{Backend, BackendDriver, DeviceInfo};
pub use frontend::{create_device, create_device_split, destroy_device, FrontendDevice};
pub use state::XenbusState;
pub use store::{Store, WatchEvent, WatchId};
use xen_types::Errno;
pub use xs::XsStore;

/// Errors of the XenBus framework.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A state change the protocol does not allow.
    #[error("illegal xenbus state transition {from:?} -> {to:?}")]
    IllegalTransition {
        /// Current state.
        from: XenbusState,
        /// Requested state.
        to: XenbusState,
    },
    /// A node holds a value that does not parse.
    #[error("bad value {value:?} at {path}")]
    BadValue {
        /// The node.
        path: String,
        /// Its value.
        value: String,
    },
    /// A required node is missing.
    #[error("missing xenstore node {0}")]
    Missing(String),
    /// A malformed xenstore path.
    #[error("bad xenstore path {0:?}")]
    BadPath(String),
    /// `unwatch` of a watch that is not set.
    #[error("no such watch")]
    NoSuchWatch,
    /// A wait did not complete in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The peer or the device went away while waiting.
    #[error("device closed: {0}")]
    Closed(String),
    /// The xenstore connection failed with an errno.
    #[error("xenstore error: {0:?}")]
    Store(Errno),
    /// A driver callback failed.
    #[error("driver error: {0}")]
    Driver(String),
    /// The in-process xenstored of `testing` (feature `test-utils`) could not start or
    /// take a connection.
    #[error("in-process xenstored: {0}")]
    TestXenstored(#[source] std::io::Error),
}
