//! Workflows in PostgreSQL: submitting one with its tasks, reading it
//! whole or a page at a time, approving an `approval` task, and cancelling
//! every unfinished task of one (as `sqlite/writer/workflows.rs` does for
//! SQLite). What happens to dependents as tasks end is in `dependents.rs`.

use super::Tx;
use super::dependents::finish_waiting;
use super::rows::{COLS, Loaded, get, load, workflow_counts};
use super::tasks;
use crate::stored::{APPROVAL, end_page, json};
use crate::{Approval, NewWorkflow, Result, StoreError, Submitted, WorkflowPage, WorkflowQuery, WorkflowRecord};
use quern_core::{ErrorKind, HistoryEntry, Millis, NewTask, Status, Task, TaskError};
use uuid::Uuid;

pub(super) async fn submit_workflow(tx: &mut Tx, w: NewWorkflow, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
    let total = i32::try_from(tasks.len()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO workflows (id, name, created_at, total, open) VALUES ($1, $2, $3, $4, $4)",
        &[&w.id, &w.name, &w.created_at, &total],
    )
    .await?;
    tasks::submit(tx, tasks).await
}

pub(super) async fn workflow(tx: &mut Tx, id: Uuid) -> Result<WorkflowRecord> {
    let head = tx.query_opt("SELECT name, created_at FROM workflows WHERE id = $1", &[&id]).await?;
    let head = head.ok_or(StoreError::WorkflowNotFound(id))?;
    let sql = format!("SELECT {COLS} FROM tasks t WHERE t.workflow = $1 ORDER BY t.id");
    let rows = tx.query(&sql, &[&id]).await?;
    let tasks = rows.iter().map(|r| Loaded::from_row(r).map(|l| l.task)).collect::<Result<Vec<_>>>()?;
    Ok(WorkflowRecord { id, name: head.get(0), created_at: head.get(1), tasks })
}

pub(super) async fn workflow_page(tx: &mut Tx, q: WorkflowQuery) -> Result<WorkflowPage> {
    let id = q.id;
    let head = tx.query_opt("SELECT name, created_at FROM workflows WHERE id = $1", &[&id]).await?;
    let head = head.ok_or(StoreError::WorkflowNotFound(id))?;
    let counts = workflow_counts(tx, id)
        .await?
        .into_iter()
        .map(|(status, n)| (status, usize::try_from(n).unwrap_or(0)))
        .collect();
    let first_open = tx
        .query_opt(
            "SELECT id FROM tasks WHERE workflow = $1 AND status IN ('pending', 'queued', 'running') \
             ORDER BY id LIMIT 1",
            &[&id],
        )
        .await?
        .map(|r| r.get::<_, Uuid>(0));
    let after = q.after.unwrap_or(Uuid::nil());
    let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let sql = format!("SELECT {COLS} FROM tasks t WHERE t.workflow = $1 AND t.id > $2 ORDER BY t.id LIMIT $3");
    let rows = tx.query(&sql, &[&id, &after, &limit]).await?;
    let mut tasks = rows.iter().map(|r| Loaded::from_row(r).map(|l| l.task)).collect::<Result<Vec<_>>>()?;
    let next_after = end_page(&mut tasks, q.limit);
    Ok(WorkflowPage { id, name: head.get(0), created_at: head.get(1), counts, first_open, tasks, next_after })
}

/// Ends an approval task: succeeded when approved, failed (kind `rejected`,
/// never retried) when not.
pub(super) async fn approve(tx: &mut Tx, id: Uuid, a: Approval, now: Millis) -> Result<Task> {
    let l = load(tx, id, true).await?;
    let t = &l.task;
    if t.name != APPROVAL {
        return Err(StoreError::InvalidTransition {
            id,
            status: t.status,
            message: format!("only `{APPROVAL}` tasks can be approved"),
        });
    }
    if t.status != Status::Queued {
        return Err(StoreError::InvalidTransition {
            id,
            status: t.status,
            message: "an approval can be decided only while it is queued (its dependencies met, not decided yet)"
                .to_owned(),
        });
    }
    let by_text = a.by.clone().unwrap_or_else(|| "someone".to_owned());
    let (to, result, error, note) = if a.approved {
        let result = serde_json::json!({"approved": true, "by": a.by, "comment": a.comment});
        (Status::Succeeded, Some(result.to_string()), None, format!("approved by {by_text}"))
    } else {
        let message = match &a.comment {
            Some(c) => format!("rejected by {by_text}: {c}"),
            None => format!("rejected by {by_text}"),
        };
        let mut error = TaskError::new(ErrorKind::Rejected, message.clone());
        error.details = Some(serde_json::json!({"approved": false, "by": a.by, "comment": a.comment}));
        (Status::Failed, None, Some(json(&error)), message)
    };
    let e = HistoryEntry {
        at: now,
        from: Some(Status::Queued),
        to,
        attempt: t.attempt,
        worker: None,
        actor: "client".to_owned(),
        note: Some(note),
        by: a.by.clone(),
    };
    finish_waiting(tx, &l, e, result, error, now).await?;
    get(tx, id).await
}

/// Cancels every unfinished task of a workflow: queued and pending ones end
/// `cancelled` (not `skipped`: their parents' ends are not judged), running
/// ones are asked to stop.
pub(super) async fn cancel_workflow(tx: &mut Tx, workflow: Uuid, now: Millis, by: Option<String>) -> Result<usize> {
    let exists = tx.query_opt("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", &[&workflow]).await?;
    exists.ok_or(StoreError::WorkflowNotFound(workflow))?;
    let rows = tx
        .query(
            "SELECT id FROM tasks WHERE workflow = $1 AND status IN ('pending', 'queued', 'running') ORDER BY id",
            &[&workflow],
        )
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    for id in &ids {
        tasks::cancel(tx, *id, now, true, by.clone()).await?;
    }
    tx.execute("DELETE FROM edges WHERE parent = ANY($1)", &[&ids]).await?;
    Ok(ids.len())
}
