//! Persistence: an append-only journal of node changes plus periodic snapshots.
//!
//! Files in the data folder:
//! - `snapshot`: every node at some point, and the sequence number of the first journal
//!   that follows it. Written to `snapshot.tmp`, synced, then renamed over the old one.
//! - `journal.<seq>`: framed records (`len`, `crc32`, body), each the new state of one node
//!   (`Set`) or its removal (`Del`). Child lists are not stored: they follow from the paths.
//!
//! Recovery loads the snapshot, replays the journals from its sequence number on, and stops
//! at the first torn or corrupt record (the tail of a write cut short by a crash), which is
//! cut off. When a journal grows past a threshold the writer starts the next journal and
//! writes a snapshot of the (structurally shared, so free to copy) tree in a background
//! thread; older journals are deleted once it is in place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use xen_types::DomId;
use xenstore::wire::{Access, Perm};

use crate::tree::{Node, Tree};

const SNAP_MAGIC: &[u8; 8] = b"XSDSNAP2";
const SET: u8 = 1;
const DEL: u8 = 2;
const END: u8 = 3;

/// When the journal is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` after each batch of requests, before their replies are sent (group
    /// commit): acknowledged changes survive a host crash. Each batch then costs a disk
    /// flush (milliseconds on many disks).
    Always,
    /// `write(2)` before replies (acknowledged changes survive `kill -9` of the daemon) and
    /// an `fdatasync` by a background thread every second (a host crash loses at most the
    /// last second).
    #[default]
    Periodic,
    /// `write(2)` before replies only: survives `kill -9`, not a host crash.
    Never,
}

/// How often [`SyncMode::Periodic`] syncs.
pub const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_set(out: &mut Vec<u8>, path: &str, n: &Node) {
    frame(out, |b| {
        b.push(SET);
        b.extend_from_slice(&n.gen.to_le_bytes());
        b.extend_from_slice(&n.created.to_le_bytes());
        b.extend_from_slice(&(path.len() as u32).to_le_bytes());
        b.extend_from_slice(path.as_bytes());
        b.extend_from_slice(&(n.perms.len() as u32).to_le_bytes());
        for p in n.perms.iter() {
            b.extend_from_slice(&p.domid.0.to_le_bytes());
            b.push(p.access.letter() as u8);
        }
        b.extend_from_slice(&(n.value.len() as u32).to_le_bytes());
        b.extend_from_slice(&n.value);
    });
}

fn encode_del(out: &mut Vec<u8>, path: &str) {
    frame(out, |b| {
        b.push(DEL);
        b.extend_from_slice(&(path.len() as u32).to_le_bytes());
        b.extend_from_slice(path.as_bytes());
    });
}

/// A decoded record.
enum Record {
    Set(Arc<str>, Node),
    Del(Arc<str>),
    End,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn decode(body: &[u8]) -> Option<Record> {
    let mut c = Cursor(body);
    let kind = *c.take(1)?.first()?;
    match kind {
        SET => {
            let gen = c.u64()?;
            let created = c.u64()?;
            let plen = c.u32()? as usize;
            let path: Arc<str> = std::str::from_utf8(c.take(plen)?).ok()?.into();
            let np = c.u32()? as usize;
            let mut perms = Vec::with_capacity(np.min(64));
            for _ in 0..np {
                let d = u16::from_le_bytes(c.take(2)?.try_into().ok()?);
                let access = match c.take(1)?[0] {
                    b'n' => Access::None,
                    b'r' => Access::Read,
                    b'w' => Access::Write,
                    b'b' => Access::Both,
                    _ => return None,
                };
                perms.push(Perm::new(DomId(d), access));
            }
            let vlen = c.u32()? as usize;
            let value: Arc<[u8]> = c.take(vlen)?.into();
            let mut n = Node::new(value, perms.into(), gen);
            n.created = created;
            Some(Record::Set(path, n))
        }
        DEL => {
            let plen = c.u32()? as usize;
            Some(Record::Del(std::str::from_utf8(c.take(plen)?).ok()?.into()))
        }
        END => Some(Record::End),
        _ => None,
    }
}

/// Splits `data` into records; returns them and the length of the valid prefix.
fn records(data: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        let Some(body) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32(body) != crc {
            break;
        }
        let Some(r) = decode(body) else {
            break;
        };
        out.push(r);
        pos += 8 + len;
    }
    (out, pos)
}

