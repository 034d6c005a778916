//! A VM's suspend image inside its suspend VDI, laid out as xenopsd's `Suspend_image`
//! (`ocaml/xenopsd/lib/suspend_image.ml`): the signature `XenSavedDomv2-\n`, a `Libxc`
//! record header (type `0x00f0`, length 0: libxenguest's save stream delimits itself), the
//! stream, then the `End_of_image` footer (type `0xffff`).
//!
//! xenopsd writes the image into the block device the storage manager attaches for the VDI
//! (tapdisk's view of a VHD); here the VDI is written the same way, as the disk it is,
//! through its image format (a file SR's qcow2, thin: only the clusters written take space),
//! with libxenguest's stream passed through a pipe in order. A raw file in the SR would
//! need an image type the SRs do not have, and would bypass the SR's space accounting.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use crate::error::ApiError;
use crate::storage::Disk;

/// xenopsd's `save_signature`.
pub const SIGNATURE: &[u8; 15] = b"XenSavedDomv2-\n";
/// The `Libxc` record's header type.
pub const LIBXC: u64 = 0x00f0;
/// The `End_of_image` footer's header type.
pub const END_OF_IMAGE: u64 = 0xffff;
/// Where libxenguest's stream starts: after the signature and the `Libxc` header.
pub const STREAM_START: u64 = SIGNATURE.len() as u64 + 16;

/// Writes go to the image in chunks of this size, aligned to it.
const CHUNK: u64 = 1 << 20;

/// A record header: type and length, little-endian 64-bit each (`write_header`).
fn header(ty: u64, len: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&ty.to_le_bytes());
    h[8..].copy_from_slice(&len.to_le_bytes());
    h
}

/// A pipe (`pipe2` with `O_CLOEXEC`): its read and write ends.
fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both descriptors and nothing else owns them.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// An I/O error writing the suspend image. XAPI raises `VDI_IO_ERROR` ["I/O error saving
/// VM suspend image"], a code its datamodel's error table does not have: `INTERNAL_ERROR`
/// here, naming what failed.
fn io_error(what: &str, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("I/O error saving VM suspend image: {what}: {e}"))
}

/// Writes the suspend image into the disk at `path` (a new, zeroed VDI): `save` gets the
/// pipe the stream goes into. Returns the stream's length in bytes.
pub fn write(
    path: &Path,
    save: impl FnOnce(&File) -> Result<(), ApiError>,
) -> Result<u64, ApiError> {
    let disk = Disk::open(path, true).map_err(|e| io_error("opening the suspend VDI", e))?;
    let mut head = SIGNATURE.to_vec();
    head.extend_from_slice(&header(LIBXC, 0));
    disk.write(&head, 0)
        .map_err(|e| io_error("writing the image header", e))?;
    let (r, w) = pipe().map_err(|e| io_error("a pipe for the stream", e))?;
    let (saved, pumped) = std::thread::scope(|sc| {
        let disk = &disk;
        let pump = sc.spawn(move || pump_in(r, disk));
        let saved = save(&w);
        // The pump sees the end of the stream once every writer is closed.
        drop(w);
        let pumped = pump
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the pump panicked")));
        (saved, pumped)
    });
    saved?;
    let len = pumped.map_err(|e| io_error("writing the stream into the suspend VDI", e))?;
    disk.write(&header(END_OF_IMAGE, 0), STREAM_START + len)
        .and_then(|()| disk.flush())
        .map_err(|e| io_error("writing the image footer", e))?;
    Ok(len)
}

/// Copies the stream from the pipe into the disk from [`STREAM_START`], in chunks aligned
/// to [`CHUNK`]; all-zero chunks stay unwritten (the new VDI reads as zeroes).
fn pump_in(mut r: File, disk: &Disk) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = STREAM_START;
    loop {
        let want = (CHUNK - off % CHUNK) as usize;
        let mut n = 0;
        while n < want {
            match r.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf[..n].iter().any(|b| *b != 0) {
            disk.write(&buf[..n], off)?;
        }
        off += n as u64;
        if n < want {
            return Ok(off - STREAM_START);
        }
    }
}

