//! Property tests of the engine against a plain model, and of persistence: any sequence of
//! operations leaves the store equal to the model, and the journal replays to the same
//! store.

use std::collections::BTreeMap;

use proptest::prelude::*;
use xen_types::DomId;
use xenstore::wire::{Message, Op, TxId};
use xenstored::journal::{Journal, SyncMode};
use xenstored::tree::Tree;
use xenstored::{Engine, Outbox, Quotas};

#[derive(Debug, Clone)]
enum Step {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    /// Run the inner writes in a transaction, then commit or abort.
    Tx(Vec<(String, Vec<u8>)>, bool),
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4)
        .prop_map(|v| format!("/{}", v.join("/")))
}

fn step() -> impl Strategy<Value = Step> {
    let value = proptest::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        (path(), value.clone()).prop_map(|(p, v)| Step::Write(p, v)),
        path().prop_map(Step::Mkdir),
        path().prop_map(Step::Rm),
        (
            proptest::collection::vec((path(), value), 0..4),
            any::<bool>()
        )
            .prop_map(|(w, c)| Step::Tx(w, c)),
    ]
}

type Model = BTreeMap<String, Vec<u8>>;

fn model_write(m: &mut Model, p: &str, v: Option<&[u8]>) {
    let mut cur = String::new();
    for part in p.split('/').skip(1) {
        cur.push('/');
        cur.push_str(part);
        m.entry(cur.clone()).or_default();
    }
    if let Some(v) = v {
        m.insert(p.to_string(), v.to_vec());
    }
}

fn model_rm(m: &mut Model, p: &str) {
    let prefix = format!("{p}/");
    m.retain(|k, _| k != p && !k.starts_with(&prefix));
}

fn req(e: &mut Engine, conn: u64, op: Op, tx: TxId, parts: &[&[u8]], raw: bool) -> Message {
    let m = Message::request(op, 1, tx, parts, raw).unwrap();
    let mut out = Outbox::default();
    e.handle(conn, &m, &mut out);
    out.msgs
        .into_iter()
        .find(|(c, r)| *c == conn && r.header.req_id == 1)
        .unwrap()
        .1
}

fn user_nodes(t: &Tree) -> Model {
    t.iter()
        .filter(|(p, _)| p.len() > 1 && !p.starts_with('@') && !p.starts_with("/tool"))
        .map(|(p, n)| (p.to_string(), n.value.to_vec()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn engine_matches_model_and_journal_replays(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), SyncMode::Never, 4096).unwrap();
        let mut e = Engine::new(Quotas::default(), false);
        let c = e.connect(DomId::DOM0);
        let mut model = Model::new();
        for s in &steps {
            match s {
                Step::Write(p, v) => {
                    let r = req(&mut e, c, Op::Write, TxId::NONE, &[p.as_bytes(), v], true);
                    prop_assert_eq!(r.error_errno(), None);
                    model_write(&mut model, p, Some(v));
                }
                Step::Mkdir(p) => {
                    req(&mut e, c, Op::Mkdir, TxId::NONE, &[p.as_bytes()], false);
                    model_write(&mut model, p, None);
                }
                Step::Rm(p) => {
                    let r = req(&mut e, c, Op::Rm, TxId::NONE, &[p.as_bytes()], false);
                    let parent_exists = match p.rfind('/') {
                        Some(0) => true,
                        Some(i) => model.contains_key(&p[..i]),
                        None => false,
                    };
                    if parent_exists {
                        prop_assert_eq!(r.error_errno(), None);
                    } else {
                        prop_assert!(r.error_errno().is_some());
                    }
                    model_rm(&mut model, p);
                }
                Step::Tx(writes, commit) => {
                    let r = req(&mut e, c, Op::TransactionStart, TxId::NONE, &[b""], false);
                    let id: u32 = std::str::from_utf8(&r.payload[..r.payload.len() - 1]).unwrap().parse().unwrap();
                    for (p, v) in writes {
                        let r = req(&mut e, c, Op::Write, TxId(id), &[p.as_bytes(), v], true);
                        prop_assert_eq!(r.error_errno(), None);
                    }
                    let arg: &[u8] = if *commit { b"T" } else { b"F" };
                    let r = req(&mut e, c, Op::TransactionEnd, TxId(id), &[arg], false);
                    prop_assert_eq!(r.error_errno(), None);
                    if *commit {
                        for (p, v) in writes {
                            model_write(&mut model, p, Some(v));
                        }
                    }
                }
            }
            for p in e.take_dirty() {
                j.record(e.tree(), &p);
            }
            j.flush().unwrap();
            j.maybe_snapshot(e.tree(), e.generation()).unwrap();
        }
        prop_assert_eq!(&user_nodes(e.tree()), &model);
        // Every node's child list matches the paths.
        for (p, n) in e.tree().iter() {
            if p.starts_with('@') { continue; }
            for child in n.children() {
                let cp = if &**p == "/" { format!("/{child}") } else { format!("{p}/{child}") };
                prop_assert!(e.tree().get(&cp).is_some(), "dangling child {}", cp);
            }
        }
        drop(j);
        let (_j, rec) = Journal::open(dir.path(), SyncMode::Never, 4096).unwrap();
        prop_assert_eq!(rec.tree.len(), e.tree().len());
        for (p, n) in e.tree().iter() {
            let r = rec.tree.get(p).unwrap();
            prop_assert_eq!(&r.value, &n.value);
            prop_assert_eq!(&r.perms, &n.perms);
            prop_assert_eq!(r.gen, n.gen);
            prop_assert_eq!(r.children().collect::<Vec<_>>(), n.children().collect::<Vec<_>>());
        }
    }
}
