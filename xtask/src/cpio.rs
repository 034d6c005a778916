//! A writer for the `newc` cpio format that Linux unpacks as an initramfs.
//!
//! Entries are collected first (path → content), then written sorted, so that every
//! directory precedes what it holds, as the kernel's unpacker needs.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{io as ioerr, Result};

/// What one archive member holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A directory.
    Dir,
    /// A regular file whose bytes are read from this host path when the archive is written.
    File(PathBuf),
    /// A regular file with these bytes.
    Bytes(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (e.g. `0o755`).
    pub perm: u32,
    /// The content.
    pub content: Content,
}

/// An initramfs being assembled.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `path` (absolute or relative to the archive root) is already present.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    /// The member paths, sorted, relative to the root.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Host files the archive will read.
    pub fn sources(&self) -> impl Iterator<Item = &Path> {
        self.entries.values().filter_map(|e| match &e.content {
            Content::File(p) => Some(p.as_path()),
            _ => None,
        })
    }

    /// Keeps only the members whose path satisfies `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|p, _| keep(p));
    }

    /// Adds `content` at `path`, creating missing parent directories (mode 0755).
    /// A later insert at the same path replaces the earlier one.
    pub fn insert(&mut self, path: &str, perm: u32, content: Content) {
        let path = normalize(path);
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let key = p.to_string_lossy().into_owned();
            self.entries.entry(key).or_insert(Entry {
                perm: 0o755,
                content: Content::Dir,
            });
            parent = p.parent();
        }
        self.entries.insert(path, Entry { perm, content });
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) {
        self.insert(path, 0o755, Content::Dir);
    }

    /// Adds a host file, keeping its permission bits.
    pub fn file(&mut self, path: &str, host: &Path) -> Result<()> {
        let meta = std::fs::metadata(host).map_err(ioerr("stat", host))?;
        self.insert(
            path,
            meta.permissions().mode() & 0o7777,
            Content::File(host.to_path_buf()),
        );
        Ok(())
    }

    /// Adds a file with the given bytes.
    pub fn bytes(&mut self, path: &str, perm: u32, data: impl Into<Vec<u8>>) {
        self.insert(path, perm, Content::Bytes(data.into()));
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, 0o777, Content::Symlink(target.to_string()));
    }

    /// Adds the host tree under `host` at `path`, keeping symlinks as symlinks.
    pub fn tree(&mut self, path: &str, host: &Path) -> Result<()> {
        let meta = std::fs::symlink_metadata(host).map_err(ioerr("stat", host))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host).map_err(ioerr("readlink", host))?;
            self.symlink(path, &target.to_string_lossy());
        } else if meta.is_dir() {
            self.insert(path, meta.permissions().mode() & 0o7777, Content::Dir);
            let mut names: Vec<_> = std::fs::read_dir(host)
                .map_err(ioerr("list", host))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(ioerr("list", host))?;
            names.sort();
            for name in names {
                let name = name.to_string_lossy();
                self.tree(&format!("{}/{name}", normalize(path)), &host.join(&*name))?;
            }
        } else if meta.is_file() {
            self.insert(
                path,
                meta.permissions().mode() & 0o7777,
                Content::File(host.to_path_buf()),
            );
        }
        Ok(())
    }

    /// Writes the archive in `newc` format, ending with the `TRAILER!!!` member.
    pub fn write_to(&self, out: &mut impl Write) -> Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (kind, data): (u32, Vec<u8>) = match &entry.content {
                Content::Dir => (0o040000, Vec::new()),
                Content::File(host) => {
                    (0o100000, std::fs::read(host).map_err(ioerr("read", host))?)
                }
                Content::Bytes(b) => (0o100000, b.clone()),
                Content::Symlink(t) => (0o120000, t.as_bytes().to_vec()),
            };
            let nlink = if kind == 0o040000 { 2 } else { 1 };
            write_member(out, ino, kind | entry.perm, nlink, path, &data)
                .map_err(ioerr("write cpio member", path))?;
        }
        write_member(out, 0, 0, 1, "TRAILER!!!", &[])
            .map_err(ioerr("write cpio trailer", "TRAILER!!!"))
    }
}

