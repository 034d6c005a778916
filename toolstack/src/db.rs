//! The object database: in-memory tables written through to SQLite, with generation counters
//! that `event.from` reads.
//!
//! Every write goes through [`Db::write`]; the closure's changes are committed to SQLite in
//! one transaction (WAL, so a `kill -9` after the call returned loses nothing) before the
//! write lock is released and before the API call is acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use rusqlite::{params, Connection};

use crate::datamodel::{self, Class, NULL_REF};
use crate::value::Value;
use crate::Error;

/// A record: field name to value.
pub type Record = BTreeMap<String, Value>;

#[derive(Debug, Clone)]
struct Row {
    class: &'static str,
    rec: Record,
    /// Generation of the last change.
    gen: u64,
    /// Generation of creation.
    created: u64,
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
    by_class: HashMap<&'static str, std::collections::BTreeSet<String>>,
    by_uuid: HashMap<String, String>,
    gen: u64,
    tombstones: Vec<Change>,
    /// The change log: every object changed since the database opened, keyed by the
    /// generation of its last change (so `event.from` costs what changed, not what exists).
    log: std::collections::BTreeSet<(u64, String)>,
}

/// Tombstones kept for `event.from` callers that lag behind.
const MAX_TOMBSTONES: usize = 100_000;

/// The database.
pub struct Db {
    inner: RwLock<Inner>,
    store: Option<Mutex<Connection>>,
    gen_lock: Mutex<u64>,
    gen_cv: Condvar,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

/// A write transaction: changes made through it are committed together.
pub struct Tx<'a> {
    inner: &'a mut Inner,
    dirty: HashSet<String>,
    deleted: Vec<(String, &'static str, Record)>,
}

impl Db {
    /// An in-memory database (tests, benches).
    pub fn in_memory() -> Self {
        Db {
            inner: RwLock::new(Inner::default()),
            store: None,
            gen_lock: Mutex::new(0),
            gen_cv: Condvar::new(),
        }
    }

