//! The file SR (`type=ext` / `file`): a directory holding one qcow2 image per chain node.
//!
//! Layout of the directory (`device-config:location`):
//!
//! - `sr.json`: the SR's uuid and type;
//! - `<uuid>.qcow2`: an image; a VDI's image has the VDI's uuid, its header names its parent
//!   (`<parent-uuid>.qcow2`, same directory);
//! - `<uuid>.vdi.json`: the VDI record of a visible image (name, snapshot facts). An image
//!   without one is a hidden chain node, kept while other images read through it;
//! - `journal-<uuid>.json`: an operation in progress (snapshot, clone), which
//!   [`SrDriver::sr_scan`] finishes or rolls back;
//! - `*.tmp`: a file being written; scan removes it;
//! - `sr.lock`: held with `flock` during every operation.
//!
//! Every step of an operation is durable before the next starts (file sync, rename,
//! directory sync), and every state between two steps is one scan repairs. Data is never
//! moved while an image is being written by a datapath: a hidden node's coalesce into an
//! active leaf waits for the leaf's deactivation (or the next scan).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::driver::{AttachInfo, SrDriver, SrStats};
use crate::image::{self, Image};
use crate::meta::{self, TMP_SUFFIX};
use crate::{crash_point, Error, ImageId, Result, SrUuid, VdiInfo, VdiUuid};

const SR_FILE: &str = "sr.json";
/// Locked (`flock`) for the length of every operation, so that two processes (or two
/// driver values) on one SR take turns; the kernel drops it when its holder dies.
const LOCK_FILE: &str = "sr.lock";
const IMAGE_EXT: &str = ".qcow2";
const RECORD_EXT: &str = ".vdi.json";
const JOURNAL_PREFIX: &str = "journal-";
/// Bytes copied per step of a coalesce or a full copy.
const COPY_CHUNK: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct SrRecord {
    uuid: SrUuid,
    sr_type: String,
}

/// The record of a visible image (a VDI).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VdiRecord {
    name_label: String,
    is_a_snapshot: bool,
    snapshot_of: Option<VdiUuid>,
}

/// An operation in progress, written before its first step.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Journal {
    /// `vdi`'s image becomes snapshot `snap`'s; `vdi` gets a new leaf over it.
    Snapshot { vdi: VdiUuid, snap: VdiUuid },
    /// `vdi`'s image becomes hidden `base`; `vdi` and `clone` get new leaves over it.
    Clone {
        vdi: VdiUuid,
        base: ImageId,
        clone: VdiUuid,
    },
}

/// One image found in the directory.
#[derive(Debug, Clone)]
struct Node {
    header: image::Header,
    parent: Option<ImageId>,
    record: Option<VdiRecord>,
}

/// What is attached on this host.
#[derive(Debug, Default)]
struct HostState {
    attached: bool,
    /// Attached VDIs: writable or not.
    vdis: HashMap<VdiUuid, bool>,
    active: HashMap<VdiUuid, bool>,
}

/// A file SR over a directory.
#[derive(Debug)]
pub struct FileSr {
    uuid: SrUuid,
    dir: PathBuf,
    sr_type: &'static str,
    state: Mutex<HostState>,
}

fn image_name(id: ImageId) -> String {
    format!("{id}{IMAGE_EXT}")
}

impl FileSr {
    /// The SR `uuid` over directory `dir` (type `file`).
    pub fn new(uuid: SrUuid, dir: impl Into<PathBuf>) -> FileSr {
        FileSr {
            uuid,
            dir: dir.into(),
            sr_type: "file",
            state: Mutex::new(HostState::default()),
        }
    }

    /// The SR `uuid` of type `sr_type` (`ext` or `file`) from its PBD's device-config: the
    /// directory is `location`.
    pub fn from_device_config(
        uuid: SrUuid,
        sr_type: &str,
        device_config: &HashMap<String, String>,
    ) -> Result<FileSr> {
        let sr_type = match sr_type {
            "ext" => "ext",
            "file" => "file",
            t => return Err(Error::Invalid(format!("not a file SR type: {t}"))),
        };
        let dir = device_config
            .get("location")
            .ok_or_else(|| Error::Invalid("device-config has no location".into()))?;
        Ok(FileSr {
            sr_type,
            ..FileSr::new(uuid, dir)
        })
    }

