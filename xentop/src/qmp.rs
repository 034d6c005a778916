//! The QMP conversation libxenstat has with a qdisk backend (QEMU, or `blkbackd`).
//!
//! For each domain with qdisk disks (`/local/domain/0/backend/qdisk/<domid>` exists),
//! libxenstat connects to `/var/run/xen/qmp-libxenstat-<domid>`, sends
//! `{ "execute": "qmp_capabilities" }`, then `{ "execute": "query-blockstats" }`; each
//! returned device's `stats` give its requests (`rd_operations`, `wr_operations`) and sectors
//! (`rd_bytes`, `wr_bytes` / `sector-size`). The device id comes from matching the device's
//! `inserted.file` in `{ "execute": "query-block" }` with the path in each qdisk's `params`
//! (from its first `/`). Commands go without a newline, as libxenstat writes them; replies
//! are read until the one that answers (the greeting and events are skipped).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use xen_types::DomId;
use xenbus::Store;

use crate::model::{Vbd, VbdBackend, VbdStats};
use crate::{Error, Result};

/// `qmp_capabilities`, as libxenstat sends it.
pub const CAPABILITIES: &str = "{ \"execute\": \"qmp_capabilities\" }";
/// `query-blockstats`, as libxenstat sends it.
pub const QUERY_BLOCKSTATS: &str = "{ \"execute\": \"query-blockstats\" }";
/// `query-block`, as libxenstat sends it.
pub const QUERY_BLOCK: &str = "{ \"execute\": \"query-block\" }";

/// The socket of domain `domid`'s qdisk backend under `run_dir` (`/var/run/xen`).
pub fn socket_path(run_dir: &Path, domid: DomId) -> PathBuf {
    run_dir.join(format!("qmp-libxenstat-{}", domid.get()))
}

/// The qdisk directory of domain `domid` in dom0's backend tree.
pub fn qdisk_dir(domid: DomId) -> String {
    format!("/local/domain/0/backend/qdisk/{}", domid.get())
}

/// A connection to a QMP server.
#[derive(Debug)]
pub struct QmpClient {
    stream: UnixStream,
    path: PathBuf,
    buf: Vec<u8>,
    timeout: Duration,
}

impl QmpClient {
    /// Connects to the socket at `path`; each command then waits at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient> {
        let stream = UnixStream::connect(path).map_err(|e| Error::Qmp {
            path: path.to_path_buf(),
            reason: format!("connecting: {e}"),
        })?;
        Ok(QmpClient {
            stream,
            path: path.to_path_buf(),
            buf: Vec::new(),
            timeout,
        })
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Qmp {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Sends `command` (JSON text, sent as is) and returns its `return` value; a QMP
    /// `error` reply is an [`Error::Qmp`] with its class and description.
    pub fn execute(&mut self, command: &str) -> Result<Value> {
        self.stream
            .write_all(command.as_bytes())
            .map_err(|e| self.err(format!("sending {command}: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            while let Some(v) = self.next_value()? {
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = v.get("error") {
                    return Err(self.err(format!(
                        "{command} failed: {}: {}",
                        e.get("class").and_then(Value::as_str).unwrap_or("?"),
                        e.get("desc").and_then(Value::as_str).unwrap_or("?")
                    )));
                }
                // The greeting ({"QMP": ...}) or an event: not the answer.
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.err(format!("no answer to {command} within {:?}", self.timeout)));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.err(e.to_string()))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(self.err(format!("closed before answering {command}"))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("reading: {e}"))),
            }
        }
    }

    /// The next complete JSON value received, if any.
    fn next_value(&mut self) -> Result<Option<Value>> {
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match it.next() {
            None => {
                self.buf.clear();
                Ok(None)
            }
            Some(Ok(v)) => {
                let used = it.byte_offset();
                self.buf.drain(..used);
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(self.err(format!("not JSON: {e}"))),
        }
    }
}

/// One device of a `query-blockstats` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// The QMP device name, when given.
    pub device: Option<String>,
    /// Bytes read.
    pub rd_bytes: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Read requests.
    pub rd_operations: u64,
    /// Write requests.
    pub wr_operations: u64,
}

