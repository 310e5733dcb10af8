//! Persistence: one SQLite file in WAL mode.
//!
//! Entities (tasks, projects, queues, models, credentials) are JSON documents keyed by kind and
//! id; the API handlers read a document, change it and write it back inside one transaction.
//! Every call runs under a single connection mutex, which makes each API call atomic (a queue pop
//! can never hand one entry to two workers) and is fast enough: a call is a few row reads and
//! writes. A reply is sent only after its transaction committed, and WAL survives a killed
//! process, so nothing acknowledged is lost on `kill -9`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub type Doc = Map<String, Value>;

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// A transaction handed to API handlers.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS docs (
                 kind TEXT NOT NULL,
                 id   TEXT NOT NULL,
                 doc  TEXT NOT NULL,
                 PRIMARY KEY (kind, id)
             );
             CREATE TABLE IF NOT EXISTS events (
                 seq   INTEGER PRIMARY KEY AUTOINCREMENT,
                 task  TEXT NOT NULL,
                 type  TEXT NOT NULL,
                 ts    INTEGER NOT NULL,
                 doc   TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS events_by_task ON events (task, type, seq);
             CREATE INDEX IF NOT EXISTS events_by_time ON events (task, type, ts);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS log_keys (
                 task   TEXT NOT NULL,
                 ts     INTEGER NOT NULL,
                 digest BLOB NOT NULL,
                 PRIMARY KEY (task, ts, digest)
             ) WITHOUT ROWID;",
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` in a transaction; commits when it returns `Ok`.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction().map_err(ApiError::db)?;
        let mut t = Tx { tx };
        let out = f(&mut t)?;
        t.tx.commit().map_err(ApiError::db)?;
        Ok(out)
    }
}

impl Tx<'_> {
    pub fn get(&self, kind: &str, id: &str) -> Result<Option<Doc>, ApiError> {
        let text: Option<String> = self
            .tx
            .query_row(
                "SELECT doc FROM docs WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(ApiError::db)?;
        text.map(|t| parse_doc(&t)).transpose()
    }

    pub fn put(&mut self, kind: &str, id: &str, doc: &Doc) -> Result<(), ApiError> {
        let text = serde_json::to_string(doc).map_err(|e| ApiError::internal(e.to_string()))?;
        self.tx
            .execute(
                "INSERT INTO docs (kind, id, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc",
                params![kind, id, text],
            )
            .map_err(ApiError::db)?;
        Ok(())
    }

    pub fn delete(&mut self, kind: &str, id: &str) -> Result<bool, ApiError> {
        let n = self
            .tx
            .execute(
                "DELETE FROM docs WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
            .map_err(ApiError::db)?;
        Ok(n > 0)
    }

    /// Every document of a kind, in creation order.
    pub fn all(&self, kind: &str) -> Result<Vec<Doc>, ApiError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 ORDER BY rowid")
            .map_err(ApiError::db)?;
        let rows = stmt
            .query_map(params![kind], |r| r.get::<_, String>(0))
            .map_err(ApiError::db)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse_doc(&row.map_err(ApiError::db)?)?);
        }
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, ApiError> {
        self.tx
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(ApiError::db)
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), ApiError> {
        self.tx
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(ApiError::db)?;
        Ok(())
    }

    pub fn add_event(
        &mut self,
        task: &str,
        kind: &str,
        ts: i64,
        doc: &Doc,
    ) -> Result<(), ApiError> {
        let text = serde_json::to_string(doc).map_err(|e| ApiError::internal(e.to_string()))?;
        self.tx
            .execute(
                "INSERT INTO events (task, type, ts, doc) VALUES (?1, ?2, ?3, ?4)",
                params![task, kind, ts, text],
            )
            .map_err(ApiError::db)?;
        Ok(())
    }

    /// Records that a log line with this timestamp and these values of `fields` was stored;
    /// `false` when it already was. A resent batch (the reply to the first send was lost) must
    /// not add its lines twice. One indexed row per line keeps this constant-time however many
    /// lines share a timestamp (a burst of prints in one millisecond, or a client that sends
    /// one timestamp for everything): comparing against every stored line of that instant was
    /// quadratic.
    pub fn claim_log_line(
        &mut self,
        task: &str,
        ts: i64,
        doc: &Doc,
        fields: &[&str],
    ) -> Result<bool, ApiError> {
        let values: Vec<Option<&Value>> = fields.iter().map(|f| doc.get(*f)).collect();
        let text = serde_json::to_string(&values).map_err(|e| ApiError::internal(e.to_string()))?;
        let digest = Md5::digest(text.as_bytes());
        let added = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO log_keys (task, ts, digest) VALUES (?1, ?2, ?3)")
            .and_then(|mut stmt| stmt.execute(params![task, ts, digest.as_slice()]))
            .map_err(ApiError::db)?;
        Ok(added == 1)
    }

    /// Events of a task (optionally of one type), in the order they were added.
    pub fn events(&self, task: &str, kind: Option<&str>) -> Result<Vec<Doc>, ApiError> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT doc FROM events WHERE task = ?1 AND (?2 IS NULL OR type = ?2) ORDER BY seq",
            )
            .map_err(ApiError::db)?;
        let rows = stmt
            .query_map(params![task, kind], |r| r.get::<_, String>(0))
            .map_err(ApiError::db)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse_doc(&row.map_err(ApiError::db)?)?);
        }
        Ok(out)
    }

    pub fn delete_events(&mut self, task: &str) -> Result<(), ApiError> {
        self.tx
            .execute("DELETE FROM events WHERE task = ?1", params![task])
            .map_err(ApiError::db)?;
        self.tx
            .execute("DELETE FROM log_keys WHERE task = ?1", params![task])
            .map_err(ApiError::db)?;
        Ok(())
    }
}

fn parse_doc(text: &str) -> Result<Doc, ApiError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::internal("corrupt document in the store")),
    }
}
