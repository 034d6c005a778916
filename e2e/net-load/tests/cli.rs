//! `net-load` over loopback: both directions report their figures; bad arguments and a
//! missing server get a clear error.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_net-load");

/// A server on a free loopback port, killed when dropped.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn server() -> Server {
    let addr = free_port();
    let child = Command::new(EXE)
        .args(["serve", "--listen", &addr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child, addr)
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(EXE).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(out: &str, key: &str) -> f64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

#[test]
fn both_directions_report_bytes_and_throughput() {
    let s = server();
    for dir in ["send", "recv"] {
        for streams in ["1", "3"] {
            let (code, out, err) = run(&[dir, "--to", &s.1, "--streams", streams, "--ms", "200"]);
            assert_eq!(code, Some(0), "{dir} {streams}: {err}");
            assert!(
                out.contains(&format!("dir={dir} streams={streams} ")),
                "{out}"
            );
            assert!(field(&out, "bytes=") > 0.0, "{out}");
            assert!(field(&out, "mbit_s=") > 0.0, "{out}");
            assert!(field(&out, "secs=") >= 0.2, "{out}");
        }
    }
}

#[test]
fn bad_arguments_and_no_server_are_refused_with_a_reason() {
    let addr = free_port();
    let cases: [(&[&str], &str); 3] = [
        (
            &["send", "--to", &addr, "--streams", "0"],
            "--streams must be at least 1",
        ),
        (
            &["recv", "--to", &addr, "--ms", "0"],
            "--ms must be at least 1",
        ),
        // Nothing listens there: the connection is refused.
        (&["send", "--to", &addr, "--ms", "10"], &addr),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = run(&["send", "--to", "not-an-address"]);
    assert_eq!(code, Some(2), "{err}");
}
