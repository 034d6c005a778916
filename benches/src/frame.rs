//! Allocation-free framing of xenstore socket messages for the load tool and
//! the echo server: the header is `xenstore::wire::Header`; unlike
//! `xenstore::wire::Decoder` (one `Vec` per message) the decoder here hands
//! out payload ranges into one reused buffer, so that the generator is not
//! the bottleneck it measures.

use std::ops::Range;

pub use xenstore::wire::{Header, TxId, HEADER_SIZE as HEADER_LEN, PAYLOAD_MAX};

/// Appends one message whose payload is the concatenation of `parts`.
pub fn encode(out: &mut Vec<u8>, ty: u32, req_id: u32, tx_id: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let h = Header {
        ty,
        req_id,
        tx_id: TxId(tx_id),
        len: u32::try_from(len).unwrap_or(u32::MAX),
    };
    out.extend_from_slice(&h.to_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Incremental decoder over a growing receive buffer.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces a payload above [`PAYLOAD_MAX`].
    Oversize(u32),
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Takes the next complete message: its header and payload range (index
    /// with [`Decoder::payload`]), `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<(Header, Range<usize>)>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(hb) = avail.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let h = Header::from_bytes(hb.try_into().expect("HEADER_LEN bytes"));
        if h.len as usize > PAYLOAD_MAX {
            return Err(FrameError::Oversize(h.len));
        }
        let total = HEADER_LEN + h.len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let p = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some((h, p)))
    }

    /// Bytes of a payload range returned by [`Decoder::next_frame`]; valid
    /// until the next call to [`Decoder::extend`].
    pub fn payload(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }
}

/// The error name in an `XS_ERROR` payload (e.g. `"EAGAIN"`).
pub fn error_name(payload: &[u8]) -> &str {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    std::str::from_utf8(&payload[..end]).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_split_anywhere() {
        let mut wire = Vec::new();
        encode(&mut wire, xen_sys::XS_WRITE, 7, 3, &[b"/a\0", b"value"]);
        encode(&mut wire, xen_sys::XS_READ, 8, 0, &[b"/a\0"]);
        for split in 0..wire.len() {
            let mut d = Decoder::new();
            d.extend(&wire[..split]);
            let mut got = Vec::new();
            while let Some((h, r)) = d.next_frame().unwrap() {
                got.push((h, d.payload(r).to_vec()));
            }
            d.extend(&wire[split..]);
            while let Some((h, r)) = d.next_frame().unwrap() {
                got.push((h, d.payload(r).to_vec()));
            }
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].0.ty, xen_sys::XS_WRITE);
            assert_eq!(got[0].0.req_id, 7);
            assert_eq!(got[0].0.tx_id, TxId(3));
            assert_eq!(got[0].1, b"/a\0value");
            assert_eq!(got[1].0.ty, xen_sys::XS_READ);
            assert_eq!(got[1].1, b"/a\0");
        }
    }

    #[test]
    fn oversize_is_rejected() {
        let mut wire = Vec::new();
        let h = Header {
            ty: xen_sys::XS_READ,
            req_id: 0,
            tx_id: TxId(0),
            len: xen_sys::XENSTORE_PAYLOAD_MAX + 1,
        };
        wire.extend_from_slice(&h.to_bytes());
        let mut d = Decoder::new();
        d.extend(&wire);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Oversize(xen_sys::XENSTORE_PAYLOAD_MAX + 1))
        );
    }
}
