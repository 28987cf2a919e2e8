//! Task rows in PostgreSQL: the columns read, a row decoded into a task
//! and what only the store needs of it, reads of one task, and the history
//! entries a transaction appends. Every other module of the backend reads
//! tasks through here (as `sqlite/rows.rs` does for SQLite).

use super::Tx;
use crate::error::backend;
use crate::history::compact_history;
use crate::stored::{APPROVAL, ms_i64};
use crate::{Result, StoreError};
use quern_core::{HistoryEntry, Millis, Status, Task};
use serde_json::value::RawValue;
use tokio_postgres::Row;
use uuid::Uuid;

/// The columns [`Loaded::from_row`] reads, in order, of a table named `t`.
pub(super) const COLS: &str = "t.id, t.name, t.queue, t.input, t.status, t.priority, t.metadata::text, t.attempt, \
     t.max_attempts, t.timeout_ms, t.retry, t.run_at, t.progress, t.result, t.error, t.created_at, t.started_at, \
     t.finished_at, t.updated_at, t.worker, t.workflow, t.depends_on, t.idempotency_key, t.digest, \
     t.cancel_requested, t.compact, t.wf_key, t.lease_token, t.expires_at, t.lease_ms, t.traceparent";

/// A task's row: the task and what only the store needs of it.
pub(super) struct Loaded {
    pub(super) task: Task,
    pub(super) compact: bool,
    pub(super) token: Option<String>,
    pub(super) expires_at: Option<Millis>,
    pub(super) lease_ms: Option<i64>,
}

pub(super) fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

pub(super) fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub(super) fn parsed<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(backend)
}

pub(super) fn raw(text: Option<String>) -> Result<Option<Box<RawValue>>> {
    text.map(RawValue::from_string).transpose().map_err(backend)
}

pub(super) fn status_of(text: &str) -> Result<Status> {
    text.parse().map_err(backend)
}

impl Loaded {
    pub(super) fn from_row(r: &Row) -> Result<Self> {
        let metadata: Option<quern_core::Metadata> = parsed(r.get(6))?;
        let task = Task {
            id: r.get(0),
            name: r.get(1),
            queue: r.get(2),
            input: RawValue::from_string(r.get(3)).map_err(backend)?,
            status: status_of(r.get(4))?,
            priority: r.get(5),
            metadata: metadata.unwrap_or_default(),
            attempt: u32_of(r.get(7)),
            max_attempts: u32_of(r.get(8)),
            timeout_ms: r.get::<_, Option<i64>>(9).map(i64::unsigned_abs),
            retry: parsed(Some(r.get(10)))?.unwrap_or_default(),
            run_at: r.get(11),
            progress: parsed(r.get(12))?,
            result: raw(r.get(13))?,
            error: parsed(r.get(14))?,
            created_at: r.get(15),
            started_at: r.get(16),
            finished_at: r.get(17),
            updated_at: r.get(18),
            worker: r.get(19),
            workflow: r.get(20),
            depends_on: parsed(r.get(21))?.unwrap_or_default(),
            idempotency_key: r.get(22),
            digest: r.get(23),
            cancel_requested: r.get(24),
            key: r.get(26),
            lease: None,
            parents: None,
            notice: None,
            traceparent: r.get(30),
        };
        Ok(Self { task, compact: r.get(25), token: r.get(27), expires_at: r.get(28), lease_ms: r.get(29) })
    }
}

/// Reads task `id`, locked for this transaction when `lock`.
pub(super) async fn load(tx: &Tx, id: Uuid, lock: bool) -> Result<Loaded> {
    let sql = if lock {
        format!("SELECT {COLS} FROM tasks t WHERE t.id = $1 FOR UPDATE")
    } else {
        format!("SELECT {COLS} FROM tasks t WHERE t.id = $1")
    };
    let row = tx.query_opt(&sql, &[&id]).await?.ok_or(StoreError::NotFound(id))?;
    Loaded::from_row(&row)
}

pub(super) async fn get(tx: &mut Tx, id: Uuid) -> Result<Task> {
    load(tx, id, false).await.map(|l| l.task)
}

/// History entries to append, written together.
#[derive(Default)]
pub(super) struct Entries(Vec<(Uuid, HistoryEntry)>);

impl Entries {
    pub(super) fn push(&mut self, id: Uuid, e: HistoryEntry) {
        self.0.push((id, e));
    }

    /// A move off the common path of a task whose row may still be
    /// compact: its history so far first, then the move.
    pub(super) fn record(&mut self, l: &Loaded, e: HistoryEntry) {
        if l.compact {
            for c in compact_history(&l.task) {
                self.push(l.task.id, c);
            }
        }
        self.push(l.task.id, e);
    }

    pub(super) async fn write(self, tx: &Tx) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let n = self.0.len();
        let (mut task, mut at, mut from, mut to) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new(), Vec::new());
        let (mut attempt, mut worker, mut actor, mut note) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut by = Vec::new();
        for (id, e) in self.0 {
            task.push(id);
            at.push(e.at);
            from.push(e.from.map(|s| s.as_str().to_owned()));
            to.push(e.to.as_str().to_owned());
            attempt.push(i32_of(e.attempt));
            worker.push(e.worker);
            actor.push(e.actor);
            note.push(e.note);
            by.push(e.by);
        }
        tx.execute(
            "INSERT INTO history (task, at, from_status, to_status, attempt, worker, actor, note, by_token) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::int4[], $6::text[], \
             $7::text[], $8::text[], $9::text[])",
            &[&task, &at, &from, &to, &attempt, &worker, &actor, &note, &by],
        )
        .await?;
        Ok(())
    }
}

/// When an approval that becomes queued at `since` times out, if it does.
pub(super) fn approval_due(name: &str, timeout_ms: Option<u64>, since: Millis) -> Option<Millis> {
    (name == APPROVAL).then_some(timeout_ms).flatten().map(|t| since.saturating_add(ms_i64(t)))
}

/// How many tasks of `workflow` are in each status (statuses with none left
/// out), by status.
pub(super) async fn workflow_counts(tx: &Tx, workflow: Uuid) -> Result<Vec<(Status, i64)>> {
    let rows = tx
        .query("SELECT status, count(*) FROM tasks WHERE workflow = $1 GROUP BY status ORDER BY status", &[&workflow])
        .await?;
    rows.iter().map(|r| Ok((status_of(r.get(0))?, r.get::<_, i64>(1)))).collect()
}
