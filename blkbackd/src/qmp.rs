//! The QMP conversation libxenstat has with a qdisk backend, so that C xentop (and ours)
//! count the disks this daemon serves.
//!
//! For every domain with connected disks, a socket `<run-dir>/qmp-libxenstat-<domid>`
//! (libxl starts QEMU with `-qmp unix:/var/run/xen/qmp-libxenstat-<domid>,server,nowait`)
//! answers as QEMU does: a greeting on connection, `qmp_capabilities` first, then
//! `query-blockstats` (each disk's `rd_bytes`, `wr_bytes`, `rd_operations`,
//! `wr_operations`, `flush_operations` from blkback's counters) and `query-block` (each
//! disk's `inserted.file`, which libxenstat matches with the `params` in xenstore).
//!
//! Two commands of our own (QEMU's `x-` prefix for commands outside its schema) let the
//! toolstack snapshot a disk while its guest runs, as XenServer does with `tap-ctl pause` and
//! `tap-ctl unpause -a <leaf>`:
//!
//! - `{"execute": "x-blkbackd-pause", "arguments": {"device": "xvda"}}`: the disk takes no
//!   more requests (they wait), those in flight finish, the image is flushed; the reply comes
//!   once all that is done;
//! - `{"execute": "x-blkbackd-resume", "arguments": {"device": "xvda", "file": "/sr/v.qcow2"}}`:
//!   the disk reopens `file` (the chain's new leaf; without `file`, the open image goes on)
//!   and serves the waiting requests there.
//!
//! `device` is the guest's name of the disk, as `query-block` reports it, or its device id
//! (`"51712"`).
//! Commands may come without a newline (libxenstat sends none) and must be answered within
//! libxenstat's 10 ms poll. Bad input (not JSON, not an object, too long, an unknown
//! command) gets a QMP `error` reply and the connection goes on.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use blkback::ConnectedDisk;
use serde_json::{json, Value};
use xen_types::DomId;

/// The disks connected now (`BlkBack::devices`).
pub type Source = Arc<dyn Fn() -> Vec<ConnectedDisk> + Send + Sync>;

/// Most bytes of one command; a longer one is refused.
pub const MAX_COMMAND: usize = 64 * 1024;
/// A connection with nothing to say for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How often the sockets follow the connected disks.
const SYNC: Duration = Duration::from_millis(200);

/// The socket of domain `domid` under `run_dir`.
pub fn socket_path(run_dir: &Path, domid: DomId) -> PathBuf {
    run_dir.join(format!("qmp-libxenstat-{}", domid.get()))
}

/// The sockets: one per domain with connected disks (and `pinned`'s, always).
pub struct QmpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for QmpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpServer").finish_non_exhaustive()
    }
}

impl QmpServer {
    /// Serves QMP under `run_dir` (created if missing) for the disks of `source`; with
    /// `pinned` (the daemon is that domain's device model), that domain's socket exists
    /// from the start, with or without disks, and only its disks are reported.
    pub fn start(
        run_dir: PathBuf,
        pinned: Option<DomId>,
        source: Source,
    ) -> std::io::Result<QmpServer> {
        std::fs::create_dir_all(&run_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = BTreeMap::new();
        if let Some(d) = pinned {
            sockets.insert(d, Listener::start(&run_dir, d, source.clone())?);
        }
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("blkbackd-qmp".into())
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    if pinned.is_none() {
                        sync(&run_dir, &source, &mut sockets);
                    }
                    std::thread::sleep(SYNC);
                }
                for (_, l) in std::mem::take(&mut sockets) {
                    l.stop();
                }
            })?;
        Ok(QmpServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for QmpServer {
    /// Closes and removes every socket.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the sockets of domains that gained disks, closes those of domains that have none.
fn sync(run_dir: &Path, source: &Source, sockets: &mut BTreeMap<DomId, Listener>) {
    let want: std::collections::BTreeSet<DomId> =
        source().into_iter().map(|d| d.frontend).collect();
    let gone: Vec<DomId> = sockets
        .keys()
        .filter(|d| !want.contains(d))
        .copied()
        .collect();
    for d in gone {
        if let Some(l) = sockets.remove(&d) {
            l.stop();
        }
    }
    for d in want {
        if let std::collections::btree_map::Entry::Vacant(e) = sockets.entry(d) {
            match Listener::start(run_dir, d, source.clone()) {
                Ok(l) => {
                    e.insert(l);
                }
                Err(err) => {
                    tracing::warn!("QMP socket {}: {err}", socket_path(run_dir, d).display())
                }
            }
        }
    }
}

/// One domain's listening socket and its accepting thread.
struct Listener {
    path: PathBuf,
    /// The listening socket, shut down to wake the accepting thread.
    socket: UnixListener,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Listener {
    fn start(run_dir: &Path, domid: DomId, source: Source) -> std::io::Result<Listener> {
        let path = socket_path(run_dir, domid);
        // A socket left by an earlier run is stale: nobody answers on it.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        let socket = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("blkbackd-qmp-{}", domid.get()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        return;
                    }
                    let conn = match conn {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors or memory: try again a little later.
                            tracing::warn!("QMP socket of domain {domid}: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    let source = source.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("blkbackd-qmp-{}-conn", domid.get()))
                        .spawn(move || {
                            if let Err(e) = serve(conn, domid, &source) {
                                tracing::debug!("QMP connection of domain {domid}: {e}");
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("QMP connection of domain {domid}: {e}");
                    }
                }
            })?;
        Ok(Listener {
            path,
            socket,
            stop,
            thread,
        })
    }

    /// Stops accepting (shutting the listening socket down wakes the thread, even if its
    /// file was removed) and removes the socket.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// QEMU's greeting.
fn greeting() -> Value {
    json!({"QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "blkbackd"},
        "capabilities": []
    }})
}

fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"error": {"class": class, "desc": desc.into()}})
}

