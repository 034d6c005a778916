//! A full file system under the journal: a change that cannot be written is answered
//! `EIO` and changes nothing a client can see (value, children, watch events), before or
//! after a restart; once space returns, changes are stored again.
//!
//! Mounts a 64 KiB tmpfs, which needs root (`CAP_SYS_ADMIN`); elsewhere the test prints
//! SKIP with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_types::Errno;
use xenstore::Client;
use xenstored::{Config, Daemon, DaemonHandle, SyncMode};

const WAIT: Duration = Duration::from_secs(10);

/// A tmpfs mounted for the test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn start(socket: PathBuf, data: &Path) -> DaemonHandle {
    let cfg = Config {
        socket_path: socket,
        data_dir: Some(data.to_path_buf()),
        sync: SyncMode::Always,
        ..Config::default()
    };
    Daemon::new(cfg).unwrap().spawn().unwrap()
}

fn next_event(c: &Client) -> String {
    c.next_event_timeout(WAIT)
        .unwrap()
        .expect("a watch event")
        .path
}

#[test]
fn a_full_disk_fails_changes_with_eio_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let _fs = match Tmpfs::mount(&mnt, "64k") {
        Ok(fs) => fs,
        Err(e) => {
            println!("SKIP a_full_disk_fails_changes_with_eio: cannot mount a tmpfs: {e}");
            return;
        }
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 24 << 10]).unwrap();
    let data = mnt.join("data");
    let h = start(tmp.path().join("s1"), &data);
    let c = Client::connect_socket(h.socket_path()).unwrap();
    let w = Client::connect_socket(h.socket_path()).unwrap();
    c.mkdir("/fill").unwrap();
    w.watch("/fill", "t").unwrap();
    assert_eq!(next_event(&w), "/fill");

    // Fill the disk with 1 KiB values until a write is refused.
    let value = vec![b'v'; 1024];
    let mut stored = Vec::new();
    let failed = loop {
        let p = format!("/fill/{}", stored.len());
        match c.write(&p, &value) {
            Ok(()) => {
                assert_eq!(next_event(&w), p);
                stored.push(p);
            }
            Err(e) if e.errno() == Some(Errno::EIO) => break p,
            Err(e) => panic!("writing {p}: {e}"),
        }
        assert!(stored.len() < 200, "64 KiB took 200 KiB of values");
    };
    assert!(!c.exists(&failed).unwrap(), "{failed} was stored");
    assert_eq!(c.directory("/fill").unwrap().len(), stored.len());
    // A transaction commit on the full disk: refused, nothing of it applied.
    let t = c.transaction_start().unwrap();
    t.write("/fill/tx", vec![b't'; 2048]).unwrap();
    t.rm(&stored[0]).unwrap();
    assert_eq!(t.commit().unwrap_err().errno(), Some(Errno::EIO));
    assert!(!c.exists("/fill/tx").unwrap());
    assert_eq!(c.read(&stored[0]).unwrap(), value);

    // Space returns: changes are stored again, and the first event is for one of them.
    std::fs::remove_file(&filler).unwrap();
    c.write("/fill/after", "1").unwrap();
    assert_eq!(next_event(&w), "/fill/after");
    drop((c, w));
    h.shutdown().unwrap();

    // After a restart: every acknowledged change, nothing refused.
    let h = start(tmp.path().join("s2"), &data);
    let c = Client::connect_socket(h.socket_path()).unwrap();
    let mut want: Vec<String> = stored
        .iter()
        .map(|p| p["/fill/".len()..].to_string())
        .collect();
    want.push("after".into());
    assert_eq!(c.directory("/fill").unwrap(), want);
    assert_eq!(c.read(stored.last().unwrap()).unwrap(), value);
    drop(c);
    h.shutdown().unwrap();
}
