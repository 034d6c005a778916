//! xenstored's request engine on arbitrary request streams from several connections
//! (dom0 and unprivileged domains, with transactions): never panics, always answers each
//! request exactly once with its request id, and its own state stays consistent after every
//! request (every node's parent lists it, every listed child exists, the child-list sizes
//! match, the generation never goes back, the connection count is the one opened).
//!
//! Hermetic: a fresh engine per input, so a crash file reproduces alone.
//! Input: requests of `[conn, type, tx, len lo, len hi]` and `len` payload bytes, `len` up to
//! a full `XENSTORE_PAYLOAD_MAX` (4096) payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_types::DomId;
use xenstore::wire::{Header, Message, TxId, PAYLOAD_MAX};
use xenstored::tree::{basename, child_path, parent_of};
use xenstored::{Engine, Outbox, Quotas};

/// Checks the committed tree's structure, as the engine itself keeps it.
fn check_tree(e: &Engine) {
    let tree = e.tree();
    for (path, node) in tree.iter() {
        let mut listed = 0;
        for c in node.children() {
            let child = child_path(path, c);
            assert!(
                tree.get(&child).is_some(),
                "{path} lists {c}, which is missing"
            );
            listed += c.len() + 1;
        }
        assert_eq!(node.children_len(), listed, "child-list size of {path}");
        if &**path == "/" || path.starts_with('@') {
            continue;
        }
        let parent = tree
            .get(parent_of(path))
            .unwrap_or_else(|| panic!("{path} has no parent"));
        assert!(
            parent.children().any(|c| &**c == basename(path)),
            "{path} is not listed by its parent"
        );
    }
}

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
    let mut gen = e.generation();
    while rest.len() >= 5 {
        let (h, tail) = rest.split_at(5);
        let len =
            (usize::from(u16::from_le_bytes([h[3], h[4]])) % (PAYLOAD_MAX + 1)).min(tail.len());
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
        assert!(e.generation() >= gen, "the generation went back");
        gen = e.generation();
        assert_eq!(e.connections(), conns.len());
        check_tree(&e);
        if h[0] == 255 {
            e.disconnect(conn);
            assert_eq!(e.connections(), conns.len() - 1);
            break;
        }
    }
});