/// One connection: the greeting, then an answer to every command until it closes.
fn serve(mut conn: UnixStream, domid: DomId, source: &Source) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    send(&mut conn, &greeting())?;
    let mut session = Session {
        domid,
        negotiated: false,
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match it.next() {
                None => {
                    buf.clear();
                    break;
                }
                Some(Ok(cmd)) => {
                    let used = it.byte_offset();
                    buf.drain(..used);
                    let reply = if used > MAX_COMMAND {
                        too_long()
                    } else {
                        session.answer(&cmd, source)
                    };
                    send(&mut conn, &reply)?;
                }
                Some(Err(e)) if e.is_eof() => {
                    if buf.len() > MAX_COMMAND {
                        buf.clear();
                        send(&mut conn, &too_long())?;
                    }
                    break;
                }
                Some(Err(e)) => {
                    buf.clear();
                    send(
                        &mut conn,
                        &error("GenericError", format!("JSON parse error, {e}")),
                    )?;
                    break;
                }
            }
        }
    }
}

fn too_long() -> Value {
    error(
        "GenericError",
        format!("JSON parse error, command longer than {MAX_COMMAND} bytes"),
    )
}

fn send(conn: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut text = v.to_string();
    text.push_str("\r\n");
    conn.write_all(text.as_bytes())
}

/// What one connection has negotiated.
struct Session {
    domid: DomId,
    negotiated: bool,
}

impl Session {
    fn answer(&mut self, cmd: &Value, source: &Source) -> Value {
        let mut reply = self.reply(cmd, source);
        if let (Some(id), Some(obj)) = (cmd.get("id"), reply.as_object_mut()) {
            obj.insert("id".into(), id.clone());
        }
        reply
    }

    fn reply(&mut self, cmd: &Value, source: &Source) -> Value {
        let Some(obj) = cmd.as_object() else {
            return error("GenericError", "QMP input must be a JSON object");
        };
        let Some(exec) = obj.get("execute") else {
            return error("GenericError", "QMP input lacks member 'execute'");
        };
        let Some(exec) = exec.as_str() else {
            return error(
                "GenericError",
                "QMP input member 'execute' must be a string",
            );
        };
        if exec == "qmp_capabilities" {
            if self.negotiated {
                return error(
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored",
                );
            }
            self.negotiated = true;
            return json!({"return": {}});
        }
        if !self.negotiated {
            return error(
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            );
        }
        let disks = || {
            let mut v: Vec<ConnectedDisk> = source()
                .into_iter()
                .filter(|d| d.frontend == self.domid)
                .collect();
            v.sort_by_key(|d| d.devid);
            v
        };
        match exec {
            "query-blockstats" => {
                json!({"return": disks().iter().map(blockstats).collect::<Vec<_>>()})
            }
            "query-block" => json!({"return": disks().iter().map(block).collect::<Vec<_>>()}),
            "x-blkbackd-pause" | "x-blkbackd-resume" => {
                let args = obj.get("arguments").cloned().unwrap_or(json!({}));
                let Some(dev) = args.get("device").and_then(Value::as_str) else {
                    return error("GenericError", "Parameter 'device' is missing");
                };
                let file = match args.get("file") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(f)) if !f.is_empty() => Some(f.clone()),
                    Some(_) => return error("GenericError", "Parameter 'file' expects a path"),
                };
                let Some(d) = disks()
                    .into_iter()
                    .find(|d| vdev_name(d.devid) == dev || d.devid.to_string() == dev)
                else {
                    return error("DeviceNotFound", format!("Device '{dev}' not found"));
                };
                let r = if exec == "x-blkbackd-pause" {
                    d.disk.pause()
                } else {
                    d.disk.resume(file.as_deref().map(Path::new))
                };
                match r {
                    Ok(()) => {
                        tracing::info!(
                            "{exec} {dev} of domain {}{}",
                            self.domid,
                            file.map(|f| format!(" on {f}")).unwrap_or_default()
                        );
                        json!({"return": {}})
                    }
                    Err(e) => error("GenericError", format!("{exec} {dev}: {e}")),
                }
            }
            other => error(
                "CommandNotFound",
                format!("The command {other} has not been found"),
            ),
        }
    }
}

