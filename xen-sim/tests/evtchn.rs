//! Event channels of the simulated host, each rule checked against the errno Xen 4.17
//! (`xen/common/event_channel.c`) or the Linux evtchn driver returns.

use xen_sim::evtchn::{Handle, PortStatus};
use xen_sim::Host;
use xen_types::{DomId, Errno, EvtchnPort, Pages, Virq};

fn guest(h: &Host, max_port: u32) -> DomId {
    let cfg = xen_sim::domain::small_pv_guest(max_port);
    let d = h.create_domain(DomId::INVALID, &cfg).unwrap();
    h.set_max_mem_kb(d, 4096).unwrap();
    h.increase_reservation(d, Pages(256)).unwrap();
    d
}

fn drain(h: &Handle) -> Vec<EvtchnPort> {
    let mut buf = [EvtchnPort(0); 64];
    let n = h.read_pending(&mut buf);
    buf[..n].to_vec()
}

/// Connects `a` (acting as its domain) to `b`: returns (port of a, port of b), with the
/// bind-time pending event of b's new port consumed and unmasked.
fn connect(a: &Handle, b: &Handle) -> (EvtchnPort, EvtchnPort) {
    let pa = a.bind_unbound_port(b.domid()).unwrap();
    let pb = b.bind_interdomain(a.domid(), pa).unwrap();
    assert_eq!(
        drain(b),
        vec![pb],
        "Xen marks a new interdomain port pending"
    );
    b.unmask(pb).unwrap();
    (pa, pb)
}

#[test]
fn interdomain_channel_delivers_both_ways() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let front = h.evtchn_open(g).unwrap();
    let back = h.evtchn_open(DomId::DOM0).unwrap();
    let (fp, bp) = connect(&front, &back);
    assert_eq!(
        h.evtchn_status(g, fp),
        Ok(PortStatus::Interdomain {
            remote: DomId::DOM0,
            remote_port: bp
        })
    );
    assert!(drain(&back).is_empty());
    front.notify(fp).unwrap();
    assert_eq!(drain(&back), vec![bp]);
    assert!(drain(&front).is_empty(), "the sender is not notified");
    back.notify(bp).unwrap();
    assert_eq!(drain(&front), vec![fp]);
}

#[test]
fn loopback_within_one_domain() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    let a = d0.bind_unbound_port(DomId::SELF).unwrap();
    assert_eq!(
        h.evtchn_status(DomId::DOM0, a),
        Ok(PortStatus::Unbound {
            remote: DomId::DOM0
        })
    );
    let b = d0.bind_interdomain(DomId::SELF, a).unwrap();
    assert_ne!(a, b);
    assert_eq!(drain(&d0), vec![b]);
    d0.unmask(b).unwrap();
    d0.notify(a).unwrap();
    assert_eq!(drain(&d0), vec![b]);
    d0.notify(b).unwrap();
    assert_eq!(drain(&d0), vec![a]);
}

#[test]
fn port_zero_is_reserved_and_ports_start_at_one() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    assert_eq!(d0.bind_unbound_port(DomId(5)).unwrap(), EvtchnPort(1));
    assert_eq!(
        h.evtchn_status(DomId::DOM0, EvtchnPort(0)),
        Ok(PortStatus::Closed)
    );
}

#[test]
fn bind_to_a_port_not_unbound_for_us_is_einval() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let g2 = guest(&h, 1023);
    let gh = h.evtchn_open(g).unwrap();
    let g2h = h.evtchn_open(g2).unwrap();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    // Unbound, but for another domain.
    let for_g2 = gh.bind_unbound_port(g2).unwrap();
    assert_eq!(d0.bind_interdomain(g, for_g2), Err(Errno::EINVAL));
    // Already connected.
    let (gp, _) = connect(&gh, &g2h);
    assert_eq!(d0.bind_interdomain(g, gp), Err(Errno::EINVAL));
    // Free and out-of-range ports.
    assert_eq!(d0.bind_interdomain(g, EvtchnPort(40)), Err(Errno::EINVAL));
    assert_eq!(
        d0.bind_interdomain(g, EvtchnPort(1 << 20)),
        Err(Errno::EINVAL)
    );
    // The failures leaked no local port: the next one allocated is still port 1.
    assert_eq!(d0.bind_unbound_port(g).unwrap(), EvtchnPort(1));
    // The rightful domain still can.
    assert!(g2h.bind_interdomain(g, for_g2).is_ok());
}