    /// The SR's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn image_path(&self, id: ImageId) -> PathBuf {
        self.dir.join(image_name(id))
    }

    fn record_path(&self, id: ImageId) -> PathBuf {
        self.dir.join(format!("{id}{RECORD_EXT}"))
    }

    fn tmp_path(&self, id: ImageId) -> PathBuf {
        self.dir.join(format!("{id}{IMAGE_EXT}{TMP_SUFFIX}"))
    }

    fn journal_path(&self, id: uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{JOURNAL_PREFIX}{id}.json"))
    }

    /// This host's state and the SR's lock file, both held until dropped.
    fn lock(&self) -> Result<(parking_lot::MutexGuard<'_, HostState>, fs::File)> {
        let st = self.state.lock();
        let path = self.dir.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
            if r == 0 {
                return Ok((st, f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io(format!("locking {}", path.display()))(e));
            }
        }
    }

    fn check_attached(&self, st: &HostState) -> Result<()> {
        if st.attached {
            Ok(())
        } else {
            Err(Error::SrNotAttached(self.uuid))
        }
    }

    /// Every file name in the directory.
    fn names(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(Error::io(format!("listing {}", self.dir.display())))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(Error::io(format!("listing {}", self.dir.display())))?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_owned());
            }
        }
        Ok(out)
    }

    /// Reads every image header and VDI record.
    fn load(&self) -> Result<BTreeMap<ImageId, Node>> {
        let mut nodes = BTreeMap::new();
        for name in self.names()? {
            let Some(id) = name.strip_suffix(IMAGE_EXT) else {
                continue;
            };
            let Ok(id) = id.parse::<ImageId>() else {
                continue;
            };
            let path = self.image_path(id);
            let header = image::read_header(&path)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
            let parent = match &header.backing_file {
                None => None,
                Some(b) => Some(
                    b.strip_suffix(IMAGE_EXT)
                        .and_then(|s| s.parse::<ImageId>().ok())
                        .ok_or_else(|| {
                            Error::Corrupt(format!("{}: backing file {b:?}", path.display()))
                        })?,
                ),
            };
            let record = meta::read_json(&self.record_path(id))?;
            nodes.insert(
                id,
                Node {
                    header,
                    parent,
                    record,
                },
            );
        }
        Ok(nodes)
    }

    fn children(nodes: &BTreeMap<ImageId, Node>, id: ImageId) -> Vec<ImageId> {
        nodes
            .iter()
            .filter(|(_, n)| n.parent == Some(id))
            .map(|(c, _)| *c)
            .collect()
    }

    fn info(&self, id: ImageId, node: &Node) -> Result<VdiInfo> {
        let rec = node
            .record
            .as_ref()
            .ok_or(Error::VdiMissing(VdiUuid(id.0)))?;
        Ok(VdiInfo {
            uuid: VdiUuid(id.0),
            name_label: rec.name_label.clone(),
            virtual_size: node.header.virtual_size,
            physical_utilisation: image::physical_size(&self.image_path(id))
                .map_err(Error::io("stat"))?,
            is_a_snapshot: rec.is_a_snapshot,
            snapshot_of: rec.snapshot_of,
            parent: node.parent,
        })
    }

    fn node(nodes: &BTreeMap<ImageId, Node>, vdi: VdiUuid) -> Result<&Node> {
        nodes
            .get(&vdi.into())
            .filter(|n| n.record.is_some())
            .ok_or(Error::VdiMissing(vdi))
    }

    /// Free bytes on the file system.
    fn statvfs(&self) -> Result<(u64, u64)> {
        let c = CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid("location contains NUL".into()))?;
        // SAFETY: zeroed is a valid `statvfs` (plain integers).
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a pointer to a live `statvfs` to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(Error::io("statvfs")(std::io::Error::last_os_error()));
        }
        let frsize = s.f_frsize;
        Ok((s.f_blocks * frsize, s.f_bavail * frsize))
    }

    fn check_space(&self, needed: u64) -> Result<()> {
        let (_, free) = self.statvfs()?;
        if needed > free {
            return Err(Error::SrFull { needed, free });
        }
        Ok(())
    }

    /// Images are sparse (thin provisioned, as XenServer's ext SR does not enforce virtual
    /// allocation): a virtual size is refused only when the whole file system could never hold it.
    fn check_virtual_size(&self, virtual_size: u64) -> Result<()> {
        let (total, _) = self.statvfs()?;
        if virtual_size > total {
            return Err(Error::SrFull {
                needed: virtual_size,
                free: total,
            });
        }
        Ok(())
    }

    /// Creates image `id` through a temporary file, so that `<id>.qcow2` appears whole.
    fn create_image(&self, id: ImageId, size: u64, parent: Option<ImageId>) -> Result<()> {
        let tmp = self.tmp_path(id);
        meta::remove(&tmp)?;
        let backing = parent.map(image_name);
        image::create(&tmp, size, backing.as_deref())
            .map_err(Error::io(format!("creating {}", tmp.display())))?;
        fs::rename(&tmp, self.image_path(id)).map_err(Error::io("renaming a new image"))?;
        meta::sync_dir(&self.dir)
    }

    fn rename_image(&self, from: ImageId, to: ImageId) -> Result<()> {
        fs::rename(self.image_path(from), self.image_path(to))
            .map_err(Error::io(format!("renaming image {from} to {to}")))?;
        meta::sync_dir(&self.dir)
    }

    fn remove_image(&self, id: ImageId) -> Result<()> {
        meta::remove(&self.image_path(id))?;
        meta::remove(&self.record_path(id))?;
        meta::sync_dir(&self.dir)
    }

    fn written_by_datapath(st: &HostState, id: ImageId) -> bool {
        st.vdis.get(&VdiUuid(id.0)).copied().unwrap_or(false)
    }

    /// Finishes or rolls back the operation a journal records.
    fn replay(&self, journal: &Journal) -> Result<()> {
        match *journal {
            Journal::Snapshot { vdi, snap } => {
                let (leaf, frozen) = (
                    self.image_path(vdi.into()).exists(),
                    self.image_path(snap.into()).exists(),
                );
                match (leaf, frozen) {
                    // Not yet frozen: the snapshot never happened.
                    (true, false) => meta::remove(&self.record_path(snap.into()))?,
                    // Frozen, the new leaf missing: give the disk its leaf.
                    (false, true) => {
                        let size = image::read_header(&self.image_path(snap.into()))
                            .map_err(Error::io("reading a snapshot's header"))?
                            .virtual_size;
                        self.create_image(vdi.into(), size, Some(snap.into()))?;
                    }
                    (true, true) => {}
                    (false, false) => {
                        return Err(Error::Corrupt(format!(
                            "snapshot of {vdi}: neither image exists"
                        )))
                    }
                }
            }
            Journal::Clone { vdi, base, clone } => {
                if self.image_path(base).exists() {
                    let size = image::read_header(&self.image_path(base))
                        .map_err(Error::io("reading a clone base's header"))?
                        .virtual_size;
                    for leaf in [vdi, clone] {
                        if !self.image_path(leaf.into()).exists() {
                            self.create_image(leaf.into(), size, Some(base))?;
                        }
                    }
                } else if self.image_path(vdi.into()).exists() {
                    meta::remove(&self.record_path(clone.into()))?;
                } else {
                    return Err(Error::Corrupt(format!(
                        "clone of {vdi}: neither image exists"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes a journal, runs `steps`, removes the journal.
    fn journaled(&self, journal: &Journal, steps: impl FnOnce() -> Result<()>) -> Result<()> {
        let path = self.journal_path(uuid::Uuid::new_v4());
        meta::write_json(&path, journal)?;
        steps()?;
        meta::remove(&path)?;
        meta::sync_dir(&self.dir)
    }

    /// Scan's repairs, in order: temporary files, journals, records without images, then
    /// hidden nodes ([`Self::collect`]).
    fn repair(&self, st: &HostState) -> Result<()> {
        for name in self.names()? {
            if name.ends_with(TMP_SUFFIX) {
                meta::remove(&self.dir.join(&name))?;
            }
        }
        for name in self.names()? {
            if name.starts_with(JOURNAL_PREFIX) && name.ends_with(".json") {
                let path = self.dir.join(&name);
                if let Some(j) = meta::read_json::<Journal>(&path)? {
                    tracing::info!("SR {}: replaying {j:?}", self.uuid);
                    self.replay(&j)?;
                }
                meta::remove(&path)?;
            }
        }
        for name in self.names()? {
            if let Some(id) = name.strip_suffix(RECORD_EXT) {
                if let Ok(id) = id.parse::<ImageId>() {
                    if !self.image_path(id).exists() {
                        meta::remove(&self.dir.join(&name))?;
                    }
                }
            }
        }
        meta::sync_dir(&self.dir)?;
        self.collect(st)
    }

    /// Removes hidden nodes nothing reads through, and coalesces each hidden node that has
    /// one child into that child, until neither applies.
    fn collect(&self, st: &HostState) -> Result<()> {
        loop {
            let nodes = self.load()?;
            let mut progressed = false;
            for (id, n) in nodes.iter().filter(|(_, n)| n.record.is_none()) {
                let children = Self::children(&nodes, *id);
                match children.as_slice() {
                    [] => {
                        tracing::info!("SR {}: removing unused hidden image {id}", self.uuid);
                        self.remove_image(*id)?;
                        progressed = true;
                    }
                    [child] if !Self::written_by_datapath(st, *child) => {
                        self.coalesce(*id, n.parent, *child)?;
                        progressed = true;
                    }
                    _ => {}
                }
                if progressed {
                    break;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Moves hidden `id`'s data into its only `child` and points `child` at `id`'s parent.
    ///
    /// Each cluster `id` holds and `child` does not is copied into `child`: the child reads
    /// the same before and after (the data came from `id` through it), so a crash at any
    /// point leaves the guest's view whole and the next scan starts over. Then the child is
    /// synced, its header pointed at the grandparent (one sector write, synced), and `id`
    /// removed, having no child left.
    fn coalesce(&self, id: ImageId, parent: Option<ImageId>, child: ImageId) -> Result<()> {
        tracing::info!("SR {}: coalescing {id} into {child}", self.uuid);
        let child_path = self.image_path(child);
        let err = |what: &str| Error::io(format!("coalescing {id} into {child}: {what}"));
        {
            let top = Image::open(&child_path, true).map_err(err("opening the child"))?;
            let hidden =
                Image::open(&self.image_path(id), false).map_err(err("opening the parent"))?;
            let theirs = hidden
                .allocated_ranges()
                .map_err(err("mapping the parent"))?;
            let ours = top.allocated_ranges().map_err(err("mapping the child"))?;
            let limit = top.size().min(hidden.size());
            let mut buf = vec![0u8; COPY_CHUNK as usize];
            let mut copied = 0u32;
            for (off, len) in subtract(&theirs, &ours) {
                let end = (off + len).min(limit);
                let mut o = off;
                while o < end {
                    let n = (end - o).min(COPY_CHUNK);
                    let b = &mut buf[..n as usize];
                    top.read(b, o).map_err(err("reading"))?;
                    top.write(b, o).map_err(err("writing"))?;
                    o += n;
                    copied += 1;
                    if copied == 2 {
                        crash_point("coalesce", 1);
                    }
                }
            }
            top.flush().map_err(err("flushing the child"))?;
        }
        crash_point("coalesce", 2);
        let backing = parent.map(image_name);
        image::set_backing_file(&child_path, backing.as_deref())
            .map_err(err("pointing the child at the grandparent"))?;
        crash_point("coalesce", 3);
        self.remove_image(id)
    }

    fn list(&self) -> Result<Vec<VdiInfo>> {
        let nodes = self.load()?;
        nodes
            .iter()
            .filter(|(_, n)| n.record.is_some())
            .map(|(id, n)| self.info(*id, n))
            .collect()
    }
}

/// `a` minus `b`, both sorted lists of disjoint `(offset, len)` ranges.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(off, len) in a {
        let mut start = off;
        let end = off + len;
        for &(bo, bl) in b {
            let be = bo + bl;
            if be <= start || bo >= end {
                continue;
            }
            if bo > start {
                out.push((start, bo - start));
            }
            start = start.max(be);
        }
        if start < end {
            out.push((start, end - start));
        }
    }
    out
}

/// The union of sorted lists of ranges, sorted and merged.
fn union(lists: &[Vec<(u64, u64)>]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = lists.iter().flatten().copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in all {
        match out.last_mut() {
            Some((lo, ll)) if *lo + *ll >= o => *ll = (*ll).max(o + l - *lo),
            _ => out.push((o, l)),
        }
    }
    out
}

impl SrDriver for FileSr {
    fn sr_type(&self) -> &'static str {
        self.sr_type
    }

    fn sr_uuid(&self) -> SrUuid {
        self.uuid
    }

    fn sr_create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        if self.names()?.iter().any(|n| n != LOCK_FILE) {
            return Err(Error::SrExists(self.dir.display().to_string()));
        }
        meta::write_json(
            &self.dir.join(SR_FILE),
            &SrRecord {
                uuid: self.uuid,
                sr_type: self.sr_type.to_owned(),
            },
        )
    }

    fn sr_attach(&self) -> Result<()> {
        let rec: SrRecord = meta::read_json(&self.dir.join(SR_FILE))?
            .ok_or_else(|| Error::Invalid(format!("no SR at {}", self.dir.display())))?;
        if rec.uuid != self.uuid {
            return Err(Error::Invalid(format!(
                "{} holds SR {}, not {}",
                self.dir.display(),
                rec.uuid,
                self.uuid
            )));
        }
        let (mut st, _lock) = self.lock()?;
        st.attached = true;
        self.repair(&st)
    }

    fn sr_detach(&self) -> Result<()> {
        let (mut st, _lock) = self.lock()?;
        if let Some(v) = st.vdis.keys().next() {
            return Err(Error::VdiInUse(*v));
        }
        st.attached = false;
        Ok(())
    }

    fn sr_delete(&self) -> Result<()> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        self.repair(&st)?;
        if !self.list()?.is_empty() {
            return Err(Error::SrNotEmpty(self.uuid));
        }
        meta::remove(&self.dir.join(SR_FILE))?;
        meta::sync_dir(&self.dir)
    }

    fn sr_scan(&self) -> Result<Vec<VdiInfo>> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        self.repair(&st)?;
        self.list()
    }

    fn sr_probe(&self) -> Result<Vec<SrUuid>> {
        Ok(meta::read_json::<SrRecord>(&self.dir.join(SR_FILE))?
            .map(|r| r.uuid)
            .into_iter()
            .collect())
    }

    fn sr_stats(&self) -> Result<SrStats> {
        let (size, free) = self.statvfs()?;
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let virtual_allocation = self.list()?.iter().map(|v| v.virtual_size).sum();
        Ok(SrStats {
            physical_size: size,
            physical_utilisation: size - free,
            virtual_allocation,
        })
    }

    fn vdi_info(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        self.info(vdi.into(), Self::node(&nodes, vdi)?)
    }

    fn vdi_create(&self, name_label: &str, virtual_size: u64) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        if virtual_size == 0 || virtual_size % 512 != 0 {
            return Err(Error::Invalid(format!(
                "virtual size {virtual_size} is not a positive multiple of 512"
            )));
        }
        self.check_virtual_size(virtual_size)?;
        let vdi = VdiUuid::new();
        let rec = VdiRecord {
            name_label: name_label.to_owned(),
            is_a_snapshot: false,
            snapshot_of: None,
        };
        meta::write_json(&self.record_path(vdi.into()), &rec)?;
        self.create_image(vdi.into(), virtual_size, None)?;
        let nodes = self.load()?;
        self.info(vdi.into(), Self::node(&nodes, vdi)?)
    }

    fn vdi_destroy(&self, vdi: VdiUuid) -> Result<()> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        Self::node(&nodes, vdi)?;
        if st.vdis.contains_key(&vdi) {
            return Err(Error::VdiInUse(vdi));
        }
        if Self::children(&nodes, vdi.into()).is_empty() {
            self.remove_image(vdi.into())?;
        } else {
            // Its data stays as a hidden node while children read through it.
            meta::remove(&self.record_path(vdi.into()))?;
            meta::sync_dir(&self.dir)?;
        }
        self.collect(&st)
    }

    fn vdi_resize(&self, vdi: VdiUuid, new_size: u64) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        let node = Self::node(&nodes, vdi)?;
        let rec = node.record.as_ref().expect("node() checks the record");
        if rec.is_a_snapshot {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        if st.vdis.contains_key(&vdi) {
            return Err(Error::VdiInUse(vdi));
        }
        let from = node.header.virtual_size;
        if new_size < from {
            return Err(Error::Shrink {
                uuid: vdi,
                from,
                to: new_size,
            });
        }
        if new_size % 512 != 0 {
            return Err(Error::Invalid(format!(
                "size {new_size} is not a multiple of 512"
            )));
        }
        self.check_virtual_size(new_size)?;
        let img = Image::open(&self.image_path(vdi.into()), true)
            .map_err(Error::io("opening for resize"))?;
        img.grow(new_size).map_err(Error::io("resizing"))?;
        img.flush().map_err(Error::io("resizing"))?;
        drop(img);
        let nodes = self.load()?;
        self.info(vdi.into(), Self::node(&nodes, vdi)?)
    }

    fn vdi_snapshot(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        let node = Self::node(&nodes, vdi)?;
        let rec = node.record.clone().expect("node() checks the record");
        if rec.is_a_snapshot {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        if st.active.contains_key(&vdi) {
            return Err(Error::VdiInUse(vdi));
        }
        let size = node.header.virtual_size;
        let snap = VdiUuid::new();
        let journal = Journal::Snapshot { vdi, snap };
        self.journaled(&journal, || {
            crash_point("snapshot", 1);
            meta::write_json(
                &self.record_path(snap.into()),
                &VdiRecord {
                    name_label: rec.name_label.clone(),
                    is_a_snapshot: true,
                    snapshot_of: Some(vdi),
                },
            )?;
            crash_point("snapshot", 2);
            self.rename_image(vdi.into(), snap.into())?;
            crash_point("snapshot", 3);
            self.create_image(vdi.into(), size, Some(snap.into()))?;
            crash_point("snapshot", 4);
            Ok(())
        })?;
        let nodes = self.load()?;
        self.info(snap.into(), Self::node(&nodes, snap)?)
    }

    fn vdi_clone(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        let node = Self::node(&nodes, vdi)?;
        let rec = node.record.clone().expect("node() checks the record");
        let size = node.header.virtual_size;
        let clone = VdiUuid::new();
        let clone_rec = VdiRecord {
            name_label: rec.name_label.clone(),
            is_a_snapshot: false,
            snapshot_of: None,
        };
        if rec.is_a_snapshot {
            // A snapshot is never written: the clone is a new leaf over it. A crash leaves
            // a record without an image, which scan removes.
            meta::write_json(&self.record_path(clone.into()), &clone_rec)?;
            crash_point("clone", 1);
            self.create_image(clone.into(), size, Some(vdi.into()))?;
        } else {
            if st.active.contains_key(&vdi) {
                return Err(Error::VdiInUse(vdi));
            }
            let base = ImageId::new();
            let journal = Journal::Clone { vdi, base, clone };
            self.journaled(&journal, || {
                crash_point("clone", 1);
                meta::write_json(&self.record_path(clone.into()), &clone_rec)?;
                crash_point("clone", 2);
                self.rename_image(vdi.into(), base)?;
                crash_point("clone", 3);
                self.create_image(vdi.into(), size, Some(base))?;
                crash_point("clone", 4);
                self.create_image(clone.into(), size, Some(base))?;
                crash_point("clone", 5);
                Ok(())
            })?;
        }
        let nodes = self.load()?;
        self.info(clone.into(), Self::node(&nodes, clone)?)
    }

    fn vdi_copy(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        let (st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        let node = Self::node(&nodes, vdi)?;
        let rec = node.record.clone().expect("node() checks the record");
        let size = node.header.virtual_size;
        // What the chain holds: the union of every member's own clusters.
        let mut lists = Vec::new();
        let mut cur = Some(ImageId::from(vdi));
        while let Some(id) = cur {
            let img = Image::open(&self.image_path(id), false)
                .map_err(Error::io(format!("opening {id}")))?;
            lists.push(img.allocated_ranges().map_err(Error::io("mapping"))?);
            cur = nodes.get(&id).and_then(|n| n.parent);
        }
        let ranges = union(&lists);
        let needed: u64 = ranges.iter().map(|(_, l)| l).sum();
        self.check_space(needed)?;
        let copy = VdiUuid::new();
        meta::write_json(
            &self.record_path(copy.into()),
            &VdiRecord {
                name_label: rec.name_label,
                is_a_snapshot: false,
                snapshot_of: None,
            },
        )?;
        let tmp = self.tmp_path(copy.into());
        let err = |what: &'static str| Error::io(format!("copying {vdi}: {what}"));
        image::create(&tmp, size, None).map_err(err("creating"))?;
        {
            let src = Image::open(&self.image_path(vdi.into()), false).map_err(err("opening"))?;
            let dst = Image::open(&tmp, true).map_err(err("opening the copy"))?;
            let mut buf = vec![0u8; COPY_CHUNK as usize];
            for (off, len) in ranges {
                let end = (off + len).min(size);
                let mut o = off;
                while o < end {
                    let n = (end - o).min(COPY_CHUNK);
                    let b = &mut buf[..n as usize];
                    src.read(b, o).map_err(err("reading"))?;
                    if b.iter().any(|&x| x != 0) {
                        dst.write(b, o).map_err(err("writing"))?;
                    }
                    o += n;
                }
            }
            dst.flush().map_err(err("flushing"))?;
        }
        fs::rename(&tmp, self.image_path(copy.into())).map_err(err("renaming"))?;
        meta::sync_dir(&self.dir)?;
        let nodes = self.load()?;
        self.info(copy.into(), Self::node(&nodes, copy)?)
    }

    fn vdi_attach(&self, vdi: VdiUuid, writable: bool) -> Result<AttachInfo> {
        let (mut st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let nodes = self.load()?;
        let node = Self::node(&nodes, vdi)?;
        if writable && node.record.as_ref().is_some_and(|r| r.is_a_snapshot) {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        if st.vdis.contains_key(&vdi) {
            return Err(Error::VdiInUse(vdi));
        }
        st.vdis.insert(vdi, writable);
        Ok(AttachInfo {
            path: self.image_path(vdi.into()),
            readonly: !writable,
        })
    }

    fn vdi_detach(&self, vdi: VdiUuid) -> Result<()> {
        let (mut st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        if st.active.contains_key(&vdi) {
            return Err(Error::VdiInUse(vdi));
        }
        if st.vdis.remove(&vdi).is_none() {
            return Err(Error::Invalid(format!("VDI {vdi} is not attached")));
        }
        // A hidden parent may have waited for this leaf to stop being written.
        self.collect(&st)
    }

    fn vdi_activate(&self, vdi: VdiUuid) -> Result<()> {
        let (mut st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        let writable = *st
            .vdis
            .get(&vdi)
            .ok_or_else(|| Error::Invalid(format!("VDI {vdi} is not attached")))?;
        st.active.insert(vdi, writable);
        Ok(())
    }

    fn vdi_deactivate(&self, vdi: VdiUuid) -> Result<()> {
        let (mut st, _lock) = self.lock()?;
        self.check_attached(&st)?;
        if st.active.remove(&vdi).is_none() {
            return Err(Error::Invalid(format!("VDI {vdi} is not active")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_arithmetic() {
        assert_eq!(
            subtract(&[(0, 100), (200, 50)], &[(10, 10), (90, 120)]),
            vec![(0, 10), (20, 70), (210, 40)]
        );
        assert_eq!(subtract(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(
            union(&[vec![(0, 10), (50, 10)], vec![(5, 10), (100, 1)]]),
            vec![(0, 15), (50, 10), (100, 1)]
        );
    }
}
