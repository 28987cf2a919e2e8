//! Mapping between SQLite rows and tasks, and the history a compact row
//! tells.

use quern_core::{HistoryEntry, Progress, RetryPolicy, Status, Task, TaskError};
use rusqlite::Row;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The columns [`task_from_row`] reads, in order.
pub(crate) const TASK_COLUMNS: &str = "id, name, queue, input, status, priority, metadata, attempt, \
     max_attempts, timeout_ms, retry, run_at, progress, result, error, created_at, started_at, \
     finished_at, updated_at, worker, workflow, depends_on, idempotency_key, digest, \
     cancel_requested, compact, wf_key";

fn bad(col: usize, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        Box::<dyn std::error::Error + Send + Sync>::from(e.to_string()),
    )
}

pub(crate) fn uuid_at(row: &Row<'_>, col: usize) -> rusqlite::Result<Uuid> {
    let bytes: [u8; 16] = row.get(col)?;
    Ok(Uuid::from_bytes(bytes))
}

pub(crate) fn status_at(row: &Row<'_>, col: usize) -> rusqlite::Result<Status> {
    let s: String = row.get(col)?;
    s.parse().map_err(|e| bad(col, e))
}

fn json_at<T: serde::de::DeserializeOwned>(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(col)? {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| bad(col, e)),
    }
}

fn raw_at(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<Box<RawValue>>> {
    match row.get::<_, Option<String>>(col)? {
        None => Ok(None),
        Some(s) => RawValue::from_string(s).map(Some).map_err(|e| bad(col, e)),
    }
}

fn u32_at(row: &Row<'_>, col: usize) -> rusqlite::Result<u32> {
    let v: i64 = row.get(col)?;
    u32::try_from(v).map_err(|e| bad(col, e))
}

/// Reads a task from a row selected with [`TASK_COLUMNS`].
pub(crate) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let workflow: Option<[u8; 16]> = row.get(20)?;
    Ok(Task {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        queue: row.get(2)?,
        input: raw_at(row, 3)?.ok_or_else(|| bad(3, "input is NULL"))?,
        status: status_at(row, 4)?,
        priority: row.get(5)?,
        metadata: json_at::<BTreeMap<String, String>>(row, 6)?.unwrap_or_default(),
        attempt: u32_at(row, 7)?,
        max_attempts: u32_at(row, 8)?,
        timeout_ms: row.get::<_, Option<i64>>(9)?.map(i64::unsigned_abs),
        retry: json_at::<RetryPolicy>(row, 10)?.unwrap_or_default(),
        run_at: row.get(11)?,
        progress: json_at::<Progress>(row, 12)?,
        result: raw_at(row, 13)?,
        error: json_at::<TaskError>(row, 14)?,
        created_at: row.get(15)?,
        started_at: row.get(16)?,
        finished_at: row.get(17)?,
        updated_at: row.get(18)?,
        worker: row.get(19)?,
        workflow: workflow.map(Uuid::from_bytes),
        depends_on: json_at(row, 21)?.unwrap_or_default(),
        idempotency_key: row.get(22)?,
        digest: row.get(23)?,
        cancel_requested: row.get(24)?,
        key: row.get(26)?,
        lease: None,
        parents: None,
    })
}

/// Is the row's history still compact (column 25 of [`TASK_COLUMNS`])?
pub(crate) fn compact_at(row: &Row<'_>) -> rusqlite::Result<bool> {
    row.get(25)
}

/// Reads a history row (`at, from_status, to_status, attempt, worker, actor, note`).
pub(crate) fn history_from_row(row: &Row<'_>) -> rusqlite::Result<HistoryEntry> {
    let from: Option<String> = row.get(1)?;
    Ok(HistoryEntry {
        at: row.get(0)?,
        from: from.map(|s| s.parse().map_err(|e| bad(1, e))).transpose()?,
        to: status_at(row, 2)?,
        attempt: u32_at(row, 3)?,
        worker: row.get(4)?,
        actor: row.get(5)?,
        note: row.get(6)?,
    })
}
