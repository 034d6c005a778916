//! Errors: XAPI's wire errors and the crate's own.

/// A XenAPI failure: a code such as `HANDLE_INVALID` and its parameters, sent as
/// `ErrorDescription`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {params:?}")]
pub struct ApiError {
    /// XAPI's error code.
    pub code: String,
    /// The code's parameters.
    pub params: Vec<String>,
}

impl ApiError {
    /// Builds an error from a code and parameters.
    pub fn new<I, S>(code: &str, params: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ApiError {
            code: code.to_owned(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }

    /// `HANDLE_INVALID [class, ref]`.
    pub fn handle_invalid(class: &str, r: &str) -> Self {
        Self::new(codes::HANDLE_INVALID, [class, r])
    }

    /// `INTERNAL_ERROR [msg]`.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, [msg.to_string()])
    }

    /// `FIELD_TYPE_ERROR [field]`.
    pub fn field_type(field: &str) -> Self {
        Self::new(codes::FIELD_TYPE_ERROR, [field])
    }

    /// The `ErrorDescription` list.
    pub fn description(&self) -> Vec<String> {
        let mut v = vec![self.code.clone()];
        v.extend(self.params.iter().cloned());
        v
    }
}

impl Error {
    /// Whether the host lacked the memory (`ENOMEM` from `xenctrl`).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Xen(xenctrl::Error::OutOfMemory { .. }))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Api(a) => a,
            e => ApiError::internal(e),
        }
    }
}

