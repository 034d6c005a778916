//! `event.from` across a restart of the toolstack's database, through the XenAPI.

use std::collections::BTreeMap;
use std::sync::Arc;

use toolstack::api::{Credentials, Xapi};
use toolstack::backend::Backend;
use toolstack::datamodel;
use toolstack::db::Db;
use toolstack::host::{self, HostConfig};
use toolstack::value::Value;
use toolstack::ApiError;

const GIB: u64 = 1 << 30;

struct T {
    x: Arc<Xapi>,
    s: Value,
}

impl T {
    fn new(db: Db) -> T {
        let be = Arc::new(Backend::simulated(4 * GIB, GIB, 4).unwrap());
        host::bootstrap(&db, &HostConfig::simulated()).unwrap();
        let x = Xapi::new(db, be, Credentials::new("root", "pw").unwrap()).unwrap();
        let s = x
            .call(
                "session.login_with_password",
                &[Value::str("root"), Value::str("pw")],
            )
            .unwrap();
        T { x, s }
    }

    fn call(&self, m: &str, args: &[Value]) -> Result<Value, ApiError> {
        let mut p = vec![self.s.clone()];
        p.extend_from_slice(args);
        self.x.call(m, &p)
    }

    fn ok(&self, m: &str, args: &[Value]) -> Value {
        self.call(m, args).unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    /// `event.from(classes, token, 0)`: the events as (class, operation, ref) and the token.
    fn from(&self, classes: &[&str], token: &str) -> (Vec<(String, String, String)>, String) {
        let classes = Value::Array(classes.iter().map(|c| Value::str(*c)).collect());
        let r = self.ok(
            "event.from",
            &[classes, Value::str(token), Value::Double(0.0)],
        );
        let r = r.as_struct().unwrap();
        let evs = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let e = e.as_struct().unwrap();
                let f = |k: &str| e[k].as_str().unwrap().to_owned();
                (f("class"), f("operation"), f("ref"))
            })
            .collect();
        (evs, r["token"].as_str().unwrap().to_owned())
    }
}

fn network(t: &T, name: &str) -> String {
    let mut rec = BTreeMap::new();
    rec.insert("name_label".to_owned(), Value::str(name));
    t.ok("network.create", &[Value::Struct(rec)])
        .as_str()
        .unwrap()
        .to_owned()
}

fn ev(op: &str, r: &str) -> (String, String, String) {
    ("network".into(), op.into(), r.into())
}

#[test]
fn event_from_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, gone, token, last) = {
        let t = T::new(Db::open(dir.path()).unwrap());
        let kept = network(&t, "kept");
        let gone = network(&t, "gone");
        let (_, token) = t.from(&["network"], "");
        t.ok(
            "network.set_name_label",
            &[Value::str(&kept), Value::str("renamed")],
        );
        t.ok("network.destroy", &[Value::str(&gone)]);
        let (_, last) = t.from(&["*"], "");
        (kept, gone, token, last)
    };
    let t = T::new(Db::open(dir.path()).unwrap());
    // The empty token lists what exists, as `add`.
    let (all, _) = t.from(&["network"], "");
    assert!(all.contains(&ev("add", &kept)), "{all:?}");
    assert!(all.iter().all(|e| e.1 == "add" && e.2 != gone), "{all:?}");
    let (all, _) = t.from(&["*"], "");
    for class in ["host", "pool", "vm", "network"] {
        assert!(all.iter().any(|e| e.0 == class), "no {class} in {all:?}");
    }
    // A token from before the restart sees exactly what followed it.
    let (since, _) = t.from(&["network"], &token);
    assert_eq!(since, vec![ev("mod", &kept), ev("del", &gone)]);
    // The last token before the restart: then what follows it.
    let n = network(&t, "after");
    let (since, _) = t.from(&["network"], &last);
    assert_eq!(since, vec![ev("add", &n)]);
}

#[test]
fn event_from_past_the_tombstone_window_is_events_lost() {
    const N: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let old = {
        let t = T::new(Db::open(dir.path()).unwrap());
        let (_, old) = t.from(&["*"], "");
        old
    };
    // 24 000 deletions, over the window of 20 000.
    let db = Db::open(dir.path()).unwrap();
    for _ in 0..2 {
        let refs: Vec<String> = db
            .write(|tx| {
                let cls = datamodel::class("network").unwrap();
                Ok::<_, toolstack::Error>((0..N).map(|_| tx.create(cls, BTreeMap::new())).collect())
            })
            .unwrap();
        db.write(|tx| {
            refs.iter().for_each(|r| tx.destroy(r));
            Ok::<_, toolstack::Error>(())
        })
        .unwrap();
    }
    drop(db);
    let t = T::new(Db::open(dir.path()).unwrap());
    let classes = Value::Array(vec![Value::str("*")]);
    let err = t
        .call(
            "event.from",
            &[classes, Value::str(&old), Value::Double(0.0)],
        )
        .unwrap_err();
    assert_eq!((err.code.as_str(), err.params.len()), ("EVENTS_LOST", 0));
    // Listing again works, and its token is good.
    let (_, token) = t.from(&["*"], "");
    let n = network(&t, "x");
    assert_eq!(t.from(&["network"], &token).0, vec![ev("add", &n)]);
}
