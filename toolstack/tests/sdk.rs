//! The official XenAPI Python SDK (`pip install xenapi`) drives the `xapi` daemon.

#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_output, Daemon, PASSWORD};
use toolstack::client::{Client, Endpoint, TlsVerify};
use toolstack::value::Value;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn python_sdk_drives_the_daemon() {
    let probe = Command::new(python())
        .args(["-c", "import XenAPI"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the XenAPI Python SDK is not installed: pip install xenapi\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 not found ({e}); install it and then: pip install xenapi"),
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_test.py");
    let child = Command::new(python())
        .arg(script)
        .arg(format!("http://127.0.0.1:{}", d.http))
        .arg(PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SDK-TEST-OK"),
        "SDK script failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon goes on serving, on every transport.
    let mut c = d.client();
    assert_eq!(
        c.call("host.get_all", &[])
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut tls = Client::with_tls(
        Endpoint::Tls("127.0.0.1".into(), d.https),
        TlsVerify::roots_from_pem(&dir.path().join("xapi-ssl.pem")).unwrap(),
    );
    tls.login("root", PASSWORD).unwrap();
    assert!(!tls
        .call("VM.get_all", &[])
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    let mut unix = Client::new(Endpoint::Unix(d.socket.clone()));
    unix.login("root", PASSWORD).unwrap();
    assert!(!unix
        .call("network.get_all", &[])
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn jsonrpc_and_malformed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let login = format!(
        r#"{{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","{PASSWORD}"],"id":1}}"#
    );
    let (st, body) = post(d.http, "/jsonrpc", &login);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let session = v["result"].as_str().unwrap().to_owned();
    assert!(session.starts_with("OpaqueRef:"));
    assert_eq!(v["id"], 1);
    let (_, body) = post(
        d.http,
        "/jsonrpc",
        &format!(
            r#"{{"jsonrpc":"2.0","method":"VM.get_all_records","params":["{session}"],"id":"a"}}"#
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"].as_object().unwrap().len(), 1);
    let (_, body) = post(
        d.http,
        "/jsonrpc",
        r#"{"jsonrpc":"2.0","method":"VM.get_all","params":["OpaqueRef:nope"],"id":2}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["message"], "SESSION_INVALID");
    assert_eq!(v["error"]["data"][0], "OpaqueRef:nope");
    // Not JSON, not XML, oversize: clear errors, and the daemon survives.
    let (_, body) = post(d.http, "/jsonrpc", "{not json");
    assert!(body.contains("Parse error"), "{body}");
    let (st, body) = post(
        d.http,
        "/",
        "<methodCall><methodName>x</methodName><params><param>",
    );
    assert_eq!(st, 200);
    assert!(
        body.contains("<fault>") && body.contains("malformed"),
        "{body}"
    );
    let big = "x".repeat(toolstack::server::MAX_BODY + 1);
    let (st, _) = post(d.http, "/", &big);
    assert_eq!(st, 413);
    let mut c = d.client();
    let pools = c.call("pool.get_all", &[]).unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 1);
    let _ = Value::Nil;
}
