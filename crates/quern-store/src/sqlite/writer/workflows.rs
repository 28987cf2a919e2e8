//! The writer's workflow operations: releasing or skipping dependents when a
//! task ends, approvals, cancelling a whole workflow, and the parents' outcomes
//! a leased child receives.
//!
//! Invariant: a task's dependents are judged in the same transaction that
//! ends it, so after any commit no pending child waits on a finished parent
//! without having been judged. Each edge is judged once, when its parent
//! ends: releasing a child never reads its other parents.

use super::State;
use super::events::Move;
use crate::dependency::{ParentEnd, judge, skip_message};
use crate::error::backend;
use crate::history::entry;
use crate::sqlite::rows::status_at;
use crate::stored::{APPROVAL, json};
use crate::{Result, StoreError};
use quern_core::workflow::Readiness;
use quern_core::{Dependency, ErrorKind, HistoryEntry, Millis, ParentOutcome, Status, Task, TaskError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use uuid::Uuid;

fn parent_end(conn: &Connection, id: Uuid) -> Result<Option<ParentEnd>> {
    conn.prepare_cached("SELECT wf_key, status, result, error FROM tasks WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_bytes()], |r| {
                Ok(ParentEnd { key: r.get(0)?, status: status_at(r, 1)?, result: r.get(2)?, error: r.get(3)? })
            })
            .optional()
        })
        .map_err(backend)
}

impl State {
    /// Records that task `id` ended, and judges the edges from it: a child
    /// whose last unmet edge holds is released, a child with an edge that can
    /// no longer hold is skipped (and its own children judged in turn).
    pub(super) fn ended(&mut self, conn: &Connection, id: Uuid, now: Millis) -> Result<()> {
        self.effects.ended.push(id);
        if self.holding.contains(&id) {
            return Ok(());
        }
        self.judge_dependents(conn, id, now)
    }

    /// Judges the edges that wait on tasks submitted earlier, right after a
    /// submission added them: those whose parent has already ended (or no
    /// longer exists) are judged now, as they would have been at its end;
    /// the others wait for it. Answers the parents judged, in order.
    pub(super) fn judge_earlier_parents(
        &mut self,
        conn: &Connection,
        parents: &[Uuid],
        now: Millis,
    ) -> Result<Vec<Uuid>> {
        let mut ended = Vec::new();
        for &parent in parents {
            if parent_end(conn, parent)?.is_none_or(|p| p.status.is_terminal()) {
                self.judge_dependents(conn, parent, now)?;
                ended.push(parent);
            }
        }
        Ok(ended)
    }

