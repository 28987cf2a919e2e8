//! A workflow's edges in PostgreSQL, judged as tasks end: each move's
//! count of a workflow's unfinished tasks and its `workflow.*` event when the
//! last one ends, releasing or skipping dependents, approvals that wait or
//! time out, and the parents' outcomes a leased task is handed. Task
//! operations (`tasks.rs`) call it in the transaction that moves a task;
//! it reads tasks through `rows.rs` only.
//!
//! Invariant: a task's dependents are judged in the transaction that ends
//! it, each edge once: the edge row is deleted as it is judged. A child's
//! count of unjudged edges (`unmet`) is changed under the child's row lock,
//! so parents ending at once on several nodes release it exactly once. How
//! it differs from SQLite: edges and the count of a workflow's unfinished
//! tasks (`workflows.open`) are rows, not a writer's memory.

use super::Tx;
use super::rows::{Entries, Loaded, approval_due, load, status_of, workflow_counts};
use crate::dependency::{ParentEnd, judge, skip_message};
use crate::history::entry;
use crate::segment::{Move, workflow_event};
use crate::stored::{APPROVAL, json};
use crate::{Result, StoreError};
use quern_core::workflow::Readiness;
use quern_core::{Condition, Dependency, ErrorKind, HistoryEntry, Millis, ParentOutcome, Status, Task, TaskError};
use std::collections::BTreeMap;
use uuid::Uuid;

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
    let counts = workflow_counts(tx, workflow).await?;
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
            let on: Condition = serde_json::from_str(e.get(1)).map_err(crate::error::backend)?;
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
    let l = load(tx, child, true).await?;
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
        None if t.name != APPROVAL => tx.effects.ready_in(&t.queue, 1),
        None => {}
    }
    Ok(())
}

/// Ends a waiting child `skipped` (error kind `dependency`); answers
/// whether it was still waiting.
async fn skip(tx: &mut Tx, child: Uuid, message: String, now: Millis) -> Result<bool> {
    let l = match load(tx, child, true).await {
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

/// Ends a queued task that no worker runs (an approval) with entry `e`.
pub(super) async fn finish_waiting(
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
        by: None,
    };
    finish_waiting(tx, l, e, None, Some(error), now).await?;
    Ok(true)
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
