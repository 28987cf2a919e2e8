//! Workflows in PostgreSQL: their records, releasing or skipping dependents
//! when a task ends, approvals, cancelling a whole workflow, and the
//! `workflow.*` event when a workflow's last task ends.
//!
//! Invariant: a task's dependents are judged in the transaction that ends
//! it, each edge once: the edge row is deleted as it is judged. A child's
//! count of unjudged edges (`unmet`) is changed under the child's row lock,
//! so parents ending at once on several nodes release it exactly once. How
//! it differs from SQLite: edges and the count of a workflow's unfinished
//! tasks (`workflows.open`) are rows, not a writer's memory.

use super::Tx;
use super::tasks::{self, COLS, Entries, Loaded, approval_due, status_of};
use crate::dependency::{ParentEnd, judge, skip_message};
use crate::history::entry;
use crate::segment::{Move, workflow_event};
use crate::{
    APPROVAL, Approval, NewWorkflow, Result, StoreError, Submitted, WorkflowPage, WorkflowQuery, WorkflowRecord, json,
};
use quern_core::workflow::Readiness;
use quern_core::{
    Condition, Dependency, ErrorKind, HistoryEntry, Millis, NewTask, ParentOutcome, Status, Task, TaskError,
};
use std::collections::BTreeMap;
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
    let mut counts = BTreeMap::new();
    for r in tx.query("SELECT status, count(*) FROM tasks WHERE workflow = $1 GROUP BY status", &[&id]).await? {
        counts.insert(status_of(r.get(0))?, usize::try_from(r.get::<_, i64>(1)).unwrap_or(0));
    }
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
    let next_after = if tasks.len() > q.limit {
        tasks.truncate(q.limit);
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    Ok(WorkflowPage { id, name: head.get(0), created_at: head.get(1), counts, first_open, tasks, next_after })
}

/// Publishes a task's move, and keeps its workflow's count of unfinished
/// tasks when the move ends the task or gives it another attempt.
pub(super) async fn moved(tx: &mut Tx, m: &Move<'_>, workflow: Option<Uuid>) -> Result<()> {
    tx.push_move(m)?;
    let Some(workflow) = workflow else { return Ok(()) };
    if m.closes() {
        closed(tx, workflow, m.at).await?;
    } else if m.reopens() {
        tx.execute("UPDATE workflows SET open = open + 1 WHERE id = $1", &[&workflow]).await?;
    }
    Ok(())
}

/// One more task of `workflow` ended: when it was the last, publishes
/// `workflow.<status>`.
pub(super) async fn closed(tx: &mut Tx, workflow: Uuid, at: Millis) -> Result<()> {
    let row = tx
        .query_opt("UPDATE workflows SET open = greatest(open - 1, 0) WHERE id = $1 RETURNING open, name", &[&workflow])
        .await?;
    let Some(row) = row else { return Ok(()) };
    if row.get::<_, i32>(0) > 0 {
        return Ok(());
    }
    let name: String = row.get(1);
    let rows = tx
        .query("SELECT status, count(*) FROM tasks WHERE workflow = $1 GROUP BY status ORDER BY status", &[&workflow])
        .await?;
    let counts = rows.iter().map(|r| Ok((status_of(r.get(0))?, r.get::<_, i64>(1)))).collect::<Result<Vec<_>>>()?;
    tx.emit(at, workflow_event(workflow, &name, &counts)).map(|_| ())
}

async fn parent_end(tx: &Tx, id: Uuid) -> Result<Option<ParentEnd>> {
    let row = tx.query_opt("SELECT wf_key, status, result, error FROM tasks WHERE id = $1", &[&id]).await?;
    row.map(|r| Ok(ParentEnd { key: r.get(0), status: status_of(r.get(1))?, result: r.get(2), error: r.get(3) }))
        .transpose()
}

