//! Assembling the dom0 and guest initramfs images.
//!
//! dom0's image is two concatenated cpio archives (Linux unpacks both): a base built from the
//! Debian packages, cached across runs, and a small per-run part with `/init`, the test binaries
//! and the project's programs.

use std::collections::BTreeSet;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Archive;
use crate::error::{io as ioerr, Error, Result};
use crate::proc::{self, Deadline};

/// dom0's /init.
pub const INIT_DOM0: &str = include_str!("../../e2e/init-dom0.sh");
/// Minimal block hotplug script (`--hotplug e2e`).
pub const BLOCK_SCRIPT: &str = include_str!("../../e2e/block-e2e.sh");
/// Minimal vif hotplug script (`--hotplug e2e`).
pub const VIF_SCRIPT: &str = include_str!("../../e2e/vif-e2e.sh");
/// The PV guest's /init.
pub const INIT_DOMU: &str = include_str!("../../e2e/init-domu.sh");

/// Kernel modules dom0 loads (paths under `lib/modules/<version>/kernel`, without `.ko`).
pub const DOM0_MODULES: &[&str] = &[
    "drivers/xen/xen-privcmd",
    "drivers/xen/xenfs/xenfs",
    "drivers/xen/xen-evtchn",
    "drivers/xen/xen-gntdev",
    "drivers/xen/xen-gntalloc",
    "drivers/block/xen-blkback/xen-blkback",
    "drivers/net/xen-netback/xen-netback",
    "drivers/block/loop",
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    // The NIC on QEMU's user network that carries the host's XenAPI SDK to xapi.
    "drivers/net/ethernet/intel/e1000/e1000",
    // Tap devices, for the project's netbackd (the `netback` part loads it).
    "drivers/net/tun",
];

/// Kernel modules the guest loads.
pub const DOMU_MODULES: &[&str] = &["drivers/block/xen-blkfront", "drivers/net/xen-netfront"];

/// Bump when the layout of the cached base changes, to rebuild it.
const BASE_FORMAT: u32 = 3;

fn add_modules(a: &mut Archive, root: &Path, kver: &str, modules: &[&str]) -> Result<()> {
    for m in modules {
        let rel = format!("lib/modules/{kver}/kernel/{m}.ko");
        a.file(&format!("usr/{rel}"), &root.join(&rel))?;
    }
    Ok(())
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Where a host library path lands in the archive, whose `/lib` and `/lib64` link to `usr/`.
pub fn archive_path_of_host_lib(path: &str) -> String {
    let p = path.trim_start_matches('/');
    for (from, to) in [("lib/", "usr/lib/"), ("lib64/", "usr/lib64/")] {
        if let Some(rest) = p.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    p.to_string()
}

/// The library paths in `ldd` output (`name => /path (addr)` and `/path (addr)` lines);
/// `Err` names the libraries ldd could not find.
pub fn parse_ldd(out: &str) -> std::result::Result<Vec<String>, Vec<String>> {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                missing.push(name.trim().to_string());
            } else if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(path.to_string());
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(path.to_string());
        }
    }
    if missing.is_empty() {
        Ok(libs)
    } else {
        Err(missing)
    }
}

/// Adds the host libraries that the dynamic ELF files among `files` need and `have` lacks.
/// Libraries found under `root` (the unpacked packages) are expected to be in the archive already.
fn add_needed_libs(
    a: &mut Archive,
    files: &[PathBuf],
    root: &Path,
    have: &BTreeSet<String>,
    deadline: Deadline,
) -> Result<()> {
    let ld_path = format!(
        "{0}/usr/lib/x86_64-linux-gnu:{0}/usr/lib/xen-4.17/lib",
        root.display()
    );
    let mut wanted = BTreeSet::new();
    for f in files.iter().filter(|f| is_elf(f)) {
        let Ok(out) = proc::output(
            Command::new("ldd").arg(f).env("LD_LIBRARY_PATH", &ld_path),
            deadline,
        ) else {
            continue; // static executables and non-executable ELF objects
        };
        match parse_ldd(&String::from_utf8_lossy(&out)) {
            Ok(libs) => wanted.extend(libs),
            Err(missing) => eprintln!(
                "e2e: warning: {}: libraries not found: {}",
                f.display(),
                missing.join(" ")
            ),
        }
    }
    for lib in wanted {
        if Path::new(&lib).starts_with(root) {
            continue;
        }
        let at = archive_path_of_host_lib(&lib);
        if !have.contains(&at) && !a.contains(&at) {
            let real = std::fs::canonicalize(&lib).map_err(ioerr("resolve", &lib))?;
            a.file(&at, &real)?;
        }
    }
    Ok(())
}

