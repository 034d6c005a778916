//! The LVM SR (`type=lvm`): a volume group on the block device of `device-config:device`,
//! a thin pool in it, each VDI a thin logical volume; snapshots and clones are LVM thin
//! snapshots (no data copied), run through Debian's `lvm2` (`lvm <command>`).
//!
//! Names follow XenServer's: the volume group is `VG_XenStorage-<sr-uuid>`, a VDI's volume
//! `LV-<vdi-uuid>`. The VDI record lives in the volume's tags (`sm_name_<hex>`,
//! `sm_snapshot`, `sm_snapshot_of_<uuid>`), written by the same `lvcreate` that makes the
//! volume: every operation is one LVM command, and LVM commits its metadata atomically, so
//! a crash leaves the operation done or not done and scan has nothing to repair.
//!
//! Thin volumes do not read through each other: deleting a snapshot or its origin frees
//! only the blocks nothing else shares, with no coalesce.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;

use parking_lot::Mutex;

use crate::driver::{AttachInfo, SrDriver, SrStats};
use crate::{Error, ImageId, Result, SrUuid, VdiInfo, VdiUuid};

const VG_PREFIX: &str = "VG_XenStorage-";
const LV_PREFIX: &str = "LV-";
const POOL: &str = "thin-pool";
const TAG_NAME: &str = "sm_name_";
const TAG_SNAPSHOT: &str = "sm_snapshot";
const TAG_SNAPSHOT_OF: &str = "sm_snapshot_of_";

/// An LVM SR on one block device.
#[derive(Debug)]
pub struct LvmSr {
    uuid: SrUuid,
    device: PathBuf,
    lvm: PathBuf,
    state: Mutex<(bool, HashSet<VdiUuid>)>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One row of `lvs`.
#[derive(Debug)]
struct Lv {
    name: String,
    size: u64,
    data_percent: f64,
    origin: String,
    tags: Vec<String>,
}

impl LvmSr {
    /// The SR `uuid` from its PBD's device-config (`device`: the block device), with the
    /// `lvm` program from `PATH`.
    pub fn from_device_config(
        uuid: SrUuid,
        device_config: &HashMap<String, String>,
    ) -> Result<Self> {
        let device = device_config
            .get("device")
            .ok_or_else(|| Error::Invalid("device-config has no device".into()))?;
        Ok(LvmSr {
            uuid,
            device: device.into(),
            lvm: "lvm".into(),
            state: Mutex::new((false, HashSet::new())),
        })
    }

    /// Uses `lvm` at `path` instead of the one on `PATH`.
    pub fn with_lvm(mut self, path: impl Into<PathBuf>) -> Self {
        self.lvm = path.into();
        self
    }

    fn vg(&self) -> String {
        format!("{VG_PREFIX}{}", self.uuid)
    }

    fn lv(vdi: VdiUuid) -> String {
        format!("{LV_PREFIX}{vdi}")
    }

    fn lv_path(&self, vdi: VdiUuid) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{}", self.vg(), Self::lv(vdi)))
    }

