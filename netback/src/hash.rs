//! Receive-side hashing as netif.h defines it: the Toeplitz hash over a frame's IPv4/IPv6
//! addresses (and TCP ports), the hash types a frontend enables, and the mapping table
//! that turns a hash into the rx queue a packet is delivered on.
//!
//! The frontend sets all of it through the control ring ([`crate::ctrl`]); the rx paths
//! read it for every frame ([`HashConfig::steer`]). Limits are those of Linux's
//! xen-netback: a 40-byte key, a table of up to 128 entries.

use crate::wire::ETH_HLEN;

/// Longest key the backend takes (`XEN_NETBK_MAX_HASH_KEY_SIZE`).
pub const MAX_KEY: usize = 40;
/// Largest mapping table the backend takes (`XEN_NETBK_MAX_HASH_MAPPING_SIZE`).
pub const MAX_MAPPING: usize = 128;

/// The hash types (`XEN_NETIF_CTRL_HASH_TYPE_*`), a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashTypes(pub u32);

impl HashTypes {
    /// Source and destination IPv4 addresses.
    pub const IPV4: HashTypes = HashTypes(xen_sys::XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    /// IPv4 addresses and TCP ports.
    pub const IPV4_TCP: HashTypes = HashTypes(xen_sys::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    /// Source and destination IPv6 addresses.
    pub const IPV6: HashTypes = HashTypes(xen_sys::XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    /// IPv6 addresses and TCP ports.
    pub const IPV6_TCP: HashTypes = HashTypes(xen_sys::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    /// Every type this backend computes.
    pub const ALL: HashTypes =
        HashTypes(Self::IPV4.0 | Self::IPV4_TCP.0 | Self::IPV6.0 | Self::IPV6_TCP.0);

    /// True if every type of `t` is set.
    pub fn contains(self, t: HashTypes) -> bool {
        self.0 & t.0 == t.0
    }

    /// The bit number of a single type (`_XEN_NETIF_CTRL_HASH_TYPE_*`), as the rx hash
    /// extra-info slot carries it.
    pub fn bit(self) -> u8 {
        self.0.trailing_zeros() as u8
    }
}

/// The hash algorithm (`XEN_NETIF_CTRL_HASH_ALGORITHM_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// No hashing: the backend steers packets as it likes.
    #[default]
    None,
    /// Toeplitz.
    Toeplitz,
}

impl HashAlgorithm {
    /// The algorithm numbered `n`, if known.
    pub fn from_raw(n: u32) -> Option<HashAlgorithm> {
        match n {
            xen_sys::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE => Some(HashAlgorithm::None),
            xen_sys::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ => Some(HashAlgorithm::Toeplitz),
            _ => None,
        }
    }

    /// Its number.
    pub fn raw(self) -> u8 {
        match self {
            HashAlgorithm::None => xen_sys::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE as u8,
            HashAlgorithm::Toeplitz => xen_sys::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
        }
    }
}

/// The Toeplitz hash of `data` under `key` (netif.h's definition: for each bit of `data`
/// set, XOR in the 32 bits of the key that start at that bit; key bytes past its end are
/// zero).
pub fn toeplitz(key: &[u8], data: &[u8]) -> u32 {
    let byte = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    // The 64 key bits starting at the current bit; the upper 32 are the window.
    let mut window = (0..8).fold(0u64, |w, i| (w << 8) | byte(i));
    let mut hash = 0u64;
    for (i, &b) in data.iter().enumerate() {
        for bit in (0..8).rev() {
            if b >> bit & 1 == 1 {
                hash ^= window;
            }
            window <<= 1;
        }
        window |= byte(i + 8);
    }
    (hash >> 32) as u32
}

/// A frame's hash and the type it was computed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHash {
    /// The hash value.
    pub value: u32,
    /// The (single) type it covers.
    pub kind: HashTypes,
}

/// A vif's hashing settings, as the frontend set them through the control ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    /// The algorithm.
    pub alg: HashAlgorithm,
    /// The types enabled.
    pub types: HashTypes,
    /// The key (zero past what the frontend set).
    pub key: [u8; MAX_KEY],
    /// The mapping table: hash modulo its size → queue. Empty: hash modulo the queues.
    pub mapping: Vec<u32>,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            alg: HashAlgorithm::None,
            types: HashTypes(0),
            key: [0; MAX_KEY],
            mapping: Vec::new(),
        }
    }
}

