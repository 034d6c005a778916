//! Storage manager: storage repositories (SRs) that hold real virtual disks (VDIs), with
//! snapshots and clones that copy no data.
//!
//! After XenServer's SM, one driver per SR type behind one interface, [`SrDriver`]
//! (`sr_create/attach/detach/scan/probe/delete`, `vdi_create/destroy/resize/snapshot/clone/
//! copy/attach/detach/activate/deactivate`), with errors that carry XAPI's codes
//! ([`Error::code`]):
//!
//! - [`file::FileSr`] (`type=ext`/`file`): a directory, each disk a qcow2 image
//!   ([`image`]); a snapshot freezes the disk's image as the parent of a new empty leaf, a
//!   clone puts two leaves over it; deleting a member of a chain coalesces its data into
//!   its one child; [`SrDriver::sr_scan`] finishes or rolls back whatever a crash
//!   interrupted;
//! - [`lvm::LvmSr`] (`type=lvm`): a volume group on `device-config:device`, each disk a thin
//!   logical volume, snapshots and clones LVM thin snapshots (Debian's `lvm2`).
//!
//! The disks are served by `blkback`/`blkbackd`, which open a qcow2 chain where a `params`
//! path names a qcow2 image.
//!
//! # Example
//!
//! ```
//! use sm::file::FileSr;
//! use sm::{SrDriver, SrUuid};
//!
//! let dir = tempfile::tempdir()?;
//! let sr = FileSr::new(SrUuid::new(), dir.path());
//! sr.sr_create()?;
//! sr.sr_attach()?;
//! let disk = sr.vdi_create("disk", 10 << 30)?;
//! let snap = sr.vdi_snapshot(disk.uuid)?;
//! assert!(snap.is_a_snapshot);
//! assert_eq!(snap.snapshot_of, Some(disk.uuid));
//! assert_eq!(sr.vdi_info(disk.uuid)?.parent, Some(snap.uuid.into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod driver;
pub mod file;
pub mod image;
pub mod lvm;
mod meta;
mod types;

pub use driver::{AttachInfo, SrDriver, SrStats};
pub use types::{ImageId, SrUuid, VdiInfo, VdiUuid};

/// Errors of the storage manager; [`Error::code`] gives XAPI's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not enough space in the SR for the request.
    #[error("SR full: {needed} bytes needed, {free} free")]
    SrFull {
        /// Bytes the operation needs.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// The VDI is attached or active (or, for a chain operation, one of its children is).
    #[error("VDI {0} is in use")]
    VdiInUse(VdiUuid),
    /// The operation is not allowed on a snapshot.
    #[error("VDI {0} is a snapshot")]
    VdiIsASnapshot(VdiUuid),
    /// No such VDI in the SR.
    #[error("VDI {0} not found")]
    VdiMissing(VdiUuid),
    /// The SR is not attached (its PBD is not plugged).
    #[error("SR {0} is not attached")]
    SrNotAttached(SrUuid),
    /// The SR still holds VDIs.
    #[error("SR {0} is not empty")]
    SrNotEmpty(SrUuid),
    /// The substrate already holds an SR (or something else).
    #[error("{0} already holds an SR or other data")]
    SrExists(String),
    /// Shrinking a disk is not supported.
    #[error("cannot shrink VDI {uuid} from {from} to {to} bytes")]
    Shrink {
        /// The VDI.
        uuid: VdiUuid,
        /// Its size.
        from: u64,
        /// The size asked for.
        to: u64,
    },
    /// A bad argument (size 0, unknown device-config...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The SR's metadata or an image is damaged in a way scan cannot repair.
    #[error("SR metadata: {0}")]
    Corrupt(String),
    /// The operation is not supported by this SR type.
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// I/O on the substrate.
    #[error("I/O on {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// XAPI's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::SrFull { .. } => "SR_FULL",
            Error::VdiInUse(_) => "VDI_IN_USE",
            Error::VdiIsASnapshot(_) => "VDI_IS_A_SNAPSHOT",
            Error::VdiMissing(_) => "VDI_MISSING",
            Error::SrNotAttached(_) => "SR_HAS_NO_PBDS",
            Error::SrNotEmpty(_) => "SR_NOT_EMPTY",
            Error::Shrink { .. } => "VDI_TOO_SMALL",
            Error::Invalid(_) => "INVALID_VALUE",
            Error::Unsupported(_) => "SR_OPERATION_NOT_SUPPORTED",
            Error::SrExists(_) | Error::Corrupt(_) | Error::Io { .. } => "SR_BACKEND_FAILURE",
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Results of the storage manager.
pub type Result<T> = std::result::Result<T, Error>;

/// Test hook: where the `SM_CRASH_AT` environment variable names `op:step`, the process
/// kills itself with SIGKILL on reaching that step (a `kill -9` at a chosen point).
#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn crash_point(op: &str, step: u32) {
    if let Ok(at) = std::env::var("SM_CRASH_AT") {
        if at == format!("{op}:{step}") {
            // SAFETY: kill(2) on our own pid; no memory is involved.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(not(any(test, feature = "test-utils")))]
#[inline(always)]
pub(crate) fn crash_point(_op: &str, _step: u32) {}