    /// Runs `lvm <args>`; its stdout, or an error carrying its stderr (`SR_FULL` where LVM
    /// ran out of space).
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.lvm)
            .args(args)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .map_err(Error::io(format!(
                "running {} {}",
                self.lvm.display(),
                args[0]
            )))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if err.contains("Insufficient free space") || err.contains("insufficient free space") {
            return Err(Error::SrFull { needed: 0, free: 0 });
        }
        Err(Error::Io {
            what: format!("lvm {}", args.join(" ")),
            source: std::io::Error::other(err),
        })
    }

    fn check_attached(&self) -> Result<()> {
        if self.state.lock().0 {
            Ok(())
        } else {
            Err(Error::SrNotAttached(self.uuid))
        }
    }

    fn lvs(&self) -> Result<Vec<Lv>> {
        let vg = self.vg();
        let out = self.run(&[
            "lvs",
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "--separator",
            ";",
            "-o",
            "lv_name,lv_size,data_percent,origin,lv_tags",
            &vg,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.trim().split(';').collect();
                let [name, size, data, origin, tags] = f.as_slice() else {
                    return None;
                };
                Some(Lv {
                    name: (*name).to_owned(),
                    size: size.parse().ok()?,
                    data_percent: data.parse().unwrap_or(0.0),
                    origin: (*origin).to_owned(),
                    tags: tags
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .collect())
    }

    fn info(lv: &Lv) -> Option<VdiInfo> {
        let uuid: VdiUuid = lv.name.strip_prefix(LV_PREFIX)?.parse().ok()?;
        let tag = |p: &str| {
            lv.tags
                .iter()
                .find_map(|t| t.strip_prefix(p).map(str::to_owned))
        };
        Some(VdiInfo {
            uuid,
            name_label: tag(TAG_NAME).map(|h| unhex(&h)).unwrap_or_default(),
            virtual_size: lv.size,
            physical_utilisation: (lv.size as f64 * lv.data_percent / 100.0) as u64,
            is_a_snapshot: lv.tags.iter().any(|t| t == TAG_SNAPSHOT),
            snapshot_of: tag(TAG_SNAPSHOT_OF).and_then(|u| u.parse().ok()),
            parent: lv
                .origin
                .strip_prefix(LV_PREFIX)
                .and_then(|u| u.parse::<ImageId>().ok()),
        })
    }

    fn find(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        self.lvs()?
            .iter()
            .filter_map(Self::info)
            .find(|i| i.uuid == vdi)
            .ok_or(Error::VdiMissing(vdi))
    }

    fn pool_free(&self) -> Result<u64> {
        let pool = self
            .lvs()?
            .into_iter()
            .find(|l| l.name == POOL)
            .ok_or_else(|| Error::Corrupt(format!("{} has no {POOL}", self.vg())))?;
        Ok((pool.size as f64 * (1.0 - pool.data_percent / 100.0)) as u64)
    }

    fn in_use(&self, vdi: VdiUuid) -> Result<()> {
        if self.state.lock().1.contains(&vdi) {
            Err(Error::VdiInUse(vdi))
        } else {
            Ok(())
        }
    }

    /// A thin snapshot of `vdi` named for a new VDI, with `tags`.
    fn thin_snapshot(&self, vdi: VdiUuid, tags: &[String]) -> Result<VdiInfo> {
        let src = self.find(vdi)?;
        let new = VdiUuid::new();
        let (vg, lv) = (self.vg(), Self::lv(new));
        let origin = format!("{vg}/{}", Self::lv(vdi));
        let name_tag = format!("{TAG_NAME}{}", hex(&src.name_label));
        let mut args = vec!["lvcreate", "-s", "-n", &lv, "--addtag", &name_tag];
        for t in tags {
            args.extend(["--addtag", t]);
        }
        args.push(&origin);
        self.run(&args)?;
        self.find(new)
    }
}

impl SrDriver for LvmSr {
    fn sr_type(&self) -> &'static str {
        "lvm"
    }

    fn sr_uuid(&self) -> SrUuid {
        self.uuid
    }

    fn sr_create(&self) -> Result<()> {
        let dev = self.device.to_string_lossy().into_owned();
        if !self.sr_probe()?.is_empty() {
            return Err(Error::SrExists(dev));
        }
        let vg = self.vg();
        self.run(&["pvcreate", "-y", &dev])?;
        self.run(&["vgcreate", &vg, &dev])?;
        self.run(&[
            "lvcreate",
            "--type",
            "thin-pool",
            "-l",
            "90%FREE",
            "-n",
            POOL,
            &vg,
        ])
        .inspect_err(|_| {
            let _ = self.run(&["vgremove", "-f", &vg]);
            let _ = self.run(&["pvremove", &dev]);
        })?;
        Ok(())
    }

    fn sr_attach(&self) -> Result<()> {
        let vg = self.vg();
        self.run(&["vgchange", "-ay", &vg])?;
        self.state.lock().0 = true;
        Ok(())
    }

    fn sr_detach(&self) -> Result<()> {
        let mut st = self.state.lock();
        if let Some(v) = st.1.iter().next() {
            return Err(Error::VdiInUse(*v));
        }
        self.run(&["vgchange", "-an", &self.vg()])?;
        st.0 = false;
        Ok(())
    }

    fn sr_delete(&self) -> Result<()> {
        self.check_attached()?;
        if !self.sr_scan()?.is_empty() {
            return Err(Error::SrNotEmpty(self.uuid));
        }
        self.run(&["vgremove", "-f", &self.vg()])?;
        self.run(&["pvremove", &self.device.to_string_lossy()])?;
        self.state.lock().0 = false;
        Ok(())
    }

    fn sr_scan(&self) -> Result<Vec<VdiInfo>> {
        self.check_attached()?;
        Ok(self.lvs()?.iter().filter_map(Self::info).collect())
    }

    fn sr_probe(&self) -> Result<Vec<SrUuid>> {
        let dev = self.device.to_string_lossy().into_owned();
        let out = match self.run(&["pvs", "--noheadings", "-o", "vg_name", &dev]) {
            Ok(o) => o,
            // Not a physical volume (yet).
            Err(Error::Io { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix(VG_PREFIX)?.parse().ok())
            .collect())
    }

    fn sr_stats(&self) -> Result<SrStats> {
        self.check_attached()?;
        let pool = self
            .lvs()?
            .into_iter()
            .find(|l| l.name == POOL)
            .ok_or_else(|| Error::Corrupt(format!("{} has no {POOL}", self.vg())))?;
        Ok(SrStats {
            physical_size: pool.size,
            physical_utilisation: (pool.size as f64 * pool.data_percent / 100.0) as u64,
            virtual_allocation: self.sr_scan()?.iter().map(|v| v.virtual_size).sum(),
        })
    }

    fn vdi_info(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        self.check_attached()?;
        self.find(vdi)
    }

    fn vdi_create(&self, name_label: &str, virtual_size: u64) -> Result<VdiInfo> {
        self.check_attached()?;
        if virtual_size == 0 || virtual_size % 512 != 0 {
            return Err(Error::Invalid(format!(
                "virtual size {virtual_size} is not a positive multiple of 512"
            )));
        }
        let free = self.pool_free()?;
        if virtual_size > free {
            return Err(Error::SrFull {
                needed: virtual_size,
                free,
            });
        }
        let vdi = VdiUuid::new();
        let (vg, lv) = (self.vg(), Self::lv(vdi));
        let pool = format!("{vg}/{POOL}");
        let size = format!("{virtual_size}b");
        let tag = format!("{TAG_NAME}{}", hex(name_label));
        self.run(&[
            "lvcreate",
            "-V",
            &size,
            "--thinpool",
            &pool,
            "-n",
            &lv,
            "--addtag",
            &tag,
        ])?;
        self.find(vdi)
    }

    fn vdi_destroy(&self, vdi: VdiUuid) -> Result<()> {
        self.check_attached()?;
        self.find(vdi)?;
        self.in_use(vdi)?;
        self.run(&[
            "lvremove",
            "-f",
            &format!("{}/{}", self.vg(), Self::lv(vdi)),
        ])?;
        Ok(())
    }

    fn vdi_resize(&self, vdi: VdiUuid, new_size: u64) -> Result<VdiInfo> {
        self.check_attached()?;
        let info = self.find(vdi)?;
        if info.is_a_snapshot {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        self.in_use(vdi)?;
        if new_size < info.virtual_size {
            return Err(Error::Shrink {
                uuid: vdi,
                from: info.virtual_size,
                to: new_size,
            });
        }
        let lv = format!("{}/{}", self.vg(), Self::lv(vdi));
        self.run(&["lvextend", "-L", &format!("{new_size}b"), &lv])?;
        self.find(vdi)
    }

    fn vdi_snapshot(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        self.check_attached()?;
        if self.find(vdi)?.is_a_snapshot {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        self.thin_snapshot(
            vdi,
            &[TAG_SNAPSHOT.into(), format!("{TAG_SNAPSHOT_OF}{vdi}")],
        )
    }

    fn vdi_clone(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        self.check_attached()?;
        self.thin_snapshot(vdi, &[])
    }

    fn vdi_copy(&self, vdi: VdiUuid) -> Result<VdiInfo> {
        self.check_attached()?;
        let src = self.find(vdi)?;
        let dst = self.vdi_create(&src.name_label, src.virtual_size)?;
        let a = self.vdi_attach(vdi, false)?;
        let b = self.vdi_attach(dst.uuid, true)?;
        let copy = || -> std::io::Result<()> {
            let from = OpenOptions::new().read(true).open(&a.path)?;
            let to = OpenOptions::new().write(true).open(&b.path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < src.virtual_size {
                let n = (src.virtual_size - off).min(buf.len() as u64) as usize;
                from.read_exact_at(&mut buf[..n], off)?;
                if buf[..n].iter().any(|&x| x != 0) {
                    to.write_all_at(&buf[..n], off)?;
                }
                off += n as u64;
            }
            to.sync_all()
        };
        let r = copy().map_err(Error::io(format!("copying {vdi}")));
        self.vdi_detach(vdi)?;
        self.vdi_detach(dst.uuid)?;
        r?;
        self.find(dst.uuid)
    }

    fn vdi_attach(&self, vdi: VdiUuid, writable: bool) -> Result<AttachInfo> {
        self.check_attached()?;
        let info = self.find(vdi)?;
        if writable && info.is_a_snapshot {
            return Err(Error::VdiIsASnapshot(vdi));
        }
        self.in_use(vdi)?;
        // -K: thin snapshots carry LVM's activation-skip flag.
        let lv = format!("{}/{}", self.vg(), Self::lv(vdi));
        self.run(&["lvchange", "-ay", "-K", &lv])?;
        self.state.lock().1.insert(vdi);
        Ok(AttachInfo {
            path: self.lv_path(vdi),
            readonly: !writable,
        })
    }

    fn vdi_detach(&self, vdi: VdiUuid) -> Result<()> {
        self.check_attached()?;
        if !self.state.lock().1.contains(&vdi) {
            return Err(Error::Invalid(format!("VDI {vdi} is not attached")));
        }
        let lv = format!("{}/{}", self.vg(), Self::lv(vdi));
        self.run(&["lvchange", "-an", &lv])?;
        self.state.lock().1.remove(&vdi);
        Ok(())
    }

    fn vdi_activate(&self, vdi: VdiUuid) -> Result<()> {
        self.check_attached()?;
        if self.state.lock().1.contains(&vdi) {
            Ok(())
        } else {
            Err(Error::Invalid(format!("VDI {vdi} is not attached")))
        }
    }

    fn vdi_deactivate(&self, vdi: VdiUuid) -> Result<()> {
        self.vdi_activate(vdi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_tags() {
        for s in ["", "disk 0", "Ubuntu: /root (ext4) é"] {
            assert_eq!(unhex(&hex(s)), s);
            assert!(hex(s).bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let lv = Lv {
            name: "LV-6f0c2a35-5b61-4c8e-9a3f-2b1f4f7e9d10".into(),
            size: 1 << 30,
            data_percent: 25.0,
            origin: "LV-0b5e0f0e-8f7e-4c1b-8f5a-1d2e3f4a5b6c".into(),
            tags: vec![
                format!("{TAG_NAME}{}", hex("disk")),
                TAG_SNAPSHOT.into(),
                format!("{TAG_SNAPSHOT_OF}0b5e0f0e-8f7e-4c1b-8f5a-1d2e3f4a5b6c"),
            ],
        };
        let i = LvmSr::info(&lv).unwrap();
        assert_eq!(i.name_label, "disk");
        assert!(i.is_a_snapshot);
        assert_eq!(i.physical_utilisation, 1 << 28);
        assert_eq!(
            i.snapshot_of.unwrap().to_string(),
            "0b5e0f0e-8f7e-4c1b-8f5a-1d2e3f4a5b6c"
        );
        assert!(i.parent.is_some());
        // The pool and foreign volumes are not VDIs.
        let pool = Lv {
            name: POOL.into(),
            size: 1,
            data_percent: 0.0,
            origin: String::new(),
            tags: vec![],
        };
        assert!(LvmSr::info(&pool).is_none());
    }
}
