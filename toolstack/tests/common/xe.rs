//! Runs the `xe` program against a test daemon's socket as root.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{wait_output, Daemon, PASSWORD};

/// What one `xe` run did.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `xe args` (60 s at most), its output trimmed.
pub fn xe(d: &Daemon, args: &[&str]) -> Out {
    let mut o = raw(d, args);
    o.stdout = o.stdout.trim().to_owned();
    o
}

/// Runs `xe args` (60 s at most), its output as printed.
pub fn raw(d: &Daemon, args: &[&str]) -> Out {
    let child = Command::new(env!("CARGO_BIN_EXE_xe"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["-u", "root", "-pw", PASSWORD])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(60));
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `xe args`, which must succeed: its trimmed output.
pub fn ok(d: &Daemon, args: &[&str]) -> String {
    ok_raw(d, args).trim().to_owned()
}

/// Runs `xe args`, which must succeed: its output as printed.
pub fn ok_raw(d: &Daemon, args: &[&str]) -> String {
    let o = raw(d, args);
    assert!(o.ok, "xe {args:?} failed: {}", o.stderr);
    o.stdout
}
