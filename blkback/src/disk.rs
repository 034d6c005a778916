//! The disk image behind a device: a raw file or a block device (positioned vectored I/O
//! straight into the shared pages), or a qcow2 image with its backing chain (through
//! `sm::image`, with a bounce buffer).
//!
//! A disk can be paused and resumed on another image, as tapdisk is by `tap-ctl pause` and
//! `tap-ctl unpause -a <image>` around a snapshot: [`Disk::pause`] stops new requests (they
//! wait), lets the ones in flight finish and flushes; [`Disk::resume`] reopens the image
//! (the new leaf of the chain the snapshot made) and lets the waiting requests go on there.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};
use xen_types::mem::{SharedMemory, SharedMemoryExt};

use sm::image::{Image, QCOW2_MAGIC};

use crate::abi::SECTOR_SIZE;

/// A piece of shared memory that I/O reads into or writes from.
#[derive(Clone, Copy)]
pub struct IoSeg<'a> {
    /// The mapping.
    pub mem: &'a dyn SharedMemory,
    /// Byte offset in it.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

impl std::fmt::Debug for IoSeg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoSeg")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// The open image under a disk, replaced by [`Disk::resume`].
#[derive(Debug)]
struct Backing {
    file: File,
    /// A qcow2 image: I/O goes through its chain instead of straight to `file`.
    qcow2: Option<Image>,
}

/// An open disk.
#[derive(Debug)]
pub struct Disk {
    /// Every request holds it shared while it runs; [`Disk::pause`] takes it exclusively to
    /// wait for the requests in flight, [`Disk::resume`] to swap the image.
    backing: RwLock<Backing>,
    /// Paused: requests wait on `resumed` (set under `gate`).
    paused: AtomicBool,
    /// Closed while paused: waiting requests fail instead of waiting for a resume.
    closed: AtomicBool,
    gate: Mutex<()>,
    resumed: Condvar,
    sectors: u64,
    readonly: bool,
    block_device: bool,
    sector_size: u32,
    physical_sector_size: u32,
    io: IoCounters,
}

/// What the frontend has done on a disk (QEMU's `query-blockstats` counters): requests
/// that completed successfully and their bytes, and the ones that failed.
#[derive(Debug, Default)]
pub struct IoCounters {
    rd_operations: AtomicU64,
    wr_operations: AtomicU64,
    rd_bytes: AtomicU64,
    wr_bytes: AtomicU64,
    flush_operations: AtomicU64,
    failed_operations: AtomicU64,
    rd_total_time_ns: AtomicU64,
    wr_total_time_ns: AtomicU64,
    flush_total_time_ns: AtomicU64,
}

/// A reading of [`IoCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Reads completed.
    pub rd_operations: u64,
    /// Writes completed.
    pub wr_operations: u64,
    /// Bytes read.
    pub rd_bytes: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Flushes completed (alone or after a write).
    pub flush_operations: u64,
    /// Requests that failed.
    pub failed_operations: u64,
    /// Nanoseconds spent on the completed reads (QEMU's `rd_total_time_ns`).
    pub rd_total_time_ns: u64,
    /// Nanoseconds spent on the completed writes (`wr_total_time_ns`).
    pub wr_total_time_ns: u64,
    /// Nanoseconds spent on the completed flushes (`flush_total_time_ns`).
    pub flush_total_time_ns: u64,
}

/// A completed request, as [`IoCounters::record`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// A read of so many bytes.
    Read(u64),
    /// A write of so many bytes, flushed or not.
    Write(u64, bool),
    /// A flush.
    Flush,
    /// A discard.
    Discard,
}

impl IoCounters {
    /// Counts one request that succeeded (`ok`) or failed, its time unknown.
    pub fn record(&self, op: IoOp, ok: bool) {
        self.record_timed(op, ok, std::time::Duration::ZERO);
    }