/// Judges the edges from task `id`, which just ended: a child whose last
/// unjudged edge holds is released, a child with an edge that can no
/// longer hold is skipped (and its own children judged in turn).
pub(super) async fn ended(tx: &mut Tx, id: Uuid, now: Millis) -> Result<()> {
    let mut work = vec![id];
    while let Some(parent) = work.pop() {
        let edges = tx.query("DELETE FROM edges WHERE parent = $1 RETURNING child, cond", &[&parent]).await?;
        if edges.is_empty() {
            continue;
        }
        let end = parent_end(tx, parent).await?;
        for e in edges {
            let child: Uuid = e.get(0);
            let on: Condition = serde_json::from_str(e.get(1)).map_err(crate::backend)?;
            let dep = Dependency { task: parent, on };
            match judge(&dep, end.as_ref()) {
                Readiness::Ready | Readiness::Waiting => {
                    let left = tx
                        .query_opt(
                            "UPDATE tasks SET unmet = unmet - 1 WHERE id = $1 AND status = 'pending' AND unmet > 0 \
                             RETURNING unmet",
                            &[&child],
                        )
                        .await?;
                    if left.is_some_and(|r| r.get::<_, i32>(0) == 0) {
                        release(tx, child, now).await?;
                    }
                }
                Readiness::Never => {
                    if skip(tx, child, skip_message(&dep, end.as_ref()), now).await? {
                        work.push(child);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Moves a child whose every edge holds out of waiting: queued now, or
/// pending until a later `run_at` (the timers find it then).
async fn release(tx: &mut Tx, child: Uuid, now: Millis) -> Result<()> {
    let l = tasks::load(tx, child, true).await?;
    let t = &l.task;
    if t.status != Status::Pending {
        return Ok(());
    }
    if t.run_at > now {
        tx.effects.due_at(t.run_at);
        return Ok(());
    }
    let due = approval_due(&t.name, t.timeout_ms, now);
    tx.execute(
        "UPDATE tasks SET status = 'queued', updated_at = $2, approval_due = $3 WHERE id = $1",
        &[&child, &now, &due],
    )
    .await?;
    let mut entries = Entries::default();
    entries
        .push(child, entry(now, Status::Pending, Status::Queued, t.attempt, None, "server", Some("dependencies met")));
    entries.write(tx).await?;
    tx.push_move(&Move::new(child, (&t.name, &t.queue, t.attempt), Some(Status::Pending), Status::Queued, now))?;
    match due {
        Some(d) => tx.effects.due_at(d),
        None if t.name != APPROVAL => tx.effects.ready = true,
        None => {}
    }
    Ok(())
}

/// Ends a waiting child `skipped` (error kind `dependency`); answers
/// whether it was still waiting.
async fn skip(tx: &mut Tx, child: Uuid, message: String, now: Millis) -> Result<bool> {
    let l = match tasks::load(tx, child, true).await {
        Ok(l) => l,
        Err(StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let t = &l.task;
    if t.status != Status::Pending {
        return Ok(false);
    }
    let error = json(&TaskError::new(ErrorKind::Dependency, message.clone()));
    tx.execute(
        "UPDATE tasks SET status = 'skipped', error = $2, finished_at = $3, updated_at = $3, unmet = 0 WHERE id = $1",
        &[&child, &error, &now],
    )
    .await?;
    let mut entries = Entries::default();
    entries.push(child, entry(now, Status::Pending, Status::Skipped, t.attempt, None, "server", Some(&message)));
    entries.write(tx).await?;
    let m = Move::new(child, (&t.name, &t.queue, t.attempt), Some(Status::Pending), Status::Skipped, now);
    moved(tx, &m, t.workflow).await?;
    tx.effects.ended.push(child);
    Ok(true)
}

/// Ends an approval task: succeeded when approved, failed (kind `rejected`,
/// never retried) when not.
pub(super) async fn approve(tx: &mut Tx, id: Uuid, a: Approval, now: Millis) -> Result<Task> {
    let l = tasks::load(tx, id, true).await?;
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
    };
    finish_waiting(tx, &l, e, result, error, now).await?;
    tasks::get(tx, id).await
}

/// Ends a queued task that no worker runs (an approval) with entry `e`.
async fn finish_waiting(
    tx: &mut Tx,
    l: &Loaded,
    e: HistoryEntry,
    result: Option<String>,
    error: Option<String>,
    now: Millis,
) -> Result<()> {
    let t = &l.task;
    let to = e.to;
    let mut entries = Entries::default();
    entries.record(l, e);
    entries.write(tx).await?;
    tx.execute(
        "UPDATE tasks SET status = $2, result = $3, error = $4, finished_at = $5, updated_at = $5, compact = false, \
         approval_due = NULL WHERE id = $1",
        &[&t.id, &to.as_str(), &result, &error, &now],
    )
    .await?;
    let m = Move::new(t.id, (&t.name, &t.queue, t.attempt), Some(Status::Queued), to, now);
    moved(tx, &m, t.workflow).await?;
    tx.effects.ended.push(t.id);
    ended(tx, t.id, now).await
}

/// Ends an approval that got no decision within its `timeout_ms`:
/// `timed_out`, error kind `timeout`. Answers whether it did.
pub(super) async fn time_out_approval(tx: &mut Tx, l: &Loaded, now: Millis) -> Result<bool> {
    let t = &l.task;
    if t.name != APPROVAL || t.status != Status::Queued {
        return Ok(false);
    }
    let message = format!("no decision within its timeout of {} ms", t.timeout_ms.unwrap_or_default());
    let error = json(&TaskError::new(ErrorKind::Timeout, message.clone()));
    let e = HistoryEntry {
        at: now,
        from: Some(Status::Queued),
        to: Status::TimedOut,
        attempt: t.attempt,
        worker: None,
        actor: "server".to_owned(),
        note: Some(message),
    };
    finish_waiting(tx, l, e, None, Some(error), now).await?;
    Ok(true)
}

/// Cancels every unfinished task of a workflow: queued and pending ones end
/// `cancelled` (not `skipped`: their parents' ends are not judged), running
/// ones are asked to stop.
pub(super) async fn cancel_workflow(tx: &mut Tx, workflow: Uuid, now: Millis) -> Result<usize> {
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
        tasks::cancel(tx, *id, now, true).await?;
    }
    tx.execute("DELETE FROM edges WHERE parent = ANY($1)", &[&ids]).await?;
    Ok(ids.len())
}

/// The outcomes of a leased task's parents, by key, in one read.
pub(super) async fn parents_of(tx: &Tx, task: &Task) -> Result<BTreeMap<String, ParentOutcome>> {
    let ids: Vec<Uuid> = task.depends_on.iter().map(|d| d.task).collect();
    let rows = tx.query("SELECT id, wf_key, status, result, error FROM tasks WHERE id = ANY($1)", &[&ids]).await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let p = ParentEnd { key: r.get(1), status: status_of(r.get(2))?, result: r.get(3), error: r.get(4) };
        let (key, outcome) = p.outcome(r.get(0));
        out.insert(key, outcome);
    }
    Ok(out)
}
