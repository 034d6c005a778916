//! Event channels on real Xen, inside a dom0 (run by `cargo xtask e2e`).

use std::time::Duration;

use evtchn::Evtchn;
use xen_types::{DomId, Errno, EvtchnPort, Virq};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn drain(e: &Evtchn) -> Vec<EvtchnPort> {
    let mut all = Vec::new();
    let mut buf = [EvtchnPort(0); 16];
    while let Ok(n) = e.read_pending(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    all
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn unbound_port_interdomain_bind_notify_receive_within_dom0() {
    let a = Evtchn::open().unwrap();
    let b = Evtchn::open().unwrap();
    let pa = a.bind_unbound_port(DomId::DOM0).unwrap();
    let pb = b.bind_interdomain(DomId::DOM0, pa).unwrap();
    for p in drain(&b) {
        b.unmask(p).unwrap();
    }
    a.notify(pa).unwrap();
    let mut buf = [EvtchnPort(0); 4];
    let n = b.wait(&mut buf, WAIT).unwrap();
    assert_eq!(&buf[..n], &[pb]);
    // Masked until unmasked: a second notification waits.
    a.notify(pa).unwrap();
    assert_eq!(
        b.wait(&mut buf, Some(Duration::from_millis(100))).unwrap(),
        0
    );
    b.unmask(pb).unwrap();
    let n = b.wait(&mut buf, WAIT).unwrap();
    assert_eq!(&buf[..n], &[pb]);
    b.unmask(pb).unwrap();
    // And back the other way.
    b.notify(pb).unwrap();
    let n = a.wait(&mut buf, WAIT).unwrap();
    assert_eq!(&buf[..n], &[pa]);
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn binding_a_port_that_is_not_unbound_for_us_fails() {
    let a = Evtchn::open().unwrap();
    let pa = a.bind_unbound_port(DomId(0x7fef)).unwrap();
    let b = Evtchn::open().unwrap();
    assert_eq!(
        b.bind_interdomain(DomId::DOM0, pa).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert_eq!(b.unbind(pa).unwrap_err().errno(), Errno::ENOTCONN);
    a.unbind(pa).unwrap();
}

#[test]
#[ignore = "needs a Xen dom0: run by cargo xtask e2e"]
fn bind_virq_dom_exc() {
    // xenstored may already hold VIRQ_DOM_EXC in this dom0: EEXIST then proves the binding
    // path reached Xen.
    let e = Evtchn::open().unwrap();
    match e.bind_virq(Virq::DOM_EXC) {
        Ok(p) => e.unbind(p).unwrap(),
        Err(err) => assert_eq!(err.errno(), Errno::EEXIST),
    }
}