    /// Judges every edge waiting on `id`, which has ended, and in turn those
    /// on the children it skips.
    fn judge_dependents(&mut self, conn: &Connection, id: Uuid, now: Millis) -> Result<()> {
        let mut work = vec![id];
        while let Some(parent) = work.pop() {
            let Some(children) = self.waiting.remove(&parent) else { continue };
            let end = parent_end(conn, parent)?;
            for (child, on) in children {
                if !self.unmet.contains_key(&child) {
                    // Already skipped through another edge, or cancelled.
                    continue;
                }
                let dep = Dependency { task: parent, on };
                match judge(&dep, end.as_ref()) {
                    Readiness::Ready | Readiness::Waiting => {
                        let left = self.unmet.get_mut(&child).map(|n| {
                            *n = n.saturating_sub(1);
                            *n
                        });
                        if left == Some(0) {
                            self.unmet.remove(&child);
                            self.release(conn, child, now)?;
                        }
                    }
                    Readiness::Never => {
                        self.unmet.remove(&child);
                        let message = skip_message(&dep, end.as_ref());
                        if self.skip(conn, child, message, now)? {
                            self.effects.ended.push(child);
                            work.push(child);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves a child whose every edge holds out of waiting: queued now, or
    /// pending until a later `run_at`.
    fn release(&mut self, conn: &Connection, child: Uuid, now: Millis) -> Result<()> {
        let row = conn
            .prepare_cached(
                "SELECT status, queue, name, priority, run_at, timeout_ms, attempt FROM tasks WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([child.as_bytes()], |r| {
                    Ok((
                        status_at(r, 0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i32>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?.map(i64::unsigned_abs),
                        r.get::<_, u32>(6)?,
                    ))
                })
                .optional()
            })
            .map_err(backend)?;
        let Some((status, queue, name, priority, run_at, timeout_ms, attempt)) = row else { return Ok(()) };
        if status != Status::Pending {
            return Ok(());
        }
        if run_at > now {
            // Dependencies met; it stays pending until its run_at.
            self.schedule(run_at, child);
            return Ok(());
        }
        conn.prepare_cached("UPDATE tasks SET status = 'queued', updated_at = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![child.as_bytes(), now]))
            .map_err(backend)?;
        self.append(
            conn,
            child,
            &entry(now, Status::Pending, Status::Queued, attempt, None, "server", Some("dependencies met")),
        )?;
        self.moved(conn, &Move::new(child, (&name, &queue, attempt), Some(Status::Pending), Status::Queued, now))?;
        self.arm_approval(child, &name, timeout_ms, now);
        self.push_ready(&queue, &name, priority, now.max(run_at), child);
        Ok(())
    }

    /// Ends a waiting child `skipped` (error kind `dependency`); answers
    /// whether it was still waiting.
    fn skip(&mut self, conn: &Connection, child: Uuid, message: String, now: Millis) -> Result<bool> {
        let row = conn
            .prepare_cached("SELECT status, queue, attempt, name FROM tasks WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([child.as_bytes()], |r| {
                    Ok((status_at(r, 0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?, r.get::<_, String>(3)?))
                })
                .optional()
            })
            .map_err(backend)?;
        let Some((status, queue, attempt, name)) = row else { return Ok(false) };
        if status != Status::Pending {
            return Ok(false);
        }
        let error = TaskError::new(ErrorKind::Dependency, message.clone());
        conn.prepare_cached(
            "UPDATE tasks SET status = 'skipped', error = ?2, finished_at = ?3, updated_at = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![child.as_bytes(), json(&error), now]))
        .map_err(backend)?;
        self.append(
            conn,
            child,
            &entry(now, Status::Pending, Status::Skipped, attempt, None, "server", Some(&message)),
        )?;
        self.moved(conn, &Move::new(child, (&name, &queue, attempt), Some(Status::Pending), Status::Skipped, now))?;
        Ok(true)
    }

    /// Ends an approval task: succeeded when approved, failed (kind
    /// `rejected`, never retried) when not.
    pub(crate) fn approve(
        &mut self,
        conn: &Connection,
        id: Uuid,
        approved: bool,
        by: Option<String>,
        comment: Option<String>,
        now: Millis,
    ) -> Result<Task> {
        let now = self.clock(now);
        let task = self.read_task(conn, id)?;
        if task.name != APPROVAL {
            return Err(StoreError::InvalidTransition {
                id,
                status: task.status,
                message: format!("only `{APPROVAL}` tasks can be approved"),
            });
        }
        if task.status != Status::Queued {
            return Err(StoreError::InvalidTransition {
                id,
                status: task.status,
                message: "an approval can be decided only while it is queued (its dependencies met, not decided yet)"
                    .to_owned(),
            });
        }
        self.disarm_approval(id);
        let by_text = by.clone().unwrap_or_else(|| "someone".to_owned());
        let (to, result, error, note) = if approved {
            let result = serde_json::json!({"approved": true, "by": by, "comment": comment});
            (Status::Succeeded, Some(result.to_string()), None, format!("approved by {by_text}"))
        } else {
            let message = match &comment {
                Some(c) => format!("rejected by {by_text}: {c}"),
                None => format!("rejected by {by_text}"),
            };
            let mut error = TaskError::new(ErrorKind::Rejected, message.clone());
            error.details = Some(serde_json::json!({"approved": false, "by": by, "comment": comment}));
            (Status::Failed, None, Some(json(&error)), message)
        };
        self.record(
            conn,
            id,
            HistoryEntry {
                at: now,
                from: Some(Status::Queued),
                to,
                attempt: task.attempt,
                worker: None,
                actor: "client".to_owned(),
                note: Some(note),
                by: by.clone(),
            },
        )?;
        conn.prepare_cached(
            "UPDATE tasks SET status = ?2, result = ?3, error = ?4, finished_at = ?5, updated_at = ?5 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id.as_bytes(), to.as_str(), result, error, now]))
        .map_err(backend)?;
        self.moved(conn, &Move::new(id, (&task.name, &task.queue, task.attempt), Some(Status::Queued), to, now))?;
        self.ended(conn, id, now)?;
        self.read_task(conn, id)
    }

    /// Ends an approval that got no decision within its `timeout_ms`:
    /// `timed_out`, error kind `timeout`. Answers whether it did.
    pub(super) fn time_out_approval(&mut self, conn: &Connection, id: Uuid, now: Millis) -> Result<bool> {
        let task = match self.read_task(conn, id) {
            Ok(t) => t,
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if task.name != APPROVAL || task.status != Status::Queued {
            return Ok(false);
        }
        let message = format!("no decision within its timeout of {} ms", task.timeout_ms.unwrap_or_default());
        let error = TaskError::new(ErrorKind::Timeout, message.clone());
        self.record(
            conn,
            id,
            HistoryEntry {
                at: now,
                from: Some(Status::Queued),
                to: Status::TimedOut,
                attempt: task.attempt,
                worker: None,
                actor: "server".to_owned(),
                note: Some(message),
                by: None,
            },
        )?;
        conn.prepare_cached(
            "UPDATE tasks SET status = 'timed_out', error = ?2, finished_at = ?3, updated_at = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id.as_bytes(), json(&error), now]))
        .map_err(backend)?;
        self.moved(
            conn,
            &Move::new(id, (&task.name, &task.queue, task.attempt), Some(Status::Queued), Status::TimedOut, now),
        )?;
        self.ended(conn, id, now)?;
        Ok(true)
    }

    /// Cancels every unfinished task of a workflow: queued and pending ones
    /// end `cancelled` (not `skipped`: their parents' ends are not judged),
    /// running ones are asked to stop.
    pub(crate) fn cancel_workflow(
        &mut self,
        conn: &Connection,
        workflow: Uuid,
        now: Millis,
        by: Option<String>,
    ) -> Result<usize> {
        let now = self.clock(now);
        let ids: Vec<Uuid> = conn
            .prepare_cached(
                "SELECT id FROM tasks WHERE workflow = ?1 AND status IN ('pending', 'queued', 'running') ORDER BY id",
            )
            .and_then(|mut s| s.query_map([workflow.as_bytes()], |r| crate::sqlite::rows::uuid_at(r, 0))?.collect())
            .map_err(backend)?;
        self.holding.extend(ids.iter().copied());
        let mut outcome = Ok(());
        for id in &ids {
            if let Err(e) = self.cancel(conn, *id, now, by.clone()) {
                outcome = Err(e);
                break;
            }
        }
        for id in &ids {
            self.holding.remove(id);
            self.waiting.remove(id);
            self.unmet.remove(id);
        }
        outcome.map(|()| ids.len())
    }

    /// The outcomes of a leased task's parents, by key.
    pub(super) fn parents_of(&self, conn: &Connection, task: &Task) -> Result<BTreeMap<String, ParentOutcome>> {
        let mut out = BTreeMap::new();
        for dep in &task.depends_on {
            let Some(p) = parent_end(conn, dep.task)? else { continue };
            let (key, outcome) = p.outcome(dep.task);
            out.insert(key, outcome);
        }
        Ok(out)
    }

    /// Inserts a workflow's record; its tasks go in with [`State::submit`]
    /// in the same transaction.
    pub(crate) fn insert_workflow(
        &mut self,
        conn: &Connection,
        id: Uuid,
        name: &str,
        created_at: Millis,
        total: usize,
    ) -> Result<()> {
        conn.prepare_cached("INSERT INTO workflows (id, name, created_at, total) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![id.as_bytes(), name, created_at, i64::try_from(total).unwrap_or(0)]))
            .map_err(backend)?;
        Ok(())
    }
}