/// A disk's `query-blockstats` entry.
fn blockstats(d: &ConnectedDisk) -> Value {
    let io = d.disk.io().snapshot();
    json!({
        "device": vdev_name(d.devid),
        "node-name": format!("blkbackd-{}-{}", d.frontend.get(), d.devid),
        "stats": {
            "rd_bytes": io.rd_bytes,
            "wr_bytes": io.wr_bytes,
            "rd_operations": io.rd_operations,
            "wr_operations": io.wr_operations,
            "flush_operations": io.flush_operations,
            "failed_rd_operations": 0,
            "failed_wr_operations": 0,
            "failed_flush_operations": 0,
            "invalid_rd_operations": 0,
            "invalid_wr_operations": 0,
            "rd_total_time_ns": io.rd_total_time_ns,
            "wr_total_time_ns": io.wr_total_time_ns,
            "flush_total_time_ns": io.flush_total_time_ns,
            "wr_highest_offset": 0,
            "rd_merged": 0,
            "wr_merged": 0,
            "account_invalid": false,
            "account_failed": false,
        },
    })
}

/// A disk's `query-block` entry.
fn block(d: &ConnectedDisk) -> Value {
    json!({
        "device": vdev_name(d.devid),
        "locked": false,
        "removable": false,
        "type": "unknown",
        "inserted": {
            "file": d.path,
            "ro": d.disk.readonly(),
            "drv": "raw",
            "encrypted": false,
            "backing_file_depth": 0,
            "bps": 0, "bps_rd": 0, "bps_wr": 0,
            "iops": 0, "iops_rd": 0, "iops_wr": 0,
            "image": {
                "filename": d.path,
                "format": "raw",
                "virtual-size": d.disk.sectors() * 512,
            },
        },
    })
}