#[test]
fn unknown_domain_is_esrch() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    assert_eq!(
        d0.bind_interdomain(DomId(77), EvtchnPort(1)),
        Err(Errno::ESRCH)
    );
    assert_eq!(h.evtchn_open(DomId(77)).err(), Some(Errno::ESRCH));
    assert_eq!(
        h.evtchn_alloc_unbound(DomId(77), DomId::DOM0),
        Err(Errno::ESRCH)
    );
}

#[test]
fn exhausting_max_evtchn_port_is_enospc() {
    let h = Host::default();
    let g = guest(&h, 3);
    let gh = h.evtchn_open(g).unwrap();
    let ports: Vec<_> = (0..3)
        .map(|_| gh.bind_unbound_port(DomId::DOM0).unwrap())
        .collect();
    assert_eq!(ports, vec![EvtchnPort(1), EvtchnPort(2), EvtchnPort(3)]);
    assert_eq!(gh.bind_unbound_port(DomId::DOM0), Err(Errno::ENOSPC));
    assert_eq!(gh.bind_virq(Virq(xen_sys::VIRQ_TIMER)), Err(Errno::ENOSPC));
    // A closed port is reused.
    gh.unbind(EvtchnPort(2)).unwrap();
    assert_eq!(gh.bind_unbound_port(DomId::DOM0), Ok(EvtchnPort(2)));
}

#[test]
fn masked_notification_stays_pending_until_unmask() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let front = h.evtchn_open(g).unwrap();
    let back = h.evtchn_open(DomId::DOM0).unwrap();
    let (fp, bp) = connect(&front, &back);
    front.notify(fp).unwrap();
    assert_eq!(drain(&back), vec![bp]);
    // Delivered ports are masked: two more notifications coalesce into one pending bit.
    front.notify(fp).unwrap();
    front.notify(fp).unwrap();
    assert!(drain(&back).is_empty());
    back.unmask(bp).unwrap();
    assert_eq!(drain(&back), vec![bp]);
    // Unmasking with nothing pending delivers nothing.
    back.unmask(bp).unwrap();
    assert!(drain(&back).is_empty());
}

#[test]
fn closing_one_end_leaves_the_other_unbound_for_the_same_domain() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let front = h.evtchn_open(g).unwrap();
    let back = h.evtchn_open(DomId::DOM0).unwrap();
    let (fp, bp) = connect(&front, &back);
    back.unbind(bp).unwrap();
    assert_eq!(h.evtchn_status(DomId::DOM0, bp), Ok(PortStatus::Closed));
    assert_eq!(
        h.evtchn_status(g, fp),
        Ok(PortStatus::Unbound {
            remote: DomId::DOM0
        })
    );
    // Notifying an unbound port is dropped without error, as Xen does.
    front.notify(fp).unwrap();
    assert!(drain(&back).is_empty());
    // dom0 can reconnect to the same port (a backend restart).
    let bp2 = back.bind_interdomain(g, fp).unwrap();
    assert_eq!(drain(&back), vec![bp2]);
    back.unmask(bp2).unwrap();
    front.notify(fp).unwrap();
    assert_eq!(drain(&back), vec![bp2]);
}

#[test]
fn ports_belong_to_the_handle_that_bound_them() {
    let h = Host::default();
    let a = h.evtchn_open(DomId::DOM0).unwrap();
    let b = h.evtchn_open(DomId::DOM0).unwrap();
    let p = a.bind_unbound_port(DomId(3)).unwrap();
    assert_eq!(b.notify(p), Err(Errno::ENOTCONN));
    assert_eq!(b.unbind(p), Err(Errno::ENOTCONN));
    assert_eq!(
        b.unmask(p),
        Ok(()),
        "the driver ignores unmasks of foreign ports"
    );
    assert_eq!(a.unbind(EvtchnPort(99)), Err(Errno::ENOTCONN));
    // Dropping a handle closes its ports; the peer end becomes unbound.
    let q = a.bind_unbound_port(DomId::SELF).unwrap();
    let r = b.bind_interdomain(DomId::SELF, q).unwrap();
    drop(a);
    assert_eq!(h.evtchn_status(DomId::DOM0, p), Ok(PortStatus::Closed));
    assert_eq!(h.evtchn_status(DomId::DOM0, q), Ok(PortStatus::Closed));
    assert_eq!(
        h.evtchn_status(DomId::DOM0, r),
        Ok(PortStatus::Unbound {
            remote: DomId::DOM0
        })
    );
}

