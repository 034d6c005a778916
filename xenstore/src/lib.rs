//! XenStore wire protocol and clients (unix socket, /dev/xen/xenbus, domain ring), blocking
//! and async.
//!
//! - [`wire`]: the message format of `xen/io/xs_wire.h`, path and permission rules, errno
//!   names, and an incremental decoder that never panics on hostile bytes.
//! - [`Client`]: a blocking client over the unix socket (`XENSTORED_PATH`, default
//!   `/var/run/xenstored/socket`), `/dev/xen/xenbus`, or any [`Transport`].
//! - [`ring`]: the shared ring page (`struct xenstore_domain_interface`) over
//!   [`xen_types::mem::SharedMemory`] and a [`ring::Doorbell`], for guests and for the
//!   daemon side.
//! - `aio` (opt-in feature `tokio`, off by default): the same API, async, with watches as a
//!   stream-like receiver.
//!
//! ```no_run
//! use xenstore::Client;
//!
//! let xs = Client::connect()?;
//! xs.write("/local/domain/0/name", "Domain-0")?;
//! assert_eq!(xs.read("/local/domain/0/name")?, b"Domain-0");
//! xs.transaction(|tx| {
//!     let n: u32 = tx.read_string("/counter").unwrap_or_default().parse().unwrap_or(0);
//!     tx.write("/counter", (n + 1).to_string())
//! })?;
//! xs.watch("/vm", "tok")?;
//! let ev = xs.next_event()?; // fires once on registration
//! assert_eq!(ev.token, "tok");
//! # Ok::<(), xenstore::Error>(())
//! ```

pub mod client;
pub mod ring;
pub mod transport;
pub mod wire;

#[cfg(feature = "tokio")]
pub mod aio;

pub use client::{Client, Transaction};
pub use transport::{FdTransport, Transport};
pub use wire::{Access, Op, Perm, TxId};
use xen_types::Errno;

/// Errors of the XenStore clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon answered `XS_ERROR` with this errno.
    #[error("xenstored: {0}")]
    Xs(Errno),
    /// The transport failed.
    #[error("xenstore transport: {0}")]
    Io(#[from] std::io::Error),
    /// A request could not be encoded, or a reply could not be decoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The connection is closed (by the daemon, or after a fatal framing error).
    #[error("xenstore connection closed: {0}")]
    Closed(String),
    /// The daemon's reply does not fit the request.
    #[error("xenstore protocol error: {0}")]
    Protocol(&'static str),
    /// Shared ring access failed.
    #[error("xenstore ring: {0}")]
    Ring(#[from] xen_types::mem::MemError),
}

impl Error {
    /// The errno of an `XS_ERROR` reply or of an I/O error.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Xs(e) => Some(*e),
            Error::Io(e) => e.raw_os_error().map(Errno),
            _ => None,
        }
    }
}

/// Result of the XenStore clients.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A watch event: the path that changed (relative if the watch was) and the token given to
/// `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The watch's token.
    pub token: String,
}
