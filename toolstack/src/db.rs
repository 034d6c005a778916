//! The object database: in-memory tables written through to a persistent store, with
//! generation counters that `event.from` reads.
//!
//! Every write goes through [`Db::write`]; the closure's changes are committed to the store
//! in one transaction (SQLite with WAL, so a `kill -9` after the call returned loses nothing)
//! before the write lock is released and before the API call is acknowledged. A write whose
//! closure fails, or whose commit fails, leaves the tables as they were.
//!
//! The store is behind [`Backend`]: SQLite on one host (the default), or etcd for a pool
//! (feature `etcd`, module `etcd`). Object generations, creation generations, the event counter
//! and the tombstones of deleted objects are persisted with the objects, so `event.from`
//! tokens stay valid across a restart.

mod sqlite;

#[cfg(feature = "etcd")]
pub mod etcd;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::datamodel::{self, Class, NULL_REF};
use crate::value::Value;
use crate::Error;

/// A record: field name to value.
pub type Record = BTreeMap<String, Value>;

/// Marks a row created in the running write, before its generation is known.
const UNSTAMPED: u64 = u64::MAX;

#[derive(Debug, Clone)]
struct Row {
    class: &'static str,
    rec: Record,
    /// Generation of the last change.
    gen: u64,
    /// Generation of creation.
    created: u64,
    /// The record as an XML-RPC `<struct>`, made by the first `get_all_records` that needs
    /// it and dropped whenever the record is changed (through [`Row::rec_mut`]).
    xml: OnceLock<Box<str>>,
}

impl Row {
    /// The record, for a change: its encoded form is dropped first.
    fn rec_mut(&mut self) -> &mut Record {
        self.xml = OnceLock::new();
        &mut self.rec
    }
}

/// A change, as `event.from` reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Generation.
    pub gen: u64,
    /// Class name.
    pub class: &'static str,
    /// `add`, `mod` or `del`.
    pub op: &'static str,
    /// The object's reference.
    pub r#ref: String,
    /// The record after the change (before, for `del`).
    pub snapshot: Record,
}

/// The tables behind [`Db`] (opaque).
#[doc(hidden)]
#[derive(Default)]
pub struct Inner {
    rows: HashMap<String, Row>,
    /// Refs per class, ordered.
    by_class: HashMap<&'static str, BTreeSet<String>>,
    by_uuid: HashMap<String, String>,
    gen: u64,
    tombstones: Vec<Change>,
    /// Tokens below this generation may have missed deletions (trimmed tombstones, or history
    /// from before a pool store was loaded): `event.from` answers `EVENTS_LOST` for them.
    lost_before: u64,
    /// Every object keyed by the generation of its last change (so `event.from` costs what
    /// changed, not what exists).
    log: BTreeSet<(u64, String)>,
}

/// Tombstones kept for `event.from` callers that lag behind (in memory and on disk).
pub(crate) const MAX_TOMBSTONES: usize = 20_000;

/// An object as a store holds it.
pub(crate) struct StoredRow {
    pub r: String,
    pub class: String,
    /// The record as JSON.
    pub data: String,
    pub gen: u64,
    pub created: u64,
}

/// What a store holds at open.
#[derive(Default)]
pub(crate) struct Loaded {
    pub rows: Vec<StoredRow>,
    /// Deletions still in the window, oldest first (`data` is the record before).
    pub tombstones: Vec<StoredRow>,
    /// The event counter (every token handed out so far is at most this).
    pub gen: u64,
    pub lost_before: u64,
}

/// An object a write creates or changes.
pub(crate) struct Put<'a> {
    pub r: &'a str,
    pub class: &'static str,
    pub rec: &'a Record,
    /// The generation the writer read it at; `None` when the write creates it. (A store
    /// shared by several writers compares on it.)
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub prev_gen: Option<u64>,
}

