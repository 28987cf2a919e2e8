//! The audit log in PostgreSQL: one row per entry, appended.
//!
//! Invariant: rows are inserted and deleted by age, never updated.

use super::Tx;
use crate::{AuditEntry, AuditQuery, AuditRecord, Result};

pub(super) async fn append(tx: &mut Tx, e: AuditEntry) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&e.at, &e.actor, &e.action, &e.target, &e.detail],
    )
    .await?;
    Ok(())
}

pub(super) async fn read(tx: &mut Tx, q: AuditQuery) -> Result<Vec<AuditRecord>> {
    let before = q.before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let action =
        q.action.as_ref().map(|a| format!("{}%", a.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT seq, at, actor, action, target, detail FROM audit WHERE seq < $1 \
             AND ($2::text IS NULL OR actor = $2) AND ($3::text IS NULL OR action LIKE $3) \
             ORDER BY seq DESC LIMIT $4",
            &[&before, &q.actor, &action, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRecord {
            seq: r.get::<_, i64>(0).unsigned_abs(),
            entry: AuditEntry { at: r.get(1), actor: r.get(2), action: r.get(3), target: r.get(4), detail: r.get(5) },
        })
        .collect())
}

pub(super) async fn purge(tx: &mut Tx, before: i64) -> Result<u64> {
    tx.execute("DELETE FROM audit WHERE at < $1", &[&before]).await
}
