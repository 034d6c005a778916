//! `Xen::auto` never puts a simulated host in place of a hypervisor that is there but
//! unusable, and says which one it chose.

use std::path::Path;

use xenctrl::{Error, Xen};

/// A fake machine root with `dev/xen` and, if asked, `proc/xen`.
fn root(proc_xen: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dev/xen")).expect("dev/xen");
    if proc_xen {
        std::fs::create_dir_all(dir.path().join("proc/xen")).expect("proc/xen");
    }
    dir
}

/// Runs `auto_at(root)` and returns the `PrivcmdUnusable` error's path, reason and message.
fn unusable(root: &Path) -> (std::path::PathBuf, String, String) {
    match Xen::auto_at(root) {
        Err(e @ Error::PrivcmdUnusable { .. }) => {
            let msg = e.to_string();
            let Error::PrivcmdUnusable { path, reason, .. } = e else {
                unreachable!()
            };
            (path, reason, msg)
        }
        Err(e) => panic!("expected PrivcmdUnusable, got {e:?}"),
        Ok(x) => panic!("expected PrivcmdUnusable, got a handle on {}", x.describe()),
    }
}

#[test]
fn privcmd_that_is_not_a_device_is_an_error_not_a_simulator() {
    let r = root(true);
    let privcmd = r.path().join("dev/xen/privcmd");
    std::fs::write(&privcmd, b"").expect("privcmd file");
    let (path, reason, msg) = unusable(r.path());
    assert_eq!(path, privcmd);
    assert_eq!(reason, "it is not a character device");
    assert!(
        msg.starts_with(&format!("{}: ", privcmd.display())),
        "{msg}"
    );
    assert!(msg.contains("no simulated host is started"), "{msg}");
}

#[test]
fn privcmd_that_cannot_be_opened_is_an_error_with_the_os_reason() {
    let r = root(false);
    // A directory: opening it read-write fails (EISDIR) even for root, who may open a file
    // whatever its mode.
    let privcmd = r.path().join("dev/xen/privcmd");
    std::fs::create_dir(&privcmd).expect("privcmd dir");
    let (path, reason, _) = unusable(r.path());
    assert_eq!(path, privcmd);
    assert!(reason.starts_with("it cannot be opened: "), "{reason}");
    assert!(reason.contains("directory"), "{reason}");
    let err = Xen::auto_at(r.path()).unwrap_err();
    assert_eq!(err.errno(), Some(xen_types::Errno(libc::EISDIR)));
}

#[test]
fn proc_xen_without_privcmd_is_an_error() {
    let r = root(true);
    let (path, reason, _) = unusable(r.path());
    assert_eq!(path, r.path().join("dev/xen/privcmd"));
    assert!(reason.contains("missing"), "{reason}");
    assert!(reason.contains("proc/xen"), "{reason}");
}

#[cfg(feature = "sim")]
#[test]
fn no_xen_at_all_picks_the_simulator_and_says_so() {
    let r = root(false);
    let xen = Xen::auto_at(r.path()).expect("simulated host");
    assert!(xen.is_simulated());
    assert_eq!(xen.backend(), "sim");
    let d = xen.describe();
    assert!(d.starts_with("a simulated Xen host (xen-sim)"), "{d}");
    assert!(
        d.contains("dev/xen/privcmd") && d.contains("proc/xen"),
        "{d}"
    );
    // The simulated host works.
    assert!(xen.physinfo().expect("physinfo").free_pages.0 > 0);
}

#[cfg(not(feature = "sim"))]
#[test]
fn no_xen_at_all_without_the_simulator_is_not_on_xen() {
    let r = root(false);
    assert!(matches!(Xen::auto_at(r.path()), Err(Error::NotOnXen)));
}

#[test]
fn explicit_backends_describe_themselves() {
    if let Ok(x) = Xen::real() {
        assert!(!x.is_simulated());
        assert!(
            x.describe().contains("/dev/xen/privcmd"),
            "{}",
            x.describe()
        );
    } else {
        println!("SKIP real half: not a Xen dom0");
    }
    #[cfg(feature = "sim")]
    {
        let x = Xen::sim(xen_sim::Host::default());
        assert!(x.is_simulated());
        assert_eq!(
            x.describe(),
            "a simulated Xen host (xen-sim), not a hypervisor"
        );
    }
}
