//! `blk-load` on an image file: a run reports its figures; bad arguments get a clear error.

use std::process::Command;

fn image(bytes: u64) -> tempfile::NamedTempFile {
    // In the target folder (a real disk): O_DIRECT is refused by some tmpfs.
    let f = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    f.as_file().set_len(bytes).unwrap();
    f
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blk-load"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_run_reports_throughput_and_latency() {
    let img = image(1 << 20);
    let dev = img.path().to_str().unwrap();
    for op in ["read", "write"] {
        let (code, out, err) = run(&[
            "--dev", dev, "--op", op, "--bs", "4096", "--qd", "2", "--ms", "100", "--offset",
            "65536", "--span", "65536",
        ]);
        assert_eq!(code, Some(0), "{err}");
        let ops: u64 = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ops="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no ops= in {out:?}"));
        assert!(ops > 0, "{out}");
        for k in ["kib_s=", "mean_us=", "p99_us=", "qd=2", "bs=4096"] {
            assert!(out.contains(k), "{k} missing: {out}");
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let img = image(1 << 20);
    let dev = img.path().to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--bs", "1000"], "not a multiple of 512"),
        (&["--qd", "0"], "--qd must be at least 1"),
        (&["--offset", "1048576"], "does not fit"),
        (&["--offset", "0", "--span", "2097152"], "does not fit"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--dev", dev, "--op", "read", "--ms", "10"];
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let (code, _, err) = run(&["--dev", "/nonexistent/disk", "--op", "read"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/disk"), "{err}");
}
