//! The state of an event-channel port.

use crate::{DomId, EvtchnPort, Virq};

/// The state of a port, as `EVTCHNOP_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Not in use (`EVTCHNSTAT_closed`).
    Closed,
    /// Allocated for `remote` to bind to (`EVTCHNSTAT_unbound`).
    Unbound {
        /// The only domain that may bind to it.
        remote: DomId,
    },
    /// Connected (`EVTCHNSTAT_interdomain`).
    Interdomain {
        /// The remote domain.
        remote: DomId,
        /// The remote port.
        remote_port: EvtchnPort,
    },
    /// Bound to a virtual interrupt (`EVTCHNSTAT_virq`).
    Virq(Virq),
}
