//! The netif wire formats (`xen/io/netif.h`) and their mapping to and from the
//! `virtio_net_hdr` a tap device opened with `IFF_VNET_HDR` reads and writes.
//!
//! - extra-info slots ([`Extra`]) share the ring entries of requests (tx) and responses
//!   (rx): [`Extra::from_tx`] / [`Extra::to_tx`] and [`Extra::to_rx`] / [`Extra::from_rx`]
//!   reinterpret the bytes as `netif_extra_info` does in C;
//! - [`Offload`] is what netif says of a packet (checksum flags, GSO), [`VnetHdr`] what a tap
//!   says; [`Offload::to_vnet`] needs the frame (netif carries no checksum offsets: they are
//!   found in the headers, as Linux's netback does with `skb_partial_csum_set`);
//! - [`fill_checksum`] completes a partial checksum for a frontend that takes none.

use xen_sys::{netif_rx_response, netif_tx_request};

use crate::Error;

/// A grant's page size.
pub const PAGE: usize = xen_types::PAGE_SIZE;
/// Largest packet netif carries (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_PACKET: usize = xen_sys::XEN_NETIF_MAX_TX_SIZE as usize;
/// Slots a packet may use (`XEN_NETIF_NR_SLOTS_MIN`); more are dropped with errors.
pub const MAX_SLOTS: usize = xen_sys::XEN_NETIF_NR_SLOTS_MIN as usize;
/// Slots of a packet beyond which a frontend is treated as malicious and its queue stopped
/// (Linux's `fatal_skb_slots` default).
pub const FATAL_SLOTS: usize = 20;
/// Shortest frame: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// tx request flags (`NETTXF_*`).
pub mod txf {
    /// The checksum is blank (partial): the backend completes it.
    pub const CSUM_BLANK: u16 = xen_sys::NETTXF_csum_blank as u16;
    /// The checksum was validated.
    pub const DATA_VALIDATED: u16 = xen_sys::NETTXF_data_validated as u16;
    /// Another data slot follows.
    pub const MORE_DATA: u16 = xen_sys::NETTXF_more_data as u16;
    /// An extra-info slot follows.
    pub const EXTRA_INFO: u16 = xen_sys::NETTXF_extra_info as u16;
}

/// rx response flags (`NETRXF_*`).
pub mod rxf {
    /// The checksum was validated.
    pub const DATA_VALIDATED: u16 = xen_sys::NETRXF_data_validated as u16;
    /// The checksum is blank (partial).
    pub const CSUM_BLANK: u16 = xen_sys::NETRXF_csum_blank as u16;
    /// Another data slot follows.
    pub const MORE_DATA: u16 = xen_sys::NETRXF_more_data as u16;
    /// An extra-info slot follows.
    pub const EXTRA_INFO: u16 = xen_sys::NETRXF_extra_info as u16;
}

/// Response statuses (`NETIF_RSP_*`).
pub mod rsp {
    /// Dropped.
    pub const DROPPED: i16 = xen_sys::NETIF_RSP_DROPPED as i16;
    /// Error.
    pub const ERROR: i16 = xen_sys::NETIF_RSP_ERROR as i16;
    /// Done.
    pub const OKAY: i16 = xen_sys::NETIF_RSP_OKAY as i16;
    /// The response of an extra-info slot.
    pub const NULL: i16 = xen_sys::NETIF_RSP_NULL as i16;
}

const EXTRA_TYPE_GSO: u8 = xen_sys::XEN_NETIF_EXTRA_TYPE_GSO as u8;
const EXTRA_TYPE_HASH: u8 = xen_sys::XEN_NETIF_EXTRA_TYPE_HASH as u8;
const EXTRA_TYPE_MAX: u8 = xen_sys::XEN_NETIF_EXTRA_TYPE_MAX as u8;
/// Another extra-info slot follows (`XEN_NETIF_EXTRA_FLAG_MORE`).
pub const EXTRA_FLAG_MORE: u8 = xen_sys::XEN_NETIF_EXTRA_FLAG_MORE as u8;

/// A TCP segmentation offload kind (`XEN_NETIF_GSO_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
}

impl GsoKind {
    fn netif(self) -> u8 {
        match self {
            GsoKind::TcpV4 => xen_sys::XEN_NETIF_GSO_TYPE_TCPV4 as u8,
            GsoKind::TcpV6 => xen_sys::XEN_NETIF_GSO_TYPE_TCPV6 as u8,
        }
    }
}

