//! Dom0's own xenstore ring: the page and port dom0's kernel set up for a local xenstored.
//!
//! When xenstored runs in dom0, dom0's kernel (`xenstored_local_init` in Linux) allocates
//! a zeroed page for its `xenstore_domain_interface` and an unbound event channel for
//! domain 0, and exposes them as `/proc/xen/xsd_kva` (mmap one page) and
//! `/proc/xen/xsd_port` (the port number, text). C xenstored maps both at start
//! (`dom0_init` in `xenstored_domain.c`) and serves dom0 as domain 0 over that ring; until
//! it does, dom0's kernel xenbus (and so every backend driver in dom0) gets no replies.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use xen_types::mem::SharedMemory;
use xen_types::{DomId, EvtchnPort, PAGE_SIZE};
use xenstore::ring::{Doorbell, EvtchnDoorbell};

use crate::server::RingParts;

/// The kernel file holding dom0's ring page.
pub const XSD_KVA: &str = "/proc/xen/xsd_kva";
/// The kernel file holding dom0's ring event-channel port.
pub const XSD_PORT: &str = "/proc/xen/xsd_port";

/// Dom0's ring page, mapped from `/proc/xen/xsd_kva`.
#[derive(Debug)]
pub struct KvaPage {
    map: memmap2::MmapMut,
}

impl KvaPage {
    /// Maps the first page of `path` (normally [`XSD_KVA`]) shared, read-write.
    pub fn map(path: &Path) -> io::Result<KvaPage> {
        let file: File = OpenOptions::new().read(true).write(true).open(path)?;
        // SAFETY: a MAP_SHARED mapping of one page of the kernel's xenstore page. The
        // memory is shared with dom0's kernel, so it is only ever accessed through the
        // `SharedMemory` volatile/atomic accessors, never as a Rust slice.
        let map = unsafe { memmap2::MmapOptions::new().len(PAGE_SIZE).map_mut(&file)? };
        Ok(KvaPage { map })
    }
}

// SAFETY: a mapping owned by the value: valid, page-aligned, fixed address, one page,
// readable and writable until dropped.
unsafe impl SharedMemory for KvaPage {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Parses the content of `/proc/xen/xsd_port`: a decimal port number, port 0 refused.
pub fn parse_port(text: &str) -> io::Result<EvtchnPort> {
    match text.trim().parse::<u32>() {
        Ok(p) if p > 0 => Ok(EvtchnPort(p)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad event-channel port {text:?}"),
        )),
    }
}

/// Dom0's ring page and a doorbell bound to its port, as [`Daemon::serve_ring`] takes them.
///
/// Returns `Ok(None)` when `kva` does not exist (not a Xen dom0, or dom0's kernel does not
/// expect a local xenstored).
///
/// [`Daemon::serve_ring`]: crate::Daemon::serve_ring
pub fn open_dom0_ring(
    kva: &Path,
    port_file: &Path,
    open_evtchn: impl FnOnce() -> evtchn::Result<evtchn::Evtchn>,
) -> io::Result<Option<RingParts>> {
    if !kva.exists() {
        return Ok(None);
    }
    let port = parse_port(&std::fs::read_to_string(port_file)?)?;
    let page = KvaPage::map(kva)?;
    let evio = |e: evtchn::Error| io::Error::from_raw_os_error(e.errno().0);
    let ev = open_evtchn().map_err(evio)?;
    let local = ev.bind_interdomain(DomId::DOM0, port).map_err(evio)?;
    let mem: Arc<dyn SharedMemory> = Arc::new(page);
    let bell: Arc<dyn Doorbell> = Arc::new(EvtchnDoorbell::new(ev, local));
    Ok(Some((mem, bell)))
}

#[cfg(test)]
mod tests {
    use xen_types::mem::SharedMemoryExt;

    use super::*;

    #[test]
    fn port_file_is_parsed_like_c_xenstored_and_bad_ports_are_refused() {
        assert_eq!(parse_port("7\n").unwrap(), EvtchnPort(7));
        assert_eq!(parse_port(" 12 ").unwrap(), EvtchnPort(12));
        for bad in ["", "0", "-1", "x", "4294967296"] {
            assert_eq!(
                parse_port(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_kva_file_means_no_dom0_ring() {
        let dir = tempfile::tempdir().unwrap();
        let r = open_dom0_ring(
            &dir.path().join("xsd_kva"),
            &dir.path().join("xsd_port"),
            || panic!("must not open an event channel"),
        )
        .unwrap();
        assert!(r.is_none());
    }

    #[test]
    fn kva_page_maps_a_file_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page");
        std::fs::write(&path, vec![0u8; PAGE_SIZE]).unwrap();
        let page = KvaPage::map(&path).unwrap();
        assert_eq!(page.len(), PAGE_SIZE);
        page.write_bytes(100, b"xs").unwrap();
        drop(page);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[100..102], b"xs");
    }

    #[test]
    fn missing_port_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let kva = dir.path().join("xsd_kva");
        std::fs::write(&kva, vec![0u8; PAGE_SIZE]).unwrap();
        let e = open_dom0_ring(&kva, &dir.path().join("xsd_port"), || {
            panic!("must not open an event channel")
        })
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
