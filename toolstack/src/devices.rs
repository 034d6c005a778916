//! How a real host serves a VM's devices, as libxl does: a userspace block backend
//! (`blkbackd`) started as the domain's device model for its `qdisk` disks (libxl starts QEMU
//! there), the kernel's blkback for `vbd` disks (the `block` hotplug script's
//! `physical-device`), and the kernel's netback for `vif`s with the vif hotplug script
//! (`vif-bridge`) run once the backend waits for its frontend. On the simulated host nothing
//! here runs: nobody serves the devices there.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use xen_types::DomId;

use crate::Error;

/// How long a backend may take to reach `InitWait`, and a device model to say `running`
/// (libxl waits 10 s; a dom0 under emulation on a busy machine needs more).
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a device model gets to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which backend serves a VBD, named as its backend directory (xenopsd's
/// `Device_common.Vbd` kinds, `supported-vbd-backend-kinds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VbdBackend {
    /// The kernel's blkback (`backend/vbd`, `type=phy`, a block device): xenopsd's default
    /// (`default-vbd-backend-kind=vbd`).
    #[default]
    Vbd,
    /// The domain's device model, `blkbackd` here as QEMU for libxl (`backend/qdisk`).
    Qdisk,
}

impl VbdBackend {
    /// Parses a `backend-kind` value (`vbd`, `qdisk`); `None` for a kind not served here.
    pub fn parse(s: &str) -> Option<VbdBackend> {
        match s {
            "vbd" => Some(VbdBackend::Vbd),
            "qdisk" => Some(VbdBackend::Qdisk),
            _ => None,
        }
    }

    /// The backend directory's name (`vbd`, `qdisk`).
    pub fn dir(self) -> &'static str {
        match self {
            VbdBackend::Vbd => "vbd",
            VbdBackend::Qdisk => "qdisk",
        }
    }
}

/// What serves a real host's devices.
#[derive(Debug, Clone, Default)]
pub struct DeviceHosting {
    /// `blkbackd`, started as each domain's device model for its `qdisk` disks; without it
    /// a VBD that needs a `qdisk` backend cannot be plugged.
    pub blkbackd: Option<PathBuf>,
    /// The backend of a VBD that names none (`other_config:backend-kind`) and whose storage
    /// has no preference: xenopsd's `default-vbd-backend-kind`.
    pub default_vbd_backend: VbdBackend,
    /// The vif hotplug script, run `online` with `vif=vif<domid>.<devid>` once netback waits
    /// for its frontend (libxl's `vif-bridge`); without it no script runs.
    pub vif_script: Option<PathBuf>,
    /// Do the `block` script's work for kernel-blkback disks: `physical-device` from the
    /// block device named by `params`.
    pub block_hotplug: bool,
}

impl DeviceHosting {
    /// The real host's defaults: `blkbackd` from `$PATH`, Debian's `vif-bridge`.
    pub fn real() -> Self {
        DeviceHosting {
            blkbackd: Some(PathBuf::from("blkbackd")),
            default_vbd_backend: VbdBackend::Qdisk,
            vif_script: Some(PathBuf::from("/etc/xen/scripts/vif-bridge")),
            block_hotplug: true,
        }
    }
}

/// The device models this process started, by domain (reaped when stopped).
#[derive(Debug, Default)]
pub struct DeviceModels {
    children: Mutex<HashMap<u16, Child>>,
}

/// A block device's number as the `block` script writes `physical-device`: hex
/// `major:minor`.
pub fn physical_device(path: &str) -> Result<String, Error> {
    let md = std::fs::metadata(path).map_err(|e| Error::Io(path.to_owned(), e))?;
    if !md.file_type().is_block_device() {
        return Err(Error::Device(format!(
            "{path} is not a block device (the kernel's blkback serves block devices only)"
        )));
    }
    let rdev = md.rdev();
    Ok(format!("{:x}:{:x}", libc::major(rdev), libc::minor(rdev)))
}

/// Polls `read` every 20 ms until it gives `Some`, for at most `timeout`.
pub fn wait_until<T>(
    timeout: Duration,
    mut read: impl FnMut() -> Result<Option<T>, Error>,
) -> Result<Option<T>, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = read()? {
            return Ok(Some(v));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
}