/// Reads the suspend image in the disk at `path`: checks its signature and first record,
/// then `restore` reads the stream from a pipe. Bad input is an `INTERNAL_ERROR` naming
/// what is wrong.
pub fn read<T>(
    path: &Path,
    restore: impl FnOnce(&File) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let bad =
        |what: String| ApiError::internal(format!("suspend image {}: {what}", path.display()));
    let disk = Disk::open(path, false).map_err(|e| bad(e.to_string()))?;
    let size = disk.size().map_err(|e| bad(e.to_string()))?;
    let mut head = [0u8; STREAM_START as usize];
    disk.read(&mut head, 0).map_err(|e| bad(e.to_string()))?;
    if head[..SIGNATURE.len()] != SIGNATURE[..] {
        return Err(bad(format!(
            "not a valid signature: {:?}",
            String::from_utf8_lossy(&head[..SIGNATURE.len()])
        )));
    }
    let ty = u64::from_le_bytes(head[SIGNATURE.len()..][..8].try_into().expect("8 bytes"));
    if ty != LIBXC {
        return Err(bad(format!("first record of type {ty:#x}, not Libxc")));
    }
    let (r, w) = pipe().map_err(|e| bad(e.to_string()))?;
    std::thread::scope(|sc| {
        let disk = &disk;
        let pump = sc.spawn(move || pump_out(disk, size, w));
        let restored = restore(&r);
        // A pump still writing gets EPIPE once the reader is gone, and stops.
        drop(r);
        let pumped = pump.join();
        if let Ok(Err(e)) = &pumped {
            tracing::warn!(%e, "reading the suspend image");
        }
        restored
    })
}

/// Copies the disk from [`STREAM_START`] into the pipe until the disk ends or the reader
/// is gone (the stream ended before the disk does).
fn pump_out(disk: &Disk, size: u64, mut w: File) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = STREAM_START;
    while off < size {
        let n = (CHUNK - off % CHUNK).min(size - off) as usize;
        disk.read(&mut buf[..n], off)?;
        if let Err(e) = w.write_all(&buf[..n]) {
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            };
        }
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    fn raw_disk(dir: &tempfile::TempDir, size: u64) -> std::path::PathBuf {
        let p = dir.path().join("disk");
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    #[test]
    fn a_stream_written_is_read_back_behind_xenopsds_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = raw_disk(&dir, 8 << 20);
        // 3 MiB + a bit: chunks across the alignment, a zero run in the middle.
        let mut stream: Vec<u8> = (0..(3 << 20) + 777).map(|i| (i % 251) as u8).collect();
        stream[1 << 20..2 << 20].fill(0);
        let len = write(&p, |f| {
            let mut f = f;
            f.write_all(&stream).map_err(ApiError::internal)
        })
        .unwrap();
        assert_eq!(len, stream.len() as u64);
        let img = std::fs::read(&p).unwrap();
        assert_eq!(&img[..15], SIGNATURE);
        assert_eq!(img[15..31], header(LIBXC, 0));
        assert_eq!(&img[31..31 + stream.len()], &stream[..]);
        assert_eq!(img[31 + stream.len()..][..16], header(END_OF_IMAGE, 0));
        // The reader takes what it needs and stops; the rest of the disk is not its.
        let got = read(&p, |f| {
            let mut v = vec![0u8; stream.len()];
            let mut f = f;
            f.read_exact(&mut v).map_err(ApiError::internal)?;
            Ok(v)
        })
        .unwrap();
        assert_eq!(got, stream);
    }

    #[test]
    fn a_failed_save_or_a_stream_too_big_for_the_vdi_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = raw_disk(&dir, 1 << 20);
        let e = write(&p, |_| Err(ApiError::internal("the guest did not suspend"))).unwrap_err();
        assert!(e.to_string().contains("did not suspend"), "{e}");
        // The raw file grows, so bound it by a qcow2 image of 1 MiB instead.
        let q = dir.path().join("q.qcow2");
        sm::image::create(&q, 1 << 20, None).unwrap();
        let e = write(&q, |f| {
            let mut f = f;
            // The writer sees the pump go away (EPIPE) once the VDI is full.
            let _ = f.write_all(&vec![1u8; 3 << 20]);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.code, codes::INTERNAL_ERROR);
        assert!(
            e.to_string().contains("I/O error saving VM suspend image"),
            "{e}"
        );
    }

    #[test]
    fn what_is_not_a_suspend_image_is_refused_before_any_restore() {
        let dir = tempfile::tempdir().unwrap();
        let p = raw_disk(&dir, 1 << 20);
        let restore = |_: &File| -> Result<(), ApiError> { panic!("restore ran") };
        let e = read(&p, restore).unwrap_err();
        assert!(e.to_string().contains("not a valid signature"), "{e}");
        let mut head = SIGNATURE.to_vec();
        head.extend_from_slice(&header(END_OF_IMAGE, 0));
        std::fs::write(&p, &head).unwrap();
        let e = read(&p, restore).unwrap_err();
        assert!(e.to_string().contains("0xffff"), "{e}");
        let e = read(&dir.path().join("missing"), restore).unwrap_err();
        assert_eq!(e.code, codes::INTERNAL_ERROR);
    }
}
