//! Persistence: an append-only journal of node changes plus periodic snapshots.
//!
//! Files in the data folder:
//! - `snapshot`: every node at some point, and the sequence number of the first journal
//!   that follows it. Written to `snapshot.tmp`, synced, then renamed over the old one.
//! - `journal.<seq>`: a header ([`JOURNAL_MAGIC`] and the format version) then framed records
//!   (`len`, `crc32`, body), each the new state of one node (`Set`) or its removal (`Del`).
//!   Child lists are not stored: they follow from the paths.
//!
//! Formats: version 1 `Set` records hold the node's generation only; version 2 (this
//! writer's, [`FORMAT`]) adds its creation generation (the order of siblings). Snapshots
//! name their version in their magic (`XSDSNAP1`, `XSDSNAP2`); journals written before the
//! header existed (versions 1 and 2, no header) are recognised by their records, whose
//! checksums are valid under exactly one layout. A file of a newer version, or a record
//! that is intact (its checksum holds) but of no known layout, is refused with an error:
//! only a record whose frame is incomplete or whose checksum fails is a torn tail.
//!
//! Recovery loads the snapshot, replays the journals from its sequence number on, and stops
//! at the first torn record (the tail of a write cut short by a crash), which is cut off.
//! A write that fails (a full disk) is cut off at once, so the journal holds exactly the
//! changes whose writes succeeded. When a journal grows past a threshold the writer starts
//! the next journal and writes a snapshot of the (structurally shared, so free to copy) tree
//! in a background thread; older journals are deleted once it is in place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use xen_types::DomId;
use xenstore::wire::{Access, Perm};

use crate::tree::{Node, Tree};

/// Start of a snapshot; the version digit follows.
const SNAP_MAGIC: &[u8; 7] = b"XSDSNAP";
/// Start of a journal file; the format version (one byte) follows.
pub const JOURNAL_MAGIC: &[u8; 7] = b"XSDJRNL";
/// The record layout this writer uses (see the module documentation).
pub const FORMAT: u8 = 2;
/// Bytes of a journal's header.
const HEADER_LEN: u64 = 8;
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

/// Decodes one record body written in record layout `format`; `None` unless the whole body
/// is exactly one record of that layout.
fn decode(body: &[u8], format: u8) -> Option<Record> {
    let mut c = Cursor(body);
    let r = decode_from(&mut c, format)?;
    c.0.is_empty().then_some(r)
}