    /// Counts one request that succeeded (`ok`) or failed and took `took` (added to the
    /// total time of its kind, as QEMU accounts a completed request).
    pub fn record_timed(&self, op: IoOp, ok: bool, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        if !ok {
            add(&self.failed_operations, 1);
            return;
        }
        match op {
            IoOp::Read(b) => {
                add(&self.rd_operations, 1);
                add(&self.rd_bytes, b);
                add(&self.rd_total_time_ns, ns);
            }
            IoOp::Write(b, flush) => {
                add(&self.wr_operations, 1);
                add(&self.wr_bytes, b);
                add(&self.wr_total_time_ns, ns);
                if flush {
                    add(&self.flush_operations, 1);
                }
            }
            IoOp::Flush => {
                add(&self.flush_operations, 1);
                add(&self.flush_total_time_ns, ns);
            }
            IoOp::Discard => {}
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> IoSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoSnapshot {
            rd_operations: get(&self.rd_operations),
            wr_operations: get(&self.wr_operations),
            rd_bytes: get(&self.rd_bytes),
            wr_bytes: get(&self.wr_bytes),
            flush_operations: get(&self.flush_operations),
            failed_operations: get(&self.failed_operations),
            rd_total_time_ns: get(&self.rd_total_time_ns),
            wr_total_time_ns: get(&self.wr_total_time_ns),
            flush_total_time_ns: get(&self.flush_total_time_ns),
        }
    }
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKPBSZGET: libc::c_ulong = 0x127b;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKSECDISCARD: libc::c_ulong = 0x127d;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Disk {
    /// Opens `path` (a raw image, a block device, or a qcow2 image whose backing files are
    /// opened read-only), read-only when `readonly`.
    pub fn open(path: impl AsRef<Path>, readonly: bool) -> io::Result<Disk> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(!readonly).open(path)?;
        let mut magic = [0u8; 4];
        let is_qcow2 = file.metadata()?.is_file()
            && file.read_at(&mut magic, 0).is_ok_and(|n| n == 4)
            && magic == QCOW2_MAGIC;
        if !is_qcow2 {
            return Disk::from_file(file, readonly);
        }
        let image = Image::open(path, !readonly)?;
        let sectors = image.size() / SECTOR_SIZE;
        Ok(Disk::with_backing(
            Backing {
                file,
                qcow2: Some(image),
            },
            sectors,
            readonly,
            false,
            (512, 512),
        ))
    }

    fn with_backing(
        backing: Backing,
        sectors: u64,
        readonly: bool,
        block_device: bool,
        (sector_size, physical_sector_size): (u32, u32),
    ) -> Disk {
        Disk {
            backing: RwLock::new(backing),
            paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            gate: Mutex::new(()),
            resumed: Condvar::new(),
            sectors,
            readonly,
            block_device,
            sector_size,
            physical_sector_size,
            io: IoCounters::default(),
        }
    }

    /// The image to run one request on: waits while the disk is paused; fails once it was
    /// closed while paused.
    fn enter(&self) -> io::Result<RwLockReadGuard<'_, Backing>> {
        loop {
            let b = self.backing.read();
            // Checked under the shared lock: `pause` sets the flag before it takes the lock
            // exclusively, so a request either runs before the pause completes or waits.
            if !self.paused.load(Ordering::SeqCst) {
                return Ok(b);
            }
            drop(b);
            let mut g = self.gate.lock();
            while self.paused.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst) {
                self.resumed.wait(&mut g);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::ESHUTDOWN));
            }
        }
    }

    /// Stops serving requests (new ones wait), waits for those in flight and flushes the
    /// image, as `tap-ctl pause` does. Pausing a paused disk flushes again.
    pub fn pause(&self) -> io::Result<()> {
        self.paused.store(true, Ordering::SeqCst);
        let b = self.backing.write();
        b.flush()
    }

    /// Whether the disk is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Serves requests again, on `path` reopened (the chain's new leaf after a snapshot, as
    /// `tap-ctl unpause -a`) or, with `None`, on the same open image. The new image must
    /// have the disk's size and kind (file or block device); if it cannot be opened the disk
    /// stays paused. Fails on a disk that is not paused.
    pub fn resume(&self, path: Option<&Path>) -> io::Result<()> {
        if !self.is_paused() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the disk is not paused",
            ));
        }
        let mut b = self.backing.write();
        if let Some(path) = path {
            let new = Disk::open(path, self.readonly)?;
            if new.sectors != self.sectors || new.block_device != self.block_device {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} has {} sectors{}, the disk {}",
                        path.display(),
                        new.sectors,
                        if new.block_device {
                            " (block device)"
                        } else {
                            ""
                        },
                        self.sectors
                    ),
                ));
            }
            *b = new.backing.into_inner();
        }
        {
            let _g = self.gate.lock();
            self.paused.store(false, Ordering::SeqCst);
        }
        drop(b);
        self.resumed.notify_all();
        Ok(())
    }

    /// Ends a pause for good: the requests waiting on it fail (`ESHUTDOWN`), as do later
    /// ones while paused. Used when the device closes during a pause: the image it was
    /// paused on may be a snapshot now, which must not be written.
    pub fn close(&self) {
        {
            let _g = self.gate.lock();
            self.closed.store(true, Ordering::SeqCst);
        }
        self.resumed.notify_all();
    }

    /// A qcow2 image (served through its backing chain).
    pub fn is_qcow2(&self) -> bool {
        self.backing.read().qcow2.is_some()
    }

    /// Reads or writes `segs` at `offset` through the qcow2 chain, through the calling
    /// thread's bounce buffer (grown once to the largest request, then reused).
    fn qcow2_rw<'a>(
        img: &Image,
        offset: u64,
        segs: impl IntoIterator<Item = IoSeg<'a>>,
        write: bool,
    ) -> io::Result<()> {
        thread_local! {
            static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let fault = |_| io::Error::from_raw_os_error(libc::EFAULT);
        BOUNCE.with_borrow_mut(|buf| {
            buf.clear();
            let segs: Vec<IoSeg<'a>> = segs.into_iter().collect();
            let total: usize = segs.iter().map(|s| s.len).sum();
            if write {
                for s in &segs {
                    let at = buf.len();
                    buf.resize(at + s.len, 0);
                    s.mem.read_bytes(s.offset, &mut buf[at..]).map_err(fault)?;
                }
                img.write(buf, offset)
            } else {
                if segs.iter().any(|s| !s.mem.writable()) {
                    return Err(io::Error::from_raw_os_error(libc::EFAULT));
                }
                buf.resize(total, 0);
                img.read(buf, offset)?;
                let mut at = 0;
                for s in &segs {
                    s.mem
                        .write_bytes(s.offset, &buf[at..at + s.len])
                        .map_err(fault)?;
                    at += s.len;
                }
                Ok(())
            }
        })
    }

    /// Serves an open file or block device (opened writable unless `readonly`).
    pub fn from_file(file: File, readonly: bool) -> io::Result<Disk> {
        let md = file.metadata()?;
        let block_device = md.file_type().is_block_device();
        let (bytes, ss, pss) = if block_device {
            let fd = file.as_raw_fd();
            let mut bytes: u64 = 0;
            let mut ss: libc::c_int = 512;
            let mut pss: libc::c_uint = 512;
            // SAFETY: the ioctls write one integer of the given type through the pointer.
            unsafe {
                check(libc::ioctl(fd, BLKGETSIZE64 as _, &mut bytes))?;
                check(libc::ioctl(fd, BLKSSZGET as _, &mut ss))?;
                check(libc::ioctl(fd, BLKPBSZGET as _, &mut pss))?;
            }
            (bytes, ss as u32, pss)
        } else if md.file_type().is_file() {
            (md.len(), 512, 512)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(Disk::with_backing(
            Backing { file, qcow2: None },
            bytes / SECTOR_SIZE,
            readonly,
            block_device,
            (ss, pss),
        ))
    }

    /// The requests served on this disk so far.
    pub fn io(&self) -> &IoCounters {
        &self.io
    }

    /// Size in 512-byte sectors (the `sectors` key counts these whatever `sector-size` is).
    pub fn sectors(&self) -> u64 {
        self.sectors
    }
    /// Opened read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }
    /// Logical sector size.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }
    /// Physical sector size.
    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector_size
    }
    /// A block device (not an image file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Checks each piece against its mapping and builds the `iovec`s, merging pieces that
    /// follow each other in memory (the pages of one batch mapping) into one.
    fn iovecs<'a>(
        segs: impl IntoIterator<Item = IoSeg<'a>>,
        write_into: bool,
        out: &mut Vec<libc::iovec>,
    ) -> io::Result<()> {
        out.clear();
        for s in segs {
            let end = s.offset.checked_add(s.len);
            if end.is_none_or(|e| e > s.mem.len()) || (write_into && !s.mem.writable()) {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            // SAFETY: in bounds of the mapping (checked above).
            let base: *mut u8 = unsafe { s.mem.as_ptr().add(s.offset) };
            if let Some(last) = out.last_mut() {
                if last.iov_base.cast::<u8>().wrapping_add(last.iov_len) == base {
                    last.iov_len += s.len;
                    continue;
                }
            }
            out.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: s.len,
            });
        }
        Ok(())
    }

    /// Reads `segs` in order from byte `offset` (`preadv`, retried on short reads).
    /// The kernel writes straight into the shared pages: no bounce buffer.
    pub fn read_at(
        &self,
        offset: u64,
        segs: &[IoSeg<'_>],
        iov: &mut Vec<libc::iovec>,
    ) -> io::Result<()> {
        self.read_segs(offset, segs.iter().copied(), iov)
    }

    /// [`read_at`](Self::read_at) over pieces given one by one.
    pub fn read_segs<'a>(
        &self,
        offset: u64,
        segs: impl IntoIterator<Item = IoSeg<'a>>,
        iov: &mut Vec<libc::iovec>,
    ) -> io::Result<()> {
        let b = self.enter()?;
        if let Some(img) = &b.qcow2 {
            return Self::qcow2_rw(img, offset, segs, false);
        }
        Self::iovecs(segs, true, iov)?;
        b.rw(offset, iov, false)
    }

    /// Writes `segs` in order at byte `offset` (`pwritev`).
    pub fn write_at(
        &self,
        offset: u64,
        segs: &[IoSeg<'_>],
        iov: &mut Vec<libc::iovec>,
    ) -> io::Result<()> {
        self.write_segs(offset, segs.iter().copied(), iov)
    }

    /// [`write_at`](Self::write_at) over pieces given one by one.
    pub fn write_segs<'a>(
        &self,
        offset: u64,
        segs: impl IntoIterator<Item = IoSeg<'a>>,
        iov: &mut Vec<libc::iovec>,
    ) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let b = self.enter()?;
        if let Some(img) = &b.qcow2 {
            return Self::qcow2_rw(img, offset, segs, true);
        }
        Self::iovecs(segs, false, iov)?;
        b.rw(offset, iov, true)
    }

    /// Makes written data durable (`fdatasync`).
    pub fn flush(&self) -> io::Result<()> {
        self.enter()?.flush()
    }

    /// Discards `len` bytes at `offset`: punches a hole in an image file, `BLKDISCARD`
    /// (`BLKSECDISCARD` when `secure`) on a block device.
    pub fn discard(&self, offset: u64, len: u64, secure: bool) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        self.enter()?
            .discard(offset, len, secure, self.block_device)
    }
}