/// XAPI error codes used by this crate (names as in xen-api's `api_errors.ml`).
pub mod codes {
    #![allow(missing_docs)]
    pub const HANDLE_INVALID: &str = "HANDLE_INVALID";
    pub const UUID_INVALID: &str = "UUID_INVALID";
    pub const SESSION_AUTHENTICATION_FAILED: &str = "SESSION_AUTHENTICATION_FAILED";
    pub const SESSION_INVALID: &str = "SESSION_INVALID";
    pub const VM_BAD_POWER_STATE: &str = "VM_BAD_POWER_STATE";
    pub const MESSAGE_PARAMETER_COUNT_MISMATCH: &str = "MESSAGE_PARAMETER_COUNT_MISMATCH";
    pub const MESSAGE_METHOD_UNKNOWN: &str = "MESSAGE_METHOD_UNKNOWN";
    pub const FIELD_TYPE_ERROR: &str = "FIELD_TYPE_ERROR";
    pub const HOST_NOT_ENOUGH_FREE_MEMORY: &str = "HOST_NOT_ENOUGH_FREE_MEMORY";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    pub const OPERATION_NOT_ALLOWED: &str = "OPERATION_NOT_ALLOWED";
    pub const NETWORK_CONTAINS_VIF: &str = "NETWORK_CONTAINS_VIF";
    pub const NETWORK_CONTAINS_PIF: &str = "NETWORK_CONTAINS_PIF";
    pub const VDI_IN_USE: &str = "VDI_IN_USE";
    pub const SR_HAS_PBD: &str = "SR_HAS_PBD";
    pub const SR_NOT_EMPTY: &str = "SR_NOT_EMPTY";
    pub const MAC_INVALID: &str = "MAC_INVALID";
    pub const DEVICE_ALREADY_EXISTS: &str = "DEVICE_ALREADY_EXISTS";
    pub const VALUE_NOT_SUPPORTED: &str = "VALUE_NOT_SUPPORTED";
    pub const PIF_ALREADY_BONDED: &str = "PIF_ALREADY_BONDED";
    pub const PIF_BOND_NEEDS_MORE_MEMBERS: &str = "PIF_BOND_NEEDS_MORE_MEMBERS";
    pub const PIF_IS_VLAN: &str = "PIF_IS_VLAN";
    pub const VLAN_TAG_INVALID: &str = "VLAN_TAG_INVALID";
    pub const MAP_DUPLICATE_KEY: &str = "MAP_DUPLICATE_KEY";
    pub const VM_IS_TEMPLATE: &str = "VM_IS_TEMPLATE";
    pub const VM_SHUTDOWN_TIMEOUT: &str = "VM_SHUTDOWN_TIMEOUT";
    pub const VM_SUSPEND_TIMEOUT: &str = "VM_SUSPEND_TIMEOUT";
    pub const VM_HAS_NO_SUSPEND_VDI: &str = "VM_HAS_NO_SUSPEND_VDI";
    pub const VM_NO_SUSPEND_SR: &str = "VM_NO_SUSPEND_SR";
    pub const SR_OPERATION_NOT_SUPPORTED: &str = "SR_OPERATION_NOT_SUPPORTED";
    pub const VM_FAILED_SUSPEND_ACKNOWLEDGMENT: &str = "VM_FAILED_SUSPEND_ACKNOWLEDGMENT";
    pub const EVENTS_LOST: &str = "EVENTS_LOST";
    pub const SESSION_NOT_REGISTERED: &str = "SESSION_NOT_REGISTERED";
    pub const VM_HAS_VGPU: &str = "VM_HAS_VGPU";
    pub const OTHER_OPERATION_IN_PROGRESS: &str = "OTHER_OPERATION_IN_PROGRESS";
    pub const OPERATION_BLOCKED: &str = "OPERATION_BLOCKED";
    pub const DEVICE_ALREADY_ATTACHED: &str = "DEVICE_ALREADY_ATTACHED";
    pub const DEVICE_ALREADY_DETACHED: &str = "DEVICE_ALREADY_DETACHED";
    pub const INVALID_DEVICE: &str = "INVALID_DEVICE";
    pub const PROVISION_ONLY_ALLOWED_ON_TEMPLATE: &str = "PROVISION_ONLY_ALLOWED_ON_TEMPLATE";
    pub const NOT_IMPLEMENTED: &str = "NOT_IMPLEMENTED";
}

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A XenAPI failure.
    #[error("XenAPI failure: {0}")]
    Api(#[from] ApiError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The database holds something this crate cannot read.
    #[error("database corrupt: {0}")]
    Corrupt(String),
    /// Another writer changed an object this write touched (a pool store); nothing was written.
    #[error("database conflict: {0} changed under this write; retry")]
    Conflict(String),
    /// The pool store (etcd) failed.
    #[error("pool store: {0}")]
    Store(String),
    /// An I/O error on a path or address.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Domain control (`xenctrl`) failed.
    #[error("xenctrl: {0}")]
    Xen(#[from] xenctrl::Error),
    /// A xenstore request failed.
    #[error("xenstore: {0}")]
    Xenstore(#[from] xenstore::Error),
    /// Writing or reading device directories (`xenbus`) failed.
    #[error("xenbus: {0}")]
    Xenbus(#[from] xenbus::Error),
    /// The in-process xenstored failed.
    #[error("xenstored: {0}")]
    Xenstored(#[from] xenstored::Error),
    /// A protocol error talking to a server.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A device's backend could not be set up or stopped (device model, hotplug).
    #[error("device: {0}")]
    Device(String),
    /// The guest did not acknowledge a suspend request (it left `control/shutdown` as it
    /// was), so the request was withdrawn.
    #[error("domain {0} did not acknowledge the suspend request")]
    SuspendNotAcknowledged(u16),
    /// The guest acknowledged a suspend request but did not suspend in time.
    #[error("domain {0} did not suspend in time")]
    SuspendTimeout(u16),
    /// Password hashing failed.
    #[error("password hashing failed")]
    Password,
}

#[cfg(test)]
mod tests {
    use xen_types::Errno;

    use super::*;

    #[test]
    fn lack_of_memory_is_known_by_its_variant() {
        let xen = |e| Error::Xen(xenctrl::Error::from_errno("xc_domain_create", None, e));
        assert!(xen(Errno::ENOMEM).is_out_of_memory());
        for e in [Errno::EINVAL, Errno::ESRCH, Errno::EPERM] {
            assert!(!xen(e).is_out_of_memory(), "{e:?}");
        }
        // A message that mentions memory is not a lack of memory.
        assert!(!Error::Corrupt("out of memory".into()).is_out_of_memory());
        assert!(!Error::Xenstore(xenstore::Error::Xs(Errno::ENOMEM)).is_out_of_memory());
    }
}