    /// Opens (or creates) the database in `dir/xapi.db` and loads every object.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let conn = Connection::open(dir.join("xapi.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL: a committed transaction survives the process being killed (kill -9); FULL
        // also fsyncs the log at each commit, so it survives power loss too.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (ref TEXT PRIMARY KEY, class TEXT NOT NULL, data TEXT NOT NULL);",
        )?;
        let mut inner = Inner::default();
        {
            let mut st = conn.prepare("SELECT ref, class, data FROM objects")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (r, class, data) = row?;
                let cls = datamodel::class(&class)
                    .ok_or_else(|| Error::Corrupt(format!("unknown class {class}")))?;
                let json: serde_json::Value =
                    serde_json::from_str(&data).map_err(|e| Error::Corrupt(format!("{r}: {e}")))?;
                let Value::Struct(stored) = Value::from_json(&json) else {
                    return Err(Error::Corrupt(format!("{r}: not a record")));
                };
                // Fields added to the model since the row was written get their defaults.
                let mut rec = cls.default_record();
                for (k, v) in stored {
                    if let Some(f) = cls.field(&k) {
                        rec.insert(k, f.ty.coerce(&v).unwrap_or(v));
                    }
                }
                inner.insert_row(r, cls.name, rec, 0);
            }
        }
        Ok(Db {
            inner: RwLock::new(inner),
            store: Some(Mutex::new(conn)),
            gen_lock: Mutex::new(0),
            gen_cv: Condvar::new(),
        })
    }

    /// Runs `f` with a write transaction and commits it (to disk, when persistent).
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut inner = self.inner.write();
        let mut tx = Tx {
            inner: &mut inner,
            dirty: HashSet::new(),
            deleted: Vec::new(),
        };
        let out = f(&mut tx)?;
        let Tx { dirty, deleted, .. } = tx;
        if dirty.is_empty() && deleted.is_empty() {
            return Ok(out);
        }
        inner.gen += 1;
        let gen = inner.gen;
        let Inner { rows, log, .. } = &mut *inner;
        for r in &dirty {
            if let Some(row) = rows.get_mut(r) {
                log.remove(&(row.gen, r.clone()));
                log.insert((gen, r.clone()));
                row.gen = gen;
                if row.created == u64::MAX {
                    row.created = gen;
                }
            }
        }
        for (r, class, snapshot) in &deleted {
            inner.tombstones.push(Change {
                gen,
                class,
                op: "del",
                r#ref: r.clone(),
                snapshot: snapshot.clone(),
            });
        }
        if inner.tombstones.len() > MAX_TOMBSTONES {
            let cut = inner.tombstones.len() - MAX_TOMBSTONES / 2;
            inner.tombstones.drain(..cut);
        }
        if let Some(store) = &self.store {
            let mut conn = store.lock();
            let mut persist = || -> rusqlite::Result<()> {
                let t = conn.transaction()?;
                {
                    let mut up = t.prepare_cached(
                    "INSERT INTO objects (ref, class, data) VALUES (?1, ?2, ?3) ON CONFLICT(ref) DO UPDATE SET data = excluded.data",
                )?;
                    for r in &dirty {
                        if let Some(row) = inner.rows.get(r) {
                            if datamodel::class(row.class).is_some_and(|c| c.persistent) {
                                let data = Value::Struct(row.rec.clone()).to_json().to_string();
                                up.execute(params![r, row.class, data])?;
                            }
                        }
                    }
                    let mut del = t.prepare_cached("DELETE FROM objects WHERE ref = ?1")?;
                    for (r, _, _) in &deleted {
                        del.execute(params![r])?;
                    }
                }
                t.commit()
            };
            persist().map_err(Error::from)?;
        }
        drop(inner);
        *self.gen_lock.lock() = gen;
        self.gen_cv.notify_all();
        Ok(out)
    }

    /// Runs `f` with shared read access.
    pub fn read<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let inner = self.inner.read();
        f(&View { inner: &inner })
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.inner.read().gen
    }

    /// Waits until the generation exceeds `gen` or `timeout` passes; returns the generation.
    pub fn wait_past(&self, gen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.gen_lock.lock();
        loop {
            let cur = self.generation();
            if cur > gen {
                return cur;
            }
            *g = cur;
            if self.gen_cv.wait_until(&mut g, deadline).timed_out() {
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
        let inner = self.inner.read();
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
    fn insert_row(&mut self, r: String, class: &'static str, rec: Record, created: u64) {
        if let Some(Value::String(u)) = rec.get("uuid") {
            self.by_uuid.insert(u.clone(), r.clone());
        }
        self.by_class.entry(class).or_default().insert(r.clone());
        self.rows.insert(
            r,
            Row {
                class,
                rec,
                gen: created,
                created,
            },
        );
    }
}

/// Read access to the database.
pub struct View<'a> {
    inner: &'a Inner,
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
        self.inner.insert_row(r.clone(), class.name, rec, u64::MAX);
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
            if let Some(row) = self.inner.rows.get_mut(old) {
                if let Some(v) = row.rec.get_mut(rel.other_field) {
                    set_remove(v, r);
                    self.dirty.insert(old.to_owned());
                }
            }
        }
        if new != NULL_REF {
            if let Some(row) = self.inner.rows.get_mut(new) {
                if row.class == rel.other {
                    if let Some(v) = row.rec.get_mut(rel.other_field) {
                        set_add(v, r);
                        self.dirty.insert(new.to_owned());
                    }
                }
            }
        }
    }

    /// Sets one field (value already checked), mirroring relations.
    pub fn set(&mut self, r: &str, field: &str, v: Value) {
        let Some(row) = self.inner.rows.get_mut(r) else {
            return;
        };
        let class = row.class;
        let old = row.rec.insert(field.to_owned(), v.clone());
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
        if let Some(Value::Struct(m)) = self
            .inner
            .rows
            .get_mut(r)
            .and_then(|row| row.rec.get_mut(field))
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
        if let Some(v) = self
            .inner
            .rows
            .get_mut(r)
            .and_then(|row| row.rec.get_mut(field))
        {
            if add {
                set_add(v, item);
            } else {
                set_remove(v, item);
            }
            self.dirty.insert(r.to_owned());
        }
    }

    /// Destroys an object, unlinking its relations.
    pub fn destroy(&mut self, r: &str) {
        let Some(row) = self.inner.rows.remove(r) else {
            return;
        };
        self.inner.log.remove(&(row.gen, r.to_owned()));
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
        if let Some(Value::String(u)) = row.rec.get("uuid") {
            self.inner.by_uuid.remove(u);
        }
        if let Some(s) = self.inner.by_class.get_mut(row.class) {
            s.remove(r);
        }
        self.dirty.remove(r);
        self.deleted.push((r.to_owned(), row.class, row.rec));
    }
}
