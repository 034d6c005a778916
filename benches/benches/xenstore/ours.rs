//! Our daemon (`xenstored::Daemon`) as a bench peer, in process on its own
//! thread, configured as the `xenstored` binary is by default (store
//! journalled to the socket's folder, periodic sync) or in memory only
//! (`-I on`, C xenstored's default).

use std::path::{Path, PathBuf};

use xenstored::{Config, Daemon, DaemonHandle};

/// A running daemon, stopped on drop.
pub struct Ours {
    handle: Option<DaemonHandle>,
    socket: PathBuf,
}

impl Ours {
    /// Starts the daemon with its socket (and journal, if `persist`) in a
    /// new folder under `dir`.
    pub fn start(dir: &Path, name: &str, persist: bool) -> Result<Self, String> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let socket = dir.join("socket");
        let cfg = Config {
            socket_path: socket.clone(),
            data_dir: persist.then(|| dir.clone()),
            ..Config::default()
        };
        let handle = Daemon::new(cfg)
            .and_then(Daemon::spawn)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            handle: Some(handle),
            socket,
        })
    }

    /// The daemon's socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}
