//! The SR drivers of this host: one [`sm::SrDriver`] per SR record whose type has a
//! driver (`ext`/`file`: a directory, `lvm`: a volume group), made from the SR's uuid and
//! its PBD's `device_config`. SRs of other types stay records only.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The drivers, by SR reference.
#[derive(Default)]
pub struct Drivers {
    map: Mutex<HashMap<String, Arc<dyn sm::SrDriver>>>,
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drivers")
            .field("srs", &self.map.lock().len())
            .finish()
    }
}

/// Whether SRs of this type have a driver here.
pub fn has_driver(sr_type: &str) -> bool {
    matches!(sr_type, "ext" | "file" | "lvm")
}

/// A driver for the SR `uuid` of `sr_type` over `device_config`; `None` for a type without
/// one.
pub fn make(
    sr_type: &str,
    uuid: sm::SrUuid,
    device_config: &HashMap<String, String>,
) -> sm::Result<Option<Arc<dyn sm::SrDriver>>> {
    Ok(match sr_type {
        "ext" | "file" => Some(Arc::new(sm::file::FileSr::from_device_config(
            uuid,
            sr_type,
            device_config,
        )?)),
        "lvm" => {
            let mut d = sm::lvm::LvmSr::from_device_config(uuid, device_config)?;
            if let Ok(lvm) = std::env::var("SM_LVM") {
                d = d.with_lvm(lvm);
            }
            Some(Arc::new(d))
        }
        _ => None,
    })
}

impl Drivers {
    /// The driver of `sr`, if one was made.
    pub fn get(&self, sr: &str) -> Option<Arc<dyn sm::SrDriver>> {
        self.map.lock().get(sr).cloned()
    }

    /// Records the driver of `sr`.
    pub fn insert(&self, sr: &str, d: Arc<dyn sm::SrDriver>) {
        self.map.lock().insert(sr.to_owned(), d);
    }

    /// Forgets the driver of `sr`.
    pub fn remove(&self, sr: &str) {
        self.map.lock().remove(sr);
    }
}

/// One attached disk's data: a qcow2 image (with its chain) or a raw file or device.
pub(crate) enum Disk {
    Qcow2(sm::image::Image),
    Raw(std::fs::File),
}

impl Disk {
    /// Opens the disk at `path` (a qcow2 image when it is one, else raw).
    pub(crate) fn open(path: &std::path::Path, writable: bool) -> std::io::Result<Disk> {
        if sm::image::is_qcow2(path)? {
            return Ok(Disk::Qcow2(sm::image::Image::open(path, writable)?));
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)?;
        Ok(Disk::Raw(f))
    }

    /// The disk's size in bytes.
    pub(crate) fn size(&self) -> std::io::Result<u64> {
        match self {
            Disk::Qcow2(i) => Ok(i.size()),
            Disk::Raw(f) => {
                use std::io::Seek;
                let mut f = f;
                f.seek(std::io::SeekFrom::End(0))
            }
        }
    }

    /// Reads `buf.len()` bytes at `off`.
    pub(crate) fn read(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        match self {
            Disk::Qcow2(i) => i.read(buf, off),
            Disk::Raw(f) => std::os::unix::fs::FileExt::read_exact_at(f, buf, off),
        }
    }

    /// Writes `buf` at `off`.
    pub(crate) fn write(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match self {
            Disk::Qcow2(i) => i.write(buf, off),
            Disk::Raw(f) => std::os::unix::fs::FileExt::write_all_at(f, buf, off),
        }
    }

    /// Makes what was written durable.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        match self {
            Disk::Qcow2(i) => i.flush(),
            Disk::Raw(f) => f.sync_data(),
        }
    }
}

/// Copies the first `size` bytes of the disk at `src` to the (new, zeroed) disk at `dst`,
/// leaving the all-zero chunks unwritten so that the copy stays sparse.
pub fn copy_data(src: &std::path::Path, dst: &std::path::Path, size: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let (from, to) = (Disk::open(src, false)?, Disk::open(dst, true)?);
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = CHUNK.min(size - off) as usize;
        from.read(&mut buf[..n], off)?;
        if buf[..n].iter().any(|b| *b != 0) {
            to.write(&buf[..n], off)?;
        }
        off += n as u64;
    }
    to.flush()
}
