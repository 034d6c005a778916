//! The terminal view under tmux on the simulated host, driven as a person would: keys sent
//! with `send-keys`, the screen read with `capture-pane`. Prints SKIP when tmux is missing.

mod fixtures;

use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server running xentop in a 200×40 window; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8(self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    /// Waits until the screen satisfies `f`; panics with the screen after 15 s.
    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "t"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The domain names of the table's lines, in screen order.
fn rows(screen: &str) -> Vec<String> {
    let mut in_table = false;
    let mut out = Vec::new();
    for l in screen.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first == "NAME" {
            in_table = true;
            continue;
        }
        if in_table && (first == "Domain-0" || first.starts_with("guest")) {
            out.push(first.to_string());
        }
    }
    out
}

#[test]
fn a_person_sorts_opens_a_domain_changes_the_delay_and_quits() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIP: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fixtures::standard(dir.path());
    let t = Tmux {
        socket: format!("xentop-test-{}", std::process::id()),
    };
    let cmd = format!(
        "{} --root {} --sim-guests 3 -d 1",
        env!("CARGO_BIN_EXE_xentop"),
        dir.path().display()
    );
    let out = t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "200",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The summary, the header, the domains by name, the key line.
    let s = t.wait("the table", |s| {
        s.contains("guest3") && s.contains("xentop - ")
    });
    assert!(s.contains("Xen 4.17.0-sim"), "{s}");
    assert!(
        s.contains("4 domains: 4 running, 0 blocked, 0 paused"),
        "{s}"
    );
    assert!(s.contains("Mem: 8388608k total"), "{s}");
    assert!(
        s.contains("NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k)"),
        "{s}"
    );
    assert!(
        s.contains("Delay") && s.contains("Networks") && s.contains("uit"),
        "{s}"
    );
    assert_eq!(rows(&s), ["Domain-0", "guest1", "guest2", "guest3"]);
    assert!(s.contains("ort order (NAME)"), "{s}");

    // `s` four times: sorted by MEM(k), the largest first.
    t.keys(&["s", "s", "s", "s"]);
    let s = t.wait("sort by memory", |s| s.contains("ort order (MEM(k))"));
    assert_eq!(rows(&s), ["Domain-0", "guest3", "guest2", "guest1"]);

    // `n`: the vif lines of guest1 (the fixture's /proc/net/dev).
    t.keys(&["n"]);
    let s = t.wait("network lines", |s| s.contains("Net0 RX:"));
    assert!(s.contains("Net0 RX:     2048bytes"), "{s}");
    t.keys(&["n"]);
    t.wait("no network lines", |s| !s.contains("Net0 RX:"));

    // Down, Enter: guest3's details; Escape: back to the table.
    t.keys(&["Down", "Enter"]);
    let s = t.wait("guest3's details", |s| s.contains("Domain guest3 (3)"));
    assert!(s.contains("VCPUs(sec):"), "{s}");
    assert!(s.contains("Memory 393216k of 394240k max"), "{s}");
    t.keys(&["Escape"]);
    t.wait("the table again", |s| {
        s.contains("ort order (MEM(k))") && s.contains("guest1")
    });

    // `d`, a new delay, Enter.
    t.keys(&["d"]);
    t.wait("the delay prompt", |s| s.contains("Delay(sec):"));
    t.keys(&["2"]);
    t.wait("the typed delay", |s| s.contains("Delay(sec): 2"));
    t.keys(&["Enter"]);
    t.wait("the key line again", |s| {
        !s.contains("Delay(sec)") && s.contains("elay")
    });

    // `q`: xentop ends (and with it the session).
    t.keys(&["q"]);
    let t0 = Instant::now();
    while t.alive() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "xentop did not quit:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
