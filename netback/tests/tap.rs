//! netback with real tap devices (`/dev/net/tun`) on the simulated host: the interface
//! `vif<domid>.<devid>` appears at probe with the flags netback asks for, the guest's frames
//! reach the kernel (its counters in `/sys/class/net/.../statistics`, which `/proc/net/dev`
//! and xentop read), and a frame the kernel sends out of the interface reaches the guest.
//! Needs `CAP_NET_ADMIN` and the `ip` tool; prints SKIP otherwise.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netback::netfront::{tcp_frame, FrontConfig, Netfront, TxPacket};
use netback::port::{Ports, RxOffloads, TapPorts, VifId};
use netback::wire::{rsp, Offload};
use netback::{Config, NetBack};
use xen_types::DomId;
use xenbus::testing::TestXenstore;
use xenbus::{create_device, Backend, Store};

const T: Duration = Duration::from_secs(20);

/// Why taps cannot be made here, if they cannot.
fn skip_reason() -> Option<String> {
    let probe = VifId {
        domid: DomId(999),
        devid: 9,
    };
    let p = TapPorts::new();
    if let Err(e) = p.create(probe) {
        return Some(format!("no tap devices: {e}"));
    }
    p.remove(probe);
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` tool".into());
    }
    None
}

fn stat(ifname: &str, what: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/{what}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn tap_interface_has_the_flags_netback_asks_for() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {why}");
        return;
    }
    let p = TapPorts::new();
    let v = VifId {
        domid: DomId(31),
        devid: 2,
    };
    p.create(v).unwrap();
    let flags = std::fs::read_to_string("/sys/class/net/vif31.2/tun_flags").unwrap();
    let flags = i32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    for f in [
        libc::IFF_TAP,
        libc::IFF_NO_PI,
        libc::IFF_VNET_HDR,
        libc::IFF_MULTI_QUEUE,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x} of {flags:#x}");
    }
    let rx = RxOffloads {
        csum: true,
        tso4: true,
        tso6: true,
    };
    assert_eq!(p.open(v, 3, rx).unwrap().len(), 3);
    p.remove(v);
    assert!(
        !Path::new("/sys/class/net/vif31.2").exists(),
        "interface removed"
    );
}

/// An `AF_PACKET` socket that sends raw frames out of interface `ifname`.
fn packet_socket(ifname: &str) -> (OwnedFd, libc::sockaddr_ll) {
    // SAFETY: socket() with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a NUL-terminated name that lives across the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index > 0);
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    (fd, addr)
}

#[test]
fn guest_frames_reach_the_kernel_through_the_tap_and_back() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {why}");
        return;
    }
    let xs = TestXenstore::start().unwrap();
    let host = xen_sim::Host::default();
    let drv = Arc::new(
        NetBack::sim(
            &host,
            DomId::DOM0,
            Arc::new(TapPorts::new()),
            Config::default(),
        )
        .unwrap(),
    );
    let be = Backend::start(xs.dom0().clone(), DomId::DOM0, drv.clone()).unwrap();
    let fe = DomId(32);
    create_device(
        &**xs.dom0(),
        DomId::DOM0,
        fe,
        "vif",
        0,
        &[("handle", "0"), ("script", "vif-bridge")],
        &[("handle", "0")],
    )
    .unwrap();
    let ifname = "vif32.0";
    let deadline = Instant::now() + T;
    while !Path::new(&format!("/sys/class/net/{ifname}")).exists() {
        assert!(Instant::now() < deadline, "{ifname} not created at probe");
        std::thread::sleep(Duration::from_millis(10));
    }
    // What vif-bridge does: the link up, then hotplug-status.
    let up = Command::new("ip")
        .args(["link", "set", ifname, "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let store = xs.guest(fe).unwrap();
    let h = host.clone();
    let t = std::thread::spawn(move || Netfront::connect(&h, store, fe, 0, FrontConfig::default()));
    std::thread::sleep(Duration::from_millis(100));
    xs.dom0()
        .write(
            "/local/domain/0/backend/vif/32/0/hotplug-status",
            "connected",
        )
        .unwrap();
    let mut f = t.join().unwrap().unwrap();

    let before = stat(ifname, "rx_packets");
    let pkts: Vec<TxPacket> = (0..5)
        .map(|i| TxPacket {
            data: tcp_frame(false, i, &[0x42; 1000], true),
            off: Offload {
                csum_blank: true,
                data_validated: true,
                gso: None,
            },
        })
        .collect();
    assert!(f.send(0, &pkts).unwrap().iter().all(|&s| s == rsp::OKAY));
    let deadline = Instant::now() + T;
    while stat(ifname, "rx_packets") < before + 5 {
        assert!(Instant::now() < deadline, "frames not seen by the kernel");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The other way: a frame sent out of the interface (as the bridge would) reaches the
    // guest. The kernel may send its own frames too (IPv6 neighbour discovery): look for ours.
    let (sock, addr) = packet_socket(ifname);
    let frame = tcp_frame(false, 4242, b"from the bridge to the guest", false);
    // SAFETY: sends `frame` (live for the call) to a valid sockaddr_ll of the right size.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        n,
        frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = f.recv(0, left).unwrap().expect("the bridge's frame");
        if p.data == frame {
            break;
        }
    }
    f.close().unwrap();
    be.stop();
}
