//! The control ring (`feature-ctrl-ring`): the frontend's hashing requests
//! (`XEN_NETIF_CTRL_TYPE_*`), answered one response per request with a status, as Linux's
//! xen-netback answers them.
//!
//! What the frontend sets lands in the vif's [`HashConfig`], which every queue's rx path
//! reads to pick the queue a frame goes to and the hash it reports. Keys and mapping tables
//! are grant-copied out of the pages the request names; a request with a bad size, offset,
//! queue number or grant gets `INVALID_PARAMETER` (or `BUFFER_OVERFLOW`) and changes
//! nothing. Static grant mappings (`*_GREF_MAPPING`) and unknown types are
//! `NOT_SUPPORTED`.

use std::sync::Arc;

use gnttab::{CopyDest, CopySegment, CopySource, GrantMap, GrantStatus};
use parking_lot::RwLock;
use xen_ring::BackRing;
use xen_types::mem::{Pod, SharedMemory};
use xen_types::{DomId, GrantRef};

use crate::hash::{HashAlgorithm, HashConfig, HashTypes, MAX_KEY, MAX_MAPPING};
use crate::wire::PAGE;
use crate::Error;

/// A control request (`struct xen_netif_ctrl_request`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CtrlRequest {
    /// Echoed in the response.
    pub id: u16,
    /// `XEN_NETIF_CTRL_TYPE_*`.
    pub type_: u16,
    /// The request's arguments.
    pub data: [u32; 3],
}

/// A control response (`struct xen_netif_ctrl_response`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CtrlResponse {
    /// The request's id.
    pub id: u16,
    /// The request's type.
    pub type_: u16,
    /// `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u32,
    /// The answer.
    pub data: u32,
}

// SAFETY: `repr(C)` structs of integers (no padding: 16 and 12 bytes, checked below against
// the C layout); every bit pattern is valid.
unsafe impl Pod for CtrlRequest {}
// SAFETY: as above.
unsafe impl Pod for CtrlResponse {}

const _: () = {
    use std::mem::{align_of, size_of};
    assert!(size_of::<CtrlRequest>() == size_of::<xen_sys::xen_netif_ctrl_request>());
    assert!(align_of::<CtrlRequest>() == align_of::<xen_sys::xen_netif_ctrl_request>());
    assert!(size_of::<CtrlResponse>() == size_of::<xen_sys::xen_netif_ctrl_response>());
    assert!(align_of::<CtrlResponse>() == align_of::<xen_sys::xen_netif_ctrl_response>());
};

/// The backend end of a control ring.
pub type CtrlRing<M> = BackRing<M, CtrlRequest, CtrlResponse>;

/// A control request type (`XEN_NETIF_CTRL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlType(pub u16);

impl CtrlType {
    /// `SET_HASH_ALGORITHM`.
    pub const SET_HASH_ALGORITHM: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM as u16);
    /// `GET_HASH_FLAGS`.
    pub const GET_HASH_FLAGS: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS as u16);
    /// `SET_HASH_FLAGS`.
    pub const SET_HASH_FLAGS: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS as u16);
    /// `SET_HASH_KEY`.
    pub const SET_HASH_KEY: CtrlType = CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_SET_HASH_KEY as u16);
    /// `GET_HASH_MAPPING_SIZE`.
    pub const GET_HASH_MAPPING_SIZE: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE as u16);
    /// `SET_HASH_MAPPING_SIZE`.
    pub const SET_HASH_MAPPING_SIZE: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE as u16);
    /// `SET_HASH_MAPPING`.
    pub const SET_HASH_MAPPING: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING as u16);
    /// `GET_GREF_MAPPING_SIZE` (static grants: not supported).
    pub const GET_GREF_MAPPING_SIZE: CtrlType =
        CtrlType(xen_sys::XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE as u16);
}

/// A control response status (`XEN_NETIF_CTRL_STATUS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlStatus(pub u32);

impl CtrlStatus {
    /// Done.
    pub const SUCCESS: CtrlStatus = CtrlStatus(xen_sys::XEN_NETIF_CTRL_STATUS_SUCCESS);
    /// Not supported (or not in the current state).
    pub const NOT_SUPPORTED: CtrlStatus = CtrlStatus(xen_sys::XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    /// A parameter is invalid.
    pub const INVALID_PARAMETER: CtrlStatus =
        CtrlStatus(xen_sys::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    /// Larger than the backend supports.
    pub const BUFFER_OVERFLOW: CtrlStatus =
        CtrlStatus(xen_sys::XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW);
}

/// A vif's hashing settings, shared by its control ring and its queues.
pub type SharedHash = Arc<RwLock<HashConfig>>;

/// Serves a vif's control ring.
pub struct CtrlPath<M: SharedMemory> {
    ring: CtrlRing<M>,
    front: DomId,
    queues: usize,
    hash: SharedHash,
}

impl<M: SharedMemory> std::fmt::Debug for CtrlPath<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtrlPath")
            .field("ring", &self.ring)
            .field("queues", &self.queues)
            .finish()
    }
}

