//! What blkback needs from the host: grant mappings and event channels.
//!
//! The backend is written over these traits so it runs unchanged on a real dom0 (gntdev and
//! evtchn devices) and on the simulated host ([`crate::sim`]).

use std::time::Duration;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, EvtchnPort, GrantRef};

use crate::Error;

/// Maps pages another domain granted to us.
pub trait GrantMapper: Send + Sync + 'static {
    /// A mapping; unmapped when dropped.
    type Mapping: SharedMemory + 'static;

    /// Maps `refs` of domain `domid` contiguously, in order, in one batch
    /// (`IOCTL_GNTDEV_MAP_GRANT_REF` with `count = refs.len()`). Read-only grants cannot be
    /// mapped `writable`.
    fn map_grants(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<Self::Mapping, Error>;
}

/// One end of a bound interdomain event channel.
pub trait EventChannel: Send + Sync + 'static {
    /// Signals the other end.
    fn notify(&self) -> Result<(), Error>;
    /// Waits for a signal at most `timeout`: `Ok(true)` when one arrived (and is now
    /// consumed), `Ok(false)` on time-out, [`Error::Closed`] when the other end is gone.
    fn wait(&self, timeout: Duration) -> Result<bool, Error>;
}

/// A host a backend runs on.
pub trait Host: GrantMapper {
    /// A bound event channel.
    type Channel: EventChannel;
    /// Binds to port `port` of domain `domid` (`IOCTL_EVTCHN_BIND_INTERDOMAIN`).
    fn bind_interdomain(&self, domid: DomId, port: EvtchnPort) -> Result<Self::Channel, Error>;
}
