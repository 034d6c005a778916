//! The web page's login form, driven as a person would: headless Chromium under the DevTools
//! protocol (`--remote-debugging-pipe`: NUL-separated JSON on fds 3 and 4) loads `/`, the
//! password is typed into the form and submitted, the page logs in over JSON-RPC and draws
//! its graphs; a wrong password shows the error and no data.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};
use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(n))
                .find(|p| p.is_file())
        })
}

/// A pipe's read and write ends, closed on exec.
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// A browser under the DevTools protocol, over the pipe.
struct Cdp {
    child: Child,
    to: File,
    from: mpsc::Receiver<Json>,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    fn start(bin: &Path) -> Cdp {
        let (fd_in, to) = pipe();
        let (from, fd_out) = pipe();
        let (a, b) = (fd_in.as_raw_fd(), fd_out.as_raw_fd());
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
            "about:blank",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (dup to fresh numbers,
        // then dup2 onto 3 and 4, which clears close-on-exec) on fds the parent keeps open.
        unsafe {
            cmd.pre_exec(move || {
                let (x, y) = (libc::dup(a), libc::dup(b));
                if x < 0 || y < 0 || libc::dup2(x, 3) < 0 || libc::dup2(y, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop((fd_in, fd_out));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Cdp {
            child,
            to,
            from: rx,
            next: 0,
            session: None,
        }
    }

    fn send(&mut self, method: &str, params: Json) -> Json {
        self.next += 1;
        let id = self.next;
        let mut m = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            m["sessionId"] = s.clone().into();
        }
        let mut bytes = m.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn open(&mut self, url: &str) {
        let t = self.send("Target.createTarget", json!({"url": url}));
        let s = self.send(
            "Target.attachToTarget",
            json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = Some(s["sessionId"].as_str().unwrap().to_owned());
    }

    fn eval(&mut self, expr: &str) -> Json {
        let r = self.send(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until it is true, for up to 30 s.
    fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(expr) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logging_in_through_the_form_shows_the_graphs() {
    let Some(browser) = chromium() else {
        println!("SKIP logging_in_through_the_form_shows_the_graphs: no chromium on PATH (scripts/deps.sh installs it)");
        return;
    };
    let sim = xen_sim::Host::new(xen_sim::HostConfig::default());
    let be = Backend::with_xenstored_in_process(xenctrl::Xen::sim(sim)).unwrap();
    let db = Db::in_memory();
    host::bootstrap(&db, &HostConfig::simulated()).unwrap();
    let x = Xapi::new(db, Arc::new(be), Credentials::new("root", "pw").unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    x.enable_metrics(None).set_counter_paths(None);
    for k in (0..6).rev() {
        x.metrics_step(((now / 5) * 5 - 5 * k) as f64);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(toolstack::server::serve_tcp(listener, Arc::clone(&x), None));

    let mut b = Cdp::start(&browser);
    b.open(&format!("http://127.0.0.1:{port}/"));
    // The new tab starts at about:blank: wait for the page itself.
    b.wait_for("document.readyState === 'complete' && document.getElementById('login') !== null");
    assert_eq!(
        b.eval("document.getElementById('main').hidden"),
        json!(true)
    );

    // A wrong password: the error, and no data.
    b.eval(
        "document.getElementById('password').value = 'nope';
         document.querySelector('#login button').click(); true",
    );
    b.wait_for("document.getElementById('error').textContent !== ''");
    let err = b.eval("document.getElementById('error').textContent");
    assert!(
        err.as_str()
            .unwrap()
            .contains("SESSION_AUTHENTICATION_FAILED"),
        "{err}"
    );
    assert_eq!(
        b.eval("document.getElementById('main').hidden"),
        json!(true)
    );

    // The right one: the page logs in and draws.
    b.eval(
        "document.getElementById('password').value = 'pw';
         document.querySelector('#login button').click(); true",
    );
    b.wait_for("document.body.dataset.state === 'ready'");
    assert_eq!(
        b.eval("document.getElementById('host').textContent"),
        json!("Host xen-sim")
    );
    let cpu = b.eval("Number(document.getElementById('g-cpu').dataset.points)");
    let mem = b.eval("Number(document.getElementById('g-memory').dataset.inked)");
    println!("cpu points {cpu}, memory inked pixels {mem}");
    // Host and dom0, each sample but the first for the CPU's rates.
    assert!(cpu.as_u64().unwrap() >= 2 * 5, "cpu points {cpu}");
    assert!(mem.as_u64().unwrap() > 0, "memory inked {mem}");
    let stored = b.eval("sessionStorage.getItem('session_id') || ''");
    assert!(
        stored.as_str().unwrap().starts_with("OpaqueRef:"),
        "{stored}"
    );
    rt.shutdown_background();
}
