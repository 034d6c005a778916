//! What the console daemon asks of the hypervisor beyond domain control: the hypervisor's
//! console ring, and other domains' frames mapped by number (privcmd).

use std::fmt;

use xen_types::mem::SharedMemory;

/// A read of the hypervisor's console ring ([`XenControl::read_console_ring`](crate::XenControl::read_console_ring)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleRead {
    /// The bytes read (empty when nothing is new).
    pub data: Vec<u8>,
    /// The index to pass to the next read.
    pub index: u32,
}

/// Frames of another domain mapped into this process
/// ([`XenControl::map_foreign`](crate::XenControl::map_foreign)); unmapped on drop.
pub struct ForeignMapping {
    inner: Box<dyn SharedMemory>,
}

impl ForeignMapping {
    /// Wraps a backend's mapping.
    pub fn new(inner: Box<dyn SharedMemory>) -> ForeignMapping {
        ForeignMapping { inner }
    }
}

impl fmt::Debug for ForeignMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignMapping")
            .field("len", &self.inner.len())
            .finish()
    }
}

// SAFETY: forwards to the owned mapping, whose contract holds while self lives.
unsafe impl SharedMemory for ForeignMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.inner.as_ptr()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn writable(&self) -> bool {
        self.inner.writable()
    }
}