impl Backing {
    fn rw(&self, mut offset: u64, iov: &mut [libc::iovec], write: bool) -> io::Result<()> {
        let mut first = 0;
        while first < iov.len() {
            let cnt = (iov.len() - first).min(libc::UIO_MAXIOV as usize) as libc::c_int;
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: every iovec points into a live mapping, in bounds (built by `iovecs`
            // from segments borrowed for this call); the kernel reads or writes only
            // those bytes. Shared memory is never a Rust reference, so no aliasing rule is
            // broken by the peer or the kernel writing it.
            let n = unsafe {
                if write {
                    libc::pwritev(self.file.as_raw_fd(), iov[first..].as_ptr(), cnt, off)
                } else {
                    libc::preadv(self.file.as_raw_fd(), iov[first..].as_ptr(), cnt, off)
                }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let mut n = n as usize;
            offset += n as u64;
            while n > 0 && first < iov.len() {
                if n >= iov[first].iov_len {
                    n -= iov[first].iov_len;
                    first += 1;
                } else {
                    // SAFETY: advancing within the same iovec's buffer.
                    iov[first].iov_base = unsafe { iov[first].iov_base.cast::<u8>().add(n) }.cast();
                    iov[first].iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if let Some(img) = &self.qcow2 {
            return img.flush();
        }
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64, secure: bool, block_device: bool) -> io::Result<()> {
        if let Some(img) = &self.qcow2 {
            // Zeroes in the top image: the range no longer reads the backing chain's data.
            if secure {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            return img.write_zeroes(offset, len);
        }
        let fd = self.file.as_raw_fd();
        if block_device {
            let range = [offset, len];
            let req = if secure { BLKSECDISCARD } else { BLKDISCARD };
            // SAFETY: the ioctl reads two u64s from the pointer.
            check(unsafe { libc::ioctl(fd, req as _, range.as_ptr()) })?;
        } else {
            if secure {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            let (o, l) = (
                libc::off_t::try_from(offset)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
                libc::off_t::try_from(len)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            );
            // SAFETY: fallocate on our own descriptor, no pointers.
            check(unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    o,
                    l,
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use xen_types::mem::{PageBuf, SharedMemoryExt};
    use xen_types::PAGE_SIZE;

    use super::*;

    fn seg(mem: &dyn SharedMemory, offset: usize, len: usize) -> IoSeg<'_> {
        IoSeg { mem, offset, len }
    }

    #[test]
    fn request_times_add_up_per_kind_as_qemus_blockstats() {
        let io = IoCounters::default();
        let ms = std::time::Duration::from_millis;
        io.record_timed(IoOp::Read(512), true, ms(2));
        io.record_timed(IoOp::Read(512), true, ms(3));
        io.record_timed(IoOp::Write(4096, true), true, ms(7));
        io.record_timed(IoOp::Flush, true, ms(1));
        // A failed request is counted as failed, its time not accounted.
        io.record_timed(IoOp::Read(512), false, ms(100));
        let s = io.snapshot();
        assert_eq!((s.rd_operations, s.rd_total_time_ns), (2, 5_000_000));
        assert_eq!((s.wr_operations, s.wr_total_time_ns), (1, 7_000_000));
        assert_eq!((s.flush_operations, s.flush_total_time_ns), (2, 1_000_000));
        assert_eq!(s.failed_operations, 1);
    }

    #[test]
    fn adjacent_pieces_share_one_iovec_and_data_lands_in_order() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16 * 4096).unwrap();
        let disk = Disk::from_file(f, false).unwrap();
        let a = PageBuf::new(3).unwrap();
        let b = PageBuf::new(1).unwrap();
        for p in 0..3 {
            a.fill(p * PAGE_SIZE, PAGE_SIZE, p as u8 + 1).unwrap();
        }
        b.fill(0, PAGE_SIZE, 9).unwrap();
        // Pages 0 and 1 of `a` follow each other; `b`, then page 2 of `a`, do not.
        let pieces = [
            seg(&a, 0, PAGE_SIZE),
            seg(&a, PAGE_SIZE, PAGE_SIZE),
            seg(&b, 512, 1024),
            seg(&a, 2 * PAGE_SIZE + 512, 512),
        ];
        let mut iov = Vec::new();
        disk.write_at(4096, &pieces, &mut iov).unwrap();
        assert_eq!(iov.len(), 3, "the two adjacent pages were merged");
        assert_eq!(iov[0].iov_len, 2 * PAGE_SIZE);
        let out = PageBuf::new(3).unwrap();
        disk.read_segs(4096, [seg(&out, 0, 2 * PAGE_SIZE + 1536)], &mut iov)
            .unwrap();
        let mut got = vec![0u8; 2 * PAGE_SIZE + 1536];
        out.read_bytes(0, &mut got).unwrap();
        assert!(got[..PAGE_SIZE].iter().all(|&x| x == 1));
        assert!(got[PAGE_SIZE..2 * PAGE_SIZE].iter().all(|&x| x == 2));
        assert!(got[2 * PAGE_SIZE..2 * PAGE_SIZE + 1024]
            .iter()
            .all(|&x| x == 9));
        assert!(got[2 * PAGE_SIZE + 1024..].iter().all(|&x| x == 3));
        // A piece outside its mapping is refused even next to a valid one.
        let bad = [seg(&b, 0, PAGE_SIZE), seg(&b, PAGE_SIZE, 512)];
        let e = disk.read_at(0, &bad, &mut iov).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn a_qcow2_chain_is_served_through_its_backing_file() {
        let d = tempfile::tempdir().unwrap();
        let (base, top) = (d.path().join("base.qcow2"), d.path().join("top.qcow2"));
        sm::image::create(&base, 1 << 20, None).unwrap();
        let b = Image::open(&base, true).unwrap();
        b.write(&[7; 8192], 0).unwrap();
        b.flush().unwrap();
        drop(b);
        sm::image::create(&top, 1 << 20, Some("base.qcow2")).unwrap();
        let disk = Disk::open(&top, false).unwrap();
        assert!(disk.is_qcow2());
        assert_eq!(disk.sectors(), 2048);
        let page = PageBuf::new(2).unwrap();
        page.fill(0, PAGE_SIZE, 9).unwrap();
        let mut iov = Vec::new();
        // Two pieces, one write: lands in the top image only.
        disk.write_at(
            512,
            &[seg(&page, 0, 512), seg(&page, PAGE_SIZE, 512)],
            &mut iov,
        )
        .unwrap();
        disk.flush().unwrap();
        disk.read_at(0, &[seg(&page, 0, 2048)], &mut iov).unwrap();
        let mut got = vec![0u8; 2048];
        page.read_bytes(0, &mut got).unwrap();
        assert!(
            got[..512].iter().all(|&x| x == 7),
            "read through to the base"
        );
        assert!(got[512..1024].iter().all(|&x| x == 9));
        assert!(
            got[1024..1536].iter().all(|&x| x == 0),
            "the second page was zeroed"
        );
        assert!(got[1536..].iter().all(|&x| x == 7));
        // Discard: zeroes over the base's data; secure discard is not offered.
        disk.discard(4096, 4096, false).unwrap();
        assert_eq!(
            disk.discard(0, 512, true).unwrap_err().raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
        disk.read_at(4096, &[seg(&page, 0, 4096)], &mut iov)
            .unwrap();
        page.read_bytes(0, &mut got).unwrap();
        assert!(got.iter().all(|&x| x == 0));
        // A piece outside its mapping is refused; the base is untouched.
        let e = disk.read_at(0, &[seg(&page, PAGE_SIZE, PAGE_SIZE + 1)], &mut iov);
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EFAULT));
        drop(disk);
        let b = Image::open(&base, false).unwrap();
        let mut raw = vec![0u8; 8192];
        b.read(&mut raw, 0).unwrap();
        assert!(raw.iter().all(|&x| x == 7));
        // Read-only: writes refused.
        let ro = Disk::open(&top, true).unwrap();
        let e = ro.write_at(0, &[seg(&page, 0, 512)], &mut iov).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
}
