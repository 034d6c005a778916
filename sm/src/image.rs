//! qcow2 images with backing files, through the `imago` crate, plus the two header facts the
//! storage manager reads and changes itself: the backing file name and the virtual size.
//!
//! A chain is a leaf image whose header names its parent (`backing_file`, relative to the
//! leaf's directory), down to a base with no backing file. Reads fall through unallocated
//! clusters to the parent; writes allocate in the leaf only (copy-on-write).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatCreateBuilder, FormatDriverBuilder, PermissiveImplicitOpenGate,
    ShallowMapping, StorageOpenOptions,
};

/// qcow2 magic: `QFI\xfb`.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Cluster size of the images the storage manager creates (qemu-img's default).
///
/// A cluster is the unit of copy-on-write: the first write to a cluster that the backing
/// chain holds copies the rest of the cluster up (qcow2 without extended L2 entries has no
/// finer allocation state), so a 4 KiB write to a fresh snapshot leaf reads and writes
/// 64 KiB. 4 KiB clusters would avoid that copy, but each 2 MiB of a disk would then need
/// its own L2 table, and imago 0.2.6 writes the L1 entry of a new L2 table before that
/// table's refcount reaches the file: a kill -9 in between leaves a table that a later
/// allocation overwrites (`coalesce_killed_at_each_step_is_repaired_by_scan` catches it
/// with 4 KiB clusters). With 64 KiB clusters a table covers 512 MiB.
pub const CLUSTER_SIZE: u64 = 64 << 10;

/// Whether the file at `path` starts with the qcow2 magic.
pub fn is_qcow2(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path)?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == QCOW2_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The facts of a qcow2 header that the storage manager uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// The backing file name as written (relative to the image's directory), if any.
    pub backing_file: Option<String>,
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads the header of the qcow2 image at `path` (no metadata tables are read).
pub fn read_header(path: &Path) -> io::Result<Header> {
    let mut f = fs::File::open(path)?;
    let mut h = [0u8; 72];
    f.read_exact(&mut h)?;
    if h[..4] != QCOW2_MAGIC {
        return Err(invalid(format!("{}: not a qcow2 image", path.display())));
    }
    let version = be32(&h[4..]);
    if !(2..=3).contains(&version) {
        return Err(invalid(format!(
            "{}: qcow2 version {version}",
            path.display()
        )));
    }
    let (off, len) = (be64(&h[8..]), be32(&h[16..]));
    let backing_file = if off == 0 || len == 0 {
        None
    } else {
        if len > 1023 {
            return Err(invalid("backing file name longer than 1023 bytes"));
        }
        let mut name = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut name)?;
        Some(String::from_utf8(name).map_err(|_| invalid("backing file name not UTF-8"))?)
    };
    Ok(Header {
        virtual_size: be64(&h[24..]),
        backing_file,
    })
}

/// Points the image at `path` to a different backing file, or to none.
///
/// With a name of the same length as the current one (the storage manager's image names
/// all are `<uuid>.qcow2`) the name is overwritten in place, one write inside the header's
/// first cluster; with `None` only the 12 bytes of offset and length are zeroed. Either is
/// a single write within one sector, so a crash leaves the old or the new parent, never a
/// mixture; the change is synced before returning.
pub fn set_backing_file(path: &Path, backing: Option<&str>) -> io::Result<()> {
    let old = read_header(path)?;
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut h = [0u8; 20];
    f.read_exact(&mut h)?;
    match (backing, old.backing_file) {
        (None, _) => {
            f.seek(SeekFrom::Start(8))?;
            f.write_all(&[0u8; 12])?;
        }
        (Some(new), Some(cur)) if new.len() == cur.len() => {
            let off = be64(&h[8..]);
            if off % 512 + new.len() as u64 > 512 {
                return Err(invalid("backing file name crosses a sector boundary"));
            }
            f.seek(SeekFrom::Start(off))?;
            f.write_all(new.as_bytes())?;
        }
        (Some(_), _) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a backing file name can only be replaced by one of the same length",
            ))
        }
    }
    f.sync_data()
}

/// Bytes the file at `path` takes on disk (allocated blocks, not its length).
pub fn physical_size(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.blocks() * 512)
}

/// Creates a qcow2 image at `path` (which must not exist) of `virtual_size` bytes, over
/// `backing` (a file name relative to `path`'s directory) when given, and syncs it.
pub fn create(path: &Path, virtual_size: u64, backing: Option<&str>) -> io::Result<()> {
    create_with_cluster_size(path, virtual_size, backing, CLUSTER_SIZE)
}

/// [`create`] with another cluster size (a power of two from 512 bytes to 2 MiB): the unit
/// of allocation, and of the copy a partial write to a cluster held by the backing chain
/// makes.
pub fn create_with_cluster_size(
    path: &Path,
    virtual_size: u64,
    backing: Option<&str>,
    cluster_size: u64,
) -> io::Result<()> {
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cluster size {cluster_size}: not a power of two from 512 to 2 MiB"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let storage = File::from_open_file(file, StorageOpenOptions::new().write(true))?;
    let mut builder = Qcow2::<File>::create_builder(storage)
        .size(virtual_size)
        .cluster_size(cluster_size as usize);
    if let Some(b) = backing {
        builder = builder.backing(b.to_owned(), "qcow2".to_owned());
    }
    builder.create()?;
    fs::File::open(path)?.sync_all()
}

