//! The README walk-through runs on the simulated host and leaves it as it found it.

use examples::demo::{self, Ticker};
use xenctrl::{ImageSource, Xen};

fn sim() -> (Xen, xen_sim::Host, Ticker) {
    let clock = xen_sim::Clock::manual();
    let host = xen_sim::Host::new(xen_sim::HostConfig {
        clock: clock.clone(),
        ..xen_sim::HostConfig::default()
    });
    (Xen::sim(host.clone()), host, Ticker::Sim(clock))
}

#[test]
fn the_walk_through_builds_watches_and_destroys_its_guests() {
    let (xen, host, ticker) = sim();
    let mut out = Vec::new();
    let kernel = ImageSource::Bytes(demo::sample_kernel(8 << 20));
    let s = demo::run(&xen, Some(&host), &ticker, Some(kernel), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(s.created.len(), 3);
    assert_eq!(s.free_after, s.free_before);
    assert_eq!(xen.list_domains().unwrap().len(), 1, "only dom0 is left");
    // The table shows the running, idle, paused and shut-down guests as xentop would.
    let line = |name: &str, title: &str| -> String {
        let section = text.split(&format!("-- {title}\n")).nth(1).unwrap();
        section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {title}:\n{text}"))
            .to_string()
    };
    let cols = |l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let web = cols(line("web", "after 2 s"));
    assert_eq!(
        (web[1].as_str(), web[3].as_str(), web[8].as_str()),
        ("r-----", "200.0", "2")
    );
    let db = cols(line("db", "after 2 s"));
    assert_eq!((db[1].as_str(), db[3].as_str()), ("-b----", "0.0"));
    assert_eq!(cols(line("web", "web paused"))[1], "--p---");
    assert_eq!(cols(line("batch", "batch shut down"))[1], "---s--");
    assert!(text.contains("host free memory: 7168 MiB before, 7168 MiB after"));
    assert!(text.contains("-> domid 2: console pfn"));
}

#[test]
fn without_a_kernel_guests_get_memory_but_are_not_built() {
    let (xen, host, ticker) = sim();
    let mut out = Vec::new();
    let s = demo::run(&xen, Some(&host), &ticker, None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("not built").count(), 3);
    assert_eq!(s.free_after, s.free_before);
}

#[test]
fn a_garbage_kernel_stops_the_demo_with_a_clear_error() {
    let (xen, host, ticker) = sim();
    let mut out = Vec::new();
    let kernel = ImageSource::Bytes(b"not an ELF".to_vec());
    let e = demo::run(&xen, Some(&host), &ticker, Some(kernel), &mut out).unwrap_err();
    assert!(e.to_string().contains("invalid argument"), "{e}");
}

#[test]
fn the_binary_runs_on_the_simulated_host_and_refuses_real_mode_off_xen() {
    let bin = env!("CARGO_BIN_EXE_demo");
    let ok = std::process::Command::new(bin).output().unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("sim backend") && text.contains("destroyed batch"));
    if std::path::Path::new(xenctrl::PRIVCMD).exists() {
        return; // a real dom0: --real would work
    }
    let real = std::process::Command::new(bin)
        .arg("--real")
        .output()
        .unwrap();
    assert_eq!(real.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&real.stderr).trim(),
        "error: not a Xen dom0: /dev/xen/privcmd is missing"
    );
}
