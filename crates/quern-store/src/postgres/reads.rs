//! The read-only queries of tasks and queues in PostgreSQL: a page of a
//! listing, a task's history, the queues with their counts (as
//! `sqlite/reads.rs` for SQLite).
//!
//! Invariant: nothing here writes or takes a row lock, so a read never waits
//! for a writer; each statement sees the rows committed when it began.

use super::Tx;
use super::rows::{COLS, Loaded, load, status_of, u32_of};
use crate::history::compact_history;
use crate::stored::{end_page, json};
use crate::{HistoryEntry, ListQuery, QueueInfo, Result, StoreError, TaskPage};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

fn encode_cursor(id: Uuid) -> String {
    id.simple().to_string()
}

fn decode_cursor(s: &str) -> Result<Uuid> {
    Uuid::try_parse(s).map_err(|_| StoreError::InvalidCursor)
}

pub(super) async fn list(tx: &mut Tx, q: ListQuery) -> Result<TaskPage> {
    let mut sql = format!("SELECT {COLS} FROM tasks t WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(cursor) = &q.cursor {
        args.push(Box::new(decode_cursor(cursor)?));
        sql.push_str(&format!(" AND t.id < ${}", args.len()));
    }
    if !q.statuses.is_empty() {
        let statuses: Vec<&'static str> = q.statuses.iter().map(|s| s.as_str()).collect();
        args.push(Box::new(statuses));
        sql.push_str(&format!(" AND t.status = ANY(${})", args.len()));
    }
    if let Some(queue) = &q.queue {
        args.push(Box::new(queue.clone()));
        sql.push_str(&format!(" AND t.queue = ${}", args.len()));
    }
    if let Some(name) = &q.name {
        args.push(Box::new(name.clone()));
        sql.push_str(&format!(" AND t.name = ${}", args.len()));
    }
    if let Some(workflow) = q.workflow {
        args.push(Box::new(workflow));
        sql.push_str(&format!(" AND t.workflow = ${}", args.len()));
    }
    if !q.metadata.is_empty() {
        args.push(Box::new(json(&q.metadata)));
        sql.push_str(&format!(" AND t.metadata @> ${}::text::jsonb", args.len()));
    }
    args.push(Box::new(i64::try_from(q.limit).unwrap_or(1000) + 1));
    sql.push_str(&format!(" ORDER BY t.id DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = tx.query(&sql, &params).await?;
    let mut tasks = rows.iter().map(|r| Loaded::from_row(r).map(|l| l.task)).collect::<Result<Vec<_>>>()?;
    let next_cursor = end_page(&mut tasks, q.limit).map(encode_cursor);
    Ok(TaskPage { tasks, next_cursor })
}

pub(super) async fn history(tx: &mut Tx, id: Uuid) -> Result<Vec<HistoryEntry>> {
    let l = load(tx, id, false).await?;
    if l.compact {
        return Ok(compact_history(&l.task));
    }
    let rows = tx
        .query(
            "SELECT at, from_status, to_status, attempt, worker, actor, note, by_token FROM history WHERE task = $1 ORDER BY seq",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let from: Option<String> = r.get(1);
            Ok(HistoryEntry {
                at: r.get(0),
                from: from.as_deref().map(status_of).transpose()?,
                to: status_of(r.get(2))?,
                attempt: u32_of(r.get(3)),
                worker: r.get(4),
                actor: r.get(5),
                note: r.get(6),
                by: r.get(7),
            })
        })
        .collect()
}

/// Every queue that holds tasks or was paused, with its counts by status.
pub(super) async fn queues(tx: &mut Tx) -> Result<Vec<QueueInfo>> {
    // The totals last folded plus the deltas since: a read of a few rows per
    // queue, however many tasks the table holds.
    let counts = tx
        .query(
            "SELECT queue, status, sum(n)::int8 FROM (SELECT queue, status, n FROM queue_counts \
             UNION ALL SELECT queue, status, n FROM queue_count_deltas) c \
             GROUP BY queue, status HAVING sum(n) <> 0",
            &[],
        )
        .await?;
    let paused = tx.query("SELECT name, paused FROM queues", &[]).await?;
    Ok(queue_counts(counts, paused))
}

/// Counts of one queue by status.
fn queue_counts(rows: Vec<Row>, paused: Vec<Row>) -> Vec<QueueInfo> {
    let mut out: std::collections::BTreeMap<String, QueueInfo> = std::collections::BTreeMap::new();
    for r in rows {
        let name: String = r.get(0);
        let status: String = r.get(1);
        let n: i64 = r.get(2);
        let q =
            out.entry(name.clone()).or_insert_with(|| QueueInfo { name, counts: Default::default(), paused: false });
        if let Ok(s) = status.parse() {
            q.counts.insert(s, n.unsigned_abs());
        }
    }
    for r in paused {
        let name: String = r.get(0);
        let is_paused: bool = r.get(1);
        out.entry(name.clone())
            .or_insert_with(|| QueueInfo { name, counts: Default::default(), paused: false })
            .paused = is_paused;
    }
    out.into_values().collect()
}
