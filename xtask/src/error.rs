//! The one error type of xtask.

use std::path::PathBuf;

/// Why a step of `cargo xtask` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command could not be started.
    #[error("cannot run {cmd}: {source} (is it installed?)")]
    Spawn {
        /// The program.
        cmd: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{cmd} failed ({status}){}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// The tail of what it printed, if captured.
        detail: String,
    },
    /// The overall deadline passed.
    #[error("timed out after {0} s (the whole run is bounded by --timeout)")]
    Timeout(u64),
    /// Something else, described.
    #[error("{0}")]
    Other(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an `io::Error` with what was done and to which path.
pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
