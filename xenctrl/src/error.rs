//! The crate's error type.

use std::path::PathBuf;

use xen_sys::libs::LoadError;
use xen_types::{DomId, Errno};

/// Errors of domain and host control. The errno of the failed call is always kept
/// ([`Error::errno`]); the cases callers act on have their own variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This machine is not a Xen dom0 (no privcmd device).
    #[error("not a Xen dom0: /dev/xen/privcmd is missing")]
    NotOnXen,
    /// This machine looks like a Xen host, but its privcmd device cannot be used; nothing
    /// (in particular no simulated host) is put in the hypervisor's place.
    #[error(
        "{}: {reason}; this looks like a Xen host, so no simulated host is started in its place",
        path.display()
    )]
    PrivcmdUnusable {
        /// The privcmd device.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
        /// The errno behind it, when there is one.
        errno: Option<Errno>,
    },
    /// A Xen C library could not be loaded (the message names it and its package).
    #[error(transparent)]
    LibraryMissing(#[from] LoadError),
    /// A symbol is missing from a loaded Xen library (a different Xen version).
    #[error("{library} has no symbol {symbol}")]
    MissingSymbol {
        /// The library.
        library: &'static str,
        /// The symbol.
        symbol: &'static str,
    },
    /// The domain does not exist (`ESRCH`).
    #[error("{op}: no such domain {dom}")]
    NoSuchDomain {
        /// The operation that failed.
        op: &'static str,
        /// The domain.
        dom: DomId,
    },
    /// Not enough memory: on the host, or under the domain's `max_pages` (`ENOMEM`).
    #[error("{op}: out of memory")]
    OutOfMemory {
        /// The operation that failed.
        op: &'static str,
    },
    /// The caller may not do this (`EPERM`, `EACCES`).
    #[error("{op}: permission denied ({errno:?})")]
    PermissionDenied {
        /// The operation that failed.
        op: &'static str,
        /// `EPERM` or `EACCES`.
        errno: Errno,
    },
    /// The requested domain id is taken (`EEXIST`).
    #[error("{op}: domain {dom} already exists")]
    DomainExists {
        /// The operation that failed.
        op: &'static str,
        /// The id asked for.
        dom: DomId,
    },
    /// Xen refused the arguments (`EINVAL`), e.g. unpausing a domain that is not paused, a
    /// kernel image that is not a Xen guest, or pausing dom0.
    #[error("{op}: invalid argument")]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
    },
    /// What the backend cannot do (e.g. building PVH guests with libxenguest here).
    #[error("{op}: not supported by the {backend} backend")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The backend.
        backend: &'static str,
    },
    /// A save found the domain not suspended after its suspend step: the guest did not
    /// suspend itself (`xc_domain_save`'s "Domain has not been suspended").
    #[error("domain {dom} has not been suspended (shutdown reason {reason:?})")]
    NotSuspended {
        /// The domain.
        dom: DomId,
        /// Its shutdown reason, if it is shut down at all.
        reason: Option<crate::ShutdownReason>,
    },
    /// A saved image could not be read or written.
    #[error("{op}: {source}")]
    Stream {
        /// The operation.
        op: &'static str,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A kernel or initrd could not be read.
    #[error("reading {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Any other failure, with its errno.
    #[error("{op}: {errno}")]
    Os {
        /// The operation that failed.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
}

impl Error {
    /// The typed error for `errno` returned by `op` on `dom`.
    pub fn from_errno(op: &'static str, dom: Option<DomId>, errno: Errno) -> Error {
        match errno {
            Errno::ESRCH => Error::NoSuchDomain {
                op,
                dom: dom.unwrap_or(DomId::INVALID),
            },
            Errno::ENOMEM => Error::OutOfMemory { op },
            Errno::EPERM | Errno::EACCES => Error::PermissionDenied { op, errno },
            Errno::EEXIST => Error::DomainExists {
                op,
                dom: dom.unwrap_or(DomId::INVALID),
            },
            Errno::EINVAL => Error::InvalidArgument { op },
            errno => Error::Os { op, errno },
        }
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        Some(match self {
            Error::NotOnXen => Errno::ENOENT,
            Error::PrivcmdUnusable { errno, .. } => return *errno,
            Error::LibraryMissing(_) | Error::MissingSymbol { .. } => return None,
            Error::NoSuchDomain { .. } => Errno::ESRCH,
            Error::OutOfMemory { .. } => Errno::ENOMEM,
            Error::PermissionDenied { errno, .. } | Error::Os { errno, .. } => *errno,
            Error::DomainExists { .. } => Errno::EEXIST,
            Error::InvalidArgument { .. } => Errno::EINVAL,
            Error::Unsupported { .. } => Errno::EOPNOTSUPP,
            Error::NotSuspended { .. } => Errno::EINVAL,
            Error::Image { source, .. } | Error::Stream { source, .. } => {
                return source.raw_os_error().map(Errno)
            }
        })
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_typed_variants_and_back() {
        for e in [
            Errno::ESRCH,
            Errno::ENOMEM,
            Errno::EPERM,
            Errno::EACCES,
            Errno::EEXIST,
            Errno::EINVAL,
            Errno::EBUSY,
        ] {
            assert_eq!(Error::from_errno("op", Some(DomId(3)), e).errno(), Some(e));
        }
        assert!(matches!(
            Error::from_errno("pause", Some(DomId(3)), Errno::ESRCH),
            Error::NoSuchDomain { dom: DomId(3), .. }
        ));
        assert_eq!(
            Error::from_errno("pause", Some(DomId(3)), Errno::ESRCH).to_string(),
            "pause: no such domain 3"
        );
    }
}
