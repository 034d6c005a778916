//! The official XenAPI Python SDK (`pip install xenapi`) drives SRs, PBDs and VDIs of a file
//! SR on the `xapi` daemon (simulated host).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_output, Daemon, PASSWORD};

#[test]
fn python_sdk_drives_a_file_sr() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import XenAPI"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the XenAPI Python SDK is not installed: pip install xenapi\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 not found ({e}); install it and then: pip install xenapi"),
    }
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_storage.py");
    let child = Command::new(&python)
        .arg(script)
        .arg(format!("http://127.0.0.1:{}", d.http))
        .arg(PASSWORD)
        .arg(store.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SDK-STORAGE-OK"),
        "SDK script failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
