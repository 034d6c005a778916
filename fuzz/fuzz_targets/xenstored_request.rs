//! xenstored's request engine on arbitrary request streams from several connections
//! (dom0 and unprivileged domains, with transactions): never panics, always answers each
//! request exactly once with its request id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_types::DomId;
use xenstore::wire::{Header, Message, TxId};
use xenstored::{Engine, Outbox, Quotas};

fuzz_target!(|data: &[u8]| {
    let quotas = Quotas {
        nodes: 50,
        transaction_nodes: 64,
        ..Quotas::default()
    };
    let mut e = Engine::new(quotas, false);
    let conns = [
        e.connect(DomId(0)),
        e.connect(DomId(1)),
        e.connect(DomId(2)),
    ];
    let mut out = Outbox::default();
    let mut rest = data;
    let mut req_id = 0u32;
    // Each request: [conn, type, tx, len] then `len` payload bytes.
    while rest.len() >= 4 {
        let (h, tail) = rest.split_at(4);
        let len = (h[3] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        req_id += 1;
        let conn = conns[h[0] as usize % conns.len()];
        let msg = Message {
            header: Header {
                ty: u32::from(h[1] % 26),
                req_id,
                tx_id: TxId(u32::from(h[2] % 4)),
                len: len as u32,
            },
            payload: payload.to_vec(),
        };
        out.clear();
        e.handle(conn, &msg, &mut out);
        let replies = out
            .msgs
            .iter()
            .filter(|(c, m)| *c == conn && m.header.req_id == req_id)
            .count();
        assert_eq!(replies, 1);
        if h[0] == 255 {
            e.disconnect(conn);
            break;
        }
    }
});
