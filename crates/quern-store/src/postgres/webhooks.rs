//! Webhooks in PostgreSQL: their configuration and progress, and a bounded
//! log of delivery attempts.
//!
//! Invariant: a delivery attempt and the webhook state it leads to are
//! written in one transaction, so the log of attempts always explains the
//! cursor.

use super::Tx;
use crate::error::backend;
use crate::{Delivery, Result, WebhookRecord};

/// Attempts kept per webhook; older ones are deleted as new ones come.
const KEPT_DELIVERIES: i64 = 1_000;

const COLUMNS: &str =
    "name, url, filter, secret, max_attempts, paused, cursor, failures, last_error, created_at, updated_at";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) async fn list(tx: &mut Tx) -> Result<Vec<WebhookRecord>> {
    let rows = tx.query(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY name"), &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(WebhookRecord {
                name: r.get(0),
                url: r.get(1),
                filter: serde_json::from_str(r.get(2)).unwrap_or_default(),
                secret: r.get(3),
                max_attempts: r.get::<_, i32>(4).unsigned_abs(),
                paused: r.get(5),
                cursor: r.get::<_, i64>(6).unsigned_abs(),
                failures: r.get::<_, i32>(7).unsigned_abs(),
                last_error: r.get(8),
                created_at: r.get(9),
                updated_at: r.get(10),
            })
        })
        .collect()
}

pub(super) async fn put(tx: &mut Tx, w: WebhookRecord) -> Result<()> {
    let filter = serde_json::to_string(&w.filter).map_err(backend)?;
    tx.execute(
        &format!(
            "INSERT INTO webhooks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, filter = excluded.filter, \
             secret = excluded.secret, max_attempts = excluded.max_attempts, paused = excluded.paused, \
             cursor = excluded.cursor, failures = excluded.failures, last_error = excluded.last_error, \
             created_at = excluded.created_at, updated_at = excluded.updated_at"
        ),
        &[
            &w.name,
            &w.url,
            &filter,
            &w.secret,
            &to_i32(w.max_attempts),
            &w.paused,
            &to_i64(w.cursor),
            &to_i32(w.failures),
            &w.last_error,
            &w.created_at,
            &w.updated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(tx: &mut Tx, name: String) -> Result<bool> {
    tx.execute("DELETE FROM webhook_deliveries WHERE webhook = $1", &[&name]).await?;
    Ok(tx.execute("DELETE FROM webhooks WHERE name = $1", &[&name]).await? > 0)
}

pub(super) async fn progress(tx: &mut Tx, w: WebhookRecord, d: Option<Delivery>) -> Result<()> {
    tx.execute(
        "UPDATE webhooks SET cursor = $2, failures = $3, paused = $4, last_error = $5, updated_at = $6 WHERE name = $1",
        &[&w.name, &to_i64(w.cursor), &to_i32(w.failures), &w.paused, &w.last_error, &w.updated_at],
    )
    .await?;
    if let Some(d) = d {
        let status = d.status.map(i32::from);
        tx.execute(
            "INSERT INTO webhook_deliveries (webhook, \"offset\", attempt, at, status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&d.webhook, &to_i64(d.offset), &to_i32(d.attempt), &d.at, &status, &d.error, &to_i64(d.duration_ms)],
        )
        .await?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook = $1 AND seq <= \
             (SELECT seq FROM webhook_deliveries WHERE webhook = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1)",
            &[&d.webhook, &KEPT_DELIVERIES],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn deliveries(tx: &mut Tx, name: String, limit: usize) -> Result<Vec<Delivery>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT webhook, \"offset\", attempt, at, status, error, duration_ms FROM webhook_deliveries \
             WHERE webhook = $1 ORDER BY seq DESC LIMIT $2",
            &[&name, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Delivery {
            webhook: r.get(0),
            offset: r.get::<_, i64>(1).unsigned_abs(),
            attempt: r.get::<_, i32>(2).unsigned_abs(),
            at: r.get(3),
            status: r.get::<_, Option<i32>>(4).and_then(|s| u16::try_from(s).ok()),
            error: r.get(5),
            duration_ms: r.get::<_, i64>(6).unsigned_abs(),
        })
        .collect())
}