/// Whether `pid` runs: it exists and is not a zombie (a device model left by a killed xapi
/// is reparented to init, which may not reap it at once).
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // `/proc/<pid>/stat`: `pid (comm) S ...`; the state follows the last `)`.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        != Some(true)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a process id we started or that xenstore names as the
    // domain's device model.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl DeviceModels {
    /// Starts `blkbackd --domid <domid>` as the domain's device model; its output goes to
    /// `log` (appended).
    pub fn spawn(&self, blkbackd: &PathBuf, domid: DomId, log: &str) -> Result<u32, Error> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::Io(log.to_owned(), e))?;
        let err = out.try_clone().map_err(|e| Error::Io(log.to_owned(), e))?;
        let child = Command::new(blkbackd)
            .arg("--domid")
            .arg(domid.0.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Io(blkbackd.display().to_string(), e))?;
        let pid = child.id();
        self.children.lock().insert(domid.0, child);
        Ok(pid)
    }

    /// Whether the device model this process started for `domid` has exited (with its
    /// status), `None` while it runs or when there is none.
    pub fn exited(&self, domid: DomId) -> Option<std::process::ExitStatus> {
        let mut c = self.children.lock();
        let child = c.get_mut(&domid.0)?;
        child.try_wait().ok().flatten()
    }

    /// Stops the domain's device model: the child this process started, else the process
    /// `pid` (from xenstore, after a restart of xapi). SIGTERM (it closes its devices),
    /// then SIGKILL after a few seconds. Returns whether one was running.
    pub fn stop(&self, domid: DomId, pid: Option<i32>) -> bool {
        let child = self.children.lock().remove(&domid.0);
        let deadline = Instant::now() + STOP_TIMEOUT;
        match child {
            Some(mut child) => {
                let pid = child.id() as i32;
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
                signal(pid, libc::SIGTERM);
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
                true
            }
            None => {
                let Some(pid) = pid.filter(|p| *p > 1 && pid_alive(*p)) else {
                    return false;
                };
                signal(pid, libc::SIGTERM);
                while Instant::now() < deadline && pid_alive(pid) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if pid_alive(pid) {
                    signal(pid, libc::SIGKILL);
                }
                true
            }
        }
    }
}

/// Runs a vif hotplug script as libxl does (`<script> online` with `vif`, `XENBUS_PATH`,
/// `XENBUS_TYPE`, `XENBUS_BASE_PATH`, `script`), bounded by [`BACKEND_TIMEOUT`].
pub fn run_vif_script(
    script: &PathBuf,
    action: &str,
    domid: DomId,
    devid: u32,
) -> Result<(), Error> {
    let mut child = Command::new(script)
        .arg(action)
        .env("vif", format!("vif{}.{devid}", domid.0))
        .env("XENBUS_PATH", format!("backend/vif/{}/{devid}", domid.0))
        .env("XENBUS_TYPE", "vif")
        .env("XENBUS_BASE_PATH", "backend")
        .env("script", script)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Io(script.display().to_string(), e))?;
    let status = wait_until(BACKEND_TIMEOUT, || {
        child
            .try_wait()
            .map_err(|e| Error::Io(script.display().to_string(), e))
    })?;
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(Error::Device(format!(
            "{} {action} for vif{}.{devid}: {s}",
            script.display(),
            domid.0
        ))),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Device(format!(
                "{} {action} for vif{}.{devid} did not finish in {} s",
                script.display(),
                domid.0,
                BACKEND_TIMEOUT.as_secs()
            )))
        }
    }
}

/// Where `blkbackd` (as QEMU) listens for QMP, one socket per domain
/// (`qmp-libxenstat-<domid>`).
pub const QMP_DIR: &str = "/var/run/xen";

