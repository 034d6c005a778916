//! The one-host store: SQLite in `xapi.db`, WAL.
//!
//! Schema 2: `objects` holds each object's record with the generation of its last change and
//! of its creation; `tombstones` the deletions still in the event window; `meta` the event
//! counter's high-water mark (`reserved`) and the window's floor (`lost_before`). Databases
//! written by schema 1 (objects without generations) are migrated at open: every object gets
//! generation 1, so an empty `event.from` token lists it.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::{encode, Backend, Commit, Loaded, StoredRow};
use crate::datamodel::Class;
use crate::Error;

/// Generations handed out between two writes of `meta.reserved` (writes that change only
/// objects kept in memory then cost no disk write).
const RESERVE: u64 = 1024;

const SCHEMA: i64 = 2;

pub(crate) struct Sqlite {
    conn: Mutex<Conn>,
}

struct Conn {
    conn: Connection,
    /// Every generation up to this one may have been handed out as a token.
    reserved: u64,
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<u64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(|v| v as u64))
}

fn set_meta(conn: &Connection, key: &str, v: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, v as i64],
    )
    .map(drop)
}

/// Brings a database of any earlier schema to [`SCHEMA`], in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA {
        return Err(Error::Corrupt(format!(
            "xapi.db has schema {version}, newer than this xapi's {SCHEMA}"
        )));
    }
    let t = conn.transaction()?;
    t.execute_batch(
        "CREATE TABLE IF NOT EXISTS objects (ref TEXT PRIMARY KEY, class TEXT NOT NULL, data TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS tombstones (gen INTEGER NOT NULL, ref TEXT NOT NULL, class TEXT NOT NULL, data TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS tombstones_gen ON tombstones (gen);",
    )?;
    let has_gen = t
        .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'gen'")?
        .exists([])?;
    if !has_gen {
        // Schema 1: objects had no generations. Generation 1 for all of them, so the
        // empty token lists them and any later token is past them.
        t.execute_batch(
            "ALTER TABLE objects ADD COLUMN gen INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE objects ADD COLUMN created INTEGER NOT NULL DEFAULT 1;",
        )?;
    }
    if meta(&t, "reserved")?.is_none() {
        set_meta(&t, "reserved", 1)?;
    }
    t.pragma_update(None, "user_version", SCHEMA)?;
    t.commit()?;
    Ok(())
}

impl Sqlite {
    /// Opens (or creates) `dir/xapi.db`, migrates it and reads everything in it.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Loaded), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let mut conn = Connection::open(dir.join("xapi.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL: a committed transaction survives the process being killed (kill -9); FULL
        // also fsyncs the log at each commit, so it survives power loss too.
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        let mut loaded = Loaded::default();
        {
            let mut st = conn.prepare("SELECT ref, class, data, gen, created FROM objects")?;
            let rows = st.query_map([], |r| {
                Ok(StoredRow {
                    r: r.get(0)?,
                    class: r.get(1)?,
                    data: r.get(2)?,
                    gen: r.get::<_, i64>(3)? as u64,
                    created: r.get::<_, i64>(4)? as u64,
                })
            })?;
            for row in rows {
                loaded.rows.push(row?);
            }
            let mut st =
                conn.prepare("SELECT ref, class, data, gen FROM tombstones ORDER BY gen, rowid")?;
            let rows = st.query_map([], |r| {
                Ok(StoredRow {
                    r: r.get(0)?,
                    class: r.get(1)?,
                    data: r.get(2)?,
                    gen: r.get::<_, i64>(3)? as u64,
                    created: 0,
                })
            })?;
            for row in rows {
                loaded.tombstones.push(row?);
            }
        }
        let reserved = meta(&conn, "reserved")?.unwrap_or(1);
        // Tokens handed out before the restart are at most `reserved`: start past them.
        loaded.gen = reserved;
        loaded.lost_before = meta(&conn, "lost_before")?.unwrap_or(0);
        Ok((
            Sqlite {
                conn: Mutex::new(Conn { conn, reserved }),
            },
            loaded,
        ))
    }
}

impl Backend for Sqlite {
    fn stores(&self, class: &Class) -> bool {
        class.persistent
    }

    fn commit(&self, c: &Commit<'_>) -> Result<u64, Error> {
        let mut guard = self.conn.lock();
        let Conn { conn, reserved } = &mut *guard;
        let reserve = (c.gen > *reserved).then(|| c.gen + RESERVE);
        if c.puts.is_empty() && c.dels.is_empty() && c.trim_through.is_none() && reserve.is_none() {
            return Ok(c.gen);
        }
        let t = conn.transaction()?;
        {
            let mut up = t.prepare_cached(
                "INSERT INTO objects (ref, class, data, gen, created) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(ref) DO UPDATE SET data = excluded.data, gen = excluded.gen",
            )?;
            for p in &c.puts {
                up.execute(params![p.r, p.class, encode(p.rec), c.gen as i64])?;
            }
            let mut del = t.prepare_cached("DELETE FROM objects WHERE ref = ?1")?;
            let mut tomb = t.prepare_cached(
                "INSERT INTO tombstones (gen, ref, class, data) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for d in &c.dels {
                del.execute(params![d.r])?;
                tomb.execute(params![c.gen as i64, d.r, d.class, encode(d.snapshot)])?;
            }
            if let Some(through) = c.trim_through {
                t.execute("DELETE FROM tombstones WHERE gen <= ?1", [through as i64])?;
                let floor = meta(&t, "lost_before")?.unwrap_or(0).max(through);
                set_meta(&t, "lost_before", floor)?;
            }
            if let Some(r) = reserve {
                set_meta(&t, "reserved", r)?;
            }
        }
        t.commit()?;
        if let Some(r) = reserve {
            *reserved = r;
        }
        Ok(c.gen)
    }
}