/// Writes `a` to `path` (uncompressed: unpacking is faster than gunzip under emulation).
pub fn write(a: &Archive, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(ioerr("create", &tmp))?);
    a.write_to(&mut out)?;
    out.flush().map_err(ioerr("write", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(ioerr("rename", &tmp))
}

/// Builds (or reuses) the cached dom0 base archive; returns its path and member list.
pub fn dom0_base(
    root: &Path,
    kver: &str,
    cache: &Path,
    deadline: Deadline,
) -> Result<(PathBuf, BTreeSet<String>)> {
    let out = cache.join(format!("dom0-base-{kver}.cpio"));
    let list = cache.join(format!("dom0-base-{kver}.paths"));
    let stamp = format!(
        "format {BASE_FORMAT}\nmodules {DOM0_MODULES:?}\n{}",
        std::fs::read_to_string(root.join(".xtask-debs")).unwrap_or_default()
    );
    let stamp_path = cache.join(format!("dom0-base-{kver}.stamp"));
    if out.is_file() && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        if let Ok(paths) = std::fs::read_to_string(&list) {
            return Ok((out, paths.lines().map(str::to_string).collect()));
        }
    }
    eprintln!("e2e: assembling the dom0 base initramfs");
    let mut a = Archive::new();
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "boot",
        "root",
        "usr/lib64",
        "etc",
    ] {
        a.dir(d);
    }
    a.symlink("lib", "usr/lib");
    a.symlink("lib64", "usr/lib64");
    a.symlink("bin", "usr/bin");
    a.symlink("sbin", "usr/sbin");
    a.file("usr/bin/busybox", &root.join("bin/busybox"))?;
    add_modules(&mut a, root, kver, DOM0_MODULES)?;
    for (at, from) in [
        ("usr/sbin", "usr/sbin"),
        ("usr/bin", "usr/bin"),
        ("usr/lib/xen-4.17", "usr/lib/xen-4.17"),
        ("usr/lib/xen-common", "usr/lib/xen-common"),
        ("usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"),
        ("etc/xen", "etc/xen"),
        ("etc/default", "etc/default"),
    ] {
        if root.join(from).exists() {
            a.tree(at, &root.join(from))?;
        }
    }
    // The hotplug scripts run bash and flock; xl dlopens libgcc_s (ldd cannot see that).
    a.file("usr/bin/bash", Path::new("/usr/bin/bash"))?;
    a.file("usr/bin/flock", Path::new("/usr/bin/flock"))?;
    let gcc_s = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1")
        .map_err(ioerr("find", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"))?;
    a.file("usr/lib/x86_64-linux-gnu/libgcc_s.so.1", &gcc_s)?;
    a.bytes("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    a.bytes("etc/group", 0o644, "root:x:0:\n");
    // Python tools and pygrub are not used (no Python in dom0).
    a.retain(|p| !p.contains("/python") && !p.ends_with("pygrub"));
    let files: Vec<PathBuf> = a.sources().map(Path::to_path_buf).collect();
    add_needed_libs(&mut a, &files, root, &BTreeSet::new(), deadline)?;
    write(&a, &out)?;
    let paths: String = a.paths().map(|p| format!("{p}\n")).collect();
    std::fs::write(&list, &paths).map_err(ioerr("write", &list))?;
    std::fs::write(&stamp_path, stamp).map_err(ioerr("write", &stamp_path))?;
    Ok((out, a.paths().map(str::to_string).collect()))
}

/// Builds the guest's initramfs: busybox, /init, the two frontend modules, and `tools`
/// (`(name, static executable)`) in `/bin`.
pub fn domu(
    root: &Path,
    kver: &str,
    tools: &[(String, PathBuf)],
    parts: &[Part],
) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for d in ["proc", "sys", "dev", "tmp"] {
        a.dir(d);
    }
    a.symlink("lib", "usr/lib");
    a.file("bin/busybox", &root.join("bin/busybox"))?;
    for (name, exe) in tools {
        a.file(&format!("bin/{name}"), exe)?;
    }
    a.bytes("init", 0o755, INIT_DOMU);
    for p in parts {
        a.bytes(&format!("parts/{}.sh", p.name), 0o755, p.script.clone());
    }
    add_modules(&mut a, root, kver, DOMU_MODULES)?;
    let mut out = Vec::new();
    a.write_to(&mut out)?;
    Ok(out)
}

/// The per-run part of dom0's image.
pub struct Dom0Extra<'a> {
    /// Shell variables for `/e2e/env`.
    pub env: String,
    /// `(name, executable)` of each test binary, to `/e2e/tests/<name>`.
    pub tests: &'a [(String, PathBuf)],
    /// `(name, executable)` of each program, to `/e2e/bin/<name>`.
    pub bins: &'a [(String, PathBuf)],
    /// The guest's initramfs.
    pub domu_initrd: Vec<u8>,
    /// The guest's kernel.
    pub domu_kernel: PathBuf,
    /// dom0's part scripts, to `/e2e/parts/<name>.sh`.
    pub parts: &'a [Part],
}