/// An object a write deletes.
pub(crate) struct Del<'a> {
    pub r: &'a str,
    pub class: &'static str,
    /// The record before deletion.
    pub snapshot: &'a Record,
    /// The generation the writer read it at.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub prev_gen: u64,
}

/// One write, as the store commits it.
pub(crate) struct Commit<'a> {
    /// The next local generation (a store with its own counter, like etcd, ignores it).
    pub gen: u64,
    pub puts: Vec<Put<'a>>,
    pub dels: Vec<Del<'a>>,
    /// Tombstones up to this generation leave the window.
    pub trim_through: Option<u64>,
}

/// The persistent layer behind [`Db`]: SQLite on one host, etcd for a pool.
///
/// `commit` must be atomic: either every put and delete lands or none does. A store shared
/// by several writers compares each touched object's generation with `prev_gen` and fails
/// with [`Error::Conflict`] when another writer got there first.
pub(crate) trait Backend: Send + Sync {
    /// Whether objects of this class are stored (others live in memory only).
    fn stores(&self, class: &Class) -> bool;
    /// Commits a write; returns the generation it was given.
    fn commit(&self, c: &Commit<'_>) -> Result<u64, Error>;
    /// Applies other writers' changes up to (not including) `gen` to the tables, so the
    /// generations the tables hold stay in commit order. Single-writer stores do nothing.
    fn catch_up(&self, _inner: &mut Inner, _gen: u64) {}
}

/// The database.
pub struct Db {
    shared: std::sync::Arc<Shared>,
    store: Option<Box<dyn Backend>>,
}

/// What a pool store's watch thread shares with [`Db`].
#[derive(Default)]
pub(crate) struct Shared {
    inner: RwLock<Inner>,
    gen_lock: Mutex<u64>,
    gen_cv: Condvar,
}

impl Shared {
    /// Wakes `event.from` callers waiting for a generation past theirs.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn notify(&self, gen: u64) {
        *self.gen_lock.lock() = gen;
        self.gen_cv.notify_all();
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

/// Why one attempt of a write failed.
enum Retry<E> {
    /// Another writer changed a touched object first: run the write again.
    Conflict(Error),
    /// The write's own failure.
    Fail(E),
}

/// A write transaction: changes made through it are committed together.
pub struct Tx<'a> {
    inner: &'a mut Inner,
    dirty: HashSet<String>,
    deleted: Vec<(String, &'static str, Record)>,
    /// Each touched object as it was before this write (`None`: created by it).
    undo: HashMap<String, Option<Row>>,
}

/// Decodes a stored record, giving fields added to the model since it was written their
/// defaults and dropping fields the model no longer has.
pub(crate) fn decode(r: &str, class: &str, data: &str) -> Result<(&'static Class, Record), Error> {
    let json: serde_json::Value =
        serde_json::from_str(data).map_err(|e| Error::Corrupt(format!("{r}: {e}")))?;
    decode_json(r, class, &json)
}

/// [`decode`] from parsed JSON.
pub(crate) fn decode_json(
    r: &str,
    class: &str,
    json: &serde_json::Value,
) -> Result<(&'static Class, Record), Error> {
    let cls = datamodel::class(class)
        .ok_or_else(|| Error::Corrupt(format!("{r}: unknown class {class}")))?;
    let Value::Struct(stored) = Value::from_json(json) else {
        return Err(Error::Corrupt(format!("{r}: not a record")));
    };
    let mut rec = cls.default_record();
    for (k, v) in stored {
        if let Some(f) = cls.field(&k) {
            rec.insert(k, f.ty.coerce(&v).unwrap_or(v));
        }
    }
    Ok((cls, rec))
}

/// Encodes a record for a store.
pub(crate) fn encode(rec: &Record) -> String {
    Value::Struct(rec.clone()).to_json().to_string()
}

impl Db {
    /// An in-memory database (tests, benches).
    pub fn in_memory() -> Self {
        Db {
            shared: Default::default(),
            store: None,
        }
    }