fn journal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal.{seq}"))
}

fn journals(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(n) = name.to_str().and_then(|s| s.strip_prefix("journal.")) {
            if let Ok(seq) = n.parse() {
                v.push(seq);
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// What [`Journal::open`] recovered.
#[derive(Debug)]
pub struct Recovered {
    /// The tree (child lists rebuilt), empty when nothing was stored.
    pub tree: Tree,
    /// Largest generation seen.
    pub gen: u64,
    /// Records replayed from journals.
    pub replayed: usize,
    /// Bytes of torn or corrupt journal tail cut off.
    pub discarded: u64,
}

/// The journal writer.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: Arc<File>,
    current: Arc<std::sync::Mutex<Arc<File>>>,
    stop_sync: Arc<std::sync::atomic::AtomicBool>,
    seq: u64,
    buf: Vec<u8>,
    written: u64,
    sync: SyncMode,
    snapshot_after: u64,
    snapshotter: Option<JoinHandle<io::Result<()>>>,
}

impl Journal {
    /// Recovers the state stored in `dir` (created if missing) and opens a fresh journal.
    pub fn open(
        dir: &Path,
        sync: SyncMode,
        snapshot_after: u64,
    ) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut tree = Tree::empty();
        let mut gen = 0;
        let mut first_seq = 0;
        if let Ok(mut f) = File::open(dir.join("snapshot")) {
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            if data.len() < 24 || &data[..8] != SNAP_MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad snapshot header",
                ));
            }
            first_seq = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
            gen = u64::from_le_bytes(data[16..24].try_into().unwrap_or_default());
            let (recs, _) = records(&data[24..]);
            if !matches!(recs.last(), Some(Record::End)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated snapshot",
                ));
            }
            for r in recs {
                if let Record::Set(p, n) = r {
                    gen = gen.max(n.gen);
                    tree.set_raw(p, Some(Arc::new(n)));
                }
            }
        }
        let mut replayed = 0;
        let mut discarded = 0;
        let seqs = journals(dir)?;
        for &seq in &seqs {
            if seq < first_seq {
                let _ = fs::remove_file(journal_path(dir, seq));
                continue;
            }
            let path = journal_path(dir, seq);
            let data = fs::read(&path)?;
            let (recs, valid) = records(&data);
            for r in recs {
                replayed += 1;
                match r {
                    Record::Set(p, n) => {
                        gen = gen.max(n.gen);
                        tree.set_raw(p, Some(Arc::new(n)));
                    }
                    Record::Del(p) => tree.set_raw(p, None),
                    Record::End => {}
                }
            }
            if valid < data.len() {
                discarded += (data.len() - valid) as u64;
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
        }
        tree.rebuild_children();
        let seq = seqs.last().map_or(first_seq, |s| s + 1).max(first_seq);
        let file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal_path(dir, seq))?,
        );
        sync_dir(dir)?;
        let current = Arc::new(std::sync::Mutex::new(file.clone()));
        let stop_sync = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if sync == SyncMode::Periodic {
            let (current, stop) = (current.clone(), stop_sync.clone());
            std::thread::Builder::new()
                .name("xenstored-sync".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::park_timeout(SYNC_PERIOD);
                        let f = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        if let Err(e) = f.sync_data() {
                            tracing::error!("journal sync failed: {e}");
                        }
                    }
                })?;
        }
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                current,
                stop_sync,
                seq,
                buf: Vec::new(),
                written: 0,
                sync,
                snapshot_after,
                snapshotter: None,
            },
            Recovered {
                tree,
                gen,
                replayed,
                discarded,
            },
        ))
    }

    /// Records the current state of `path` in `tree` (set or removed).
    pub fn record(&mut self, tree: &Tree, path: &str) {
        match tree.get(path) {
            Some(n) => encode_set(&mut self.buf, path, n),
            None => encode_del(&mut self.buf, path),
        }
    }

    /// True when records wait to be written.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes the pending records (and syncs them, per the [`SyncMode`]).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (&*self.file).write_all(&self.buf)?;
        if self.sync == SyncMode::Always {
            self.file.sync_data()?;
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Starts a background snapshot of `tree` when the journal has grown enough. Call after
    /// [`flush`](Journal::flush).
    pub fn maybe_snapshot(&mut self, tree: &Tree, gen: u64) -> io::Result<()> {
        if let Some(h) = &self.snapshotter {
            if !h.is_finished() {
                return Ok(());
            }
            if let Some(h) = self.snapshotter.take() {
                match h.join() {
                    Ok(r) => r?,
                    Err(_) => return Err(io::Error::other("snapshot thread panicked")),
                }
            }
        }
        if self.written < self.snapshot_after {
            return Ok(());
        }
        self.snapshot(tree, gen, false)
    }

    /// Rotates the journal and writes a snapshot of `tree` (in the background unless
    /// `wait`).
    pub fn snapshot(&mut self, tree: &Tree, gen: u64, wait: bool) -> io::Result<()> {
        self.flush()?;
        if let Some(h) = self.snapshotter.take() {
            let _ = h.join();
        }
        let next = self.seq + 1;
        // The old journal must be stable before the snapshot that replaces it is.
        self.file.sync_data()?;
        self.file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal_path(&self.dir, next))?,
        );
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = self.file.clone();
        self.seq = next;
        self.written = 0;
        let tree = tree.clone();
        let dir = self.dir.clone();
        let h = std::thread::Builder::new()
            .name("xenstored-snapshot".into())
            .spawn(move || write_snapshot(&dir, &tree, gen, next))?;
        if wait {
            h.join()
                .map_err(|_| io::Error::other("snapshot thread panicked"))??;
        } else {
            self.snapshotter = Some(h);
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop_sync
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.flush();
        let _ = self.file.sync_data();
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_snapshot(dir: &Path, tree: &Tree, gen: u64, seq: u64) -> io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let f = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut head = SNAP_MAGIC.to_vec();
    head.extend_from_slice(&seq.to_le_bytes());
    head.extend_from_slice(&gen.to_le_bytes());
    w.write_all(&head)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for (p, n) in tree.iter() {
        encode_set(&mut buf, p, n);
        if buf.len() > 1 << 15 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    frame(&mut buf, |b| b.push(END));
    w.write_all(&buf)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("snapshot"))?;
    sync_dir(dir)?;
    for s in journals(dir)? {
        if s < seq {
            let _ = fs::remove_file(journal_path(dir, s));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: &str, gen: u64) -> Node {
        Node::new(
            v.as_bytes().into(),
            vec![
                Perm::new(DomId(0), Access::None),
                Perm::new(DomId(3), Access::Read),
            ]
            .into(),
            gen,
        )
    }

    #[test]
    fn crc_matches_the_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn replay_snapshot_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::empty();
        {
            let (mut j, rec) = Journal::open(dir.path(), SyncMode::Never, u64::MAX).unwrap();
            assert!(rec.tree.is_empty());
            for (i, p) in ["/", "/a", "/a/b", "/c"].iter().enumerate() {
                t.set_raw((*p).into(), Some(Arc::new(node(p, i as u64 + 1))));
                j.record(&t, p);
            }
            j.flush().unwrap();
            j.snapshot(&t, 4, true).unwrap();
            t.set_raw("/c".into(), None);
            j.record(&t, "/c");
            t.set_raw("/a/b".into(), Some(Arc::new(node("new", 9))));
            j.record(&t, "/a/b");
            j.flush().unwrap();
        }
        // A torn record at the end of the journal is cut off.
        let last = *journals(dir.path()).unwrap().last().unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(journal_path(dir.path(), last))
            .unwrap();
        f.write_all(&[42, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (_j, rec) = Journal::open(dir.path(), SyncMode::Never, u64::MAX).unwrap();
        assert_eq!(rec.discarded, 7);
        assert_eq!(rec.replayed, 2);
        assert_eq!(rec.gen, 9);
        assert!(rec.tree.get("/c").is_none());
        assert_eq!(&*rec.tree.get("/a/b").unwrap().value, b"new");
        assert_eq!(
            rec.tree.get("/a/b").unwrap().perms[1],
            Perm::new(DomId(3), Access::Read)
        );
        let root: Vec<_> = rec.tree.get("/").unwrap().children().cloned().collect();
        assert_eq!(root, vec![Arc::<str>::from("a")]);
    }

    #[test]
    fn corrupt_records_stop_replay() {
        let mut buf = Vec::new();
        encode_del(&mut buf, "/x");
        let good = buf.len();
        encode_del(&mut buf, "/y");
        let n = buf.len();
        buf[n - 1] ^= 0xff;
        let (recs, valid) = records(&buf);
        assert_eq!(recs.len(), 1);
        assert_eq!(valid, good);
    }
}