fn pad4(out: &mut impl Write, len: usize) -> io::Result<()> {
    out.write_all(&[0u8; 3][..(4 - len % 4) % 4])
}

fn write_member(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let size =
        u32::try_from(data.len()).map_err(|_| io::Error::other("member larger than 4 GiB"))?;
    let namesize = name.len() + 1;
    // c_magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
    // namesize check, each as 8 hex digits.
    write!(
        out,
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0, 0
    )?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, 110 + namesize)?;
    out.write_all(data)?;
    pad4(out, data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a newc archive back: (name, mode, data) per member, trailer excluded.
    fn parse(mut buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let mut offset = 0usize;
        loop {
            assert_eq!(&buf[..6], b"070701", "magic at offset {offset}");
            let mode = hex(&buf[14..22]);
            let size = hex(&buf[54..62]) as usize;
            let namesize = hex(&buf[94..102]) as usize;
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[110 + namesize - 1], 0, "name is NUL-terminated");
            let hdr = (110 + namesize).div_ceil(4) * 4;
            let data = buf[hdr..hdr + size].to_vec();
            let next = hdr + size.div_ceil(4) * 4;
            offset += next;
            buf = &buf[next..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn members_round_trip_with_parents_first_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        std::fs::write(&host, b"hello").unwrap();
        let mut a = Archive::new();
        a.bytes("/usr/bin/x", 0o755, b"abc".to_vec());
        a.file("etc/f", &host).unwrap();
        a.symlink("lib", "usr/lib");
        a.dir("tmp");
        let mut out = Vec::new();
        a.write_to(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let members = parse(&out);
        let names: Vec<_> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            ["etc", "etc/f", "lib", "tmp", "usr", "usr/bin", "usr/bin/x"]
        );
        let get = |n: &str| members.iter().find(|m| m.0 == n).unwrap().clone();
        assert_eq!(get("usr/bin/x").1, 0o100755);
        assert_eq!(get("usr/bin/x").2, b"abc");
        assert_eq!(get("etc/f").2, b"hello");
        assert_eq!(get("lib").1, 0o120777);
        assert_eq!(get("lib").2, b"usr/lib");
        assert_eq!(get("usr").1, 0o040755);
    }

    #[test]
    fn tree_keeps_symlinks_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/lib.so.1.0"), b"elf").unwrap();
        std::os::unix::fs::symlink("lib.so.1.0", dir.path().join("a/b/lib.so.1")).unwrap();
        let mut a = Archive::new();
        a.tree("/x", &dir.path().join("a")).unwrap();
        assert!(a.contains("/x/b/lib.so.1"));
        let mut out = Vec::new();
        a.write_to(&mut out).unwrap();
        let members = parse(&out);
        let link = members.iter().find(|m| m.0 == "x/b/lib.so.1").unwrap();
        assert_eq!((link.1, link.2.as_slice()), (0o120777, &b"lib.so.1.0"[..]));

        let mut bad = Archive::new();
        assert!(bad.file("y", &dir.path().join("missing")).is_err());
        bad.insert("z", 0o644, Content::File(dir.path().join("gone")));
        assert!(
            bad.write_to(&mut Vec::new()).is_err(),
            "a file that vanished fails the write"
        );
    }

    #[test]
    fn odd_name_and_data_lengths_are_padded() {
        for len in 0..8 {
            let mut a = Archive::new();
            a.bytes(&"n".repeat(len + 1), 0o644, vec![7u8; len]);
            let mut out = Vec::new();
            a.write_to(&mut out).unwrap();
            let members = parse(&out);
            assert_eq!(members[0].2, vec![7u8; len]);
        }
    }
}