/// An open qcow2 image and its backing chain.
pub struct Image {
    access: FormatAccess<File>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("size", &self.access.size())
            .finish()
    }
}

impl Image {
    /// Opens the image at `path` and its backing chain (backing files read-only).
    pub fn open(path: &Path, writable: bool) -> io::Result<Image> {
        let q = Qcow2::<File>::builder_path(path)
            .write(writable)
            .open(PermissiveImplicitOpenGate::default())?;
        Ok(Image {
            access: FormatAccess::new(q),
        })
    }

    /// Guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        self.access.size()
    }

    /// Reads `buf.len()` bytes at `offset` (through the chain).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    /// Writes `buf` at `offset` into this (the top) image.
    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(buf, offset)
    }

    /// Writes zeroes over `len` bytes at `offset` (reads then return zeroes, not the
    /// backing file's data).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.access.write_zeroes(offset, len)
    }

    /// Makes every write so far durable: data, then metadata, in qcow2's dependency order,
    /// then `fdatasync` of the file.
    pub fn flush(&self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }

    /// Grows the image to `new_size` bytes (the new area reads as zeroes).
    pub fn grow(&self, new_size: u64) -> io::Result<()> {
        self.access
            .resize_grow(new_size, imago::format::PreallocateMode::None)
    }

    /// The ranges `(offset, len)` this image itself holds (data or explicit zeroes), not
    /// counting what reads fall through to the backing chain.
    pub fn allocated_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let size = self.size();
        let mut off = 0;
        while off < size {
            let (m, len) = self.access.get_shallow_mapping(off, size - off)?;
            if len == 0 {
                break;
            }
            let here = !matches!(
                m,
                ShallowMapping::Indirect { .. }
                    | ShallowMapping::Zero {
                        explicit: false,
                        ..
                    }
            ) && !matches!(m, ShallowMapping::Eof { .. });
            if here {
                match out.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += len,
                    _ => out.push((off, len)),
                }
            }
            off += len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reads_fall_through_and_writes_stay_on_top() {
        let d = tempfile::tempdir().unwrap();
        let (base, top) = (d.path().join("base.qcow2"), d.path().join("top.qcow2"));
        create(&base, 4 << 20, None).unwrap();
        let b = Image::open(&base, true).unwrap();
        b.write(&[1; 8192], 0).unwrap();
        b.flush().unwrap();
        drop(b);
        create(&top, 4 << 20, Some("base.qcow2")).unwrap();
        assert_eq!(
            read_header(&top).unwrap(),
            Header {
                virtual_size: 4 << 20,
                backing_file: Some("base.qcow2".into())
            }
        );
        let t = Image::open(&top, true).unwrap();
        t.write(&[2; 512], 512).unwrap();
        t.write_zeroes(4096, 4096).unwrap();
        let mut buf = vec![0; 8192];
        t.read(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&x| x == 1));
        assert!(buf[512..1024].iter().all(|&x| x == 2));
        assert!(buf[1024..4096].iter().all(|&x| x == 1));
        assert!(
            buf[4096..].iter().all(|&x| x == 0),
            "explicit zeroes hide the base"
        );
        // Only the top's own clusters are its ranges (one 64 KiB cluster here).
        assert_eq!(t.allocated_ranges().unwrap(), vec![(0, CLUSTER_SIZE)]);
        let base_img = Image::open(&base, false).unwrap();
        let mut b = vec![0; 8192];
        base_img.read(&mut b, 0).unwrap();
        assert!(b.iter().all(|&x| x == 1), "the base is unchanged");
    }

    #[test]
    fn backing_names_change_in_place_or_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, top) = (
            d.path().join("aaaa.qcow2"),
            d.path().join("bbbb.qcow2"),
            d.path().join("top.qcow2"),
        );
        create(&a, 1 << 20, None).unwrap();
        create(&b, 1 << 20, None).unwrap();
        create(&top, 1 << 20, Some("aaaa.qcow2")).unwrap();
        set_backing_file(&top, Some("bbbb.qcow2")).unwrap();
        assert_eq!(
            read_header(&top).unwrap().backing_file.as_deref(),
            Some("bbbb.qcow2")
        );
        // A name of another length would move header data: refused, nothing changed.
        let e = set_backing_file(&top, Some("longer-name.qcow2")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(
            read_header(&top).unwrap().backing_file.as_deref(),
            Some("bbbb.qcow2")
        );
        set_backing_file(&top, None).unwrap();
        assert_eq!(read_header(&top).unwrap().backing_file, None);
        Image::open(&top, false).unwrap();
    }

    #[test]
    fn non_qcow2_files_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let (raw, short) = (d.path().join("raw"), d.path().join("short"));
        fs::write(&raw, vec![0u8; 4096]).unwrap();
        fs::write(&short, b"QF").unwrap();
        assert!(!is_qcow2(&raw).unwrap());
        assert!(!is_qcow2(&short).unwrap());
        assert_eq!(
            read_header(&raw).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(read_header(&short).is_err());
        let q = d.path().join("q.qcow2");
        create(&q, 1 << 20, None).unwrap();
        assert!(is_qcow2(&q).unwrap());
        // create never overwrites.
        assert_eq!(
            create(&q, 1 << 20, None).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
