//! Grant tables of the simulated host (being written).

/// A domain's grant table.
#[derive(Debug, Default)]
pub struct DomainGrants {}