fn decode_from(c: &mut Cursor<'_>, format: u8) -> Option<Record> {
    let kind = *c.take(1)?.first()?;
    match kind {
        SET => {
            let gen = c.u64()?;
            let created = if format >= 2 { c.u64()? } else { gen };
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

/// The intact frames at the start of `data`: `(offset, body)` of each, and the length of
/// that prefix. A frame that is incomplete, empty (a zero-filled tail) or fails its checksum
/// ends it: what follows is a torn tail.
fn frames(data: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(head) = data.get(pos..pos + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if len == 0 || crc32(body) != crc {
            break;
        }
        out.push((pos, body));
        pos += 8 + len;
    }
    (out, pos)
}

/// Decodes the intact frames at the start of `data` as records of layout `format`; returns
/// them and the length of the valid prefix (what follows is torn), or the offset of the
/// first intact frame that is not such a record.
fn records(data: &[u8], format: u8) -> Result<(Vec<Record>, usize), usize> {
    let (frames, valid) = frames(data);
    let mut out = Vec::with_capacity(frames.len());
    for (off, body) in frames {
        out.push(decode(body, format).ok_or(off)?);
    }
    Ok((out, valid))
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The records of one journal file and the length of its valid prefix. Files with a header
/// are read in the version it names; older files without one in the layout under which
/// every intact record decodes.
fn journal_records(name: &str, data: &[u8]) -> io::Result<(Vec<Record>, usize)> {
    let header = JOURNAL_MAGIC.len() + 1;
    let intact_but_unknown = |off: usize, version: &str| {
        bad_data(format!(
            "{name}: the record at byte {off} is intact (its checksum holds) but is not a \
             record of {version}; refusing to treat it as a torn tail"
        ))
    };
    if data.len() < header && JOURNAL_MAGIC.starts_with(&data[..data.len().min(7)]) {
        // Created, and cut short before its header was complete: nothing in it.
        return Ok((Vec::new(), 0));
    }
    if data.starts_with(JOURNAL_MAGIC) {
        let version = data[JOURNAL_MAGIC.len()];
        if version == 0 || version > FORMAT {
            return Err(bad_data(format!(
                "{name}: journal format version {version}; this xenstored reads versions 1 to \
                 {FORMAT} (was it written by a newer xenstored?)"
            )));
        }
        let (recs, valid) = records(&data[header..], version)
            .map_err(|off| intact_but_unknown(header + off, &format!("format {version}")))?;
        return Ok((recs, header + valid));
    }
    // Written before journals had a header: the current layout, else the first one.
    match records(data, FORMAT) {
        Ok(r) => Ok(r),
        Err(off) => {
            records(data, 1).map_err(|_| intact_but_unknown(off, "any known format (1 to 2)"))
        }
    }
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
    /// Records not written yet.
    buf: Vec<u8>,
    /// Length of the current journal file up to its last successful write.
    len: u64,
    /// A failed write left bytes past `len` that could not be cut off yet.
    torn: bool,
    /// Record bytes written to the current journal (for the snapshot threshold).
    written: u64,
    sync: SyncMode,
    snapshot_after: u64,
    snapshotter: Option<JoinHandle<io::Result<()>>>,
    #[cfg(test)]
    faults: Arc<Faults>,
}

/// Injected write failures (tests only): each write fails while `fail` is set, after
/// writing the first half of its bytes when `partial` is set too (a disk that fills up
/// in the middle of a write).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail: std::sync::atomic::AtomicBool,
    pub partial: std::sync::atomic::AtomicBool,
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
            let (seq, g, recs) = snapshot_records(&data)?;
            first_seq = seq;
            gen = g;
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
            let (recs, valid) = journal_records(&format!("journal.{seq}"), &data)?;
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
        let file = create_journal(dir, seq)?;
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
                len: HEADER_LEN,
                torn: false,
                written: 0,
                sync,
                snapshot_after,
                snapshotter: None,
                #[cfg(test)]
                faults: Arc::default(),
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

    /// Bytes of records waiting to be written: a mark for [`Journal::discard_from`].
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Drops the records recorded after `mark` (a [`Journal::pending_len`]): their changes
    /// were undone after a failed [`Journal::flush`].
    pub fn discard_from(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }

    /// Writes the pending records (and syncs them, per the [`SyncMode`]). On failure the
    /// file is cut back to where it was (nothing of the failed write is replayed after a
    /// restart; if even that fails, the next flush or snapshot cuts it first) and the
    /// records stay pending.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.repair()?;
        if let Err(e) = self.write_pending() {
            self.torn = true;
            let _ = self.repair();
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Cuts off what a failed write left past the last good record.
    fn repair(&mut self) -> io::Result<()> {
        if self.torn {
            self.file.set_len(self.len)?;
            self.torn = false;
        }
        Ok(())
    }

    fn write_pending(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.fail.load(std::sync::atomic::Ordering::Relaxed) {
            if self
                .faults
                .partial
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                (&*self.file).write_all(&self.buf[..self.buf.len() / 2])?;
            }
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        (&*self.file).write_all(&self.buf)?;
        if self.sync == SyncMode::Always {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The switches that make this journal's writes fail (tests only).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
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
        // The old journal must be stable (and hold nothing of a failed write) before the
        // snapshot that replaces it is.
        self.repair()?;
        self.file.sync_data()?;
        self.file = create_journal(&self.dir, next)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = self.file.clone();
        self.seq = next;
        self.len = HEADER_LEN;
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

/// Creates journal `seq` with its header, durably (file and folder synced); a file that
/// cannot get its header is removed.
fn create_journal(dir: &Path, seq: u64) -> io::Result<Arc<File>> {
    let path = journal_path(dir, seq);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut head = JOURNAL_MAGIC.to_vec();
    head.push(FORMAT);
    let done = (&file)
        .write_all(&head)
        .and_then(|()| file.sync_data())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = done {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(Arc::new(file))
}

/// A snapshot's first journal sequence number, generation and records (ending in `End`).
fn snapshot_records(data: &[u8]) -> io::Result<(u64, u64, Vec<Record>)> {
    let version = match data.get(..8) {
        Some(m) if m.starts_with(SNAP_MAGIC) => m[7].wrapping_sub(b'0'),
        _ => return Err(bad_data("snapshot: bad header".into())),
    };
    if version == 0 || version > FORMAT {
        return Err(bad_data(format!(
            "snapshot: format version {}; this xenstored reads versions 1 to {FORMAT} (was it \
             written by a newer xenstored?)",
            data[7] as char
        )));
    }
    if data.len() < 24 {
        return Err(bad_data("snapshot: truncated header".into()));
    }
    let first_seq = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let gen = u64::from_le_bytes(data[16..24].try_into().unwrap_or_default());
    let (recs, _) = records(&data[24..], version).map_err(|off| {
        bad_data(format!(
            "snapshot: the record at byte {} is intact but not of format {version}",
            24 + off
        ))
    })?;
    if !matches!(recs.last(), Some(Record::End)) {
        return Err(bad_data("snapshot: truncated".into()));
    }
    Ok((first_seq, gen, recs))
}

fn write_snapshot(dir: &Path, tree: &Tree, gen: u64, seq: u64) -> io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let f = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut head = SNAP_MAGIC.to_vec();
    head.push(b'0' + FORMAT);
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
        let (recs, valid) = records(&buf, FORMAT).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(valid, good);
    }

    /// A `Set` record as format 1 wrote it: no creation generation.
    fn encode_set_v1(out: &mut Vec<u8>, path: &str, value: &str, gen: u64) {
        frame(out, |b| {
            b.push(SET);
            b.extend_from_slice(&gen.to_le_bytes());
            b.extend_from_slice(&(path.len() as u32).to_le_bytes());
            b.extend_from_slice(path.as_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            b.push(b'n');
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value.as_bytes());
        });
    }

    fn headed(version: u8, records: &[u8]) -> Vec<u8> {
        let mut v = JOURNAL_MAGIC.to_vec();
        v.push(version);
        v.extend_from_slice(records);
        v
    }

    fn open_err(dir: &Path) -> String {
        let e =
            Journal::open(dir, SyncMode::Never, u64::MAX).expect_err("the journal was accepted");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.to_string()
    }

    #[test]
    fn journals_without_a_header_are_read_in_the_format_they_were_written_in() {
        // Format 1 (no creation generation; siblings then ordered by generation), with a
        // torn tail, and format 2, both written before journals had a header.
        let mut v1 = Vec::new();
        for (i, p) in ["/", "/z", "/a"].iter().enumerate() {
            encode_set_v1(&mut v1, p, "one", i as u64 + 1);
        }
        v1.extend_from_slice(&[9, 0, 0, 0, 1]);
        let mut v2 = Vec::new();
        encode_set(&mut v2, "/b", &node("two", 7));
        encode_del(&mut v2, "/z");
        let dir = tempfile::tempdir().unwrap();
        fs::write(journal_path(dir.path(), 0), &v1).unwrap();
        fs::write(journal_path(dir.path(), 1), &v2).unwrap();
        let (j, rec) = Journal::open(dir.path(), SyncMode::Never, u64::MAX).unwrap();
        assert_eq!(rec.replayed, 5);
        assert_eq!(rec.discarded, 5, "only the torn tail is cut off");
        assert_eq!(&*rec.tree.get("/a").unwrap().value, b"one");
        assert_eq!(rec.tree.get("/a").unwrap().created, 3);
        assert_eq!(&*rec.tree.get("/b").unwrap().value, b"two");
        assert!(rec.tree.get("/z").is_none());
        assert_eq!(rec.gen, 7);
        drop(j);
        // The journal this writer started has the header of the current format.
        let data = fs::read(journal_path(dir.path(), 2)).unwrap();
        assert_eq!(&data[..8], &headed(FORMAT, &[])[..]);
    }

    #[test]
    fn a_journal_of_a_newer_or_unknown_format_is_refused_and_left_whole() {
        let mut recs = Vec::new();
        encode_set(&mut recs, "/a", &node("x", 1));
        let intact_unknown = {
            let mut v = recs.clone();
            frame(&mut v, |b| b.extend_from_slice(&[42, 1, 2, 3]));
            v
        };
        for (data, says) in [
            (headed(FORMAT + 1, &recs), "format version 3"),
            (headed(FORMAT, &intact_unknown), "is intact"),
            (intact_unknown.clone(), "is intact"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = journal_path(dir.path(), 0);
            fs::write(&path, &data).unwrap();
            let msg = open_err(dir.path());
            assert!(msg.contains(says), "{msg}");
            assert!(msg.contains("journal.0"), "{msg}");
            assert_eq!(fs::read(&path).unwrap(), data, "the journal was changed");
        }
    }

    #[test]
    fn snapshots_of_both_formats_are_read_and_newer_ones_refused() {
        let snap = |version: u8, body: &[u8]| {
            let mut v = SNAP_MAGIC.to_vec();
            v.push(b'0' + version);
            v.extend_from_slice(&5u64.to_le_bytes());
            v.extend_from_slice(&4u64.to_le_bytes());
            v.extend_from_slice(body);
            frame(&mut v, |b| b.push(END));
            v
        };
        let mut v1 = Vec::new();
        encode_set_v1(&mut v1, "/", "", 1);
        encode_set_v1(&mut v1, "/old", "1", 2);
        let mut v2 = Vec::new();
        encode_set(&mut v2, "/", &node("", 1));
        encode_set(&mut v2, "/new", &node("2", 3));
        for (data, path) in [(snap(1, &v1), "/old"), (snap(2, &v2), "/new")] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("snapshot"), data).unwrap();
            let (_j, rec) = Journal::open(dir.path(), SyncMode::Never, u64::MAX).unwrap();
            assert!(rec.tree.get(path).is_some(), "{path} missing");
            let root: Vec<_> = rec.tree.get("/").unwrap().children().cloned().collect();
            assert_eq!(root, vec![Arc::<str>::from(&path[1..])]);
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("snapshot"), snap(3, &v2)).unwrap();
        let msg = open_err(dir.path());
        assert!(msg.contains("snapshot: format version 3"), "{msg}");
    }
}
