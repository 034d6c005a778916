//! Domain memory of the simulated host as shared memory (being written).

/// A domain's pages.
#[derive(Debug, Default)]
pub struct DomainMemory {}
