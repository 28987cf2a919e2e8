//! What both backends store alike: JSON text columns, millisecond columns,
//! the id bound of a creation time and the built-in approval task's name,
//! and what they answer from rows without reading them again (a fresh task,
//! the end of a page).
//!
//! Invariant: a value reads back as it was written: the default retry policy
//! (stored as `{}`) reads back as the default, and the task a fresh insert
//! answers is the task a read of its row gives.

use crate::error::{Result, backend};
use quern_core::{Millis, NewTask, Task};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The built-in task name that waits for `approve` instead of a worker.
pub(crate) const APPROVAL: &str = "approval";

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// A retry policy as stored: `{}` for the default one (most tasks), which
/// reads back as the default since every field has one. It keeps ~70 bytes
/// off each task row, which every row write of the task pays again.
pub(crate) fn retry_json(r: &quern_core::RetryPolicy) -> String {
    if *r == quern_core::RetryPolicy::default() { "{}".to_owned() } else { json(r) }
}

/// Ends a page read with one row past `limit` (to learn whether more
/// follow): drops that row and answers the last task kept, where the next
/// page starts, or `None` when this page is the last.
pub(crate) fn end_page(tasks: &mut Vec<Task>, limit: usize) -> Option<Uuid> {
    if tasks.len() <= limit {
        return None;
    }
    tasks.truncate(limit);
    tasks.last().map(|t| t.id)
}

pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The greatest UUIDv7 with timestamp `ms`: every task created at or before
/// `ms` sorts below it.
pub(crate) fn uuid_upper_bound(ms: Millis) -> Uuid {
    let mut bytes = [0xFFu8; 16];
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// The task a fresh insert shows, built without reading it back.
pub(crate) fn new_task_view(t: NewTask) -> Result<Task> {
    Ok(Task {
        id: t.id,
        name: t.name,
        queue: t.queue,
        input: RawValue::from_string(t.input).map_err(backend)?,
        status: t.status,
        priority: t.priority,
        metadata: t.metadata,
        attempt: 0,
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout_ms,
        retry: t.retry,
        run_at: t.run_at,
        progress: None,
        result: None,
        error: None,
        created_at: t.created_at,
        started_at: None,
        finished_at: None,
        updated_at: t.created_at,
        worker: None,
        workflow: t.workflow,
        depends_on: t.depends_on,
        idempotency_key: t.idempotency_key,
        digest: t.digest,
        cancel_requested: false,
        key: t.key,
        lease: None,
        parents: None,
        notice: None,
        traceparent: t.traceparent,
    })
}
