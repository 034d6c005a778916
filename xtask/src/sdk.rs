//! The official XenAPI Python SDK, run on this machine, drives dom0's xapi over HTTPS
//! through the loopback port QEMU forwards to dom0's port 443 (`e2e/sdk-e2e.py`).
//!
//! dom0 prints `E2E-SDK-READY` once xapi listens there; the script then runs beside the
//! boot, and its `E2E-CHECK`/`E2E-METRIC` lines join the console's in the report.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::proc;

/// The host-side script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/sdk-e2e.py");

/// Picks a free loopback port for QEMU's `hostfwd`.
pub fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    l.local_addr().ok().map(|a| a.port())
}

/// The script's run: started on dom0's signal, its lines collected.
pub struct HostSdk {
    port: u16,
    password: String,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
}

impl HostSdk {
    /// Ready to drive `https://127.0.0.1:<port>` with root's `password` once dom0 says so.
    pub fn new(port: u16, password: &str) -> Self {
        HostSdk {
            port,
            password: password.to_owned(),
            child: None,
            lines: None,
        }
    }

    /// Looks at one console line: on `E2E-SDK-READY`, starts the script. Returns the lines
    /// the script printed since the last call.
    pub fn on_line(&mut self, line: &str) -> Vec<String> {
        if line.contains("E2E-SDK-READY") && self.lines.is_none() {
            self.start();
        }
        self.lines
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    fn start(&mut self) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(&python);
        cmd.args(["-u", SCRIPT])
            .arg(format!("https://127.0.0.1:{}", self.port))
            .arg(&self.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let (tx, rx) = mpsc::channel();
        match proc::spawn_group(&mut cmd) {
            Ok(mut child) => {
                let out = child.stdout.take().expect("piped");
                std::thread::spawn(move || {
                    for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                        eprintln!("e2e: host sdk: {l}");
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                });
                self.child = Some(child);
            }
            Err(e) => {
                let _ = tx.send(format!("E2E-CHECK sdk-start FAIL {python} {SCRIPT}: {e}"));
            }
        }
        self.lines = Some(rx);
    }

    /// After the boot: waits a little for the script, stops it, and returns its last lines
    /// (a script that never started is a failure: dom0 did not get to its part).
    pub fn finish(mut self) -> Vec<String> {
        let Some(rx) = self.lines.take() else {
            return vec!["E2E-CHECK sdk-start FAIL dom0 never printed E2E-SDK-READY".into()];
        };
        if let Some(mut child) = self.child.take() {
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            proc::kill_group(&mut child);
        }
        let mut out = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            out.push(l);
        }
        out
    }
}