impl<M: SharedMemory> CtrlPath<M> {
    /// The control ring of frontend `front`, which connected `queues` queues; requests
    /// change `hash`.
    pub fn new(ring: CtrlRing<M>, front: DomId, queues: usize, hash: SharedHash) -> Self {
        CtrlPath {
            ring,
            front,
            queues,
            hash,
        }
    }

    /// Answers every published request; true when the frontend wants an event. An `Err`
    /// is fatal (the ring's indexes are broken).
    pub fn serve<G: GrantMap + ?Sized>(&mut self, gnttab: &G) -> Result<bool, Error> {
        while let Some(req) = self.ring.take_request()? {
            let (status, data) = self.handle(gnttab, &req);
            self.ring.push_response(CtrlResponse {
                id: req.id,
                type_: req.type_,
                status: status.0,
                data,
            })?;
        }
        Ok(self.ring.push_responses_and_check_notify())
    }

    /// True when requests are published and unanswered (after asking for an event for the
    /// next one).
    pub fn more(&mut self) -> Result<bool, Error> {
        Ok(self.ring.final_check_for_requests()?)
    }

    /// Copies `len` bytes at the start of the frontend's page `gref` into `dst`.
    fn fetch<G: GrantMap + ?Sized>(&self, gnttab: &G, gref: u32, dst: &mut [u8]) -> bool {
        if dst.is_empty() {
            return true;
        }
        let mut seg = [CopySegment {
            len: dst.len() as u16,
            source: CopySource::Gref {
                domid: self.front,
                gref: GrantRef(gref),
                offset: 0,
            },
            dest: CopyDest::Local(dst),
            status: GrantStatus::OKAY,
        }];
        gnttab.copy(&mut seg).is_ok() && seg[0].status == GrantStatus::OKAY
    }

    fn handle<G: GrantMap + ?Sized>(&self, gnttab: &G, req: &CtrlRequest) -> (CtrlStatus, u32) {
        let [d0, d1, d2] = req.data;
        let ok = (CtrlStatus::SUCCESS, 0);
        let invalid = (CtrlStatus::INVALID_PARAMETER, 0);
        match CtrlType(req.type_) {
            CtrlType::SET_HASH_ALGORITHM => match HashAlgorithm::from_raw(d0) {
                Some(a) => {
                    self.hash.write().alg = a;
                    ok
                }
                None => invalid,
            },
            CtrlType::GET_HASH_FLAGS => {
                if self.hash.read().alg == HashAlgorithm::None {
                    (CtrlStatus::NOT_SUPPORTED, 0)
                } else {
                    (CtrlStatus::SUCCESS, HashTypes::ALL.0)
                }
            }
            CtrlType::SET_HASH_FLAGS => {
                let mut h = self.hash.write();
                if d0 & !HashTypes::ALL.0 != 0 || h.alg == HashAlgorithm::None {
                    return invalid;
                }
                h.types = HashTypes(d0);
                ok
            }
            CtrlType::SET_HASH_KEY => {
                let len = d1 as usize;
                if len > MAX_KEY {
                    return (CtrlStatus::BUFFER_OVERFLOW, 0);
                }
                let mut key = [0u8; MAX_KEY];
                if !self.fetch(gnttab, d0, &mut key[..len]) {
                    return invalid;
                }
                self.hash.write().key = key;
                ok
            }
            CtrlType::GET_HASH_MAPPING_SIZE => (CtrlStatus::SUCCESS, MAX_MAPPING as u32),
            CtrlType::SET_HASH_MAPPING_SIZE => {
                if d0 as usize > MAX_MAPPING {
                    return invalid;
                }
                self.hash.write().mapping = vec![0; d0 as usize];
                ok
            }
            CtrlType::SET_HASH_MAPPING => {
                let (len, off) = (d1 as usize, d2 as usize);
                if len.saturating_mul(4) > PAGE {
                    return (CtrlStatus::BUFFER_OVERFLOW, 0);
                }
                if off.saturating_add(len) > self.hash.read().mapping.len() {
                    return invalid;
                }
                let mut raw = vec![0u8; len * 4];
                if !self.fetch(gnttab, d0, &mut raw) {
                    return invalid;
                }
                let entries: Vec<u32> = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if entries.iter().any(|&q| q as usize >= self.queues) {
                    return invalid;
                }
                let mut h = self.hash.write();
                // The size may have changed since the check above.
                match h.mapping.get_mut(off..off + len) {
                    Some(dst) => {
                        dst.copy_from_slice(&entries);
                        ok
                    }
                    None => invalid,
                }
            }
            _ => (CtrlStatus::NOT_SUPPORTED, 0),
        }
    }
}
