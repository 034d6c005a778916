//! Shared helpers: an in-process daemon in a temp dir, clients as dom0 or as a domain.
#![allow(dead_code)]

use std::time::Duration;

use tempfile::TempDir;
use xen_types::DomId;
use xenstore::{Client, FdTransport, WatchEvent};
use xenstored::{Config, Daemon, DaemonHandle, Quotas, SyncMode};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Env {
    pub dir: TempDir,
    pub handle: DaemonHandle,
}

pub fn config(dir: &TempDir) -> Config {
    Config {
        socket_path: dir.path().join("socket"),
        data_dir: Some(dir.path().join("data")),
        sync: SyncMode::Never,
        quotas: Quotas::default(),
        ..Config::default()
    }
}

pub fn start_with(f: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    f(&mut cfg);
    let handle = Daemon::new(cfg).unwrap().spawn().unwrap();
    Env { dir, handle }
}

pub fn start() -> Env {
    start_with(|_| {})
}

impl Env {
    pub fn dom0(&self) -> Client {
        Client::connect_socket(self.handle.socket_path()).unwrap()
    }

    pub fn dom(&self, d: u16) -> Client {
        let s = self.handle.connect_as(DomId(d)).unwrap();
        Client::with_transport(FdTransport::from(s)).unwrap()
    }
}

pub fn ev(c: &Client) -> WatchEvent {
    c.next_event_timeout(WAIT)
        .unwrap()
        .expect("watch event within the timeout")
}

/// Collects every event up to the marker event: write `marker` after the operations
/// under test; the client must watch it with token "sync". Events arrive in order, so
/// anything the operations fired comes before it.
pub fn events_until_sync(c: &Client, writer: &Client, marker: &str) -> Vec<(String, String)> {
    writer.write(marker, "x").unwrap();
    let mut v = Vec::new();
    loop {
        let e = ev(c);
        if e.token == "sync" && e.path == marker {
            return v;
        }
        v.push((e.path, e.token));
    }
}
