//! Extracting the ELF `vmlinux` from a bzImage, so that neither Xen (for dom0) nor libxenguest
//! (for the PV guest) has to decompress the kernel under emulation: that saves seconds of TCG time.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{io as ioerr, Error, Result};

/// The compressed payload of a bzImage and the host command that decompresses it.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The compressed bytes.
    pub data: &'a [u8],
    /// Decompressor and its arguments (reads stdin, writes stdout).
    pub decompressor: &'static [&'static str],
}

/// Finds the payload from the x86 boot protocol's setup header (`setup_sects` at 0x1f1,
/// `payload_offset`/`payload_length` at 0x248/0x24c, protocol 2.08 and later).
pub fn payload(image: &[u8]) -> Result<Payload<'_>> {
    let bad = |why: &str| Error::Other(format!("not a usable bzImage: {why}"));
    if image.len() < 0x250 || &image[0x202..0x206] != b"HdrS" {
        return Err(bad("no HdrS setup header"));
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x208 {
        return Err(bad("boot protocol older than 2.08 has no payload fields"));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let word =
        |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes")) as usize;
    let start = (setup_sects + 1) * 512 + word(0x248);
    let end = start
        .checked_add(word(0x24c))
        .filter(|&e| e <= image.len())
        .ok_or_else(|| bad("payload out of bounds"))?;
    let data = &image[start..end];
    let decompressor: &'static [&'static str] =
        if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            &["xz", "-dc", "--single-stream"]
        } else if data.starts_with(&[0x1f, 0x8b]) {
            &["gzip", "-dc"]
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            &["zstd", "-dcq"]
        } else {
            return Err(bad("payload compression not one of xz, gzip, zstd"));
        };
    Ok(Payload { data, decompressor })
}

/// Writes the `vmlinux` ELF inside the bzImage `image` to `out`.
pub fn extract_vmlinux(image: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(image).map_err(ioerr("read", image))?;
    let p = payload(&bytes)?;
    let file = std::fs::File::create(out).map_err(ioerr("create", out))?;
    let mut child = Command::new(p.decompressor[0])
        .args(&p.decompressor[1..])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: p.decompressor[0].to_string(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = p.data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let status = child
        .wait()
        .map_err(ioerr("wait for decompressor of", image))?;
    // The decompressor may stop reading at the end of the stream (EPIPE here): not an error.
    let _ = writer.join();
    let elf = std::fs::read(out)
        .map(|b| b.starts_with(b"\x7fELF"))
        .unwrap_or(false);
    // gzip exits 2 on trailing bytes after the stream (a warning): the output is complete.
    if !elf || !(status.success() || status.code() == Some(2)) {
        return Err(Error::Failed {
            cmd: p.decompressor.join(" "),
            status: status.to_string(),
            detail: format!("no ELF extracted from {}", image.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(setup_sects: u8, offset: u32, payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; (usize::from(setup_sects.max(4)) + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.resize(img.len() + offset as usize, 0xaa);
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn payload_is_found_and_its_compression_named() {
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
        let img = image(4, 100, &xz);
        let p = payload(&img).unwrap();
        assert_eq!(p.data, &xz);
        assert_eq!(p.decompressor[0], "xz");
        let gz = [0x1f, 0x8b, 8, 0];
        assert_eq!(payload(&image(0, 0, &gz)).unwrap().decompressor[0], "gzip");
    }

    #[test]
    fn malformed_images_are_rejected() {
        assert!(payload(b"short").is_err());
        let mut img = image(4, 0, &[0xfd, b'7', b'z', b'X', b'Z', 0]);
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload(&img).is_err(), "length past the end");
        assert!(
            payload(&image(4, 0, b"LZ4?")).is_err(),
            "unknown compression"
        );
        let mut old = image(4, 0, &[0x1f, 0x8b]);
        old[0x206..0x208].copy_from_slice(&0x205u16.to_le_bytes());
        assert!(payload(&old).is_err(), "protocol 2.05");
    }

    #[test]
    fn a_real_gzip_payload_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("vmlinux.raw");
        std::fs::write(&raw, b"\x7fELF fake kernel").unwrap();
        let gz = Command::new("gzip")
            .arg("-c")
            .arg(&raw)
            .output()
            .unwrap()
            .stdout;
        let bz = dir.path().join("bzImage");
        std::fs::write(&bz, image(4, 16, &gz)).unwrap();
        let out = dir.path().join("vmlinux");
        extract_vmlinux(&bz, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"\x7fELF fake kernel");
    }
}