/// A packet to segment: its kind and the payload bytes per segment (MSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// Protocol.
    pub kind: GsoKind,
    /// Segment payload size.
    pub size: u16,
}

/// An extra-info slot (`struct netif_extra_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    Gso(Gso),
    /// `XEN_NETIF_EXTRA_TYPE_HASH`: a packet's hash.
    Hash {
        /// The hash type's bit number (`_XEN_NETIF_CTRL_HASH_TYPE_*`).
        kind: u8,
        /// The algorithm (`XEN_NETIF_CTRL_HASH_ALGORITHM_*`).
        alg: u8,
        /// The value.
        value: u32,
    },
    /// Another known type (multicast, hash): read and ignored.
    Other(u8),
}

fn extra_bytes(e: &Extra, more: bool) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[1] = if more { EXTRA_FLAG_MORE } else { 0 };
    match e {
        Extra::Gso(g) => {
            b[0] = EXTRA_TYPE_GSO;
            b[2..4].copy_from_slice(&g.size.to_ne_bytes());
            b[4] = g.kind.netif();
        }
        Extra::Hash { kind, alg, value } => {
            b[0] = EXTRA_TYPE_HASH;
            b[2] = *kind;
            b[3] = *alg;
            b[4..8].copy_from_slice(&value.to_ne_bytes());
        }
        Extra::Other(t) => b[0] = *t,
    }
    b
}

impl Extra {
    /// Decodes the extra-info slot in tx request `r`; also returns its `MORE` flag. A type
    /// out of range, a GSO of unknown type or of size 0 is an error (Linux's netback treats
    /// them as fatal).
    pub fn from_tx(r: &netif_tx_request) -> Result<(Extra, bool), Error> {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&r.gref.to_ne_bytes());
        b[4..6].copy_from_slice(&r.offset.to_ne_bytes());
        b[6..8].copy_from_slice(&r.flags.to_ne_bytes());
        Self::decode(b)
    }

    fn decode(b: [u8; 8]) -> Result<(Extra, bool), Error> {
        let more = b[1] & EXTRA_FLAG_MORE != 0;
        match b[0] {
            0 => Err(Error::Protocol("extra-info slot of type none".into())),
            EXTRA_TYPE_GSO => {
                let size = u16::from_ne_bytes([b[2], b[3]]);
                let kind = match u32::from(b[4]) {
                    xen_sys::XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
                    xen_sys::XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                    t => return Err(Error::Protocol(format!("bad GSO type {t}"))),
                };
                if size == 0 {
                    return Err(Error::Protocol("GSO size 0".into()));
                }
                Ok((Extra::Gso(Gso { kind, size }), more))
            }
            EXTRA_TYPE_HASH => Ok((
                Extra::Hash {
                    kind: b[2],
                    alg: b[3],
                    value: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                },
                more,
            )),
            t if t < EXTRA_TYPE_MAX => Ok((Extra::Other(t), more)),
            t => Err(Error::Protocol(format!("bad extra-info type {t}"))),
        }
    }

    /// The tx request slot holding this extra info (frontend side).
    pub fn to_tx(&self, more: bool) -> netif_tx_request {
        let b = extra_bytes(self, more);
        netif_tx_request {
            gref: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            id: 0,
            size: 0,
        }
    }

    /// The rx response slot holding this extra info (backend side).
    pub fn to_rx(&self, more: bool) -> netif_rx_response {
        let b = extra_bytes(self, more);
        netif_rx_response {
            id: u16::from_ne_bytes([b[0], b[1]]),
            offset: u16::from_ne_bytes([b[2], b[3]]),
            flags: u16::from_ne_bytes([b[4], b[5]]),
            status: i16::from_ne_bytes([b[6], b[7]]),
        }
    }

    /// Decodes an extra info from an rx response slot (frontend side).
    pub fn from_rx(r: &netif_rx_response) -> Result<(Extra, bool), Error> {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&r.id.to_ne_bytes());
        b[2..4].copy_from_slice(&r.offset.to_ne_bytes());
        b[4..6].copy_from_slice(&r.flags.to_ne_bytes());
        b[6..8].copy_from_slice(&r.status.to_ne_bytes());
        Self::decode(b)
    }
}

