//! Read-only SQL against the server's database (the `docs` and `events` tables of `store`).
//!
//! The dashboard opens its own read-only connection: WAL lets it read while the API writes, so
//! a page never waits behind a long API call and can never change anything.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};

pub type Doc = Map<String, Value>;

pub const PLOT: &str = "plot";
pub const IMAGE: &str = "training_debug_image";
/// The iteration `Logger.report_single_value` reports at.
pub const SINGLE_VALUE_ITER: i64 = -(1 << 31);

pub struct Db {
    conn: Connection,
}

fn parse(text: &str) -> Option<Doc> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// One console event: its sequence number (for paging and the live tail) and its document.
pub struct LogEvent {
    pub seq: i64,
    pub doc: Doc,
}

/// A series of `(iteration, value)` points, in iteration order.
pub type Series = BTreeMap<i64, f64>;

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Db { conn })
    }

    pub fn doc(&self, kind: &str, id: &str) -> rusqlite::Result<Option<Doc>> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT doc FROM docs WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.as_deref().and_then(parse))
    }

    /// Every document of a kind, in creation order.
    pub fn all(&self, kind: &str) -> rusqlite::Result<Vec<Doc>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![kind], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(d) = parse(&row?) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Number of console events of a task, and of those whose message contains `search`
    /// (case-insensitive) when one is given.
    pub fn log_count(&self, task: &str, search: Option<&str>) -> rusqlite::Result<i64> {
        self.conn.query_row(
            "SELECT count(*) FROM events WHERE task = ?1 AND type = 'log'
               AND (?2 IS NULL OR instr(lower(json_extract(doc, '$.msg')), lower(?2)) > 0)",
            params![task, search],
            |r| r.get(0),
        )
    }

    /// Up to `limit` console events before `before` (newest first when read; returned oldest
    /// first), optionally only those containing `search`.
    pub fn log_page(
        &self,
        task: &str,
        before: Option<i64>,
        search: Option<&str>,
        limit: i64,
    ) -> rusqlite::Result<Vec<LogEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, doc FROM events WHERE task = ?1 AND type = 'log'
               AND (?2 IS NULL OR seq < ?2)
               AND (?3 IS NULL OR instr(lower(json_extract(doc, '$.msg')), lower(?3)) > 0)
             ORDER BY seq DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![task, before, search, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            if let Some(doc) = parse(&text) {
                out.push(LogEvent { seq, doc });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Console events after `after`, oldest first (the live tail).
    pub fn log_after(&self, task: &str, after: i64, limit: i64) -> rusqlite::Result<Vec<LogEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, doc FROM events WHERE task = ?1 AND type = 'log' AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![task, after, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            if let Some(doc) = parse(&text) {
                out.push(LogEvent { seq, doc });
            }
        }
        Ok(out)
    }

    /// The task's scalars: metric -> variant -> iteration -> value. A later report of the
    /// same (metric, variant, iteration) replaces an earlier one, as on the API.
    pub fn scalars(
        &self,
        task: &str,
    ) -> rusqlite::Result<BTreeMap<String, BTreeMap<String, Series>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json_extract(doc, '$.metric'), json_extract(doc, '$.variant'),
                    json_extract(doc, '$.iter'), json_extract(doc, '$.value')
             FROM events WHERE task = ?1 AND type = 'training_stats_scalar' ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![task], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<f64>>(3)?,
            ))
        })?;
        let mut out: BTreeMap<String, BTreeMap<String, Series>> = BTreeMap::new();
        for row in rows {
            let (metric, variant, iter, value) = row?;
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            out.entry(metric.unwrap_or_default())
                .or_default()
                .entry(variant.unwrap_or_default())
                .or_default()
                .insert(iter.unwrap_or(0), value);
        }
        Ok(out)
    }

    /// The newest event of each (metric, variant, iteration) of a type, in metric, variant,
    /// iteration order, keeping only the last `per_variant` iterations of each variant.
    pub fn latest_events(
        &self,
        task: &str,
        kind: &str,
        per_variant: usize,
    ) -> rusqlite::Result<Vec<Doc>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc FROM events WHERE task = ?1 AND type = ?2 ORDER BY seq")?;
        let rows = stmt.query_map(params![task, kind], |r| r.get::<_, String>(0))?;
        let mut groups: BTreeMap<(String, String), BTreeMap<i64, Doc>> = BTreeMap::new();
        for row in rows {
            let Some(doc) = parse(&row?) else { continue };
            let s = |k: &str| {
                doc.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let iter = doc.get("iter").and_then(Value::as_i64).unwrap_or(0);
            groups
                .entry((s("metric"), s("variant")))
                .or_default()
                .insert(iter, doc);
        }
        let mut out = Vec::new();
        for (_, by_iter) in groups {
            let skip = by_iter.len().saturating_sub(per_variant);
            out.extend(by_iter.into_values().skip(skip));
        }
        Ok(out)
    }
}