/// The guest's name of device id `devid` (`xvda`, `sdb`, `hdc`; `vbd<devid>` otherwise),
/// after Xen's `docs/misc/vbd-interface.txt`.
pub fn vdev_name(devid: u32) -> String {
    let letters = |mut n: u32| {
        let mut s = Vec::new();
        loop {
            s.push(b'a' + (n % 26) as u8);
            if n < 26 {
                break;
            }
            n = n / 26 - 1;
        }
        s.reverse();
        String::from_utf8(s).unwrap_or_default()
    };
    if devid & (1 << 28) != 0 {
        return format!("xvd{}", letters((devid >> 8) & 0xfffff));
    }
    let (major, minor) = (devid >> 8, devid & 0xff);
    match major {
        202 => format!("xvd{}", letters(minor >> 4)),
        8 => format!("sd{}", letters(minor >> 4)),
        3 => format!("hd{}", letters(minor >> 6)),
        _ => format!("vbd{devid}"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Instant;

    use blkback::disk::{Disk, IoOp};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use xenbus::testing::TestXenstore;
    use xenbus::Store;

    use super::*;

    /// libxenstat's `qmp_query`: write the command as is, then read 1024-byte chunks while
    /// `poll` sees data within 10 ms. `None` where libxenstat gets nothing.
    fn xenstat_query(s: &mut UnixStream, cmd: &str) -> Option<String> {
        s.write_all(cmd.as_bytes()).ok()?;
        let mut out = Vec::new();
        loop {
            let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(10u8)).ok()? == 0 {
                break;
            }
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (!out.is_empty()).then(|| String::from_utf8(out).unwrap())
    }

    /// Fields drop in order: the server before its directory.
    struct World {
        server: Option<QmpServer>,
        disks: Arc<std::sync::Mutex<Vec<ConnectedDisk>>>,
        dir: tempfile::TempDir,
    }

    fn disk(dir: &Path, domid: u16, devid: u32, sectors: u64) -> ConnectedDisk {
        let path = dir.join(format!("d{domid}-{devid}.img"));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(sectors * 512)
            .unwrap();
        ConnectedDisk {
            frontend: DomId(domid),
            devid,
            path: path.to_str().unwrap().to_string(),
            disk: Arc::new(Disk::open(&path, false).unwrap()),
        }
    }

    fn world(pinned: Option<DomId>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let disks = Arc::new(std::sync::Mutex::new(vec![
            disk(dir.path(), 3, 51712, 2048),
            disk(dir.path(), 3, 51728, 64),
            disk(dir.path(), 4, 51712, 8),
        ]));
        let d = disks.clone();
        let source: Source = Arc::new(move || d.lock().unwrap().clone());
        let server = QmpServer::start(dir.path().join("run"), pinned, source).unwrap();
        World {
            server: Some(server),
            disks,
            dir,
        }
    }

    impl World {
        fn socket(&self, domid: u16) -> PathBuf {
            socket_path(&self.dir.path().join("run"), DomId(domid))
        }

        fn connect(&self, domid: u16) -> UnixStream {
            let t0 = Instant::now();
            loop {
                match UnixStream::connect(self.socket(domid)) {
                    Ok(s) => return s,
                    Err(e) if t0.elapsed() > Duration::from_secs(5) => {
                        panic!("no socket for domain {domid}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    fn values(text: &str) -> Vec<Value> {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn libxenstats_conversation() {
        let w = world(None);
        {
            let d = w.disks.lock().unwrap();
            d[0].disk.io().record(IoOp::Read(4096), true);
            d[0].disk.io().record(IoOp::Read(1024), true);
            d[0].disk.io().record(IoOp::Write(8192, true), true);
            d[1].disk.io().record(IoOp::Write(512, false), true);
            d[2].disk.io().record(IoOp::Read(512), true);
        }
        let mut s = w.connect(3);
        // The greeting arrives with the answer to qmp_capabilities, as libxenstat reads it.
        let caps = xenstat_query(&mut s, r#"{ "execute": "qmp_capabilities" }"#).unwrap();
        let v = values(&caps);
        assert_eq!(v.len(), 2, "{caps}");
        assert!(v[0]["QMP"]["version"]["qemu"]["major"].is_u64(), "{caps}");
        assert_eq!(v[1], json!({"return": {}}));
        // query-blockstats: one JSON value (libxenstat's yajl_tree_parse takes the buffer).
        let stats = xenstat_query(&mut s, r#"{ "execute": "query-blockstats" }"#).unwrap();
        let v: Value = serde_json::from_str(&stats).unwrap();
        let ret = v["return"].as_array().unwrap();
        assert_eq!(ret.len(), 2, "only domain 3's disks: {stats}");
        assert_eq!(ret[0]["device"], "xvda");
        assert_eq!(ret[0]["stats"]["rd_bytes"], 5120);
        assert_eq!(ret[0]["stats"]["rd_operations"], 2);
        assert_eq!(ret[0]["stats"]["wr_bytes"], 8192);
        assert_eq!(ret[0]["stats"]["wr_operations"], 1);
        assert_eq!(ret[0]["stats"]["flush_operations"], 1);
        assert_eq!(ret[1]["device"], "xvdb");
        assert_eq!(ret[1]["stats"]["wr_bytes"], 512);
        // query-block: the image file libxenstat matches with `params`.
        let block = xenstat_query(&mut s, r#"{ "execute": "query-block" }"#).unwrap();
        let v: Value = serde_json::from_str(&block).unwrap();
        let d = w.disks.lock().unwrap().clone();
        assert_eq!(v["return"][0]["inserted"]["file"], d[0].path.as_str());
        assert_eq!(v["return"][1]["inserted"]["file"], d[1].path.as_str());
        assert_eq!(
            v["return"][0]["inserted"]["image"]["virtual-size"],
            2048 * 512
        );
        assert_eq!(v["return"][0]["device"], "xvda");
        // Domain 4 has its own socket with its own disk.
        let mut s4 = w.connect(4);
        xenstat_query(&mut s4, r#"{ "execute": "qmp_capabilities" }"#).unwrap();
        let v: Value =
            serde_json::from_str(&xenstat_query(&mut s4, QUERY_BLOCKSTATS).unwrap()).unwrap();
        assert_eq!(v["return"][0]["stats"]["rd_bytes"], 512);
    }

    const QUERY_BLOCKSTATS: &str = r#"{ "execute": "query-blockstats" }"#;

    #[test]
    fn xentops_collector_reads_the_disks() {
        let w = world(None);
        w.disks.lock().unwrap()[0]
            .disk
            .io()
            .record(IoOp::Write(4096, false), true);
        let xs = TestXenstore::start().unwrap();
        let d = w.disks.lock().unwrap().clone();
        // What libxl writes for qdisk disks (`params` as `raw:<path>`, and blkback's
        // sector-size).
        for c in d.iter().filter(|c| c.frontend == DomId(3)) {
            let dir = format!("/local/domain/0/backend/qdisk/3/{}", c.devid);
            xs.dom0()
                .write(&format!("{dir}/params"), &format!("raw:{}", c.path))
                .unwrap();
            xs.dom0()
                .write(&format!("{dir}/sector-size"), "512")
                .unwrap();
        }
        w.connect(3);
        let vbds = xentop::qmp::domain_vbds(
            &**xs.dom0(),
            &w.dir.path().join("run"),
            DomId(3),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(vbds.len(), 2);
        assert_eq!(vbds[0].dev, 51712);
        let s = vbds[0].stats.unwrap();
        assert_eq!((s.wr_reqs, s.wr_sects, s.rd_reqs), (1, 8, 0));
        assert_eq!(vbds[1].dev, 51728);
    }

    #[test]
    fn bad_input_gets_errors_and_the_connection_goes_on() {
        let w = world(None);
        let mut s = w.connect(3);
        let ask = |s: &mut UnixStream, cmd: &str| values(&xenstat_query(s, cmd).unwrap());
        // Before negotiation, commands are refused.
        let v = ask(&mut s, QUERY_BLOCKSTATS);
        assert_eq!(v[1]["error"]["class"], "CommandNotFound", "{v:?}");
        assert_eq!(
            ask(&mut s, r#"{"execute":"qmp_capabilities","id":7}"#)[0],
            json!({"return": {}, "id": 7})
        );
        let cases: [(&str, &str); 6] = [
            ("garbage}", "GenericError"),
            ("[1, 2]", "GenericError"),
            (r#"{"no": "execute"}"#, "GenericError"),
            (r#"{"execute": 5}"#, "GenericError"),
            (r#"{"execute": "system_powerdown"}"#, "CommandNotFound"),
            (r#"{"execute": "qmp_capabilities"}"#, "CommandNotFound"),
        ];
        for (cmd, class) in cases {
            let v = ask(&mut s, cmd);
            assert_eq!(v.len(), 1, "{cmd}: {v:?}");
            assert_eq!(v[0]["error"]["class"], class, "{cmd}: {v:?}");
        }
        // A command longer than the limit: one error, then the connection still works.
        let long = format!(r#"{{"execute": "{}"#, "a".repeat(MAX_COMMAND + 10));
        s.write_all(long.as_bytes()).unwrap();
        s.write_all(br#""}"#).unwrap();
        let t0 = Instant::now();
        let mut got = String::new();
        while !got.contains("longer than") {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no error for a long command"
            );
            got.push_str(&xenstat_query(&mut s, "").unwrap_or_default());
        }
        // Whatever followed the cut is answered with errors, never silence or a crash;
        // a well-formed command then works.
        let mut ok = false;
        for _ in 0..5 {
            let reply = xenstat_query(&mut s, QUERY_BLOCKSTATS).unwrap_or_default();
            if values(&reply).iter().any(|v| v["return"].is_array()) {
                ok = true;
                break;
            }
        }
        assert!(ok, "the connection did not recover");
        // Two commands in one write, and one split across writes.
        let v = ask(
            &mut s,
            r#"{"execute":"query-block"}{"execute":"query-blockstats"}"#,
        );
        assert_eq!(v.len(), 2);
        s.write_all(br#"{"execute":"query-"#).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ask(&mut s, r#"block"}"#)[0]["return"][0]["device"], "xvda");
        // The daemon still accepts new connections.
        let mut s2 = w.connect(3);
        assert_eq!(
            values(&xenstat_query(&mut s2, r#"{ "execute": "qmp_capabilities" }"#).unwrap()).len(),
            2
        );
    }

    #[test]
    fn sockets_follow_the_connected_disks() {
        let mut w = world(None);
        w.connect(4);
        w.disks.lock().unwrap().retain(|d| d.frontend != DomId(4));
        let t0 = Instant::now();
        while w.socket(4).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "domain 4's socket stayed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(w.socket(3).exists());
        w.server.take();
        assert!(!w.socket(3).exists(), "sockets are removed at exit");
    }

    #[test]
    fn as_a_device_model_only_its_domain() {
        let w = world(Some(DomId(4)));
        // Its socket exists at once.
        assert!(w.socket(4).exists());
        let mut s = w.connect(4);
        xenstat_query(&mut s, r#"{ "execute": "qmp_capabilities" }"#).unwrap();
        let v: Value =
            serde_json::from_str(&xenstat_query(&mut s, QUERY_BLOCKSTATS).unwrap()).unwrap();
        assert_eq!(v["return"].as_array().unwrap().len(), 1);
        std::thread::sleep(SYNC * 2);
        assert!(!w.socket(3).exists(), "no socket for another domain");
    }

    #[test]
    fn pause_and_resume_on_another_image() {
        let w = world(Some(DomId(3)));
        let mut s = w.connect(3);
        let ask =
            |s: &mut UnixStream, cmd: &str| values(&xenstat_query(s, cmd).unwrap()).pop().unwrap();
        xenstat_query(&mut s, r#"{ "execute": "qmp_capabilities" }"#).unwrap();
        let d = w.disks.lock().unwrap()[0].clone();
        // Resume before a pause, unknown devices, bad arguments: errors, nothing changes.
        for (cmd, class) in [
            (
                r#"{"execute":"x-blkbackd-resume","arguments":{"device":"xvda"}}"#,
                "GenericError",
            ),
            (
                r#"{"execute":"x-blkbackd-pause","arguments":{"device":"xvdz"}}"#,
                "DeviceNotFound",
            ),
            (r#"{"execute":"x-blkbackd-pause"}"#, "GenericError"),
            (
                r#"{"execute":"x-blkbackd-resume","arguments":{"device":"xvda","file":5}}"#,
                "GenericError",
            ),
        ] {
            assert_eq!(ask(&mut s, cmd)["error"]["class"], class, "{cmd}");
        }
        assert!(!d.disk.is_paused());
        let pause = r#"{"execute":"x-blkbackd-pause","arguments":{"device":"51712"},"id":1}"#;
        assert_eq!(ask(&mut s, pause), json!({"return": {}, "id": 1}));
        assert!(d.disk.is_paused());
        // A new image of another size is refused; the disk stays paused.
        let small = w.dir.path().join("small.img");
        std::fs::File::create(&small).unwrap().set_len(512).unwrap();
        let cmd = format!(
            r#"{{"execute":"x-blkbackd-resume","arguments":{{"device":"xvda","file":"{}"}}}}"#,
            small.display()
        );
        assert_eq!(ask(&mut s, &cmd)["error"]["class"], "GenericError");
        assert!(d.disk.is_paused());
        // The same size: served from there.
        let next = w.dir.path().join("next.img");
        std::fs::write(&next, [0x5a; 512]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_len(2048 * 512)
            .unwrap();
        let cmd = format!(
            r#"{{"execute":"x-blkbackd-resume","arguments":{{"device":"xvda","file":"{}"}}}}"#,
            next.display()
        );
        assert_eq!(ask(&mut s, &cmd), json!({"return": {}}));
        assert!(!d.disk.is_paused());
        let page = xen_types::mem::PageBuf::new(1).unwrap();
        let mut iov = Vec::new();
        let seg = blkback::disk::IoSeg {
            mem: &page,
            offset: 0,
            len: 512,
        };
        d.disk.read_at(0, &[seg], &mut iov).unwrap();
        let mut got = [0u8; 512];
        xen_types::mem::SharedMemoryExt::read_bytes(&page, 0, &mut got).unwrap();
        assert_eq!(got, [0x5a; 512], "reads come from the new image");
    }

    #[test]
    fn device_names() {
        assert_eq!(vdev_name(51712), "xvda");
        assert_eq!(vdev_name(51728), "xvdb");
        assert_eq!(vdev_name(2048), "sda");
        assert_eq!(vdev_name(768), "hda");
        assert_eq!(vdev_name((1 << 28) | (26 << 8)), "xvdaa");
        assert_eq!(vdev_name(5), "vbd5");
    }
}
