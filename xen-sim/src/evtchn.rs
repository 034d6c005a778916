//! Event channels of the simulated host (being written).

/// A domain's event-channel port table.
#[derive(Debug, Default)]
pub struct DomainPorts {}
