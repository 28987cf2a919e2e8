//! The read-only queries of tasks that the store's reads run on a reader
//! connection: a page of a listing, a task's history, a workflow's head.
//!
//! Invariant: nothing here writes; a read that must see the leases the
//! writer keeps in memory has them written first (`settle`), before it
//! runs here.

use super::rows::{TASK_COLUMNS, compact_at, history_from_row, task_from_row};
use crate::error::backend;
use crate::history::compact_history;
use crate::stored::end_page;
use crate::{HistoryEntry, ListQuery, Result, StoreError, TaskPage};
use quern_core::Task;
use rusqlite::{Connection, OptionalExtension, ToSql};
use uuid::Uuid;

fn encode_cursor(id: Uuid) -> String {
    id.simple().to_string()
}

fn decode_cursor(s: &str) -> Result<Uuid> {
    Uuid::try_parse(s).map_err(|_| StoreError::InvalidCursor)
}

pub(super) fn list(conn: &Connection, q: &ListQuery) -> Result<TaskPage> {
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(cursor) = &q.cursor {
        args.push(Box::new(decode_cursor(cursor)?.into_bytes()));
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    if !q.statuses.is_empty() {
        let marks: Vec<String> = q
            .statuses
            .iter()
            .map(|s| {
                args.push(Box::new(s.as_str()));
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
    }
    if let Some(queue) = &q.queue {
        args.push(Box::new(queue.clone()));
        sql.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    if let Some(name) = &q.name {
        args.push(Box::new(name.clone()));
        sql.push_str(&format!(" AND name = ?{}", args.len()));
    }
    if let Some(workflow) = q.workflow {
        args.push(Box::new(workflow.into_bytes()));
        sql.push_str(&format!(" AND workflow = ?{}", args.len()));
    }
    // Typed: a number matches numbers (5 and 5.0 alike), a string strings,
    // a boolean booleans.
    for (k, v) in &q.metadata {
        args.push(Box::new(k.clone()));
        let key = args.len();
        let (types, value): (&str, Option<Box<dyn ToSql>>) = match v {
            serde_json::Value::Bool(true) => ("'true'", None),
            serde_json::Value::Bool(false) => ("'false'", None),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => ("'integer', 'real'", Some(Box::new(i))),
                None => ("'integer', 'real'", Some(Box::new(n.as_f64().unwrap_or(f64::NAN)))),
            },
            other => ("'text'", Some(Box::new(other.as_str().unwrap_or_default().to_owned()))),
        };
        let compare = match value {
            Some(value) => {
                args.push(value);
                format!(" AND value = ?{}", args.len())
            }
            None => String::new(),
        };
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(tasks.metadata) WHERE key = ?{key} AND type IN ({types}){compare})"
        ));
    }
    args.push(Box::new(i64::try_from(q.limit).unwrap_or(1000) + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let params: Vec<&dyn ToSql> = args.iter().map(AsRef::as_ref).collect();
    let mut tasks: Vec<Task> =
        stmt.query_map(params.as_slice(), task_from_row).and_then(Iterator::collect).map_err(backend)?;
    let next_cursor = end_page(&mut tasks, q.limit).map(encode_cursor);
    Ok(TaskPage { tasks, next_cursor })
}

pub(super) fn history(conn: &Connection, id: Uuid) -> Result<Vec<HistoryEntry>> {
    let row = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.as_bytes()], |r| Ok((task_from_row(r)?, compact_at(r)?))).optional())
        .map_err(backend)?;
    let (task, compact) = row.ok_or(StoreError::NotFound(id))?;
    if compact {
        return Ok(compact_history(&task));
    }
    conn.prepare_cached(
        "SELECT at, from_status, to_status, attempt, worker, actor, note, by_token FROM history WHERE task = ?1 ORDER BY seq",
    )
    .and_then(|mut s| s.query_map([id.as_bytes()], history_from_row)?.collect())
    .map_err(backend)
}

/// A workflow's name and submission time.
pub(super) fn workflow_head(conn: &Connection, id: Uuid) -> Result<(String, i64)> {
    conn.prepare_cached("SELECT name, created_at FROM workflows WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_bytes()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).optional()
        })
        .map_err(backend)?
        .ok_or(StoreError::WorkflowNotFound(id))
}
