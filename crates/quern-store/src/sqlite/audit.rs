//! The audit log in SQLite: one row per entry, appended.
//!
//! Invariant: rows are inserted and deleted by age, never updated.

use crate::error::backend;
use crate::{AuditEntry, AuditQuery, AuditRecord, Result};
use rusqlite::{Connection, params};

pub(super) fn append(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.prepare_cached("INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![e.at, e.actor, e.action, e.target, e.detail]))
        .map(|_| ())
        .map_err(backend)
}

pub(super) fn read(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let before = q.before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let action =
        q.action.as_ref().map(|a| format!("{}%", a.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, actor, action, target, detail FROM audit WHERE seq < ?1 \
             AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR action LIKE ?3 ESCAPE '\\') \
             ORDER BY seq DESC LIMIT ?4",
        )
        .map_err(backend)?;
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![before, q.actor, action, limit], |r| {
            Ok(AuditRecord {
                seq: r.get::<_, i64>(0)?.unsigned_abs(),
                entry: AuditEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                },
            })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

pub(super) fn purge(conn: &Connection, before: i64) -> Result<u64> {
    conn.execute("DELETE FROM audit WHERE at < ?1", [before]).map(|n| n as u64).map_err(backend)
}