#[test]
fn hypercall_level_send_rules() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    // A free port: EINVAL.
    assert_eq!(
        h.evtchn_send(DomId::DOM0, EvtchnPort(7)),
        Err(Errno::EINVAL)
    );
    // A VIRQ port cannot be sent on.
    let v = d0.bind_virq(Virq::DOM_EXC).unwrap();
    assert_eq!(h.evtchn_send(DomId::DOM0, v), Err(Errno::EINVAL));
    // Through a handle the driver ignores the hypercall's result.
    assert_eq!(d0.notify(v), Ok(()));
    // An unbound port: dropped.
    let u = d0.bind_unbound_port(DomId(9)).unwrap();
    assert_eq!(h.evtchn_send(DomId::DOM0, u), Ok(()));
}

#[test]
fn virq_rules_and_dom_exc_on_domain_death() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    assert_eq!(d0.bind_virq(Virq(xen_sys::NR_VIRQS)), Err(Errno::EINVAL));
    let p = d0.bind_virq(Virq::DOM_EXC).unwrap();
    assert_eq!(
        h.evtchn_status(DomId::DOM0, p),
        Ok(PortStatus::Virq(Virq::DOM_EXC))
    );
    let other = h.evtchn_open(DomId::DOM0).unwrap();
    assert_eq!(other.bind_virq(Virq::DOM_EXC), Err(Errno::EEXIST));
    let g = guest(&h, 1023);
    drain(&d0);
    d0.unmask(p).unwrap();
    h.destroy(g).unwrap();
    assert_eq!(
        drain(&d0),
        vec![p],
        "VIRQ_DOM_EXC raised when a domain dies"
    );
    // After unbinding, the VIRQ may be bound again.
    d0.unbind(p).unwrap();
    assert!(other.bind_virq(Virq::DOM_EXC).is_ok());
}

#[test]
fn destroying_a_domain_unbinds_its_peers() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let front = h.evtchn_open(g).unwrap();
    let back = h.evtchn_open(DomId::DOM0).unwrap();
    let (_fp, bp) = connect(&front, &back);
    h.destroy(g).unwrap();
    assert_eq!(
        h.evtchn_status(DomId::DOM0, bp),
        Ok(PortStatus::Unbound { remote: g })
    );
    assert_eq!(back.notify(bp), Ok(()), "dropped, not an error");
    // The dead domain's handle fails cleanly.
    assert_eq!(front.bind_unbound_port(DomId::DOM0), Err(Errno::ESRCH));
    drop(front);
}

#[test]
fn toolstack_allocated_port_is_attached_by_the_guest() {
    let h = Host::default();
    let g = guest(&h, 1023);
    // The toolstack makes the guest's xenstore port, unbound for dom0.
    let gp = h.evtchn_alloc_unbound(g, DomId::DOM0).unwrap();
    let xenstored = h.evtchn_open(DomId::DOM0).unwrap();
    let sp = xenstored.bind_interdomain(g, gp).unwrap();
    drain(&xenstored);
    xenstored.unmask(sp).unwrap();
    // An event before the guest attaches is kept pending and delivered on attach.
    xenstored.notify(sp).unwrap();
    let guest_h = h.evtchn_open(g).unwrap();
    guest_h.attach(gp).unwrap();
    assert_eq!(drain(&guest_h), vec![gp]);
    let again = h.evtchn_open(g).unwrap();
    assert_eq!(again.attach(gp), Err(Errno::EBUSY));
    assert_eq!(again.attach(EvtchnPort(500)), Err(Errno::EINVAL));
    guest_h.notify(gp).unwrap();
    assert_eq!(drain(&xenstored), vec![sp]);
}