    /// Opens (or creates) the database in `dir/xapi.db` and loads every object.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let (store, loaded) = sqlite::Sqlite::open(dir)?;
        Self::with_store(Box::new(store), loaded)
    }

    fn with_store(store: Box<dyn Backend>, loaded: Loaded) -> Result<Self, Error> {
        let inner = Inner::load(loaded)?;
        let gen = inner.gen;
        Ok(Db {
            shared: std::sync::Arc::new(Shared {
                inner: RwLock::new(inner),
                gen_lock: Mutex::new(gen),
                gen_cv: Condvar::new(),
            }),
            store: Some(store),
        })
    }

    /// Runs `f` with a write transaction and commits it (to the store, when persistent).
    /// When `f` or the commit fails, nothing of the write remains. On a pool's store, a
    /// write that lost a race with another writer (`Error::Conflict`) runs `f` again once
    /// the tables caught up (up to 10 times), as XAPI's master serialises writes: `f` must
    /// only read the database and the values it captured.
    pub fn write<T, E: From<Error>>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tries = 0;
        loop {
            let gen = self.generation();
            match self.write_once(&mut f) {
                Err(Retry::Conflict(e)) if tries >= 10 => return Err(e.into()),
                Err(Retry::Conflict(_)) => {
                    tries += 1;
                    self.wait_past(gen, Duration::from_millis(200));
                }
                Err(Retry::Fail(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    fn write_once<T, E: From<Error>>(
        &self,
        f: &mut impl FnMut(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, Retry<E>> {
        let mut inner = self.shared.inner.write();
        let mut tx = Tx {
            inner: &mut inner,
            dirty: HashSet::new(),
            deleted: Vec::new(),
            undo: HashMap::new(),
        };
        let out = match f(&mut tx) {
            Ok(out) => out,
            Err(e) => {
                tx.rollback();
                return Err(Retry::Fail(e));
            }
        };
        // Objects created and destroyed within this write leave no trace.
        let undo = std::mem::take(&mut tx.undo);
        tx.deleted
            .retain(|(r, _, _)| undo.get(r).is_some_and(Option::is_some));
        if tx.dirty.is_empty() && tx.deleted.is_empty() {
            tx.undo = undo;
            tx.rollback();
            return Ok(out);
        }
        let next = tx.inner.gen + 1;
        let overflow =
            (tx.inner.tombstones.len() + tx.deleted.len()).saturating_sub(MAX_TOMBSTONES);
        let trim_through = (overflow > 0).then(|| {
            let cut = (overflow + MAX_TOMBSTONES / 2).min(tx.inner.tombstones.len());
            tx.inner.tombstones[..cut]
                .last()
                .map_or(tx.inner.gen, |t| t.gen)
        });
        let gen = match &self.store {
            None => next,
            Some(store) => {
                let stored =
                    |class: &'static str| datamodel::class(class).is_some_and(|c| store.stores(c));
                let commit = Commit {
                    gen: next,
                    puts: tx
                        .dirty
                        .iter()
                        .filter_map(|r| {
                            let row = tx.inner.rows.get(r)?;
                            stored(row.class).then(|| Put {
                                r,
                                class: row.class,
                                rec: &row.rec,
                                prev_gen: undo.get(r).and_then(|o| o.as_ref()).map(|o| o.gen),
                            })
                        })
                        .collect(),
                    dels: tx
                        .deleted
                        .iter()
                        .filter(|(_, class, _)| stored(class))
                        .map(|(r, class, snapshot)| Del {
                            r,
                            class,
                            snapshot,
                            prev_gen: undo.get(r).and_then(|o| o.as_ref()).map_or(0, |o| o.gen),
                        })
                        .collect(),
                    trim_through,
                };
                match store.commit(&commit) {
                    Ok(gen) => gen,
                    Err(e) => {
                        drop(commit);
                        tx.undo = undo;
                        tx.rollback();
                        return Err(match e {
                            Error::Conflict(c) => Retry::Conflict(Error::Conflict(c)),
                            e => Retry::Fail(e.into()),
                        });
                    }
                }
            }
        };
        let Tx { dirty, deleted, .. } = tx;
        if let Some(store) = &self.store {
            store.catch_up(&mut inner, gen);
        }
        inner.stamp(gen, &dirty, deleted, trim_through);
        let gen = inner.gen;
        drop(inner);
        self.shared.notify(gen);
        Ok(out)
    }

    /// Runs `f` with shared read access.
    pub fn read<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let inner = self.shared.inner.read();
        f(&View { inner: &inner })
    }

    /// Drops every record's kept XML-RPC encoding (benches measure the first encoding).
    #[doc(hidden)]
    pub fn drop_encodings(&self) {
        for row in self.shared.inner.write().rows.values_mut() {
            row.xml = OnceLock::new();
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.shared.inner.read().gen
    }

    /// Whether a token at generation `since` may have missed changes that are no longer
    /// known (deletions older than the tombstone window): the caller must list everything
    /// again (`EVENTS_LOST`). The empty token (0) never has.
    pub fn events_lost(&self, since: u64) -> bool {
        since != 0 && since < self.shared.inner.read().lost_before
    }

    /// Waits until the generation exceeds `gen` or `timeout` passes; returns the generation.
    pub fn wait_past(&self, gen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.gen_lock.lock();
        loop {
            let cur = self.generation();
            if cur > gen {
                return cur;
            }
            *g = cur;
            if self.shared.gen_cv.wait_until(&mut g, deadline).timed_out() {
                return self.generation();
            }
        }
    }

    /// Changes to objects of `classes` (all if `None`) after generation `since`, and the
    /// generation they run up to.
    pub fn changes_since(
        &self,
        classes: Option<&HashSet<&'static str>>,
        since: u64,
    ) -> (Vec<Change>, u64) {
        let inner = self.shared.inner.read();
        let want = |c: &str| classes.is_none_or(|s| s.contains(c));
        let mut out: Vec<Change> = Vec::new();
        for (_, r) in inner.log.range((since + 1, String::new())..) {
            let Some(row) = inner.rows.get(r) else {
                continue;
            };
            if want(row.class) {
                out.push(Change {
                    gen: row.gen,
                    class: row.class,
                    op: if row.created > since { "add" } else { "mod" },
                    r#ref: r.clone(),
                    snapshot: row.rec.clone(),
                });
            }
        }
        if since > 0 {
            for t in inner.tombstones.iter().rev() {
                if t.gen <= since {
                    break;
                }
                if want(t.class) {
                    out.push(t.clone());
                }
            }
        }
        out.sort_by_key(|c| c.gen);
        (out, inner.gen)
    }
}

impl Inner {
    fn load(loaded: Loaded) -> Result<Self, Error> {
        let mut inner = Inner {
            gen: loaded.gen,
            lost_before: loaded.lost_before,
            ..Inner::default()
        };
        for row in loaded.rows {
            let (cls, rec) = decode(&row.r, &row.class, &row.data)?;
            inner.gen = inner.gen.max(row.gen);
            inner.insert_row(row.r, cls.name, rec, row.gen, row.created);
        }
        for t in loaded.tombstones {
            let (cls, rec) = decode(&t.r, &t.class, &t.data)?;
            inner.gen = inner.gen.max(t.gen);
            inner.tombstones.push(Change {
                gen: t.gen,
                class: cls.name,
                op: "del",
                r#ref: t.r,
                snapshot: rec,
            });
        }
        Ok(inner)
    }

    fn insert_row(&mut self, r: String, class: &'static str, rec: Record, gen: u64, created: u64) {
        if let Some(Value::String(u)) = rec.get("uuid") {
            self.by_uuid.insert(u.clone(), r.clone());
        }
        self.by_class.entry(class).or_default().insert(r.clone());
        if gen != UNSTAMPED {
            self.log.insert((gen, r.clone()));
        }
        self.rows.insert(
            r,
            Row {
                class,
                rec,
                gen,
                created,
                xml: OnceLock::new(),
            },
        );
    }

    fn remove_row(&mut self, r: &str) -> Option<Row> {
        let row = self.rows.remove(r)?;
        self.log.remove(&(row.gen, r.to_owned()));
        if let Some(Value::String(u)) = row.rec.get("uuid") {
            if self.by_uuid.get(u).is_some_and(|x| x == r) {
                self.by_uuid.remove(u);
            }
        }
        if let Some(s) = self.by_class.get_mut(row.class) {
            s.remove(r);
        }
        Some(row)
    }

    /// Gives a committed write its generation.
    fn stamp(
        &mut self,
        gen: u64,
        dirty: &HashSet<String>,
        deleted: Vec<(String, &'static str, Record)>,
        trim_through: Option<u64>,
    ) {
        self.gen = self.gen.max(gen);
        for r in dirty {
            if let Some(row) = self.rows.get_mut(r) {
                self.log.remove(&(row.gen, r.clone()));
                self.log.insert((gen, r.clone()));
                row.gen = gen;
                if row.created == UNSTAMPED {
                    row.created = gen;
                }
            }
        }
        for (r, class, snapshot) in deleted {
            self.tombstones.push(Change {
                gen,
                class,
                op: "del",
                r#ref: r,
                snapshot,
            });
        }
        if let Some(through) = trim_through {
            self.tombstones.retain(|t| t.gen > through);
            self.lost_before = self.lost_before.max(through);
        }
    }

    /// Applies another writer's change (a pool store): `rec` is the record after it (`None`
    /// for a deletion), at generation `gen`. Changes the tables already hold are skipped.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn apply_remote(
        &mut self,
        r: &str,
        rec: Option<(&'static str, Record)>,
        gen: u64,
        created: u64,
    ) {
        if self.rows.get(r).is_some_and(|row| row.gen >= gen) {
            return;
        }
        match rec {
            Some((class, rec)) => {
                self.remove_row(r);
                self.insert_row(r.to_owned(), class, rec, gen, created);
            }
            None => {
                if let Some(row) = self.remove_row(r) {
                    self.tombstones.push(Change {
                        gen,
                        class: row.class,
                        op: "del",
                        r#ref: r.to_owned(),
                        snapshot: row.rec,
                    });
                    if self.tombstones.len() > MAX_TOMBSTONES {
                        let cut = self.tombstones.len() - MAX_TOMBSTONES / 2;
                        let through = self.tombstones[cut - 1].gen;
                        self.tombstones.drain(..cut);
                        self.lost_before = self.lost_before.max(through);
                    }
                }
            }
        }
        self.gen = self.gen.max(gen);
    }
}

/// Read access to the database.
pub struct View<'a> {
    inner: &'a Inner,
}

impl<'a> View<'a> {
    /// A class's references with their records as XML-RPC `<struct>`s, in reference order.
    /// Each record is encoded at most once between changes: a later call copies the kept
    /// text.
    pub fn iter_class_xml(&self, class: &str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let t: &'a Inner = self.inner;
        t.by_class
            .get(class)
            .into_iter()
            .flatten()
            .filter_map(move |r| {
                let row = t.rows.get(r)?;
                let xml = row.xml.get_or_init(|| {
                    let mut out = String::with_capacity(64 * row.rec.len());
                    crate::xmlrpc::encode_struct(&mut out, &row.rec);
                    out.into_boxed_str()
                });
                Some((r.as_str(), &**xml))
            })
    }
}

/// Read access shared by [`View`] and [`Tx`].
pub trait Read {
    /// The inner tables.
    #[doc(hidden)]
    fn tables(&self) -> &Inner;

    /// The class of a reference, if it exists.
    fn class_of(&self, r: &str) -> Option<&'static str> {
        self.tables().rows.get(r).map(|row| row.class)
    }

    /// A record.
    fn get(&self, r: &str) -> Option<&Record> {
        self.tables().rows.get(r).map(|row| &row.rec)
    }

    /// One field of a record.
    fn field(&self, r: &str, field: &str) -> Option<&Value> {
        self.get(r).and_then(|rec| rec.get(field))
    }

    /// A string field ("" if absent).
    fn str_field(&self, r: &str, field: &str) -> String {
        self.field(r, field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// An int field (0 if absent).
    fn int_field(&self, r: &str, field: &str) -> i64 {
        self.field(r, field).and_then(Value::as_i64).unwrap_or(0)
    }

    /// A reference-set field as strings.
    fn refs_field(&self, r: &str, field: &str) -> Vec<String> {
        self.field(r, field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every reference of a class, in a stable order.
    fn all(&self, class: &str) -> Vec<String> {
        self.tables()
            .by_class
            .get(class)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Iterates over a class's references and records.
    fn iter_class<'s>(
        &'s self,
        class: &str,
    ) -> Box<dyn Iterator<Item = (&'s String, &'s Record)> + 's> {
        let t = self.tables();
        match t.by_class.get(class) {
            Some(set) => Box::new(
                set.iter()
                    .filter_map(move |r| t.rows.get(r).map(|row| (r, &row.rec))),
            ),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The reference of the object with this UUID.
    fn by_uuid(&self, uuid: &str) -> Option<&String> {
        self.tables().by_uuid.get(uuid)
    }

    /// Every object: reference, class and record.
    fn dump(&self) -> Vec<(String, &'static str, Record)> {
        let t = self.tables();
        t.rows
            .iter()
            .map(|(r, row)| (r.clone(), row.class, row.rec.clone()))
            .collect()
    }

    /// Number of objects of a class.
    fn count(&self, class: &str) -> usize {
        self.tables().by_class.get(class).map_or(0, |s| s.len())
    }
}

impl Read for View<'_> {
    fn tables(&self) -> &Inner {
        self.inner
    }
}

impl Read for Tx<'_> {
    fn tables(&self) -> &Inner {
        self.inner
    }
}

/// A fresh opaque reference.
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

fn set_add(v: &mut Value, item: &str) {
    if let Value::Array(a) = v {
        if !a.iter().any(|x| x.as_str() == Some(item)) {
            a.push(Value::str(item));
        }
    }
}

fn set_remove(v: &mut Value, item: &str) {
    if let Value::Array(a) = v {
        a.retain(|x| x.as_str() != Some(item));
    }
}

impl Tx<'_> {
    /// Remembers an object as it was before this write first touched it.
    fn touch(&mut self, r: &str) {
        if !self.undo.contains_key(r) {
            self.undo
                .insert(r.to_owned(), self.inner.rows.get(r).cloned());
        }
    }

    /// Puts every touched object back as it was.
    fn rollback(&mut self) {
        for (r, orig) in self.undo.drain() {
            self.inner.remove_row(&r);
            if let Some(row) = orig {
                self.inner
                    .insert_row(r, row.class, row.rec, row.gen, row.created);
            }
        }
        self.dirty.clear();
        self.deleted.clear();
    }

    /// Creates an object of `class` from `fields` (others take defaults; a `uuid` is made
    /// when none is given). Relations are mirrored. Field values must already be checked.
    pub fn create(&mut self, class: &Class, fields: Record) -> String {
        let r = new_ref();
        let mut rec = class.default_record();
        rec.insert("uuid".into(), Value::str(uuid::Uuid::new_v4().to_string()));
        rec.extend(fields);
        // Set ends are maintained here, not given.
        for f in &class.fields {
            if datamodel::inverse_of(class.name, f.name).is_some() {
                rec.insert(f.name.to_owned(), Value::Array(vec![]));
            }
        }
        let links: Vec<(&'static str, String)> = class
            .fields
            .iter()
            .filter(|f| datamodel::relation_of(class.name, f.name).is_some())
            .filter_map(|f| {
                rec.get(f.name)
                    .and_then(Value::as_str)
                    .map(|t| (f.name, t.to_owned()))
            })
            .collect();
        self.touch(&r);
        self.inner
            .insert_row(r.clone(), class.name, rec, UNSTAMPED, UNSTAMPED);
        self.dirty.insert(r.clone());
        for (field, target) in links {
            self.link(class.name, field, &r, None, &target);
        }
        r
    }

    fn link(&mut self, class: &str, field: &str, r: &str, old: Option<&str>, new: &str) {
        let Some(rel) = datamodel::relation_of(class, field) else {
            return;
        };
        if let Some(old) = old.filter(|o| *o != NULL_REF) {
            self.touch(old);
            if let Some(row) = self.inner.rows.get_mut(old) {
                if let Some(v) = row.rec_mut().get_mut(rel.other_field) {
                    set_remove(v, r);
                    self.dirty.insert(old.to_owned());
                }
            }
        }
        if new != NULL_REF {
            self.touch(new);
            if let Some(row) = self.inner.rows.get_mut(new) {
                if row.class == rel.other {
                    if let Some(v) = row.rec_mut().get_mut(rel.other_field) {
                        set_add(v, r);
                        self.dirty.insert(new.to_owned());
                    }
                }
            }
        }
    }

    /// Sets one field (value already checked), mirroring relations.
    pub fn set(&mut self, r: &str, field: &str, v: Value) {
        self.touch(r);
        let Some(row) = self.inner.rows.get_mut(r) else {
            return;
        };
        let class = row.class;
        let old = row.rec_mut().insert(field.to_owned(), v.clone());
        self.dirty.insert(r.to_owned());
        if datamodel::relation_of(class, field).is_some() {
            let old = old.as_ref().and_then(Value::as_str).map(str::to_owned);
            if let Some(new) = v.as_str() {
                self.link(class, field, r, old.as_deref(), new);
            }
        }
    }

    /// Updates a map field's key (`None` removes it).
    pub fn map_set(&mut self, r: &str, field: &str, key: &str, v: Option<Value>) {
        self.touch(r);
        if let Some(Value::Struct(m)) = self
            .inner
            .rows
            .get_mut(r)
            .and_then(|row| row.rec_mut().get_mut(field))
        {
            match v {
                Some(v) => {
                    m.insert(key.to_owned(), v);
                }
                None => {
                    m.remove(key);
                }
            }
            self.dirty.insert(r.to_owned());
        }
    }

    /// Adds to or removes from a string-set field.
    pub fn set_member(&mut self, r: &str, field: &str, item: &str, add: bool) {
        self.touch(r);
        if let Some(v) = self
            .inner
            .rows
            .get_mut(r)
            .and_then(|row| row.rec_mut().get_mut(field))
        {
            if add {
                set_add(v, item);
            } else {
                set_remove(v, item);
            }
            self.dirty.insert(r.to_owned());
        }
    }

    /// Puts an object under a given reference as it is (a pool join or a store migration
    /// moves objects with their references; relation ends are taken as given).
    pub fn insert(&mut self, r: &str, class: &Class, rec: Record) {
        self.touch(r);
        self.inner.remove_row(r);
        self.inner
            .insert_row(r.to_owned(), class.name, rec, UNSTAMPED, UNSTAMPED);
        self.dirty.insert(r.to_owned());
    }

    /// Destroys an object, unlinking its relations.
    pub fn destroy(&mut self, r: &str) {
        self.touch(r);
        let Some(row) = self.inner.remove_row(r) else {
            return;
        };
        for f in datamodel::class(row.class)
            .into_iter()
            .flat_map(|c| &c.fields)
        {
            if datamodel::relation_of(row.class, f.name).is_some() {
                if let Some(t) = row.rec.get(f.name).and_then(Value::as_str) {
                    let t = t.to_owned();
                    self.link(row.class, f.name, r, Some(&t), NULL_REF);
                }
            }
        }
        self.dirty.remove(r);
        self.deleted.push((r.to_owned(), row.class, row.rec));
    }
}
