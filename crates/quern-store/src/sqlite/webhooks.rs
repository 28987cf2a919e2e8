//! Webhooks in SQLite: their configuration and progress, and a bounded log
//! of delivery attempts.
//!
//! Invariant: a delivery attempt and the webhook state it leads to are
//! written in one transaction, so the log of attempts always explains the
//! cursor.

use crate::error::backend;
use crate::{Delivery, Result, WebhookRecord};
use rusqlite::{Connection, params};

/// Attempts kept per webhook; older ones are deleted as new ones come.
const KEPT_DELIVERIES: i64 = 1_000;

const COLUMNS: &str =
    "name, url, filter, secret, max_attempts, paused, cursor, failures, last_error, created_at, updated_at";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<WebhookRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY name")).map_err(backend)?;
    let rows = stmt
        .query_map([], |r| {
            let filter: String = r.get(2)?;
            Ok(WebhookRecord {
                name: r.get(0)?,
                url: r.get(1)?,
                filter: serde_json::from_str(&filter).unwrap_or_default(),
                secret: r.get(3)?,
                max_attempts: r.get(4)?,
                paused: r.get(5)?,
                cursor: r.get::<_, i64>(6)?.unsigned_abs(),
                failures: r.get(7)?,
                last_error: r.get(8)?,
                created_at: r.get(9)?,
                updated_at: r.get(10)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

pub(super) fn put(conn: &Connection, w: &WebhookRecord) -> Result<()> {
    let filter = serde_json::to_string(&w.filter).map_err(backend)?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO webhooks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            w.name,
            w.url,
            filter,
            w.secret,
            w.max_attempts,
            w.paused,
            to_i64(w.cursor),
            w.failures,
            w.last_error,
            w.created_at,
            w.updated_at
        ])
    })
    .map(|_| ())
    .map_err(backend)
}

pub(super) fn delete(conn: &Connection, name: &str) -> Result<bool> {
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook = ?1", [name]).map_err(backend)?;
    conn.execute("DELETE FROM webhooks WHERE name = ?1", [name]).map(|n| n > 0).map_err(backend)
}

pub(super) fn progress(conn: &Connection, w: &WebhookRecord, d: Option<&Delivery>) -> Result<()> {
    conn.prepare_cached(
        "UPDATE webhooks SET cursor = ?2, failures = ?3, paused = ?4, last_error = ?5, updated_at = ?6 WHERE name = ?1",
    )
    .and_then(|mut s| s.execute(params![w.name, to_i64(w.cursor), w.failures, w.paused, w.last_error, w.updated_at]))
    .map_err(backend)?;
    if let Some(d) = d {
        conn.prepare_cached(
            "INSERT INTO webhook_deliveries (webhook, offset, attempt, at, status, error, duration_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![d.webhook, to_i64(d.offset), d.attempt, d.at, d.status, d.error, to_i64(d.duration_ms)])
        })
        .map_err(backend)?;
        conn.prepare_cached(
            "DELETE FROM webhook_deliveries WHERE webhook = ?1 AND seq <= \
             (SELECT seq FROM webhook_deliveries WHERE webhook = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )
        .and_then(|mut s| s.execute(params![d.webhook, KEPT_DELIVERIES]))
        .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn deliveries(conn: &Connection, name: &str, limit: usize) -> Result<Vec<Delivery>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT webhook, offset, attempt, at, status, error, duration_ms FROM webhook_deliveries \
             WHERE webhook = ?1 ORDER BY seq DESC LIMIT ?2",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![name, to_i64(limit as u64)], |r| {
            Ok(Delivery {
                webhook: r.get(0)?,
                offset: r.get::<_, i64>(1)?.unsigned_abs(),
                attempt: r.get(2)?,
                at: r.get(3)?,
                status: r.get(4)?,
                error: r.get(5)?,
                duration_ms: r.get::<_, i64>(6)?.unsigned_abs(),
            })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}