/// How long a QMP command may take (a pause waits for the requests in flight and a flush).
const QMP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one command on domain `domid`'s device model over QMP (greeting,
/// `qmp_capabilities`, the command), as libxl talks to QEMU: `x-blkbackd-pause` /
/// `x-blkbackd-resume` around a snapshot of a running guest's disk (`tap-ctl
/// pause`/`unpause` in XenServer). A QMP error comes back as [`Error::Device`].
pub fn qmp_command(
    dir: &std::path::Path,
    domid: DomId,
    command: &str,
    arguments: serde_json::Value,
) -> Result<(), Error> {
    use std::io::{BufRead, BufReader, Write};
    let path = dir.join(format!("qmp-libxenstat-{}", domid.0));
    let io = |e| Error::Io(path.display().to_string(), e);
    let conn = std::os::unix::net::UnixStream::connect(&path).map_err(io)?;
    conn.set_read_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
    let mut w = conn.try_clone().map_err(io)?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    // One JSON value per line: the greeting, then one reply per command.
    let mut next =
        |r: &mut BufReader<std::os::unix::net::UnixStream>| -> Result<serde_json::Value, Error> {
            line.clear();
            if r.read_line(&mut line).map_err(io)? == 0 {
                return Err(Error::Device(format!("{}: closed", path.display())));
            }
            serde_json::from_str(line.trim())
                .map_err(|e| Error::Device(format!("{}: bad reply {line:?}: {e}", path.display())))
        };
    next(&mut r)?;
    for cmd in [
        serde_json::json!({"execute": "qmp_capabilities"}),
        serde_json::json!({"execute": command, "arguments": arguments}),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).map_err(io)?;
        let reply = next(&mut r)?;
        if let Some(e) = reply.get("error") {
            return Err(Error::Device(format!(
                "{} on domain {}: {}",
                cmd["execute"],
                domid.0,
                e.get("desc").and_then(|d| d.as_str()).unwrap_or("error")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_device_takes_block_devices_only() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = physical_device(f.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e}");
        assert!(matches!(
            physical_device("/nonexistent/disk"),
            Err(Error::Io(..))
        ));
        if let Ok(md) = std::fs::metadata("/dev/loop0") {
            if md.file_type().is_block_device() {
                assert_eq!(physical_device("/dev/loop0").unwrap(), "7:0");
            }
        }
    }

    /// A QMP peer on `dir`'s socket for domain 7: the greeting, then `replies` in turn, one
    /// per command received; returns the commands.
    fn qmp_peer(
        dir: &std::path::Path,
        replies: Vec<&'static str>,
    ) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
        use std::io::{BufRead, BufReader, Write};
        let l = std::os::unix::net::UnixListener::bind(dir.join("qmp-libxenstat-7")).unwrap();
        std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            let mut r = BufReader::new(c);
            let mut got = Vec::new();
            for reply in replies {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(serde_json::from_str(line.trim()).unwrap());
                w.write_all(format!("{reply}\r\n").as_bytes()).unwrap();
            }
            got
        })
    }

    #[test]
    fn qmp_commands_negotiate_first_and_errors_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let peer = qmp_peer(dir.path(), vec![r#"{"return": {}}"#, r#"{"return": {}}"#]);
        let args = serde_json::json!({"device": "51712"});
        qmp_command(dir.path(), DomId(7), "x-blkbackd-pause", args.clone()).unwrap();
        let got = peer.join().unwrap();
        assert_eq!(got[0], serde_json::json!({"execute": "qmp_capabilities"}));
        assert_eq!(
            got[1],
            serde_json::json!({"execute": "x-blkbackd-pause", "arguments": args})
        );
        std::fs::remove_file(dir.path().join("qmp-libxenstat-7")).unwrap();
        let peer = qmp_peer(
            dir.path(),
            vec![
                r#"{"return": {}}"#,
                r#"{"error": {"class": "DeviceNotFound", "desc": "Device 'xvdz' not found"}}"#,
            ],
        );
        let e = qmp_command(dir.path(), DomId(7), "x-blkbackd-pause", args.clone()).unwrap_err();
        assert!(matches!(&e, Error::Device(m) if m.contains("xvdz")), "{e}");
        peer.join().unwrap();
        // No device model: an I/O error naming the socket.
        let e = qmp_command(dir.path(), DomId(8), "x-blkbackd-pause", args).unwrap_err();
        assert!(
            matches!(&e, Error::Io(p, _) if p.ends_with("qmp-libxenstat-8")),
            "{e}"
        );
    }

    #[test]
    fn a_failing_or_missing_script_is_an_error() {
        let e = run_vif_script(&PathBuf::from("/bin/false"), "online", DomId(3), 0);
        assert!(matches!(e, Err(Error::Device(_))), "{e:?}");
        let e = run_vif_script(&PathBuf::from("/nonexistent/vif"), "online", DomId(3), 0);
        assert!(matches!(e, Err(Error::Io(..))), "{e:?}");
        run_vif_script(&PathBuf::from("/bin/true"), "online", DomId(3), 0).unwrap();
    }

    #[test]
    fn stopping_a_device_model_reaps_it() {
        let m = DeviceModels::default();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dm.log");
        // `sleep` stands in for blkbackd: it takes the arguments and runs until stopped.
        let script = dir.path().join("dm");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pid = m.spawn(&script, DomId(7), log.to_str().unwrap()).unwrap();
        assert!(pid_alive(pid as i32));
        assert!(m.exited(DomId(7)).is_none());
        assert!(m.stop(DomId(7), None));
        assert!(!pid_alive(pid as i32), "stopped and reaped");
        assert!(!m.stop(DomId(7), None), "nothing left to stop");
    }
}
