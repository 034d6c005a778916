//! Debian packages: which ones, fetched with `apt-get download` into the cache and unpacked
//! with `dpkg -x`, both only when not already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{io as ioerr, Error, Result};
use crate::proc::{self, Deadline};

/// Packages unpacked into the dom0 tree, besides the kernel image.
pub const PACKAGES: &[&str] = &[
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoollog1",
    "libxentoolcore1",
    "libyajl2",
    "busybox-static",
];

/// Picks the `linux-image-<version>` package out of `apt-cache depends linux-image-amd64`.
pub fn kernel_package_from_depends(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let dep = l
            .trim()
            .strip_prefix("Depends:")?
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        (dep.starts_with("linux-image-") && dep.ends_with("-amd64") && dep != "linux-image-amd64")
            .then(|| dep.to_string())
    })
}

/// The kernel version (`6.1.0-NN-amd64`) of a `linux-image-6.1.0-NN-amd64` package name.
pub fn kernel_version(package: &str) -> &str {
    package.trim_start_matches("linux-image-")
}

/// Resolves the kernel package that the `linux-image-amd64` metapackage currently depends on.
pub fn resolve_kernel(deadline: Deadline) -> Result<String> {
    let out = proc::output(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        deadline,
    )?;
    let text = String::from_utf8_lossy(&out);
    kernel_package_from_depends(&text).ok_or_else(|| {
        Error::Other(format!(
            "apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package (run apt-get update?):\n{text}"
        ))
    })
}

/// The `.deb` in `dir` for `package`, if downloaded (`apt-get download` names files
/// `<package>_<version>_<arch>.deb`).
pub fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads whichever of `packages` has no `.deb` in `dir` yet; returns every package's `.deb`.
pub fn download(dir: &Path, packages: &[String], deadline: Deadline) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(ioerr("create", dir))?;
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| find_deb(dir, p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "e2e: apt-get download {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        proc::run(
            Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(dir),
            deadline,
        )?;
    }
    packages
        .iter()
        .map(|p| {
            find_deb(dir, p)
                .ok_or_else(|| Error::Other(format!("apt-get download left no .deb for {p}")))
        })
        .collect()
}

/// Unpacks `debs` into `root` with `dpkg -x`, unless `root` already holds exactly these.
/// Returns whether anything was unpacked.
pub fn unpack(debs: &[PathBuf], root: &Path, deadline: Deadline) -> Result<bool> {
    let stamp = root.join(".xtask-debs");
    let want: String = debs
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| format!("{}\n", n.to_string_lossy()))
        .collect();
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(false);
    }
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(ioerr("remove", root))?;
    }
    std::fs::create_dir_all(root).map_err(ioerr("create", root))?;
    for deb in debs {
        proc::run(Command::new("dpkg").arg("-x").arg(deb).arg(root), deadline)?;
    }
    std::fs::write(&stamp, want).map_err(ioerr("write", &stamp))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_is_taken_from_the_metapackage_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_package_from_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_version("linux-image-6.1.0-56-amd64"),
            "6.1.0-56-amd64"
        );
        assert_eq!(kernel_package_from_depends("linux-image-amd64\n"), None);
        assert_eq!(
            kernel_package_from_depends("x\n  Depends: linux-image-6.1.0-9-amd64-unsigned\n"),
            None
        );
    }

    #[test]
    fn find_deb_matches_the_package_name_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "libxenstore4_4.17_amd64.deb",
            "libxenstore4-dev_4.17_amd64.deb",
            "xen-utils-4.17_4.17_amd64.deb",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let name =
            |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(
            name(find_deb(dir.path(), "libxenstore4")).as_deref(),
            Some("libxenstore4_4.17_amd64.deb")
        );
        assert_eq!(
            name(find_deb(dir.path(), "xen-utils-4.17")).as_deref(),
            Some("xen-utils-4.17_4.17_amd64.deb")
        );
        assert_eq!(find_deb(dir.path(), "xen-utils"), None);
        assert_eq!(find_deb(&dir.path().join("nope"), "xen-utils"), None);
    }
}
