//! xapi's logs: `audit.log` gets a line per API call with its user, session tag, object and
//! result (errors by code, no secrets), `xensource.log` gets the daemon's own log, and both
//! rotate by size keeping `--log-keep` old files.

mod common;

use common::{Daemon, PASSWORD};
use toolstack::audit::session_tag;
use toolstack::client::{Client, Endpoint};
use toolstack::value::Value;
use toolstack::Error;

#[test]
fn audit_log_records_every_call_with_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let d = Daemon::start_with(dir.path(), &["--log-dir", logs.to_str().unwrap()]);
    let mut c = d.client();
    let session = c.session().unwrap().to_owned();
    let vms = c.call("VM.get_all", &[]).unwrap();
    let dom0 = vms.as_array().unwrap()[0].as_str().unwrap().to_owned();
    // The replies encoded straight from the database are recorded too.
    c.call("VM.get_all_records", &[]).unwrap();
    c.call_json("VM.get_all_records", &[]).unwrap();
    c.call("VM.get_name_label", &[Value::str(dom0.clone())])
        .unwrap();
    let bad = c.call(
        "VM.start",
        &[
            Value::str("OpaqueRef:nope"),
            Value::Bool(false),
            Value::Bool(false),
        ],
    );
    assert!(
        matches!(bad, Err(Error::Api(ref e)) if e.code == "HANDLE_INVALID"),
        "{bad:?}"
    );
    let mut intruder = Client::new(Endpoint::Tcp("127.0.0.1".into(), d.http));
    assert!(intruder.login("root", "wrong password").is_err());
    c.call("session.logout", &[]).unwrap();

    let text = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    println!("{text}");
    let tag = session_tag(&session);
    let expect = [
        format!("user=root session={tag} call=session.login_with_password object=- result=OK"),
        format!("user=root session={tag} call=VM.get_all object=- result=OK"),
        format!("user=root session={tag} call=VM.get_all_records object=- result=OK"),
        format!("user=root session={tag} call=VM.get_all_records object=- result=OK"),
        format!("user=root session={tag} call=VM.get_name_label object={dom0} result=OK"),
        format!("user=root session={tag} call=VM.start object=OpaqueRef:nope result=ERROR:HANDLE_INVALID"),
        "user=root session=- call=session.login_with_password object=- result=ERROR:SESSION_AUTHENTICATION_FAILED".to_owned(),
        format!("user=root session={tag} call=session.logout object=- result=OK"),
    ];
    assert_eq!(lines.len(), expect.len(), "{text}");
    for (l, e) in lines.iter().zip(&expect) {
        let (time, rest) = l.split_once(' ').unwrap();
        assert!(time.len() == 18 && time.ends_with('Z'), "time {time}");
        assert_eq!(rest, e);
    }
    // Neither the passwords nor the session reference itself are written.
    for secret in [PASSWORD, "wrong password", session.as_str()] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    let main_log = std::fs::read_to_string(logs.join("xensource.log")).unwrap();
    assert!(main_log.contains("xapi starting"), "{main_log}");
    assert!(
        main_log.contains("API call failed") && main_log.contains("HANDLE_INVALID"),
        "{main_log}"
    );
}

#[test]
fn logs_rotate_by_size_keeping_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let d = Daemon::start_with(
        dir.path(),
        &[
            "--log-dir",
            logs.to_str().unwrap(),
            "--log-max-bytes",
            "1000",
            "--log-keep",
            "2",
        ],
    );
    let mut c = d.client();
    for _ in 0..60 {
        c.call("VM.get_all", &[]).unwrap();
    }
    let names = |base: &str| {
        let mut v: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(base))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("audit.log"),
        ["audit.log", "audit.log.1", "audit.log.2"]
    );
    for n in names("audit.log") {
        let len = std::fs::metadata(logs.join(&n)).unwrap().len();
        assert!(len <= 1000 && len > 0, "{n}: {len} bytes");
    }
    // The newest call is in the current file, the rotated ones hold full lines.
    let cur = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    assert!(
        cur.ends_with("call=VM.get_all object=- result=OK\n"),
        "{cur}"
    );
    let old = std::fs::read_to_string(logs.join("audit.log.2")).unwrap();
    assert!(old.lines().all(|l| l.ends_with("result=OK")), "{old}");
}

/// logrotate's way (XAPI's `/etc/logrotate.d/xapi`): the logs are moved away, then SIGHUP;
/// xapi writes its next lines to fresh files at the old paths, nothing lost or mixed.
#[test]
fn sighup_reopens_the_logs_after_logrotate_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let d = Daemon::start_with(dir.path(), &["--log-dir", logs.to_str().unwrap()]);
    let mut c = d.client();
    c.call("VM.get_all", &[]).unwrap();
    for f in ["audit.log", "xensource.log"] {
        std::fs::rename(logs.join(f), logs.join(format!("{f}.rotated"))).unwrap();
    }
    // SAFETY: kill(2) on our own child's pid with SIGHUP; no memory is involved.
    let rc = unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    // The signal is asynchronous: calls until one lands in a fresh audit.log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !logs.join("audit.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "audit.log never reopened"
        );
        c.call("host.get_all", &[]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fresh = std::fs::read_to_string(logs.join("audit.log")).unwrap();
    let old = std::fs::read_to_string(logs.join("audit.log.rotated")).unwrap();
    assert!(fresh.contains("call=host.get_all"), "{fresh}");
    assert!(!fresh.contains("call=VM.get_all"), "{fresh}");
    assert!(old.contains("call=VM.get_all"), "{old}");
    // The daemon survived the signal and xensource.log reopens at its next line.
    c.call("session.logout", &[]).unwrap();
    while !logs.join("xensource.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "xensource.log never reopened"
        );
        let mut again = d.client();
        again.call("VM.get_all", &[]).unwrap();
        again.call("session.logout", &[]).unwrap();
    }
}
