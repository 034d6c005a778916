//! The console ring of `xen/io/console.h`: one page holding `struct xencons_interface`, two
//! byte rings with free-running 32-bit indexes, `in` (to the guest) and `out` (from the
//! guest).
//!
//! [`ConsoleRing`] is both ends, written once over [`SharedMemory`]: the backend
//! (xenconsoled) reads `out` and writes `in`, the frontend (a guest's `hvc` driver) the
//! reverse. The layout (offsets and ring sizes, 1024 and 2048 bytes) comes from the bindgen
//! output of the header, and indexes are read and published with the barriers of io.c
//! (`xen_mb` before reading data, `xen_wmb` before publishing a producer index). As in io.c,
//! a peer's index pair that claims more bytes than the ring holds is not trusted:
//! [`ConsoleError::Broken`] is returned and nothing is read or written.
//!
//! ```
//! use std::sync::Arc;
//! use xen_ring::console::{ConsoleRing, End};
//! use xen_types::mem::PageBuf;
//!
//! let page = Arc::new(PageBuf::new(1).unwrap());
//! let guest = ConsoleRing::new(page.clone(), End::Frontend).unwrap();
//! let backend = ConsoleRing::new(page, End::Backend).unwrap();
//! assert_eq!(guest.write(b"Linux version 6.1\n").unwrap(), 18);
//! let mut buf = [0u8; 64];
//! let n = backend.read(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"Linux version 6.1\n");
//! backend.write(b"root\n").unwrap();
//! assert_eq!(guest.read(&mut buf).unwrap(), 5);
//! ```

use std::mem::offset_of;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use xen_sys::xencons_interface;
use xen_types::mem::{MemError, SharedMemory, SharedMemoryExt};

/// Offset of `in` (bytes to the guest).
const IN_OFF: usize = offset_of!(xencons_interface, in_);
/// Offset of `out` (bytes from the guest).
const OUT_OFF: usize = offset_of!(xencons_interface, out);
/// `sizeof(intf->in)`: 1024.
pub const IN_SIZE: usize = OUT_OFF - IN_OFF;
/// `sizeof(intf->out)`: 2048.
pub const OUT_SIZE: usize = offset_of!(xencons_interface, in_cons) - OUT_OFF;
const IN_CONS: usize = offset_of!(xencons_interface, in_cons);
const IN_PROD: usize = offset_of!(xencons_interface, in_prod);
const OUT_CONS: usize = offset_of!(xencons_interface, out_cons);
const OUT_PROD: usize = offset_of!(xencons_interface, out_prod);

const _: () = assert!(IN_SIZE.is_power_of_two() && OUT_SIZE.is_power_of_two());

/// Which end of the console this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The console daemon: reads `out`, writes `in`.
    Backend,
    /// The guest: writes `out`, reads `in`.
    Frontend,
}

/// Errors of console-ring operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The indexes of a ring claim more bytes than it holds (io.c: "ring is screwed"):
    /// nothing was read or written.
    #[error("console {ring} ring is broken: producer {prod}, consumer {cons}, size {size}")]
    Broken {
        /// `"in"` or `"out"`.
        ring: &'static str,
        /// The producer index.
        prod: u32,
        /// The consumer index.
        cons: u32,
        /// The ring's size in bytes.
        size: usize,
    },
    /// The memory is smaller than `struct xencons_interface` or not writable.
    #[error("bad console ring memory: {0}")]
    Memory(#[from] MemError),
}

/// One byte ring of the page, seen from one end.
struct Half {
    data: usize,
    size: usize,
    cons: usize,
    prod: usize,
    name: &'static str,
}

const IN: Half = Half {
    data: IN_OFF,
    size: IN_SIZE,
    cons: IN_CONS,
    prod: IN_PROD,
    name: "in",
};
const OUT: Half = Half {
    data: OUT_OFF,
    size: OUT_SIZE,
    cons: OUT_CONS,
    prod: OUT_PROD,
    name: "out",
};

/// A console page (`struct xencons_interface`) seen from one [`End`].
#[derive(Debug)]
pub struct ConsoleRing<M: SharedMemory> {
    mem: M,
    end: End,
}

impl<M: SharedMemory> ConsoleRing<M> {
    /// The ring in `mem` (at least `sizeof(struct xencons_interface)` bytes, writable), as
    /// `end` uses it. The page is used as it is: a fresh page is an empty console.
    pub fn new(mem: M, end: End) -> Result<ConsoleRing<M>, ConsoleError> {
        if mem.len() < size_of::<xencons_interface>() {
            return Err(MemError::OutOfBounds {
                offset: 0,
                len: size_of::<xencons_interface>(),
                size: mem.len(),
            }
            .into());
        }
        if !mem.writable() {
            return Err(MemError::ReadOnly.into());
        }
        Ok(ConsoleRing { mem, end })
    }