/// The devices of a `query-blockstats` return value that have a `stats` object (as
/// libxenstat keeps them); a missing or non-numeric counter reads 0.
pub fn parse_blockstats(ret: &Value) -> Vec<BlockStats> {
    let Some(devices) = ret.as_array() else {
        return Vec::new();
    };
    devices
        .iter()
        .filter_map(|d| {
            let stats = d.get("stats")?.as_object()?;
            let n = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
            Some(BlockStats {
                device: d.get("device").and_then(Value::as_str).map(str::to_string),
                rd_bytes: n("rd_bytes"),
                wr_bytes: n("wr_bytes"),
                rd_operations: n("rd_operations"),
                wr_operations: n("wr_operations"),
            })
        })
        .collect()
}

/// The image file of QMP device `device` in a `query-block` return value
/// (`return[i].inserted.file` where `return[i].device` is `device`).
pub fn block_file<'a>(ret: &'a Value, device: &str) -> Option<&'a str> {
    ret.as_array()?
        .iter()
        .find(|d| d.get("device").and_then(Value::as_str) == Some(device))?
        .get("inserted")?
        .get("file")?
        .as_str()
}

/// The path libxenstat compares with a QMP image file: `params` from its first `/` on.
pub fn params_path(params: &str) -> &str {
    params.find('/').map_or(params, |i| &params[i..])
}

/// Domain `domid`'s qdisk disks, through its QMP socket under `run_dir`. No qdisk directory
/// in xenstore: none (and no connection).
pub fn domain_vbds(
    store: &dyn Store,
    run_dir: &Path,
    domid: DomId,
    timeout: Duration,
) -> Result<Vec<Vbd>> {
    let dir = qdisk_dir(domid);
    if store.read(&dir)?.is_none() {
        return Ok(Vec::new());
    }
    let mut qmp = QmpClient::connect(&socket_path(run_dir, domid), timeout)?;
    qmp.execute(CAPABILITIES)?;
    let stats = parse_blockstats(&qmp.execute(QUERY_BLOCKSTATS)?);
    let mut block = None;
    let mut out = Vec::new();
    for s in stats {
        let mut dev = 0;
        let mut sector_size = 512u64;
        if let Some(name) = &s.device {
            if block.is_none() {
                block = Some(qmp.execute(QUERY_BLOCK)?);
            }
            if let Some(file) = block.as_ref().and_then(|b| block_file(b, name)) {
                for id in store.directory(&dir)? {
                    let Some(params) = store.read(&format!("{dir}/{id}/params"))? else {
                        continue;
                    };
                    if params_path(&params) == file {
                        dev = id.parse().unwrap_or(0);
                        sector_size = store
                            .read(&format!("{dir}/{id}/sector-size"))?
                            .and_then(|s| s.trim().parse().ok())
                            .filter(|&s| s > 0)
                            .unwrap_or(512);
                        break;
                    }
                }
            }
        }
        out.push(Vbd {
            backend: VbdBackend::Unidentified,
            dev,
            stats: Some(VbdStats {
                oo_reqs: 0,
                rd_reqs: s.rd_operations,
                wr_reqs: s.wr_operations,
                rd_sects: s.rd_bytes / sector_size,
                wr_sects: s.wr_bytes / sector_size,
            }),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blockstats_as_libxenstat_reads_them() {
        let ret = json!([
            {"device": "xvda", "stats": {"rd_bytes": 4096, "wr_bytes": 1024,
              "rd_operations": 3, "wr_operations": 2, "flush_operations": 9}},
            {"device": "nostats"},
            {"stats": {"rd_bytes": "x", "wr_operations": 5}},
        ]);
        let s = parse_blockstats(&ret);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            BlockStats {
                device: Some("xvda".into()),
                rd_bytes: 4096,
                wr_bytes: 1024,
                rd_operations: 3,
                wr_operations: 2
            }
        );
        assert_eq!(
            (s[1].device.clone(), s[1].rd_bytes, s[1].wr_operations),
            (None, 0, 5)
        );
        assert!(parse_blockstats(&json!({"not": "an array"})).is_empty());
    }

    #[test]
    fn image_files_match_params_from_the_first_slash() {
        let ret = json!([{"device": "a", "inserted": {"file": "/img/a.img"}}, {"device": "b"}]);
        assert_eq!(block_file(&ret, "a"), Some("/img/a.img"));
        assert_eq!(block_file(&ret, "b"), None);
        assert_eq!(block_file(&ret, "c"), None);
        assert_eq!(params_path("raw:/img/a.img"), "/img/a.img");
        assert_eq!(params_path("/img/a.img"), "/img/a.img");
        assert_eq!(params_path("noslash"), "noslash");
    }
}
