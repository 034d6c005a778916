//! The interface every SR type implements, as SM's driver interface is.

use std::path::PathBuf;

use crate::{Result, SrUuid, VdiInfo, VdiUuid};

/// Space in an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrStats {
    /// Size of the substrate in bytes.
    pub physical_size: u64,
    /// Bytes used on it.
    pub physical_utilisation: u64,
    /// Sum of the VDIs' virtual sizes.
    pub virtual_allocation: u64,
}

/// What a datapath (blkbackd) needs to serve an attached VDI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachInfo {
    /// The image to open: a qcow2 leaf (whose header names its backing chain) or a block
    /// device; the backend's `params`.
    pub path: PathBuf,
    /// Attached read-only.
    pub readonly: bool,
}

/// One SR type's driver, for one SR (its uuid and device-config are given when the driver
/// value is made). Methods take `&self`: a driver serialises its own operations.
///
/// Every VDI operation needs the SR attached ([`Error::SrNotAttached`](crate::Error)
/// otherwise).
pub trait SrDriver: Send + Sync {
    /// The SR type (`ext`, `file`, `lvm`).
    fn sr_type(&self) -> &'static str;
    /// The SR's uuid.
    fn sr_uuid(&self) -> SrUuid;
    /// Formats the substrate as an empty SR (refused where one already is).
    fn sr_create(&self) -> Result<()>;
    /// Makes the SR usable on this host (PBD.plug); runs a scan.
    fn sr_attach(&self) -> Result<()>;
    /// The reverse of attach; refused while a VDI is attached.
    fn sr_detach(&self) -> Result<()>;
    /// Removes the SR from the substrate; refused while it holds VDIs.
    fn sr_delete(&self) -> Result<()>;
    /// Lists the VDIs after repairing what an interrupted operation left (finishes or rolls
    /// back snapshots and clones, coalesces chains, removes orphans).
    fn sr_scan(&self) -> Result<Vec<VdiInfo>>;
    /// The SRs found on the substrate the device-config names.
    fn sr_probe(&self) -> Result<Vec<SrUuid>>;
    /// Space in the SR.
    fn sr_stats(&self) -> Result<SrStats>;

    /// One VDI's record.
    fn vdi_info(&self, vdi: VdiUuid) -> Result<VdiInfo>;
    /// A new empty VDI of `virtual_size` bytes.
    fn vdi_create(&self, name_label: &str, virtual_size: u64) -> Result<VdiInfo>;
    /// Destroys a VDI; refused while attached. Its data stays while other VDIs' chains need
    /// it, coalesced into its one remaining child.
    fn vdi_destroy(&self, vdi: VdiUuid) -> Result<()>;
    /// Grows a VDI; refused while attached, for snapshots, and for shrinking.
    fn vdi_resize(&self, vdi: VdiUuid, new_size: u64) -> Result<VdiInfo>;
    /// A read-only snapshot of the VDI, copying no data.
    fn vdi_snapshot(&self, vdi: VdiUuid) -> Result<VdiInfo>;
    /// A writable clone of the VDI, copying no data.
    fn vdi_clone(&self, vdi: VdiUuid) -> Result<VdiInfo>;
    /// A new flat VDI holding a full copy of the VDI's data.
    fn vdi_copy(&self, vdi: VdiUuid) -> Result<VdiInfo>;
    /// Prepares the VDI for a datapath on this host.
    fn vdi_attach(&self, vdi: VdiUuid, writable: bool) -> Result<AttachInfo>;
    /// The reverse of attach.
    fn vdi_detach(&self, vdi: VdiUuid) -> Result<()>;
    /// The datapath is about to do I/O on the attached VDI.
    fn vdi_activate(&self, vdi: VdiUuid) -> Result<()>;
    /// The datapath has stopped I/O and flushed.
    fn vdi_deactivate(&self, vdi: VdiUuid) -> Result<()>;
}
