//! Event channels of the simulated host (being written).

use xen_types::DomId;

use crate::host::HostState;

/// A domain's event-channel port table.
#[derive(Debug, Default)]
pub struct DomainPorts {}

/// Called by the domain lifecycle when `dom` is destroyed (before it is removed): close all of
/// its ports; interdomain peers become unbound as Xen leaves them.
pub(crate) fn on_domain_destroy(_state: &mut HostState, _dom: DomId) {}
