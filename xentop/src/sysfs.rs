//! VBD counters of the kernel's blkback, from `/sys/bus/xen-backend/devices`.
//!
//! Each disk the kernel serves is a directory `vbd-<domid>-<devid>` (`tap-` for blktap) with
//! `statistics/{oo_req,rd_req,wr_req,rd_sect,wr_sect}`, each a decimal number. A disk whose
//! counters cannot all be read is still counted, without counters (xentop prints `-`).

use std::io::ErrorKind;
use std::path::Path;

use crate::model::{Vbd, VbdBackend, VbdStats};

/// The statistics files, in [`VbdStats`] order.
pub const STAT_FILES: [&str; 5] = ["oo_req", "rd_req", "wr_req", "rd_sect", "wr_sect"];

/// The backend, domain and device of a `xen-backend` directory name (`vbd-1-51712`);
/// `None` for devices that are not disks (`vif-1-0`, `console-...`).
pub fn parse_name(name: &str) -> Option<(VbdBackend, u32, u32)> {
    let mut parts = name.splitn(3, '-');
    let backend = match parts.next()? {
        "vbd" => VbdBackend::BlkBack,
        "tap" => VbdBackend::BlkTap,
        _ => return None,
    };
    let domid = leading_u32(parts.next()?)?;
    let dev = leading_u32(parts.next()?)?;
    Some((backend, domid, dev))
}

fn leading_u32(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// A counter file's value as `sscanf("%llu")` reads it: leading blanks, then digits.
pub fn parse_counter(text: &str) -> Option<u64> {
    let t = text.trim_start();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    t[..end].parse().ok()
}

/// Reads the counters under one device directory; `None` when any is missing or unreadable.
pub fn read_stats(dev_dir: &Path) -> Option<VbdStats> {
    let mut v = [0u64; 5];
    for (slot, file) in v.iter_mut().zip(STAT_FILES) {
        let text = std::fs::read(dev_dir.join("statistics").join(file)).ok()?;
        // libxenstat reads at most 255 bytes.
        let text = &text[..text.len().min(255)];
        *slot = parse_counter(std::str::from_utf8(text).ok()?)?;
    }
    Some(VbdStats {
        oo_reqs: v[0],
        rd_reqs: v[1],
        wr_reqs: v[2],
        rd_sects: v[3],
        wr_sects: v[4],
    })
}

/// Every disk under `dir` with its domain id, in name order. A missing `dir` (the kernel's
/// backends are not loaded) has none.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<(u32, Vbd)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(e?.file_name());
    }
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| {
            let n = n.to_str()?;
            let (backend, domid, dev) = parse_name(n)?;
            let stats = read_stats(&dir.join(n));
            Some((
                domid,
                Vbd {
                    backend,
                    dev,
                    stats,
                },
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(dir: &Path, name: &str, values: &[&str]) {
        let s = dir.join(name).join("statistics");
        std::fs::create_dir_all(&s).unwrap();
        for (f, v) in STAT_FILES.iter().zip(values) {
            std::fs::write(s.join(f), v).unwrap();
        }
    }

    #[test]
    fn names_of_disks_only() {
        assert_eq!(
            parse_name("vbd-1-51712"),
            Some((VbdBackend::BlkBack, 1, 51712))
        );
        assert_eq!(parse_name("tap-2-768"), Some((VbdBackend::BlkTap, 2, 768)));
        for n in [
            "vif-1-0",
            "vbd-1",
            "vbd--1",
            "vbd-x-1",
            "vbd3-1-2",
            "console-1-0",
            "",
        ] {
            assert_eq!(parse_name(n), None, "{n}");
        }
    }

    #[test]
    fn counters_read_as_sscanf_does() {
        assert_eq!(parse_counter("42\n"), Some(42));
        assert_eq!(parse_counter("  7 trailing"), Some(7));
        assert_eq!(parse_counter("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_counter("18446744073709551616"), None);
        assert_eq!(parse_counter("abc"), None);
        assert_eq!(parse_counter(""), None);
        assert_eq!(parse_counter("-1"), None);
    }

    #[test]
    fn devices_with_unreadable_counters_are_kept_without_them() {
        let dir = tempfile::tempdir().unwrap();
        device(dir.path(), "vbd-1-51712", &["1", "2", "3", "4", "5"]);
        device(dir.path(), "vbd-1-51728", &["1", "2", "x", "4", "5"]);
        device(dir.path(), "vbd-2-51712", &["1", "2", "3", "4"]);
        device(dir.path(), "vif-1-0", &["1", "2", "3", "4", "5"]);
        std::fs::create_dir_all(dir.path().join("vbd-garbage")).unwrap();
        let all = read_all(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            (
                1,
                Vbd {
                    backend: VbdBackend::BlkBack,
                    dev: 51712,
                    stats: Some(VbdStats {
                        oo_reqs: 1,
                        rd_reqs: 2,
                        wr_reqs: 3,
                        rd_sects: 4,
                        wr_sects: 5
                    })
                }
            )
        );
        assert_eq!((all[1].0, all[1].1.dev, all[1].1.stats), (1, 51728, None));
        assert_eq!((all[2].0, all[2].1.stats), (2, None));
        assert!(read_all(&dir.path().join("missing")).unwrap().is_empty());
        // A file where the directory should be is an error, not "no disks".
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(read_all(&dir.path().join("file")).is_err());
    }
}
