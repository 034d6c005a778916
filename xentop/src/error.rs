//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while collecting statistics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hypervisor call failed.
    #[error(transparent)]
    Xen(#[from] xenctrl::Error),
    /// A xenstore read failed.
    #[error("xenstore: {0}")]
    Store(#[from] xenbus::Error),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not have the format the kernel gives it.
    #[error("{path}: unexpected format: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A QMP conversation failed.
    #[error("QMP on {path}: {reason}")]
    Qmp {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