#[test]
fn unbind_drops_queued_deliveries_of_that_port() {
    let h = Host::default();
    let d0 = h.evtchn_open(DomId::DOM0).unwrap();
    let a = d0.bind_unbound_port(DomId::SELF).unwrap();
    let b = d0.bind_interdomain(DomId::SELF, a).unwrap();
    // b's bind-time event is queued; unbinding b must not leave it to be read.
    d0.unbind(b).unwrap();
    assert!(drain(&d0).is_empty());
}

#[test]
fn many_ports_on_one_handle_read_in_batches() {
    let h = Host::default();
    let back = h.evtchn_open(DomId::DOM0).unwrap();
    let front = h.evtchn_open(DomId::DOM0).unwrap();
    let mut pairs = Vec::new();
    for _ in 0..100 {
        pairs.push(connect(&front, &back));
    }
    for (fp, _) in &pairs {
        front.notify(*fp).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [EvtchnPort(0); 16];
    loop {
        let n = back.read_pending(&mut buf);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let want: Vec<_> = pairs.iter().map(|(_, bp)| *bp).collect();
    assert_eq!(got, want);
}

#[test]
fn a_restricted_handle_binds_only_to_its_domain() {
    let h = Host::default();
    let g = guest(&h, 1023);
    let g2 = guest(&h, 1023);
    let gh = h.evtchn_open(g).unwrap();
    let g2h = h.evtchn_open(g2).unwrap();
    let dm = h.evtchn_open(DomId::DOM0).unwrap();
    assert_eq!(dm.restrict(DomId::DOM0), Err(Errno::EINVAL));
    assert_eq!(dm.restrict(DomId::INVALID), Err(Errno::EINVAL));
    dm.restrict(g).unwrap();
    assert_eq!(dm.restrict(g2), Err(Errno::EACCES));
    assert_eq!(dm.bind_unbound_port(g), Err(Errno::EACCES));
    assert_eq!(dm.bind_virq(Virq::DOM_EXC), Err(Errno::EACCES));
    let p2 = g2h.bind_unbound_port(DomId::DOM0).unwrap();
    assert_eq!(dm.bind_interdomain(g2, p2), Err(Errno::EACCES));
    let p = gh.bind_unbound_port(DomId::DOM0).unwrap();
    assert!(dm.bind_interdomain(g, p).is_ok());
}

/// Random operations by several handles of three domains; after each step every interdomain
/// port's peer points back at it, and no operation fails with an errno outside Xen's set.
#[test]
fn random_operations_keep_channels_consistent() {
    let h = Host::default();
    let doms = [DomId::DOM0, guest(&h, 63), guest(&h, 63)];
    let handles: Vec<Handle> = doms
        .iter()
        .flat_map(|&d| [h.evtchn_open(d).unwrap(), h.evtchn_open(d).unwrap()])
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let allowed = [
        Errno::EINVAL,
        Errno::ENOSPC,
        Errno::ENOTCONN,
        Errno::EEXIST,
        Errno::ESRCH,
    ];
    let mut connected = 0;
    for _ in 0..5000 {
        let hd = &handles[rnd(handles.len() as u64) as usize];
        let other = doms[rnd(3) as usize];
        let port = EvtchnPort(rnd(70) as u32);
        let r = match rnd(6) {
            0 => hd.bind_unbound_port(other).map(drop),
            1 => hd.bind_interdomain(other, port).map(|_| connected += 1),
            2 => hd.unbind(port),
            3 => hd.notify(port),
            4 => hd.unmask(port),
            _ => {
                drain(hd);
                Ok(())
            }
        };
        if let Err(e) = r {
            assert!(allowed.contains(&e), "unexpected {e:?}");
        }
        for &d in &doms {
            for p in 0..70 {
                if let Ok(PortStatus::Interdomain {
                    remote,
                    remote_port,
                }) = h.evtchn_status(d, EvtchnPort(p))
                {
                    assert_eq!(
                        h.evtchn_status(remote, remote_port),
                        Ok(PortStatus::Interdomain {
                            remote: d,
                            remote_port: EvtchnPort(p)
                        }),
                        "peer of {d}:{p}"
                    );
                }
            }
        }
    }
    assert!(connected > 50, "the walk exercised binding ({connected})");
}