/// `struct virtio_net_hdr` (10 bytes, native endian), as a tap with `IFF_VNET_HDR` reads and
/// writes it before each frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers (Ethernet to TCP) of a GSO packet.
    pub hdr_len: u16,
    /// Segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

/// virtio_net_hdr constants (`linux/virtio_net.h`).
pub mod vnet {
    /// Bytes of the header.
    pub const LEN: usize = 10;
    /// The checksum is partial: complete it from `csum_start`.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was validated.
    pub const F_DATA_VALID: u8 = 2;
    /// Not a GSO packet.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4.
    pub const GSO_TCPV4: u8 = 1;
    /// UDP (fragmentation offload).
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6.
    pub const GSO_TCPV6: u8 = 4;
    /// ECN bit of `gso_type`.
    pub const GSO_ECN: u8 = 0x80;
}

impl VnetHdr {
    /// Its bytes.
    pub fn to_bytes(&self) -> [u8; vnet::LEN] {
        let mut b = [0u8; vnet::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Parses the first [`vnet::LEN`] bytes of `b` (`None` if shorter).
    pub fn from_bytes(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..vnet::LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }
}

/// What netif says about a packet's checksum and segmentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// The L4 checksum is partial (`NETTXF_csum_blank` / `NETRXF_csum_blank`).
    pub csum_blank: bool,
    /// The checksum is known good (`*_data_validated`).
    pub data_validated: bool,
    /// Segmentation to do (a GSO extra-info slot).
    pub gso: Option<Gso>,
}

/// Where a frame's L4 checksum lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// Start of the L4 header.
    pub start: usize,
    /// Offset of the checksum field from `start`.
    pub csum_offset: usize,
    /// End of the L4 header (TCP: with options).
    pub hdr_end: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// TCP (else UDP).
    pub tcp: bool,
}

/// Finds the TCP or UDP header of an Ethernet frame (one optional VLAN tag, IPv4 or IPv6
/// with hop-by-hop, routing and destination-options headers), as Linux's netback does to
/// set up a partial checksum.
pub fn parse_l4(f: &[u8]) -> Option<L4> {
    let mut off = ETH_HLEN;
    let mut et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if et == 0x8100 {
        et = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        off += 4;
    }
    let (proto, l4, v6) = match et {
        0x0800 => {
            let ihl = usize::from(*f.get(off)? & 0xf) * 4;
            if ihl < 20 || f.len() < off + ihl {
                return None;
            }
            (f[off + 9], off + ihl, false)
        }
        0x86dd => {
            let mut next = *f.get(off + 6)?;
            let mut p = off + 40;
            for _ in 0..8 {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                next = *f.get(p)?;
                p += (usize::from(*f.get(p + 1)?) + 1) * 8;
            }
            (next, p, true)
        }
        _ => return None,
    };
    let (csum_offset, hdr_end, tcp) = match proto {
        6 => {
            let doff = usize::from(*f.get(l4 + 12)? >> 4) * 4;
            if doff < 20 {
                return None;
            }
            (16, l4 + doff, true)
        }
        17 => (6, l4 + 8, false),
        _ => return None,
    };
    (f.len() >= hdr_end).then_some(L4 {
        start: l4,
        csum_offset,
        hdr_end,
        v6,
        tcp,
    })
}

