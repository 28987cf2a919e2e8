//! Mapping between SQLite rows and tasks, and the history a compact row
//! tells.

use quern_core::{HistoryEntry, Progress, RetryPolicy, Status, Task, TaskError};
use rusqlite::Row;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The columns [`task_from_row`] reads, in order.
pub(crate) const TASK_COLUMNS: &str = "id, name, queue, input, status, priority, metadata, attempt, \
     max_attempts, timeout_ms, retry, run_at, progress, result, error, created_at, started_at, \
     finished_at, updated_at, worker, workflow, depends_on, idempotency_key, digest, \
     cancel_requested, compact, wf_key, traceparent";

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
    row.get_ref(col)?.as_str()?.parse().map_err(|e| bad(col, e))
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

/// A stored retry policy; `{}` (see `retry_json`) without a parse.
fn retry_at(row: &Row<'_>, col: usize) -> rusqlite::Result<RetryPolicy> {
    match row.get_ref(col)?.as_str_or_null()? {
        None | Some("{}") => Ok(RetryPolicy::default()),
        Some(s) => serde_json::from_str(s).map_err(|e| bad(col, e)),
    }
}

/// A task's digest as stored: the 32 bytes of a `sha256:<hex>` digest as a
/// blob (39 bytes fewer than the text, on a row that every write of the task
/// rewrites), anything else as the text itself.
pub(crate) enum StoredDigest<'a> {
    Sha256([u8; 32]),
    Text(&'a str),
}

impl<'a> StoredDigest<'a> {
    pub(crate) fn of(digest: &'a str) -> Self {
        let mut bytes = [0u8; 32];
        let hex = digest.strip_prefix("sha256:").map(str::as_bytes).filter(|h| h.len() == 64);
        let parsed = hex.is_some_and(|hex| {
            hex.chunks_exact(2).zip(bytes.iter_mut()).all(|(pair, out)| match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => {
                    *out = hi << 4 | lo;
                    true
                }
                _ => false,
            })
        });
        if parsed { StoredDigest::Sha256(bytes) } else { StoredDigest::Text(digest) }
    }
}

/// A lowercase hex digit's value (the digests are written lowercase, so an
/// uppercase one stays text and reads back as it was).
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl ToSql for StoredDigest<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            StoredDigest::Sha256(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            StoredDigest::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

fn digest_at(row: &Row<'_>, col: usize) -> rusqlite::Result<String> {
    match row.get_ref(col)? {
        ValueRef::Blob(hash) => Ok(quern_core::spec::digest_text(hash)),
        other => other.as_str().map(str::to_owned).map_err(rusqlite::Error::from),
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
        metadata: json_at::<quern_core::Metadata>(row, 6)?.unwrap_or_default(),
        attempt: u32_at(row, 7)?,
        max_attempts: u32_at(row, 8)?,
        timeout_ms: row.get::<_, Option<i64>>(9)?.map(i64::unsigned_abs),
        retry: retry_at(row, 10)?,
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
        digest: digest_at(row, 23)?,
        cancel_requested: row.get(24)?,
        key: row.get(26)?,
        lease: None,
        parents: None,
        notice: None,
        traceparent: row.get(27)?,
    })
}

/// Is the row's history still compact (column 25 of [`TASK_COLUMNS`])?
pub(crate) fn compact_at(row: &Row<'_>) -> rusqlite::Result<bool> {
    row.get(25)
}

/// Reads a history row (`at, from_status, to_status, attempt, worker, actor, note, by_token`).
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
        by: row.get(7)?,
    })
}

/// How many tasks of `workflow` are in each status (statuses with none left
/// out).
pub(crate) fn workflow_counts(conn: &rusqlite::Connection, workflow: uuid::Uuid) -> crate::Result<Vec<(Status, i64)>> {
    conn.prepare_cached("SELECT status, count(*) FROM tasks WHERE workflow = ?1 GROUP BY status")
        .and_then(|mut s| {
            s.query_map([workflow.as_bytes()], |r| Ok((status_at(r, 0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(crate::error::backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn digests_read_back_as_written() {
        let conn = Connection::open_in_memory().expect("an in-memory database");
        conn.execute_batch("CREATE TABLE t (d TEXT NOT NULL)").expect("a table");
        let sha = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let upper = format!("sha256:{}", "0123456789ABCDEF".repeat(4));
        for (digest, stored_as) in
            [(sha.as_str(), "blob"), (upper.as_str(), "text"), ("sha256:12", "text"), ("", "text")]
        {
            conn.execute("DELETE FROM t", []).expect("delete");
            conn.execute("INSERT INTO t (d) VALUES (?1)", [StoredDigest::of(digest)]).expect("insert");
            let (back, kind) = conn
                .query_row("SELECT d, typeof(d) FROM t", [], |r| Ok((digest_at(r, 0)?, r.get::<_, String>(1)?)))
                .expect("a row");
            assert_eq!((back.as_str(), kind.as_str()), (digest, stored_as));
        }
    }
}