/// A part of the run kept in its own script: `e2e/parts/<name>.sh` runs in dom0 (sourced in a
/// subshell by `init-dom0.sh`, after the xapi section, when `--only` allows `<name>`), and
/// `e2e/guest-parts/<name>.sh` in a guest started with `e2e_part=<name>` on its command line.
pub struct Part {
    /// The file's name without `.sh`.
    pub name: String,
    /// The script.
    pub script: String,
}

/// The scripts of `e2e/<dir>/*.sh`, sorted by name (read at run time, so a new part needs no
/// change here).
pub fn parts(dir: &str) -> Result<Vec<Part>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e")
        .join(dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ioerr("read", &dir)(e)),
    };
    for e in entries {
        let path = e.map_err(ioerr("read", &dir))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sh"))
        else {
            continue;
        };
        let script = std::fs::read_to_string(&path).map_err(ioerr("read", &path))?;
        out.push(Part {
            name: name.to_string(),
            script,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Writes dom0's complete image: the base followed by the per-run archive.
pub fn dom0(
    base: &Path,
    base_paths: &BTreeSet<String>,
    root: &Path,
    extra: Dom0Extra<'_>,
    out: &Path,
    deadline: Deadline,
) -> Result<()> {
    let mut a = Archive::new();
    a.bytes("init", 0o755, INIT_DOM0);
    a.bytes("e2e/env", 0o644, extra.env);
    a.bytes("e2e/block-e2e", 0o755, BLOCK_SCRIPT);
    a.bytes("e2e/vif-e2e", 0o755, VIF_SCRIPT);
    a.dir("e2e/tests");
    a.dir("e2e/bin");
    a.dir("e2e/parts");
    for p in extra.parts {
        a.bytes(&format!("e2e/parts/{}.sh", p.name), 0o755, p.script.clone());
    }
    for (name, exe) in extra.tests {
        a.file(&format!("e2e/tests/{name}"), exe)?;
    }
    for (name, exe) in extra.bins {
        a.file(&format!("e2e/bin/{name}"), exe)?;
    }
    a.bytes("boot/domu-initrd", 0o644, extra.domu_initrd);
    a.file("boot/domu-kernel", &extra.domu_kernel)?;
    let exes: Vec<PathBuf> = extra
        .tests
        .iter()
        .chain(extra.bins)
        .map(|(_, p)| p.clone())
        .collect();
    add_needed_libs(&mut a, &exes, root, base_paths, deadline)?;
    let mut w = BufWriter::new(std::fs::File::create(out).map_err(ioerr("create", out))?);
    let mut b = std::fs::File::open(base).map_err(ioerr("open", base))?;
    let base_len = std::io::copy(&mut b, &mut w).map_err(ioerr("copy", base))?;
    if base_len % 4 != 0 {
        return Err(Error::Other(format!(
            "{} is not a whole cpio archive",
            base.display()
        )));
    }
    a.write_to(&mut w)?;
    w.flush().map_err(ioerr("write", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibxenctrl.so.4.17 => /r/usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/r/usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x2)\n"),
            Err(vec!["libfoo.so.1".into()])
        );
    }

    #[test]
    fn host_libraries_land_under_usr() {
        assert_eq!(
            archive_path_of_host_lib("/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            archive_path_of_host_lib("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(
            archive_path_of_host_lib("/usr/lib/x86_64-linux-gnu/libm.so.6"),
            "usr/lib/x86_64-linux-gnu/libm.so.6"
        );
    }

    #[test]
    fn init_scripts_speak_the_protocol() {
        for marker in [
            "E2E-CHECK",
            "E2E-TEST",
            "E2E-DONE",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ] {
            assert!(INIT_DOM0.contains(marker), "init-dom0.sh lacks {marker}");
        }
        assert!(INIT_DOMU.contains("E2E-DOMU-UP"));
    }
}
