//! Starts the `xapi` binary for tests.

#![allow(dead_code)]

pub mod xe;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use toolstack::client::{Client, Endpoint};

pub const PASSWORD: &str = "s3cret pass";

/// A running daemon, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub http: u16,
    pub https: u16,
    pub socket: PathBuf,
    /// The hypervisor xapi said it uses (`xen` or `xen-sim`).
    pub hypervisor: String,
    /// What it printed before `ready`.
    pub banner: Vec<String>,
}

impl Daemon {
    /// Starts xapi on free loopback ports with `state` as its state folder.
    pub fn start(state: &Path) -> Daemon {
        Self::start_with(state, &[])
    }

    /// [`Daemon::start`] with extra arguments.
    pub fn start_with(state: &Path, extra: &[&str]) -> Daemon {
        let socket = state.join("xapi.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_xapi"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
                "--socket",
            ])
            .arg(&socket)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn xapi");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut http, mut https) = (0, 0);
        let (mut hypervisor, mut banner) = (String::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("xapi did not report ready within 60 s");
            });
            let port = |l: &str| l.rsplit(':').next().unwrap().parse::<u16>().unwrap();
            banner.push(line.clone());
            if let Some(h) = line.strip_prefix("hypervisor: ") {
                hypervisor = h.to_owned();
            } else if let Some(a) = line.strip_prefix("listening on http://") {
                http = port(a);
            } else if let Some(a) = line.strip_prefix("listening on https://") {
                https = port(a);
            } else if line == "ready" {
                break;
            }
        }
        Daemon {
            child,
            http,
            https,
            socket,
            hypervisor,
            banner,
        }
    }

    /// A logged-in client over plain HTTP.
    pub fn client(&self) -> Client {
        let mut c = Client::new(Endpoint::Tcp("127.0.0.1".into(), self.http));
        c.login("root", PASSWORD).expect("login");
        c
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child with a deadline; kills it and panics on timeout.
pub fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "child timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