    /// The memory behind the ring.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The ring this end reads, and the one it writes.
    fn halves(&self) -> (&'static Half, &'static Half) {
        match self.end {
            End::Backend => (&OUT, &IN),
            End::Frontend => (&IN, &OUT),
        }
    }

    fn idx(&self, off: usize) -> &AtomicU32 {
        // In bounds and aligned: checked against the struct size in `new`.
        self.mem
            .atomic_u32(off)
            .expect("index inside the checked console page")
    }

    /// Producer and consumer of `h`, checked (`size > sizeof(ring)` is a broken ring).
    fn used(&self, h: &Half) -> Result<(u32, u32, usize), ConsoleError> {
        let cons = self.idx(h.cons).load(Ordering::Relaxed);
        let prod = self.idx(h.prod).load(Ordering::Relaxed);
        // xen_mb(): the indexes before the data they cover.
        fence(Ordering::SeqCst);
        let used = prod.wrapping_sub(cons) as usize;
        if used > h.size {
            return Err(ConsoleError::Broken {
                ring: h.name,
                prod,
                cons,
                size: h.size,
            });
        }
        Ok((prod, cons, used))
    }

    /// Bytes waiting to be read by this end.
    pub fn readable(&self) -> Result<usize, ConsoleError> {
        Ok(self.used(self.halves().0)?.2)
    }

    /// Room for bytes this end writes (`ring_free_bytes` for the backend).
    pub fn writable_space(&self) -> Result<usize, ConsoleError> {
        let h = self.halves().1;
        Ok(h.size - self.used(h)?.2)
    }

    /// Takes up to `buf.len()` bytes from the ring this end reads and publishes the new
    /// consumer index (io.c's `buffer_append` for the backend). Returns how many; the caller
    /// notifies the peer when that is not 0.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        let h = self.halves().0;
        let (_, cons, used) = self.used(h)?;
        let n = used.min(buf.len());
        let mut done = 0;
        while done < n {
            let at = (cons as usize + done) & (h.size - 1);
            let run = (n - done).min(h.size - at);
            self.mem
                .read_bytes(h.data + at, &mut buf[done..done + run])?;
            done += run;
        }
        // xen_mb(): the data read before the consumer index frees it.
        fence(Ordering::SeqCst);
        self.idx(h.cons)
            .store(cons.wrapping_add(n as u32), Ordering::Relaxed);
        Ok(n)
    }

    /// Puts as much of `data` as fits into the ring this end writes and publishes the new
    /// producer index (io.c's `handle_tty_read` for the backend). Returns how many bytes;
    /// the caller notifies the peer when that is not 0.
    pub fn write(&self, data: &[u8]) -> Result<usize, ConsoleError> {
        let h = self.halves().1;
        let (prod, _, used) = self.used(h)?;
        let n = (h.size - used).min(data.len());
        let mut done = 0;
        while done < n {
            let at = (prod as usize + done) & (h.size - 1);
            let run = (n - done).min(h.size - at);
            self.mem.write_bytes(h.data + at, &data[done..done + run])?;
            done += run;
        }
        // xen_wmb(): the data before the producer index that publishes it.
        fence(Ordering::Release);
        self.idx(h.prod)
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xen_types::mem::PageBuf;

    use super::*;

    #[test]
    fn layout_is_the_headers() {
        assert_eq!((IN_SIZE, OUT_SIZE), (1024, 2048));
        assert_eq!(
            (IN_CONS, IN_PROD, OUT_CONS, OUT_PROD),
            (3072, 3076, 3080, 3084)
        );
    }

    #[test]
    fn wraps_and_stops_when_full() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        let g = ConsoleRing::new(page.clone(), End::Frontend).unwrap();
        let b = ConsoleRing::new(page, End::Backend).unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut got = Vec::new();
        let mut sent = 0;
        let mut buf = [0u8; 700];
        while got.len() < data.len() {
            sent += g.write(&data[sent..]).unwrap();
            assert!(sent - got.len() <= OUT_SIZE);
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        // Full: nothing more goes in.
        assert_eq!(b.write(&[1u8; 2000]).unwrap(), IN_SIZE);
        assert_eq!(b.write(b"x").unwrap(), 0);
        assert_eq!(b.writable_space().unwrap(), 0);
    }

    #[test]
    fn a_hostile_index_breaks_nothing() {
        let page = Arc::new(PageBuf::new(1).unwrap());
        let b = ConsoleRing::new(page.clone(), End::Backend).unwrap();
        page.write_obj(OUT_PROD, 5000u32).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(
            b.read(&mut buf),
            Err(ConsoleError::Broken { ring: "out", .. })
        ));
        assert_eq!(
            page.read_obj::<u32>(OUT_CONS).unwrap(),
            0,
            "consumer untouched"
        );
    }
}