impl Offload {
    /// The tap header of a packet the frontend sent: a blank checksum becomes
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` at the offsets of the frame's TCP/UDP header, a GSO slot
    /// a TSO packet of the same kind. A blank checksum on a frame without a TCP/UDP header,
    /// or GSO without a blank checksum or on a frame of another kind, is an error (the
    /// packet is dropped).
    pub fn to_vnet(&self, frame: &[u8]) -> Result<VnetHdr, Error> {
        let mut h = VnetHdr::default();
        if self.csum_blank {
            let l4 = parse_l4(frame).ok_or_else(|| {
                Error::Protocol("blank checksum on a frame without TCP/UDP".into())
            })?;
            h.flags = vnet::F_NEEDS_CSUM;
            h.csum_start = l4.start as u16;
            h.csum_offset = l4.csum_offset as u16;
            if let Some(g) = self.gso {
                let ok = l4.tcp && l4.v6 == (g.kind == GsoKind::TcpV6);
                if !ok {
                    return Err(Error::Protocol(format!(
                        "{:?} on another kind of frame",
                        g.kind
                    )));
                }
                h.gso_type = match g.kind {
                    GsoKind::TcpV4 => vnet::GSO_TCPV4,
                    GsoKind::TcpV6 => vnet::GSO_TCPV6,
                };
                h.gso_size = g.size;
                h.hdr_len = l4.hdr_end as u16;
            }
        } else if let Some(g) = self.gso {
            return Err(Error::Protocol(format!(
                "{:?} without a blank checksum",
                g.kind
            )));
        } else if self.data_validated {
            h.flags = vnet::F_DATA_VALID;
        }
        Ok(h)
    }

    /// What to tell the frontend of a packet read from the tap with header `h`. UDP
    /// fragmentation offload is an error (never enabled with `TUNSETOFFLOAD`).
    pub fn from_vnet(h: &VnetHdr) -> Result<Offload, Error> {
        let gso = match h.gso_type & !vnet::GSO_ECN {
            vnet::GSO_NONE => None,
            vnet::GSO_TCPV4 => Some(GsoKind::TcpV4),
            vnet::GSO_TCPV6 => Some(GsoKind::TcpV6),
            t => return Err(Error::Protocol(format!("virtio GSO type {t} not offered"))),
        };
        let gso = match gso {
            Some(kind) if h.gso_size > 0 => Some(Gso {
                kind,
                size: h.gso_size,
            }),
            Some(_) => return Err(Error::Protocol("virtio GSO of size 0".into())),
            None => None,
        };
        let partial = h.flags & vnet::F_NEEDS_CSUM != 0;
        Ok(Offload {
            csum_blank: partial,
            data_validated: partial || h.flags & vnet::F_DATA_VALID != 0,
            gso,
        })
    }

    /// The flags of the first rx response of the packet.
    pub fn rx_flags(&self) -> u16 {
        let mut f = 0;
        if self.csum_blank {
            f |= rxf::CSUM_BLANK;
        }
        if self.data_validated {
            f |= rxf::DATA_VALIDATED;
        }
        if self.gso.is_some() {
            f |= rxf::EXTRA_INFO;
        }
        f
    }
}

/// The Internet checksum's one's-complement sum of `b`, folded, starting from `sum`.
pub fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        if sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Completes a partial checksum (`skb_checksum_help`): the field at `start + offset` holds
/// the pseudo-header sum; the result is the complement of the sum from `start` to the end.
pub fn fill_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), Error> {
    let at = start + offset;
    if at + 2 > frame.len() {
        return Err(Error::Protocol(format!(
            "checksum at {at} outside a {}-byte frame",
            frame.len()
        )));
    }
    let c = !(csum_add(0, &frame[start..]) as u16);
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_info_round_trips_through_tx_and_rx_slots() {
        let e = Extra::Gso(Gso {
            kind: GsoKind::TcpV6,
            size: 1448,
        });
        assert_eq!(Extra::from_tx(&e.to_tx(true)).unwrap(), (e, true));
        assert_eq!(Extra::from_rx(&e.to_rx(false)).unwrap(), (e, false));
        // The C layout: type, flags, then gso.size at byte 2 and gso.type at byte 4.
        let t = e.to_tx(false);
        assert_eq!(t.gref & 0xff, u32::from(EXTRA_TYPE_GSO));
        assert_eq!(t.gref >> 16, 1448);
        assert_eq!(t.offset & 0xff, xen_sys::XEN_NETIF_GSO_TYPE_TCPV6 as u16);
    }

    #[test]
    fn bad_extra_info_is_refused() {
        let mut t = Extra::Gso(Gso {
            kind: GsoKind::TcpV4,
            size: 0,
        })
        .to_tx(false);
        assert!(Extra::from_tx(&t).is_err(), "GSO size 0");
        t.gref = 9; // type 9
        assert!(Extra::from_tx(&t).is_err());
        t.gref = 0;
        assert!(Extra::from_tx(&t).is_err(), "type none");
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071's example words sum to 0xddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_add(0, &b), 0xddf2);
    }

    #[test]
    fn vnet_header_maps_both_ways() {
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4 | vnet::GSO_ECN,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&h.to_bytes()), Some(h));
        let o = Offload::from_vnet(&h).unwrap();
        assert!(o.csum_blank && o.data_validated);
        assert_eq!(o.gso.unwrap().size, 1448);
        let udp = VnetHdr {
            gso_type: vnet::GSO_UDP,
            gso_size: 1000,
            ..h
        };
        assert!(Offload::from_vnet(&udp).is_err());
    }
}
