//! The real `xenstored` binary: CLI, socket, persistence across `kill -9` and restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xenstore::Client;

const WAIT: Duration = Duration::from_secs(20);

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_socket(sock: &Path) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(c) = Client::connect_socket(sock) {
            return c;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn(dir: &Path, extra: &[&str]) -> (Daemon, Client) {
    let sock = dir.join("socket");
    let child = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .arg("-N")
        .arg("--socket")
        .arg(&sock)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let d = Daemon { child };
    let c = wait_for_socket(&sock);
    (d, c)
}

fn kill9(mut d: Daemon) {
    // SAFETY-free: Child::kill sends SIGKILL.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (d, xs) = spawn(dir.path(), &["--sync", "never"]);
    for i in 0..500 {
        xs.write(&format!("/persist/n{i}"), format!("v{i}"))
            .unwrap();
    }
    xs.set_perms(
        "/persist/n1",
        &["n5".parse().unwrap(), "r7".parse().unwrap()],
    )
    .unwrap();
    xs.rm("/persist/n2").unwrap();
    xs.transaction(|tx| {
        tx.write("/persist/tx", "committed")?;
        tx.rm("/persist/n3")
    })
    .unwrap();
    let open = xs.transaction_start().unwrap();
    open.write("/persist/uncommitted", "no").unwrap();
    kill9(d);
    drop(open);
    let (_d, xs) = spawn(dir.path(), &["--sync", "never"]);
    assert_eq!(xs.read("/persist/n499").unwrap(), b"v499");
    assert_eq!(xs.read("/persist/tx").unwrap(), b"committed");
    assert!(!xs.exists("/persist/n2").unwrap());
    assert!(!xs.exists("/persist/n3").unwrap());
    assert!(!xs.exists("/persist/uncommitted").unwrap());
    assert_eq!(
        xs.get_perms("/persist/n1").unwrap(),
        vec!["n5".parse().unwrap(), "r7".parse().unwrap()]
    );
    assert_eq!(xs.directory("/persist").unwrap().len(), 500 - 2 + 1);
    // Generations keep increasing across restarts (DIRECTORY_PART users compare them).
    let (g1, _) = xs.directory_part("/persist", 0).unwrap();
    xs.write("/persist/after", "").unwrap();
    let (g2, _) = xs.directory_part("/persist", 0).unwrap();
    assert!(g2 > g1);
}

#[test]
fn snapshots_compact_the_journal_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--sync", "always", "--snapshot-bytes", "20000"];
    let (d, xs) = spawn(dir.path(), &args);
    for round in 0..5 {
        for i in 0..100 {
            xs.write(&format!("/s/{i}"), format!("round{round}"))
                .unwrap();
        }
    }
    xs.rm("/s/7").unwrap();
    // Snapshots are written in the background: wait (bounded) for one to be in place and
    // the journals it replaces to be gone, then crash.
    let journals = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("journal.")
            })
            .count()
    };
    let deadline = Instant::now() + WAIT;
    while !(dir.path().join("snapshot").exists() && journals(dir.path()) <= 3) {
        assert!(
            Instant::now() < deadline,
            "no snapshot, or old journals kept ({})",
            journals(dir.path())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(d);
    let (_d, xs) = spawn(dir.path(), &args);
    assert_eq!(xs.read("/s/99").unwrap(), b"round4");
    assert!(!xs.exists("/s/7").unwrap());
    assert_eq!(xs.directory("/s").unwrap().len(), 99);
}

#[test]
fn in_memory_mode_forgets_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file: PathBuf = dir.path().join("pid");
    let pf = pid_file.to_str().unwrap().to_string();
    let (mut d, xs) = spawn(dir.path(), &["-I", "-F", &pf]);
    xs.write("/volatile", "x").unwrap();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid as u32, d.child.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let (_d, xs) = spawn(dir.path(), &["-I"]);
    assert!(!xs.exists("/volatile").unwrap());
    assert!(xs.exists("/tool/xenstored").unwrap());
}

#[test]
fn forks_into_the_background_with_the_socket_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run").join("socket");
    let pid_file = dir.path().join("pid");
    let status = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .env("XENSTORED_RUNDIR", dir.path().join("run"))
        .arg("-F")
        .arg(&pid_file)
        .status()
        .unwrap();
    assert!(status.success());
    // The parent returned after binding: the socket accepts at once.
    let xs = Client::connect_socket(&sock).unwrap();
    xs.write("/bg", "1").unwrap();
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        if let Ok(s) = std::fs::read_to_string(&pid_file) {
            if let Ok(p) = s.trim().parse::<i32>() {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    // A second daemon on a live socket refuses to start.
    let _ = std::fs::remove_file(&pid_file);
}

#[test]
fn refuses_a_socket_already_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, _xs) = spawn(dir.path(), &["-I"]);
    let out = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .args(["-N", "-I", "--socket"])
        .arg(dir.path().join("socket"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another xenstored"));
}
