//! `xentop -b` on the simulated host, as a person would run it.

mod fixtures;

use std::process::Command;

fn xentop(root: &std::path::Path, args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_xentop"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

#[test]
fn batch_mode_prints_the_table_each_iteration() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::standard(dir.path());
    let (out, err, ok) = xentop(
        dir.path(),
        &["-b", "-i", "2", "-d", "0.3", "--sim-guests", "3"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("simulated Xen host"), "{err}");
    assert!(err.contains("vif9.0 but domain 9 does not exist"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // Two iterations of a header and four domains; no summary in batch mode.
    assert_eq!(lines.len(), 10, "{out}");
    for it in [0, 5] {
        assert!(lines[it]
            .trim_start()
            .starts_with("NAME  STATE   CPU(sec) CPU(%)"));
        let names: Vec<&str> = lines[it + 1..it + 5]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        // Sorted by name (xentop's first sort column).
        assert_eq!(names, ["Domain-0", "guest1", "guest2", "guest3"]);
    }
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let g1 = cols(lines[2]);
    assert_eq!(g1[3], "0.0", "no CPU(%) without a previous sample");
    // guest1: 128 MiB, 1 MiB of slack, 2 vCPUs, the fixture's vifs and disks.
    assert_eq!(&g1[4..5], ["131072"]);
    assert_eq!(
        &g1[6..],
        ["132096", "1.6", "2", "2", "1025", "3", "2", "1", "20", "30", "400", "500", "0"]
    );
    let g1 = cols(lines[7]);
    let pct: f64 = g1[3].parse().unwrap();
    assert!(pct > 100.0 && pct <= 250.0, "two running vCPUs: {pct}");
    // guest2 has one vCPU, no vifs and no disks.
    let g2 = cols(lines[8]);
    assert_eq!(
        &g2[8..],
        ["1", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"]
    );
}

#[test]
fn extra_lines_dom0_first_and_repeated_headers() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::standard(dir.path());
    let (out, err, ok) = xentop(
        dir.path(),
        &[
            "-b",
            "-i",
            "1",
            "-n",
            "-x",
            "-v",
            "-r",
            "-z",
            "--sim-guests",
            "1",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].trim_start().starts_with("Domain-0"), "{out}");
    assert!(lines[2].starts_with("VCPUs(sec):   0:"), "{out}");
    // -r: a header before guest1 too.
    assert!(lines[3].trim_start().starts_with("NAME"), "{out}");
    assert!(lines[4].trim_start().starts_with("guest1"), "{out}");
    assert!(lines[5].starts_with("VCPUs(sec): "), "{out}");
    assert!(
        lines[6].starts_with(
            "Net0 RX:     2048bytes       10pkts        1err        2drop  TX:  1048576bytes"
        ),
        "{out}"
    );
    assert!(lines[7].starts_with("Net1 RX:     1024bytes"), "{out}");
    assert_eq!(
        lines[8],
        "VBD BlkBack 51712 [ca: 0]  OO:        1   RD:       20   WR:       30   RSECT:        400   WSECT:        500"
    );
    assert!(
        lines[9].starts_with("VBD BlkBack 51728 [ca:10]  OO:        -"),
        "{out}"
    );
    assert_eq!(lines.len(), 10, "{out}");
}

#[test]
fn bad_files_end_the_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_, err, ok) = xentop(dir.path(), &["-b", "-i", "1"]);
    assert!(!ok);
    assert!(
        err.contains("Failed to retrieve statistics") && err.contains("proc/net/dev"),
        "{err}"
    );
    let (_, err, ok) = xentop(dir.path(), &["-b", "-d", "-1"]);
    assert!(!ok && err.contains("bad delay"), "{err}");
    let (_, err, ok) = xentop(dir.path(), &["-b", "-i", "x"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, ok) = xentop(dir.path(), &["-V"]);
    assert!(ok && out.starts_with("xentop 1.0"), "{out}");
    let (out, _, ok) = xentop(dir.path(), &["-h"]);
    assert!(ok);
    for opt in [
        "--delay",
        "--networks",
        "--vbds",
        "--repeat-header",
        "--vcpus",
        "--batch",
        "--iterations",
        "--full-name",
        "--dom0-first",
    ] {
        assert!(out.contains(opt), "{opt} missing from {out}");
    }
}
