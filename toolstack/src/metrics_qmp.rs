//! The sampler's reading of a qdisk backend's disk counters (`blkbackd`, or QEMU) through
//! the QMP socket libxenstat uses (`<run-dir>/qmp-libxenstat-<domid>`): `qmp_capabilities`,
//! then `query-blockstats` (QEMU's `BlockDeviceStats`).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One device's `query-blockstats` counters (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// QMP device name (`xvda` from blkbackd).
    pub device: String,
    /// Bytes read.
    pub rd_bytes: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Reads completed.
    pub rd_operations: u64,
    /// Writes completed.
    pub wr_operations: u64,
    /// Nanoseconds spent on reads.
    pub rd_total_time_ns: u64,
    /// Nanoseconds spent on writes.
    pub wr_total_time_ns: u64,
}

/// The devices of the QMP server at `socket`, each command answered within `timeout`; an
/// error says why (no server, no answer, not QMP).
pub fn blockstats(socket: &Path, timeout: Duration) -> Result<Vec<BlockStats>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connecting: {e}"))?;
    let mut buf = Vec::new();
    execute(
        &mut s,
        &mut buf,
        r#"{"execute":"qmp_capabilities"}"#,
        timeout,
    )?;
    let ret = execute(
        &mut s,
        &mut buf,
        r#"{"execute":"query-blockstats"}"#,
        timeout,
    )?;
    let devices = ret.as_array().ok_or("query-blockstats: not a list")?;
    Ok(devices
        .iter()
        .filter_map(|d| {
            let st = d.get("stats")?.as_object()?;
            let n = |k: &str| st.get(k).and_then(Value::as_u64).unwrap_or(0);
            Some(BlockStats {
                device: d.get("device")?.as_str()?.to_owned(),
                rd_bytes: n("rd_bytes"),
                wr_bytes: n("wr_bytes"),
                rd_operations: n("rd_operations"),
                wr_operations: n("wr_operations"),
                rd_total_time_ns: n("rd_total_time_ns"),
                wr_total_time_ns: n("wr_total_time_ns"),
            })
        })
        .collect())
}

/// Sends `cmd` and returns its `return` value, skipping the greeting and events.
fn execute(
    s: &mut UnixStream,
    buf: &mut Vec<u8>,
    cmd: &str,
    timeout: Duration,
) -> Result<Value, String> {
    s.write_all(cmd.as_bytes())
        .map_err(|e| format!("sending {cmd}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        loop {
            let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
            let v = match it.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) if !e.is_eof() => return Err(format!("not JSON: {e}")),
                _ => break,
            };
            let used = it.byte_offset();
            buf.drain(..used);
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("{cmd}: {e}"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer to {cmd}"));
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed before answering {cmd}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
}
