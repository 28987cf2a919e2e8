//! The writer's task operations: submit, lease, heartbeat, complete,
//! cancel, retry, the timer's tick, purge and pausing a queue; the one place
//! an attempt ends; and the history rows they append.
//!
//! Invariant: every check that can refuse an operation runs before its first
//! write; every move is written to its row, counted and published (`moved`)
//! and made in the indexes within the same job; a heartbeat or completion
//! whose token is not the lease's changes nothing.

use super::events::Move;
use super::{LeaseState, State, leases};
use crate::attempt::{AttemptEnd, Decision, Running, decide};
use crate::error::backend;
use crate::history::{compact_history, entry};
use crate::sqlite::rows::{StoredDigest, TASK_COLUMNS, compact_at, status_at, task_from_row, uuid_at};
use crate::stored::{json, ms_i64, new_task_view, uuid_upper_bound};
use crate::{
    CompleteAnswer, CompleteParams, HeartbeatAnswer, HeartbeatParams, LeaseParams, Result, StoreError, Submitted,
    TickOutcome,
};
use quern_core::{ErrorKind, HistoryEntry, Lease, Millis, NewTask, Status, Task, TaskError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use uuid::Uuid;

/// A lease token: the attempt number, a dot, and a random UUID (`nonce`) in
/// hex (the attempt first, so that a worker's logs show which attempt a
/// stale completion came from).
fn lease_token(attempt: u32, nonce: Uuid) -> String {
    let mut token = String::with_capacity(10 + 1 + 32);
    token.push_str(itoa::Buffer::new().format(attempt));
    token.push('.');
    token.push_str(nonce.simple().encode_lower(&mut Uuid::encode_buffer()));
    token
}

impl State {
    pub(crate) fn submit(&mut self, conn: &Connection, mut tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        for t in &mut tasks {
            let now = self.clock(t.created_at);
            if t.created_at < now {
                t.created_at = now;
                t.run_at = t.run_at.max(now);
                // A delay that has passed by now is no delay; a task waiting
                // for its dependencies waits regardless.
                if t.run_at <= now && t.depends_on.is_empty() {
                    t.status = Status::Queued;
                }
            }
        }
        // Refusals first: an idempotency conflict anywhere refuses the batch.
        let mut existing: Vec<Option<Task>> = Vec::with_capacity(tasks.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, t) in tasks.iter().enumerate() {
            let Some(key) = t.idempotency_key.as_deref() else {
                existing.push(None);
                continue;
            };
            if let Some(&first) = seen.get(key) {
                if tasks[first].digest != t.digest {
                    return Err(StoreError::IdempotencyConflict {
                        index,
                        key: key.to_owned(),
                        existing: tasks[first].id,
                    });
                }
                existing.push(None);
                continue;
            }
            seen.insert(key, index);
            let found = conn
                .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = ?1"))
                .and_then(|mut s| s.query_row([key], task_from_row).optional())
                .map_err(backend)?;
            if let Some(found) = &found
                && found.digest != t.digest
            {
                return Err(StoreError::IdempotencyConflict { index, key: key.to_owned(), existing: found.id });
            }
            // The task answered must be the task as it is, lease and all.
            let found = match found {
                Some(f) if self.is_unwritten(f.id) => Some(self.read_task(conn, f.id)?),
                other => other,
            };
            existing.push(found);
        }
        let mut out: Vec<Submitted> = Vec::with_capacity(tasks.len());
        // Parents outside this submission (tasks submitted earlier), judged
        // once every row is in.
        let mut earlier: Vec<Uuid> = Vec::new();
        let mut latest: Millis = 0;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO tasks (id, name, queue, status, priority, input, metadata, max_attempts, timeout_ms, \
                 retry, run_at, created_at, updated_at, workflow, depends_on, idempotency_key, digest, wf_key, \
                 compact, traceparent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            )
            .map_err(backend)?;
        for (t, found) in tasks.into_iter().zip(existing) {
            if let Some(task) = found {
                out.push(Submitted { task, created: false });
                continue;
            }
            if let Some(key) = t.idempotency_key.as_deref()
                && let Some(prev) = out.iter().find(|s| s.task.idempotency_key.as_deref() == Some(key))
            {
                let task = prev.task.clone();
                out.push(Submitted { task, created: false });
                continue;
            }
            let metadata = (!t.metadata.is_empty()).then(|| json(&t.metadata));
            let depends_on = (!t.depends_on.is_empty()).then(|| json(&t.depends_on));
            stmt.execute(params![
                t.id.as_bytes(),
                t.name,
                t.queue,
                t.status.as_str(),
                t.priority,
                t.input,
                metadata,
                t.max_attempts,
                t.timeout_ms.map(ms_i64),
                crate::stored::retry_json(&t.retry),
                t.run_at,
                t.created_at,
                t.workflow.map(|w| *w.as_bytes()),
                depends_on,
                t.idempotency_key,
                StoredDigest::of(&t.digest),
                t.key,
                t.depends_on.is_empty(),
                t.traceparent,
            ])
            .map_err(backend)?;
            if let Some(workflow) = t.workflow {
                *self.open_workflows.entry(workflow).or_insert(0) += 1;
            }
            self.moved(conn, &Move::new(t.id, (&t.name, &t.queue, 0), None, t.status, t.created_at))?;
            if t.depends_on.is_empty() {
                match t.status {
                    Status::Pending => self.schedule(t.run_at, t.id),
                    _ => {
                        self.arm_approval(t.id, &t.name, t.timeout_ms, t.created_at);
                        self.push_ready(&t.queue, &t.name, t.priority, t.run_at, t.id);
                    }
                }
            } else {
                self.append(conn, t.id, &crate::history::waiting(t.created_at))?;
                for d in &t.depends_on {
                    self.waiting.entry(d.task).or_default().push((t.id, d.on.clone()));
                    if t.workflow.is_none() {
                        earlier.push(d.task);
                    }
                }
                self.unmet.insert(t.id, t.depends_on.len());
                latest = latest.max(t.created_at);
            }
            out.push(Submitted { task: new_task_view(t)?, created: true });
        }
        drop(stmt);
        if !earlier.is_empty() {
            earlier.sort_unstable();
            earlier.dedup();
            let ended = self.judge_earlier_parents(conn, &earlier, latest)?;
            // What the judging changed (queued now, or skipped) is what the
            // answer shows.
            for s in out.iter_mut().filter(|s| s.created && crate::dependency::waits_on(&s.task, &ended)) {
                s.task = self.read_task(conn, s.task.id)?;
            }
        }
        Ok(out)
    }

    pub(crate) fn lease(&mut self, conn: &Connection, p: &LeaseParams) -> Result<Vec<Task>> {
        let p = &LeaseParams { now: self.clock(p.now), ..p.clone() };
        let picked = self.pick_ready(p);
        let mut out = Vec::with_capacity(picked.len());
        // A compact task's row is read, not written: its lease goes into the
        // call's one journal row, and the row is written with the task's
        // end, or after `leases::WRITE_DELAY` if it is still running then.
        // Other tasks (with history rows of their own) are written at once.
        let mut read = conn
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1 AND status = 'queued'"))
            .map_err(backend)?;
        let mut entries = self.journal_entries(picked.len());
        let lease_ms = ms_i64(p.lease_ms);
        for id in picked {
            let row = read
                .query_row([id.as_bytes()], |r| Ok((task_from_row(r)?, compact_at(r)?)))
                .optional()
                .map_err(backend)?;
            let Some((mut task, compact)) = row else { continue };
            task.attempt += 1;
            task.status = Status::Running;
            task.started_at = Some(p.now);
            task.updated_at = p.now;
            task.worker = Some(p.worker.clone());
            task.progress = None;
            task.cancel_requested = false;
            let nonce = Uuid::new_v4();
            let token = lease_token(task.attempt, nonce);
            if !compact {
                self.append(
                    conn,
                    id,
                    &entry(
                        p.now,
                        Status::Queued,
                        Status::Running,
                        task.attempt,
                        Some(p.worker.clone()),
                        "worker",
                        None,
                    ),
                )?;
            }
            let mut lease = LeaseState {
                token: token.clone(),
                worker: p.worker.clone(),
                queue: task.queue.clone(),
                name: task.name.clone(),
                priority: task.priority,
                expires_at: p.now.saturating_add(lease_ms),
                timeout_at: task.timeout_ms.map(|t| p.now.saturating_add(ms_i64(t))),
                lease_ms: p.lease_ms,
                timeout_ms: task.timeout_ms,
                attempt: task.attempt,
                max_attempts: task.max_attempts,
                retry: task.retry,
                cancel_requested: false,
                compact,
                workflow: task.workflow,
                started_at: p.now,
                created_at: task.created_at,
                journal: None,
            };
            if compact {
                lease.journal = Some(entries.seq());
                entries.push(id, nonce);
            } else {
                leases::write_row(conn, id, &lease)?;
            }
            task.lease = Some(Lease { token, expires_at: lease.expires_at, signature: None });
            if !task.depends_on.is_empty() {
                task.parents = Some(self.parents_of(conn, &task)?);
            }
            let started =
                Move::new(id, (&task.name, &task.queue, task.attempt), Some(Status::Queued), Status::Running, p.now);
            self.moved(conn, &started.timed(Some(task.run_at), None))?;
            self.set_lease(id, lease);
            out.push(task);
        }
        self.write_journal(conn, entries, p.now, &p.worker, p.lease_ms)?;
        Ok(out)
    }

    pub(crate) fn heartbeat(&mut self, conn: &Connection, mut p: HeartbeatParams) -> Result<Vec<HeartbeatAnswer>> {
        p.now = self.clock(p.now);
        let mut out = Vec::with_capacity(p.leases.len());
        for hb in p.leases {
            let current = self.leases.get(&hb.task).is_some_and(|l| l.token == hb.token);
            if !current {
                out.push(HeartbeatAnswer { task: hb.task, ok: false, cancel: true, expires_at: None });
                continue;
            }
            // A task that lives to a heartbeat is a long one: its row says
            // `running` from now on.
            self.write_lease(conn, hb.task)?;
            let Some(mut lease) = self.take_lease(hb.task) else { continue };
            lease.expires_at = p.now.saturating_add(ms_i64(lease.lease_ms));
            let answer = HeartbeatAnswer {
                task: hb.task,
                ok: true,
                cancel: lease.cancel_requested,
                expires_at: Some(lease.expires_at),
            };
            if let Some(progress) = &hb.progress {
                conn.prepare_cached("UPDATE tasks SET progress = ?2, updated_at = ?3 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![hb.task.as_bytes(), json(progress), p.now]))
                    .map_err(backend)?;
            }
            self.set_lease(hb.task, lease);
            out.push(answer);
        }
        Ok(out)
    }

    pub(crate) fn complete(&mut self, conn: &Connection, mut p: CompleteParams) -> Result<Vec<CompleteAnswer>> {
        p.now = self.clock(p.now);
        let mut out = Vec::with_capacity(p.results.len());
        for c in p.results {
            let current = self.leases.get(&c.task).is_some_and(|l| l.token == c.token);
            let lease = if current { self.take_lease(c.task) } else { None };
            let Some(lease) = lease else {
                out.push(CompleteAnswer { task: c.task, ok: false });
                continue;
            };
            let end = AttemptEnd::reported(c.outcome);
            self.end_attempt(conn, c.task, lease, end, p.now, "worker")?;
            out.push(CompleteAnswer { task: c.task, ok: true });
        }
        Ok(out)
    }

    /// Ends a running attempt: the one place that decides between success,
    /// retry and failure.
    fn end_attempt(
        &mut self,
        conn: &Connection,
        id: Uuid,
        mut lease: LeaseState,
        end: AttemptEnd,
        now: Millis,
        actor: &str,
    ) -> Result<()> {
        let lease = &mut lease;
        let running = Running {
            id,
            attempt: lease.attempt,
            max_attempts: lease.max_attempts,
            retry: &lease.retry,
            cancel_requested: lease.cancel_requested,
            worker: &lease.worker,
            lease_ms: lease.lease_ms,
            timeout_ms: lease.timeout_ms,
            compact: lease.compact,
        };
        let Decision { to, result, error, run_at, given_back, note, stays_compact, retrying } =
            decide(&running, end, now, actor);
        // The common end (a compact task's worker reports its outcome)
        // writes an unwritten lease along with the end, in one row update.
        // Any other end writes the lease first, so that what follows reads
        // and updates the row as it was while the task ran.
        let lease_in_end = lease.journal.take_if(|_| stays_compact);
        self.write_taken_lease(conn, id, lease)?;
        if !stays_compact {
            self.record(
                conn,
                id,
                HistoryEntry {
                    at: now,
                    from: Some(Status::Running),
                    to,
                    attempt: lease.attempt,
                    worker: Some(lease.worker.clone()),
                    actor: actor.to_owned(),
                    note,
                    by: None,
                },
            )?;
        }
        let error_json = error.as_ref().map(json);
        let result_text = result.as_ref().map(|r| r.get().to_owned());
        if to.is_terminal() {
            // The lease's own columns too: the same values when the lease
            // is written, its only record when it is not. (An unwritten
            // lease is a compact task's first attempt, so its row's progress
            // and cancel flag are still clear.)
            conn.prepare_cached(
                "UPDATE tasks SET status = ?2, result = ?3, error = ?4, finished_at = ?5, updated_at = ?5, \
                 lease_token = NULL, attempt = ?6, started_at = ?7, worker = ?8, lease_ms = ?9 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.as_bytes(),
                    to.as_str(),
                    result_text,
                    error_json,
                    now,
                    lease.attempt,
                    lease.started_at,
                    lease.worker,
                    ms_i64(lease.lease_ms)
                ])
            })
            .map_err(backend)?;
            lease_in_end.map_or(Ok(()), |seq| self.resolve(conn, seq))
        } else {
            // Stamped after the lease, so that a recovery never mistakes
            // this row for one whose lease was not written (see `leases`).
            let stamp = self.clock(now.max(lease.started_at.saturating_add(1)));
            conn.prepare_cached(
                "UPDATE tasks SET status = ?2, error = coalesce(?3, error), run_at = ?4, updated_at = ?5, \
                 lease_token = NULL, attempt = attempt - ?6 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id.as_bytes(), to.as_str(), error_json, run_at, stamp, given_back]))
            .map(|_| ())
            .map_err(backend)
        }?;
        let moved = Move::new(id, (&lease.name, &lease.queue, lease.attempt), Some(Status::Running), to, now)
            .timed(Some(lease.started_at), Some(lease.created_at));
        self.moved(conn, &Move { retrying, workflow: Some(lease.workflow), ..moved })?;
        match to {
            Status::Queued => self.push_ready(&lease.queue, &lease.name, lease.priority, run_at, id),
            Status::Pending => self.schedule(run_at, id),
            _ => self.ended(conn, id, now)?,
        }
        Ok(())
    }

    /// Writes a compact row's history out as rows, so that a transition off
    /// the common path can be appended after it.
    fn materialize(&mut self, conn: &Connection, id: Uuid) -> Result<()> {
        self.write_lease(conn, id)?;
        let row = conn
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1 AND compact = 1"))
            .and_then(|mut s| s.query_row([id.as_bytes()], task_from_row).optional())
            .map_err(backend)?;
        let Some(task) = row else { return Ok(()) };
        for e in compact_history(&task) {
            self.append(conn, id, &e)?;
        }
        conn.prepare_cached("UPDATE tasks SET compact = 0 WHERE id = ?1")
            .and_then(|mut s| s.execute([id.as_bytes()]))
            .map_err(backend)?;
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.compact = false;
        }
        Ok(())
    }

    /// Records a move off the common path: writes the compact history out
    /// first (if still compact), then the move.
    pub(super) fn record(&mut self, conn: &Connection, id: Uuid, e: HistoryEntry) -> Result<()> {
        self.materialize(conn, id)?;
        self.append(conn, id, &e)
    }

    pub(super) fn append(&mut self, conn: &Connection, id: Uuid, e: &HistoryEntry) -> Result<()> {
        conn.prepare_cached(
            "INSERT INTO history (task, at, from_status, to_status, attempt, worker, actor, note, by_token) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.as_bytes(),
                e.at,
                e.from.map(Status::as_str),
                e.to.as_str(),
                e.attempt,
                e.worker,
                e.actor,
                e.note,
                e.by
            ])
        })
        .map_err(backend)?;
        Ok(())
    }

    /// Reads a task's row, writing its lease into it first if need be.
    pub(crate) fn read_task(&mut self, conn: &Connection, id: Uuid) -> Result<Task> {
        self.write_lease(conn, id)?;
        conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id.as_bytes()], task_from_row).optional())
            .map_err(backend)?
            .ok_or(StoreError::NotFound(id))
    }

    pub(crate) fn cancel(&mut self, conn: &Connection, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        let now = self.clock(now);
        let task = self.read_task(conn, id)?;
        match task.status {
            Status::Running => {
                if let Some(worker) = &task.worker {
                    self.effects.stops.push(crate::Stop {
                        worker: worker.clone(),
                        task: id,
                        queue: task.queue.clone(),
                        reason: crate::StopReason::Cancel,
                    });
                }
                if !task.cancel_requested {
                    conn.prepare_cached("UPDATE tasks SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![id.as_bytes(), now]))
                        .map_err(backend)?;
                    if let Some(lease) = self.leases.get_mut(&id) {
                        lease.cancel_requested = true;
                    }
                }
                self.read_task(conn, id)
            }
            Status::Pending | Status::Queued => {
                self.disarm_approval(id);
                if task.status == Status::Pending {
                    self.delayed.remove(&(task.run_at, id));
                } else {
                    self.remove_ready(&task.queue, &task.name, task.priority, task.run_at, id);
                }
                self.record(
                    conn,
                    id,
                    HistoryEntry {
                        at: now,
                        from: Some(task.status),
                        to: Status::Cancelled,
                        attempt: task.attempt,
                        worker: None,
                        actor: "client".to_owned(),
                        note: Some("cancelled by a client".to_owned()),
                        by,
                    },
                )?;
                let error = TaskError::new(ErrorKind::Cancelled, "cancelled by a client");
                conn.prepare_cached(
                    "UPDATE tasks SET status = 'cancelled', error = ?2, finished_at = ?3, updated_at = ?3 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id.as_bytes(), json(&error), now]))
                .map_err(backend)?;
                self.moved(
                    conn,
                    &Move::new(id, (&task.name, &task.queue, task.attempt), Some(task.status), Status::Cancelled, now),
                )?;
                self.ended(conn, id, now)?;
                self.read_task(conn, id)
            }
            status => Err(StoreError::InvalidTransition {
                id,
                status,
                message: "a finished task cannot be cancelled".to_owned(),
            }),
        }
    }

    pub(crate) fn retry(&mut self, conn: &Connection, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        let now = self.clock(now);
        let task = self.read_task(conn, id)?;
        if !task.status.can_manual_retry() {
            return Err(StoreError::InvalidTransition {
                id,
                status: task.status,
                message: "only failed, timed_out or cancelled tasks can be retried".to_owned(),
            });
        }
        self.record(
            conn,
            id,
            HistoryEntry {
                at: now,
                from: Some(task.status),
                to: Status::Queued,
                attempt: task.attempt,
                worker: None,
                actor: "client".to_owned(),
                note: Some("manual retry".to_owned()),
                by,
            },
        )?;
        conn.prepare_cached(
            "UPDATE tasks SET status = 'queued', run_at = ?2, updated_at = ?2, finished_at = NULL, result = NULL, \
             cancel_requested = 0, max_attempts = max(max_attempts, attempt + 1) WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id.as_bytes(), now]))
        .map_err(backend)?;
        self.moved(
            conn,
            &Move::new(id, (&task.name, &task.queue, task.attempt), Some(task.status), Status::Queued, now),
        )?;
        self.arm_approval(id, &task.name, task.timeout_ms, now);
        self.push_ready(&task.queue, &task.name, task.priority, now, id);
        self.read_task(conn, id)
    }

    pub(crate) fn tick(&mut self, conn: &Connection, now: Millis) -> Result<TickOutcome> {
        let now = self.clock(now);
        let mut outcome = TickOutcome::default();
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            let row = conn
                .prepare_cached(
                    "UPDATE tasks SET status = 'queued', updated_at = ?2 WHERE id = ?1 AND status = 'pending' \
                     RETURNING queue, name, priority, run_at, compact, attempt, timeout_ms",
                )
                .and_then(|mut s| {
                    s.query_row(params![id.as_bytes(), now], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get::<_, bool>(4)?,
                            r.get(5)?,
                            r.get::<_, Option<i64>>(6)?.map(i64::unsigned_abs),
                        ))
                    })
                    .optional()
                })
                .map_err(backend)?;
            let Some((queue, name, priority, run_at, compact, attempt, timeout_ms)) = row else { continue };
            self.arm_approval(id, &name, timeout_ms, now);
            if !compact {
                self.append(
                    conn,
                    id,
                    &entry(now, Status::Pending, Status::Queued, attempt, None, "server", Some("run_at reached")),
                )?;
            }
            self.moved(conn, &Move::new(id, (&name, &queue, attempt), Some(Status::Pending), Status::Queued, now))?;
            self.push_ready(&queue, &name, priority, run_at, id);
            outcome.promoted += 1;
        }
        while let Some(&(due, id)) = self.deadlines.first() {
            if due > now {
                break;
            }
            let Some(lease) = self.take_lease(id) else {
                self.deadlines.remove(&(due, id));
                continue;
            };
            let end = if lease.timeout_at.is_some_and(|t| t <= now) {
                outcome.timed_out += 1;
                self.tally.timed_out(&lease.queue);
                AttemptEnd::TimedOut
            } else {
                outcome.expired += 1;
                self.tally.lease_expired(&lease.queue);
                AttemptEnd::Lost
            };
            self.effects.stops.push(crate::Stop {
                worker: lease.worker.clone(),
                task: id,
                queue: lease.queue.clone(),
                reason: crate::StopReason::Ended,
            });
            self.end_attempt(conn, id, lease, end, now, "server")?;
        }
        while let Some(&(due, id)) = self.approval_deadlines.first() {
            if due > now {
                break;
            }
            self.disarm_approval(id);
            outcome.timed_out += usize::from(self.time_out_approval(conn, id, now)?);
        }
        outcome.next_due = self.next_due();
        Ok(outcome)
    }

    pub(crate) fn purge(&mut self, conn: &Connection, finished_before: Millis, limit: usize) -> Result<usize> {
        let bound = uuid_upper_bound(finished_before);
        let rows: Vec<(Uuid, String, Status)> = conn
            .prepare_cached(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE id < ?1 AND finished_at < ?2 LIMIT ?3) \
                 RETURNING id, queue, status",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![bound.as_bytes(), finished_before, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| Ok((uuid_at(r, 0)?, r.get(1)?, status_at(r, 2)?)),
                )?
                .collect()
            })
            .map_err(backend)?;
        for (id, queue, status) in &rows {
            conn.prepare_cached("DELETE FROM history WHERE task = ?1")
                .and_then(|mut s| s.execute([id.as_bytes()]))
                .map_err(backend)?;
            self.count(queue, Some(*status), None);
        }
        Ok(rows.len())
    }

    pub(crate) fn set_paused(&mut self, conn: &Connection, queue: &str, paused: bool) -> Result<()> {
        conn.prepare_cached(
            "INSERT INTO queues (name, paused) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET paused = ?2",
        )
        .and_then(|mut s| s.execute(params![queue, paused]))
        .map_err(backend)?;
        if let Ok(mut p) = self.paused.lock() {
            if paused {
                p.insert(queue.to_owned());
            } else {
                p.remove(queue);
            }
        }
        if !paused {
            self.effects.ready.insert(queue.to_owned(), usize::MAX);
        }
        if let Ok(mut c) = self.counts.lock() {
            c.entry(queue.to_owned()).or_default();
        }
        Ok(())
    }
}
