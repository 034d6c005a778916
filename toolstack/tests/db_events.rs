//! Event generations survive a restart: `Db::open` twice on one directory.

use std::collections::BTreeMap;

use toolstack::datamodel;
use toolstack::db::{Change, Db, Read};
use toolstack::value::Value;

fn network(db: &Db, name: &str) -> String {
    db.write(|tx| {
        let mut f = BTreeMap::new();
        f.insert("name_label".to_owned(), Value::str(name));
        Ok::<_, toolstack::Error>(tx.create(datamodel::class("network").unwrap(), f))
    })
    .unwrap()
}

fn rename(db: &Db, r: &str, name: &str) {
    db.write(|tx| {
        tx.set(r, "name_label", Value::str(name));
        Ok::<_, toolstack::Error>(())
    })
    .unwrap();
}

fn destroy(db: &Db, r: &str) {
    db.write(|tx| {
        tx.destroy(r);
        Ok::<_, toolstack::Error>(())
    })
    .unwrap();
}

/// `(op, ref)` of each change, in order.
fn ops(changes: &[Change]) -> Vec<(&'static str, String)> {
    changes.iter().map(|c| (c.op, c.r#ref.clone())).collect()
}

#[test]
fn empty_token_lists_every_object_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let db = Db::open(dir.path()).unwrap();
        let a = network(&db, "a");
        let b = network(&db, "b");
        let c = network(&db, "c");
        destroy(&db, &c);
        (a, b)
    };
    let db = Db::open(dir.path()).unwrap();
    let (changes, token) = db.changes_since(None, 0);
    let mut got = ops(&changes);
    got.sort();
    let mut want = vec![("add", a), ("add", b)];
    want.sort();
    assert_eq!(got, want);
    assert!(token >= changes.iter().map(|c| c.gen).max().unwrap());
}

#[test]
fn old_token_sees_exactly_later_changes_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, before, last) = {
        let db = Db::open(dir.path()).unwrap();
        let a = network(&db, "a");
        let b = network(&db, "b");
        let before = db.generation();
        rename(&db, &a, "a2");
        destroy(&db, &b);
        let c = network(&db, "c");
        (a, b, c, before, db.generation())
    };
    let db = Db::open(dir.path()).unwrap();
    assert!(db.generation() >= last, "the counter went back");
    let (changes, _) = db.changes_since(None, before);
    assert_eq!(
        ops(&changes),
        vec![("mod", a.clone()), ("del", b.clone()), ("add", c.clone())]
    );
    assert_eq!(changes[0].snapshot["name_label"], Value::str("a2"));
    assert_eq!(changes[1].snapshot["name_label"], Value::str("b"));
    // The last token before the restart: nothing yet, then exactly what follows.
    let (none, _) = db.changes_since(None, last);
    assert!(none.is_empty(), "{none:?}");
    assert!(!db.events_lost(last) && !db.events_lost(before));
    rename(&db, &c, "c2");
    let (after, _) = db.changes_since(None, last);
    assert_eq!(ops(&after), vec![("mod", c)]);
}

#[test]
fn tokens_from_session_only_writes_stay_below_later_generations() {
    // Sessions are not persistent; tokens handed out for their changes must still be
    // below every generation after a restart.
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let db = Db::open(dir.path()).unwrap();
        for _ in 0..3 {
            db.write(|tx| {
                Ok::<_, toolstack::Error>(
                    tx.create(datamodel::class("session").unwrap(), BTreeMap::new()),
                )
            })
            .unwrap();
        }
        db.generation()
    };
    let db = Db::open(dir.path()).unwrap();
    let n = network(&db, "after");
    assert_eq!(ops(&db.changes_since(None, token).0), vec![("add", n)]);
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let a = network(&db, "a");
    let gen = db.generation();
    let err = db
        .write(|tx| {
            tx.set(&a, "name_label", Value::str("changed"));
            tx.create(datamodel::class("network").unwrap(), BTreeMap::new());
            tx.destroy(&a);
            Err::<(), _>(toolstack::Error::Corrupt("refused".into()))
        })
        .unwrap_err();
    assert!(matches!(err, toolstack::Error::Corrupt(_)));
    assert_eq!(db.generation(), gen);
    db.read(|v| {
        assert_eq!(v.str_field(&a, "name_label"), "a");
        assert_eq!(v.count("network"), 1);
    });
    assert!(db.changes_since(None, gen).0.is_empty());
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    db.read(|v| assert_eq!(v.all("network"), vec![a.clone()]));
}

#[test]
fn migrates_a_database_without_generations() {
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let db = Db::open(dir.path()).unwrap();
        network(&db, "old")
    };
    // Make it the first schema: objects (ref, class, data) only.
    {
        let conn = rusqlite::Connection::open(dir.path().join("xapi.db")).unwrap();
        conn.execute_batch(
            "ALTER TABLE objects DROP COLUMN gen; ALTER TABLE objects DROP COLUMN created;
             DROP TABLE meta; DROP TABLE tombstones; PRAGMA user_version = 0;",
        )
        .unwrap();
    }
    let (token, b) = {
        let db = Db::open(dir.path()).unwrap();
        let (changes, token) = db.changes_since(None, 0);
        assert_eq!(ops(&changes), vec![("add", a.clone())]);
        assert_eq!(changes[0].snapshot["name_label"], Value::str("old"));
        (token, network(&db, "new"))
    };
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(ops(&db.changes_since(None, token).0), vec![("add", b)]);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(Db::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("xapi.db")).unwrap();
    conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(conn);
    let err = Db::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("schema 99"), "{err}");
}

#[test]
fn token_older_than_the_tombstone_window_is_lost_across_restart() {
    const N: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let batch = |db: &Db| -> Vec<String> {
        db.write(|tx| {
            let cls = datamodel::class("network").unwrap();
            Ok::<_, toolstack::Error>((0..N).map(|_| tx.create(cls, BTreeMap::new())).collect())
        })
        .unwrap()
    };
    let kill = |db: &Db, refs: &[String]| {
        db.write(|tx| {
            refs.iter().for_each(|r| tx.destroy(r));
            Ok::<_, toolstack::Error>(())
        })
        .unwrap()
    };
    let (old, kept) = {
        let db = Db::open(dir.path()).unwrap();
        let first = batch(&db);
        let old = db.generation();
        kill(&db, &first);
        let kept = db.generation();
        let second = batch(&db);
        // 24 000 tombstones, over the window of 20 000: the first batch's leave it.
        kill(&db, &second);
        assert!(db.events_lost(old));
        (old, kept)
    };
    let db = Db::open(dir.path()).unwrap();
    assert!(db.events_lost(old), "the window's floor was not persisted");
    assert!(!db.events_lost(kept) && !db.events_lost(0));
    let (changes, _) = db.changes_since(None, kept);
    // The second batch, created and deleted after `kept`: its deletions.
    assert_eq!(changes.len(), N);
    assert!(changes.iter().all(|c| c.op == "del"));
}
