//! Grant tables of the simulated host (being written).

use xen_types::DomId;

use crate::host::HostState;

/// A domain's grant table.
#[derive(Debug, Default)]
pub struct DomainGrants {}

/// Called by the domain lifecycle when `dom` is destroyed: drop the grants it holds and the
/// mappings it made of other domains' pages.
pub(crate) fn on_domain_destroy(_state: &mut HostState, _dom: DomId) {}

/// True while another domain still maps a page of `dom`: Xen keeps such a domain dying (a
/// zombie) until the last mapping goes; the lifecycle then frees it.
pub(crate) fn has_foreign_mappings(_state: &HostState, _dom: DomId) -> bool {
    false
}
