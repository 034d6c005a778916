//! The client checks the server's TLS certificate: against trusted roots with the host's
//! name, or a pinned fingerprint; it skips the check only when told to.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, PASSWORD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use toolstack::client::{certificate_fingerprint, Client, Endpoint, TlsVerify};
use toolstack::Error;

fn server_cert(state: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(state.join("xapi-ssl.pem")).expect("xapi wrote its certificate")
}

fn login(d: &Daemon, host: &str, verify: TlsVerify) -> Result<Client, Error> {
    let mut c = Client::with_tls(Endpoint::Tls(host.into(), d.https), verify);
    c.login("root", PASSWORD)?;
    Ok(c)
}

fn is_tls_error(r: &Result<Client, Error>) -> bool {
    matches!(r, Err(Error::Tls(_)))
}

#[test]
fn the_certificate_is_verified_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let cert = server_cert(dir.path());
    let pem = dir.path().join("xapi-ssl.pem");

    // xapi's certificate is self-signed: the system's roots do not vouch for it.
    let r = login(&d, "127.0.0.1", TlsVerify::SystemRoots);
    assert!(is_tls_error(&r), "{r:?}");

    // Trusted as a root (a pool's bundle holds such certificates), under a name it carries.
    let mut c = login(&d, "127.0.0.1", TlsVerify::roots_from_pem(&pem).unwrap()).unwrap();
    assert!(!c
        .call("VM.get_all", &[])
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    login(&d, "localhost", TlsVerify::roots_from_pem(&pem).unwrap()).unwrap();
    // Pinned by fingerprint: a different fingerprint will not do, and the error says which
    // certificate the server showed.
    let fp = certificate_fingerprint(&cert);
    login(&d, "127.0.0.1", TlsVerify::fingerprint(&fp).unwrap()).unwrap();
    let mut wrong = fp.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let r = login(&d, "127.0.0.1", TlsVerify::fingerprint(&wrong).unwrap());
    match &r {
        Err(Error::Tls(m)) => assert!(m.contains(&fp), "the error names the fingerprint seen: {m}"),
        other => panic!("{other:?}"),
    }

    // A certificate that is not the server's, trusted as a root, vouches for nothing.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let r = login(
        &d,
        "127.0.0.1",
        TlsVerify::Roots(vec![other.cert.der().clone()]),
    );
    assert!(is_tls_error(&r), "{r:?}");

    // Only when asked: no check at all.
    login(&d, "127.0.0.1", TlsVerify::Insecure).unwrap();
}

#[test]
fn a_trusted_certificate_must_name_the_host() {
    // A host whose certificate names another host (xapi keeps a certificate it finds).
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["elsewhere.invalid".to_owned()]).unwrap();
    let pem = dir.path().join("xapi-ssl.pem");
    std::fs::write(
        &pem,
        format!("{}{}", ck.key_pair.serialize_pem(), ck.cert.pem()),
    )
    .unwrap();
    let d = Daemon::start(dir.path());

    let r = login(&d, "127.0.0.1", TlsVerify::roots_from_pem(&pem).unwrap());
    match &r {
        Err(Error::Tls(m)) => assert!(m.contains("127.0.0.1"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Pinning is by certificate, not by name.
    let fp = certificate_fingerprint(ck.cert.der());
    login(&d, "127.0.0.1", TlsVerify::fingerprint(&fp).unwrap()).unwrap();
}

#[test]
fn xe_verifies_the_server_it_talks_to() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let fp = certificate_fingerprint(&server_cert(dir.path()));
    let port = d.https.to_string();
    let xe = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xe"))
            .args(["-s", "127.0.0.1", "-p", &port, "-pw", PASSWORD])
            .args(extra)
            .args(["host-list", "--minimal"])
            .output()
            .unwrap()
    };
    let o = xe(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TLS"), "{err}");
    assert!(o.stdout.is_empty());

    let pinned = xe(&["--fingerprint", &fp]);
    assert!(
        pinned.status.success(),
        "{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&pinned.stdout).trim().len(), 36);
    let ca = xe(&[
        "--cafile",
        dir.path().join("xapi-ssl.pem").to_str().unwrap(),
    ]);
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    assert_eq!(ca.stdout, pinned.stdout);
    let insecure = xe(&["--no-verify"]);
    assert_eq!(insecure.stdout, pinned.stdout);

    let o = xe(&["--fingerprint", &"00".repeat(32)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("fingerprint"));
}
