//! A native XenStore daemon: drop-in for C xenstored.
//!
//! The daemon speaks the protocol of `docs/misc/xenstore.txt` (Xen 4.17 message set, plus
//! the 4.18 `@releaseDomain/<domid>` and watch-depth special watches) on a unix socket
//! (`XENSTORED_RUNDIR/socket`, default `/var/run/xenstored/socket`) and on domains' ring
//! pages. It is a library ([`Daemon`], [`Config`]) under a thin `xenstored` program (package
//! `xenstored-bin`, so that embedders of the library build no CLI or log-output crates) whose
//! flags follow C xenstored's.
//!
//! Layers:
//! - [`engine`]: the protocol as a pure state machine (paths, permissions, transactions with
//!   C xenstored's semantics (a node enters a transaction at its first access there; commit
//!   checks exactly the accessed nodes), watches, quotas, domains).
//! - [`tree`]: the store, a persistent (structurally shared) map, so a transaction's private
//!   copy is O(1) to take and a change O(log n).
//! - [`journal`]: persistence (journal and snapshots).
//! - [`server`]: a single-threaded tokio event loop serving every connection.
//! - [`dom0`]: dom0's own kernel ring (`/proc/xen/xsd_kva`, `/proc/xen/xsd_port`), served
//!   as domain 0 from start-up as C xenstored's `dom0_init` does (`-D` turns it off).
//!
//! In a Xen dom0 the binary also serves introduced domains' rings (grant
//! `GNTTAB_RESERVED_XENSTORE` plus an interdomain event channel) and binds `VIRQ_DOM_EXC`
//! to notice dying domains ([`DomainWatch`]).
//!
//! # Differences from C xenstored
//!
//! - Quotas count per connection (watches, transactions) or per owning domain (nodes), as
//!   in 4.17; the memory and soft quotas are accepted and not enforced; a client that does
//!   not read its watch events is disconnected once its unread output passes
//!   [`Quotas::outstanding_bytes`] instead of having requests delayed (one that does not
//!   read its replies is not read from until its socket drains).
//! - A domain's ring is served by two helper threads bridged to the event loop (C serves
//!   rings in its poll loop); ring reconnection (`XENSTORE_SERVER_FEATURE_RECONNECTION`) is not offered.
//!
//! # Durability
//!
//! With a data folder (default: the folder of the socket), every change is written
//! (`write(2)`) to the journal before the reply that acknowledges it is sent, so an
//! acknowledged change survives `kill -9` (or a crash) of the daemon. Against a host crash:
//! with [`SyncMode::Periodic`] (the default) a background thread `fdatasync`s the journal
//! every second, so at most the last second is lost; with [`SyncMode::Always`] the journal
//! is `fdatasync`ed before the replies of each batch of requests read together (group
//! commit), so nothing acknowledged is lost, at the price of a disk flush per batch;
//! [`SyncMode::Never`] leaves flushing to the kernel. The
//! state is a snapshot plus the journals after it; a torn record at the end of a journal
//! (a write cut short by the crash) is discarded on restart, and only unacknowledged
//! changes can be in it. A change whose journal write fails (a full disk, an I/O error) is
//! not applied: the request is answered `EIO`, the store is returned to its state before
//! it, no watch fires for it, and the bytes of the failed write are cut off the journal
//! (requests sent together are written together: when that write fails, each change in it
//! is answered `EIO`). Connections, watches, open transactions and introduced domains
//! are not persisted: clients reconnect, as after a C xenstored restart.
//!
//! ```no_run
//! use xenstored::{Config, Daemon};
//! let mut cfg = Config::default();
//! cfg.socket_path = "/tmp/xs/socket".into();
//! let handle = Daemon::new(cfg)?.spawn()?;
//! let xs = xenstore::Client::connect_socket(handle.socket_path())?;
//! xs.write("/a", "b")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod dom0;
pub mod engine;
pub mod journal;
pub mod server;
pub mod tree;

use std::path::PathBuf;

pub use engine::{ConnId, Effect, Engine, Outbox};
pub use journal::SyncMode;
pub use server::{
    grant_ring_connector, Daemon, DaemonHandle, DomainFate, DomainProbe, DomainWatch,
    RingConnector, RingParts,
};
use xen_types::DomId;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";

/// Per-domain limits for unprivileged domains (dom0 is exempt), as in C xenstored. A value
/// of 0 disables the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes owned per domain (`-E`, `--entry-nb`; `ENOSPC`).
    pub nodes: u32,
    /// Accounted size of one node (`-S`, `--entry-size`; `ENOSPC`).
    pub node_size: usize,
    /// Watches per connection (`-W`, `--watch-nb`; `E2BIG`).
    pub watches: u32,
    /// Open transactions per connection (`-t`, `--transaction`; `ENOSPC`).
    pub transactions: u32,
    /// Permission entries per node (`-A`, `--perm-nb`; `ENOSPC`).
    pub perms: usize,
    /// Path length below the domain's home (`-M`, `--path-max`; `EINVAL`).
    pub path_max: usize,
    /// Nodes accessed by one transaction (`-Q transaction-nodes=`; `ENOSPC`).
    pub transaction_nodes: usize,
    /// Bytes of replies and events queued for a connection that does not read them; past
    /// this the connection is closed (`-Q outstanding=` counts in requests in C; here 1 KiB
    /// each).
    pub outstanding_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            nodes: 1000,
            node_size: 2048,
            watches: 128,
            transactions: 10,
            perms: 5,
            path_max: xen_sys::XENSTORE_REL_PATH_MAX as usize,
            transaction_nodes: 1024,
            outstanding_bytes: 4 << 20,
        }
    }
}

/// Daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The dom0 (privileged) unix socket.
    pub socket_path: PathBuf,
    /// Extra sockets whose clients act as the given (unprivileged) domain, for tests and
    /// for tools that proxy a domain.
    pub domain_sockets: Vec<(DomId, PathBuf)>,
    /// Where the store is persisted; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// Journal sync policy.
    pub sync: SyncMode,
    /// Journal bytes after which a snapshot is written.
    pub snapshot_after: u64,
    /// Quotas.
    pub quotas: Quotas,
    /// Keep (hand to dom0) rather than delete the nodes of a released domain.
    pub keep_orphans: bool,
}

impl Default for Config {
    fn default() -> Config {
        let rundir = std::env::var_os("XENSTORED_RUNDIR").map(PathBuf::from);
        let socket_path = rundir
            .map(|d| d.join("socket"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        Config {
            socket_path,
            domain_sockets: Vec::new(),
            data_dir: None,
            sync: SyncMode::Periodic,
            snapshot_after: 16 << 20,
            quotas: Quotas::default(),
            keep_orphans: false,
        }
    }
}

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket or file I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Result of the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;