impl HashConfig {
    /// The hash of `frame` under the enabled types, the "maximal" one (TCP ports when the
    /// frame is TCP, not a fragment, and that type is on; else the addresses); `None`
    /// when hashing is off or no enabled type applies.
    pub fn hash(&self, frame: &[u8]) -> Option<FrameHash> {
        if self.alg == HashAlgorithm::None || self.types.0 == 0 || frame.len() < ETH_HLEN {
            return None;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[ETH_HLEN..];
        let mut buf = [0u8; 36];
        let (len, kind) = match ethertype {
            0x0800 => {
                if !(self.types.contains(HashTypes::IPV4)
                    || self.types.contains(HashTypes::IPV4_TCP))
                    || ip.len() < 20
                    || ip[0] >> 4 != 4
                {
                    return None;
                }
                let ihl = usize::from(ip[0] & 0xf) * 4;
                let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
                buf[..8].copy_from_slice(&ip[12..20]);
                let tcp = ip[9] == 6 && !frag && ihl >= 20 && ip.len() >= ihl + 4;
                if tcp && self.types.contains(HashTypes::IPV4_TCP) {
                    buf[8..12].copy_from_slice(&ip[ihl..ihl + 4]);
                    (12, HashTypes::IPV4_TCP)
                } else if self.types.contains(HashTypes::IPV4) {
                    (8, HashTypes::IPV4)
                } else {
                    return None;
                }
            }
            0x86dd => {
                if !(self.types.contains(HashTypes::IPV6)
                    || self.types.contains(HashTypes::IPV6_TCP))
                    || ip.len() < 40
                    || ip[0] >> 4 != 6
                {
                    return None;
                }
                buf[..32].copy_from_slice(&ip[8..40]);
                // TCP directly after the fixed header (no extension headers).
                let tcp = ip[6] == 6 && ip.len() >= 44;
                if tcp && self.types.contains(HashTypes::IPV6_TCP) {
                    buf[32..36].copy_from_slice(&ip[40..44]);
                    (36, HashTypes::IPV6_TCP)
                } else if self.types.contains(HashTypes::IPV6) {
                    (32, HashTypes::IPV6)
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        Some(FrameHash {
            value: toeplitz(&self.key, &buf[..len]),
            kind,
        })
    }

    /// The queue (of `queues`) a frame with hash `h` goes to: the mapping table's entry,
    /// or the hash modulo the queues without a table.
    pub fn queue(&self, h: u32, queues: usize) -> usize {
        let q = if self.mapping.is_empty() {
            h as usize % queues.max(1)
        } else {
            self.mapping[h as usize % self.mapping.len()] as usize
        };
        // Entries were checked against the queue count when set.
        q.min(queues.saturating_sub(1))
    }

    /// The hash of `frame` and the queue it goes to; `None` when hashing is off.
    pub fn steer(&self, frame: &[u8], queues: usize) -> Option<(FrameHash, usize)> {
        let h = self.hash(frame)?;
        Some((h, self.queue(h.value, queues)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of Microsoft's RSS verification suite.
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn v6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 20];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        f[20] = 6;
        f[22..38].copy_from_slice(&src);
        f[38..54].copy_from_slice(&dst);
        f[54..56].copy_from_slice(&sport.to_be_bytes());
        f[56..58].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn cfg(types: HashTypes) -> HashConfig {
        HashConfig {
            alg: HashAlgorithm::Toeplitz,
            types,
            key: KEY,
            mapping: Vec::new(),
        }
    }

    #[test]
    fn toeplitz_matches_the_rss_verification_suite() {
        // (source, destination, sport, dport, IPv4+TCP hash, IPv4 hash)
        let cases = [
            (
                [66, 9, 149, 187],
                [161, 142, 100, 80],
                2794,
                1766,
                0x51cc_c178,
                0x323e_8fc2,
            ),
            (
                [199, 92, 111, 2],
                [65, 69, 140, 83],
                14230,
                4739,
                0xc626_b0ea,
                0xd718_262a,
            ),
            (
                [24, 19, 198, 95],
                [12, 22, 207, 184],
                12898,
                38024,
                0x5c2b_394a,
                0xd2d0_a5de,
            ),
            (
                [38, 27, 205, 30],
                [209, 142, 163, 6],
                48228,
                2217,
                0xafc7_327f,
                0x8298_9176,
            ),
            (
                [153, 39, 163, 191],
                [202, 188, 127, 2],
                44251,
                1303,
                0x10e8_28a2,
                0x5d18_09c5,
            ),
        ];
        for (s, d, sp, dp, tcp, ip) in cases {
            let f = v4(s, d, sp, dp);
            let all = cfg(HashTypes::ALL).hash(&f).unwrap();
            assert_eq!(
                all,
                FrameHash {
                    value: tcp,
                    kind: HashTypes::IPV4_TCP
                },
                "{s:?}"
            );
            let addr = cfg(HashTypes::IPV4).hash(&f).unwrap();
            assert_eq!(
                addr,
                FrameHash {
                    value: ip,
                    kind: HashTypes::IPV4
                },
                "{s:?}"
            );
        }
        let a = |s: &str| -> [u8; 16] { s.parse::<std::net::Ipv6Addr>().unwrap().octets() };
        let cases6 = [
            (
                "3ffe:2501:200:1fff::7",
                "3ffe:2501:200:3::1",
                2794,
                1766,
                0x4020_7d3d,
                0x2cc1_8cd5,
            ),
            (
                "3ffe:501:8::260:97ff:fe40:efab",
                "ff02::1",
                14230,
                4739,
                0xdde5_1bbf,
                0x0f0c_461c,
            ),
            (
                "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
                "fe80::200:f8ff:fe21:67cf",
                44251,
                38024,
                0x02d1_feef,
                0x4b61_e985,
            ),
        ];
        for (s, d, sp, dp, tcp, ip) in cases6 {
            let f = v6(a(s), a(d), sp, dp);
            let all = cfg(HashTypes::ALL).hash(&f).unwrap();
            assert_eq!(
                all,
                FrameHash {
                    value: tcp,
                    kind: HashTypes::IPV6_TCP
                },
                "{s}"
            );
            let addr = cfg(HashTypes::IPV6).hash(&f).unwrap();
            assert_eq!(
                addr,
                FrameHash {
                    value: ip,
                    kind: HashTypes::IPV6
                },
                "{s}"
            );
        }
    }

    #[test]
    fn hashing_off_or_not_ip_gives_none_and_tcp_only_skips_other_protocols() {
        let f = v4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        assert_eq!(HashConfig::default().hash(&f), None);
        let mut udp = f.clone();
        udp[23] = 17;
        assert_eq!(cfg(HashTypes::IPV4_TCP).hash(&udp), None);
        assert_eq!(
            cfg(HashTypes::ALL).hash(&udp).unwrap().kind,
            HashTypes::IPV4
        );
        let mut frag = f.clone();
        frag[20] = 0x20; // more fragments
        assert_eq!(
            cfg(HashTypes::ALL).hash(&frag).unwrap().kind,
            HashTypes::IPV4
        );
        let mut arp = f;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(cfg(HashTypes::ALL).hash(&arp), None);
        assert_eq!(cfg(HashTypes::ALL).hash(&[0u8; 10]), None);
        assert_eq!(
            cfg(HashTypes::IPV6).hash(&v4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
            None
        );
    }

    #[test]
    fn mapping_table_or_modulo_picks_the_queue() {
        let mut c = cfg(HashTypes::ALL);
        assert_eq!(c.queue(7, 4), 3);
        c.mapping = vec![2, 0, 1];
        assert_eq!(c.queue(7, 4), 0);
        assert_eq!(c.queue(9, 4), 2);
        // An empty key hashes everything to 0.
        assert_eq!(toeplitz(&[], &[0xff; 12]), 0);
    }
}
