//! Tasks in PostgreSQL: submit, lease, heartbeat, complete, cancel, retry,
//! timers, retention, pausing a queue (as `sqlite/writer/tasks.rs` does for
//! SQLite). The read-only queries (a listing, a history) are in `reads.rs`.
//!
//! Invariant: a task's row is changed only under its row lock, taken by the
//! statement that changes it or by a `FOR UPDATE` read before, and every
//! check that can refuse an operation runs before its first write; a
//! completion counts only when its token is the row's `lease_token`. How it
//! differs from SQLite: ready tasks are found through the `tasks_ready`
//! index with `FOR UPDATE SKIP LOCKED`, so that nodes leasing at once never
//! take the same task and never wait for each other; batches are written
//! with one `unnest` statement each rather than a statement per row.

use super::rows::{COLS, Entries, Loaded, approval_due, get, i32_of, load, status_of, u32_of};
use super::{Tx, dependents};
use crate::attempt::{AttemptEnd, Decision, Running, decide};
use crate::history::entry;
use crate::segment::Move;
use crate::stored::{APPROVAL, json, ms_i64, new_task_view, uuid_upper_bound};
use crate::{
    CompleteAnswer, CompleteParams, HeartbeatAnswer, HeartbeatParams, LeaseParams, Result, StoreError, Submitted,
    TickOutcome,
};
use quern_core::{ErrorKind, HistoryEntry, Lease, Millis, NewTask, Status, Task, TaskError};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// How many rows one timer pass moves of each kind.
const TICK_BATCH: i64 = 1_000;

pub(super) async fn submit(tx: &mut Tx, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
    // Refusals first: an idempotency conflict anywhere refuses the batch.
    let keys: Vec<&str> = tasks.iter().filter_map(|t| t.idempotency_key.as_deref()).collect();
    let mut found: HashMap<String, Task> = HashMap::new();
    if !keys.is_empty() {
        let sql = format!("SELECT {COLS} FROM tasks t WHERE t.idempotency_key = ANY($1)");
        for r in tx.query(&sql, &[&keys]).await? {
            let t = Loaded::from_row(&r)?.task;
            if let Some(k) = t.idempotency_key.clone() {
                found.insert(k, t);
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, t) in tasks.iter().enumerate() {
        let Some(key) = t.idempotency_key.as_deref() else { continue };
        let existing = match seen.get(key) {
            Some(&first) => (tasks[first].digest != t.digest).then_some(tasks[first].id),
            None => {
                seen.insert(key, index);
                found.get(key).filter(|f| f.digest != t.digest).map(|f| f.id)
            }
        };
        if let Some(existing) = existing {
            return Err(StoreError::IdempotencyConflict { index, key: key.to_owned(), existing });
        }
    }
    let mut rows = NewRows::default();
    let mut entries = Entries::default();
    let mut edges: (Vec<Uuid>, Vec<Uuid>, Vec<String>) = Default::default();
    let mut out: Vec<Submitted> = Vec::with_capacity(tasks.len());
    let mut made: HashMap<String, usize> = HashMap::new();
    // Parents outside this submission (tasks submitted earlier).
    let mut earlier: Vec<Uuid> = Vec::new();
    let mut latest: Millis = 0;
    for t in tasks {
        if let Some(key) = t.idempotency_key.as_deref() {
            if let Some(f) = found.get(key) {
                out.push(Submitted { task: f.clone(), created: false });
                continue;
            }
            if let Some(&i) = made.get(key) {
                let task = out[i].task.clone();
                out.push(Submitted { task, created: false });
                continue;
            }
            made.insert(key.to_owned(), out.len());
        }
        let due = approval_due(&t.name, t.timeout_ms, t.created_at).filter(|_| t.status == Status::Queued);
        rows.push(&t, due);
        tx.push_move(&Move::new(t.id, (&t.name, &t.queue, 0), None, t.status, t.created_at))?;
        if t.depends_on.is_empty() {
            match t.status {
                Status::Pending => tx.effects.due_at(t.run_at),
                _ if t.name == APPROVAL => {
                    if let Some(d) = due {
                        tx.effects.due_at(d);
                    }
                }
                _ => tx.effects.ready_in(&t.queue, 1),
            }
        } else {
            let e = crate::history::waiting(t.created_at);
            entries.push(t.id, e);
            for d in &t.depends_on {
                edges.0.push(d.task);
                edges.1.push(t.id);
                edges.2.push(json(&d.on));
                if t.workflow.is_none() {
                    earlier.push(d.task);
                }
            }
            latest = latest.max(t.created_at);
        }
        out.push(Submitted { task: new_task_view(t)?, created: true });
    }
    rows.insert(tx).await?;
    entries.write(tx).await?;
    if !edges.0.is_empty() {
        tx.execute(
            "INSERT INTO edges (parent, child, cond) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])",
            &[&edges.0, &edges.1, &edges.2],
        )
        .await?;
    }
    if !earlier.is_empty() {
        earlier.sort_unstable();
        earlier.dedup();
        let ended = judge_earlier_parents(tx, &earlier, latest).await?;
        for s in out.iter_mut().filter(|s| s.created && crate::dependency::waits_on(&s.task, &ended)) {
            s.task = load(tx, s.task.id, false).await?.task;
        }
    }
    Ok(out)
}

/// Judges the edges a submission added to tasks submitted earlier: those
/// whose parent has already ended (or no longer exists) now, as they would
/// have been at its end; the others are marked `awaited`, so that their end
/// judges them (outside workflows, only awaited tasks look for edges). The
/// mark is an update of the parent's row: a parent ending at the same moment
/// on another node either ended before (and is judged here) or ends after
/// this commits (and sees the mark and the edges). Answers the parents
/// judged, in order (`parents` is sorted).
async fn judge_earlier_parents(tx: &mut Tx, parents: &[Uuid], now: Millis) -> Result<Vec<Uuid>> {
    let rows = tx
        .query(
            "UPDATE tasks SET awaited = true WHERE id = ANY($1) AND status IN ('pending', 'queued', 'running') \
             RETURNING id",
            &[&parents],
        )
        .await?;
    let running: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let ended: Vec<Uuid> = parents.iter().copied().filter(|p| !running.contains(p)).collect();
    for &parent in &ended {
        dependents::ended(tx, parent, now).await?;
    }
    Ok(ended)
}

/// New tasks as columns, inserted with one statement.
#[derive(Default)]
struct NewRows {
    id: Vec<Uuid>,
    name: Vec<String>,
    queue: Vec<String>,
    status: Vec<&'static str>,
    priority: Vec<i32>,
    input: Vec<String>,
    metadata: Vec<Option<String>>,
    max_attempts: Vec<i32>,
    timeout_ms: Vec<Option<i64>>,
    retry: Vec<String>,
    run_at: Vec<i64>,
    created_at: Vec<i64>,
    workflow: Vec<Option<Uuid>>,
    depends_on: Vec<Option<String>>,
    idempotency_key: Vec<Option<String>>,
    digest: Vec<String>,
    wf_key: Vec<Option<String>>,
    compact: Vec<bool>,
    unmet: Vec<i32>,
    approval_due: Vec<Option<i64>>,
    traceparent: Vec<Option<String>>,
}

impl NewRows {
    fn push(&mut self, t: &NewTask, approval_due: Option<Millis>) {
        self.id.push(t.id);
        self.name.push(t.name.clone());
        self.queue.push(t.queue.clone());
        self.status.push(t.status.as_str());
        self.priority.push(t.priority);
        self.input.push(t.input.clone());
        self.metadata.push((!t.metadata.is_empty()).then(|| json(&t.metadata)));
        self.max_attempts.push(i32_of(t.max_attempts));
        self.timeout_ms.push(t.timeout_ms.map(ms_i64));
        self.retry.push(crate::stored::retry_json(&t.retry));
        self.run_at.push(t.run_at);
        self.created_at.push(t.created_at);
        self.workflow.push(t.workflow);
        self.depends_on.push((!t.depends_on.is_empty()).then(|| json(&t.depends_on)));
        self.idempotency_key.push(t.idempotency_key.clone());
        self.digest.push(t.digest.clone());
        self.wf_key.push(t.key.clone());
        self.compact.push(t.depends_on.is_empty());
        self.unmet.push(i32::try_from(t.depends_on.len()).unwrap_or(i32::MAX));
        self.approval_due.push(approval_due);
        self.traceparent.push(t.traceparent.clone());
    }

    async fn insert(self, tx: &Tx) -> Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        let params: [&(dyn ToSql + Sync); 21] = [
            &self.id,
            &self.name,
            &self.queue,
            &self.status,
            &self.priority,
            &self.input,
            &self.metadata,
            &self.max_attempts,
            &self.timeout_ms,
            &self.retry,
            &self.run_at,
            &self.created_at,
            &self.workflow,
            &self.depends_on,
            &self.idempotency_key,
            &self.digest,
            &self.wf_key,
            &self.compact,
            &self.unmet,
            &self.approval_due,
            &self.traceparent,
        ];
        tx.execute(
            "INSERT INTO tasks (id, name, queue, status, priority, input, metadata, max_attempts, timeout_ms, retry, \
             run_at, created_at, updated_at, workflow, depends_on, idempotency_key, digest, wf_key, compact, unmet, \
             approval_due, traceparent) \
             SELECT id, name, queue, status, priority, input, metadata::jsonb, max_attempts, timeout_ms, retry, \
             run_at, created_at, created_at, workflow, depends_on, idempotency_key, digest, wf_key, compact, unmet, \
             approval_due, traceparent \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::text[], $7::text[], \
             $8::int4[], $9::int8[], $10::text[], $11::int8[], $12::int8[], $13::uuid[], $14::text[], $15::text[], \
             $16::text[], $17::text[], $18::bool[], $19::int4[], $20::int8[], $21::text[]) \
             AS u(id, name, queue, status, priority, input, metadata, max_attempts, timeout_ms, retry, run_at, \
             created_at, workflow, depends_on, idempotency_key, digest, wf_key, compact, unmet, approval_due, \
             traceparent)",
            &params,
        )
        .await?;
        Ok(())
    }
}

/// Leases for several requests of one kind (the same queues, names and
/// lease period, as [`super::combine`] merges them) in one statement: the
/// best ready tasks, as many as they ask for together, each given to the
/// worker of its slot (the first request's slots first); answers each
/// request its tasks, best first.
pub(super) async fn lease(tx: &mut Tx, requests: Vec<LeaseParams>) -> Result<Vec<Vec<Task>>> {
    let mut out: Vec<Vec<Task>> = requests.iter().map(|_| Vec::new()).collect();
    let Some(p) = requests.first() else { return Ok(out) };
    if p.queues.is_empty() {
        return Ok(out);
    }
    let total: usize = requests.iter().map(|r| r.max).sum();
    if total == 0 {
        return Ok(out);
    }
    let batch = requests.len() == 1 && total > super::combine::MERGED_AT_MOST;
    // The worker of each slot, in order; a worker that asked twice has two
    // runs of slots.
    let slots: Vec<&str> = if batch {
        vec![p.worker.as_str()]
    } else {
        requests.iter().flat_map(|r| std::iter::repeat_n(r.worker.as_str(), r.max)).collect()
    };
    let now = requests.iter().map(|r| r.now).max().unwrap_or(p.now);
    let max = i64::try_from(total).unwrap_or(i64::MAX);
    let lease_ms = ms_i64(p.lease_ms);
    // A batch (one request for many tasks) sets its one worker and updates
    // the rows through an array of tuple ids; small leases, merged or not,
    // join on the numbered picks, which costs less per task when there are
    // few, and find each task's worker by its slot.
    let (slot, worker, from, tid) = if batch {
        ("", "($5::text[])[1]", "", "t.ctid = ANY(ARRAY(SELECT tid FROM picked))")
    } else {
        (
            ", row_number() OVER (ORDER BY c.priority DESC, c.run_at, c.id) AS slot",
            "($5::text[])[p.slot]",
            " FROM picked p",
            "t.ctid = p.tid",
        )
    };
    let sql = format!(
        // One ordered index scan per queue (an `= ANY` on the index's first
        // column would read every ready task of the queues and sort them),
        // then the best of those (numbered in that order, when several
        // requests share the lease, to find each one's worker among the
        // slots).
        // The picked rows are updated by their tuple ids, which their locks
        // keep current: a TID scan instead of one primary-key lookup per
        // task (a third of the statement's time). The status check makes a
        // row that moved anyway drop out of this lease rather than be taken
        // twice.
        "WITH picked AS (SELECT c.ctid AS tid{slot} FROM unnest($1::text[]) AS q(name) CROSS JOIN LATERAL \
         (SELECT r.ctid, r.id, r.priority, r.run_at FROM tasks r WHERE r.status = 'queued' \
         AND r.name <> 'approval' AND r.queue = q.name \
         AND ($2::text[] IS NULL OR r.name = ANY($2) OR r.name LIKE ANY($7::text[])) \
         ORDER BY r.priority DESC, r.run_at, r.id LIMIT $3 FOR UPDATE SKIP LOCKED) c \
         WHERE q.name <> ALL(ARRAY(SELECT name FROM queues WHERE paused)) \
         ORDER BY c.priority DESC, c.run_at, c.id LIMIT $3) \
         UPDATE tasks t SET status = 'running', attempt = t.attempt + 1, started_at = $4, updated_at = $4, \
         worker = {worker}, \
         lease_token = (t.attempt + 1)::text || '.' || replace(gen_random_uuid()::text, '-', ''), \
         lease_ms = $6, expires_at = $4::int8 + $6::int8, timeout_at = $4::int8 + t.timeout_ms, progress = NULL, \
         cancel_requested = false{from} WHERE {tid} AND t.status = 'queued' RETURNING {COLS}{slot_out}",
        slot_out = if batch { "" } else { ", p.slot" },
    );
    // A name ending in `*` is a prefix: a LIKE pattern, its own `_` (a
    // wildcard to LIKE) escaped.
    let (prefixes, exact): (Vec<&String>, Vec<&String>) = p.names.iter().flatten().partition(|n| n.ends_with('*'));
    let names: Option<Vec<&String>> = p.names.as_ref().map(|_| exact);
    let like: Vec<String> = prefixes
        .iter()
        .map(|n| format!("{}%", n.trim_end_matches('*').replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
        .collect();
    let rows = tx.query(&sql, &[&p.queues, &names, &max, &now, &slots, &lease_ms, &like]).await?;
    let mut leased = rows
        .iter()
        .map(|r| {
            let slot = if batch { 1 } else { r.get::<_, i64>(r.len() - 1) };
            Ok((Loaded::from_row(r)?, slot))
        })
        .collect::<Result<Vec<_>>>()?;
    leased.sort_by_key(|(l, slot)| (*slot, std::cmp::Reverse(l.task.priority), l.task.run_at, l.task.id));
    // Slot n (from 1) belongs to the request whose run of slots holds it.
    let mut ends = Vec::with_capacity(requests.len());
    let mut end = 0;
    for r in &requests {
        end += r.max;
        ends.push(end);
    }
    let mut entries = Entries::default();
    for (l, slot) in leased {
        let mut task = l.task;
        if !l.compact {
            let e = entry(now, Status::Queued, Status::Running, task.attempt, task.worker.clone(), "worker", None);
            entries.push(task.id, e);
        }
        let expires_at = l.expires_at.unwrap_or(now + lease_ms);
        tx.effects.due_at(task.timeout_ms.map_or(expires_at, |t| expires_at.min(now.saturating_add(ms_i64(t)))));
        task.lease = Some(Lease { token: l.token.unwrap_or_default(), expires_at, signature: None });
        if !task.depends_on.is_empty() {
            task.parents = Some(dependents::parents_of(tx, &task).await?);
        }
        let m = Move::new(task.id, (&task.name, &task.queue, task.attempt), Some(Status::Queued), Status::Running, now);
        tx.push_move(&m.timed(Some(task.run_at), None))?;
        let slot = usize::try_from(slot).unwrap_or(usize::MAX);
        let owner = ends.partition_point(|end| *end < slot).min(out.len() - 1);
        out[owner].push(task);
    }
    entries.write(tx).await?;
    Ok(out)
}

pub(super) async fn heartbeat(tx: &mut Tx, p: HeartbeatParams) -> Result<Vec<HeartbeatAnswer>> {
    let ids: Vec<Uuid> = p.leases.iter().map(|l| l.task).collect();
    let tokens: Vec<&str> = p.leases.iter().map(|l| l.token.as_str()).collect();
    let progress: Vec<Option<String>> = p.leases.iter().map(|l| l.progress.as_ref().map(json)).collect();
    let rows = tx
        .query(
            "UPDATE tasks t SET expires_at = $4 + t.lease_ms, progress = coalesce(h.progress, t.progress), \
             updated_at = CASE WHEN h.progress IS NULL THEN t.updated_at ELSE $4 END \
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS h(id, token, progress) \
             WHERE t.id = h.id AND t.lease_token = h.token AND t.status = 'running' \
             RETURNING t.id, t.expires_at, t.cancel_requested",
            &[&ids, &tokens, &progress, &p.now],
        )
        .await?;
    let mut extended: HashMap<Uuid, (Option<i64>, bool)> = HashMap::new();
    for r in rows {
        extended.insert(r.get(0), (r.get(1), r.get(2)));
    }
    Ok(p.leases
        .iter()
        .map(|l| match extended.get(&l.task) {
            Some((expires_at, cancel)) => {
                HeartbeatAnswer { task: l.task, ok: true, cancel: *cancel, expires_at: *expires_at }
            }
            None => HeartbeatAnswer { task: l.task, ok: false, cancel: true, expires_at: None },
        })
        .collect())
}

/// Locks the running tasks among `ids`, by id.
async fn lock_running(tx: &Tx, ids: &mut Vec<Uuid>) -> Result<HashMap<Uuid, Loaded>> {
    ids.sort_unstable();
    ids.dedup();
    let sql =
        format!("SELECT {COLS} FROM tasks t WHERE t.id = ANY($1) AND t.status = 'running' ORDER BY t.id FOR UPDATE");
    let mut out = HashMap::new();
    for r in tx.query(&sql, &[&*ids]).await? {
        let l = Loaded::from_row(&r)?;
        out.insert(l.task.id, l);
    }
    Ok(out)
}

pub(super) async fn complete(tx: &mut Tx, p: CompleteParams) -> Result<Vec<CompleteAnswer>> {
    let succeeded = succeed(tx, &p).await?;
    let mut out = Vec::with_capacity(p.results.len());
    let mut rest = Vec::new();
    for c in p.results {
        if succeeded.contains(&c.task) {
            out.push(CompleteAnswer { task: c.task, ok: true });
        } else {
            out.push(CompleteAnswer { task: c.task, ok: false });
            rest.push((out.len() - 1, c));
        }
    }
    if rest.is_empty() {
        return Ok(out);
    }
    // The others, under their row locks: failures, releases, stale tokens,
    // cancels asked for while running.
    let mut ids: Vec<Uuid> = rest.iter().map(|(_, c)| c.task).collect();
    let mut running = lock_running(tx, &mut ids).await?;
    let mut ends = Ends::default();
    for (i, c) in rest {
        let current = running.get(&c.task).is_some_and(|l| l.token.as_deref() == Some(c.token.as_str()));
        let Some(l) = running.remove(&c.task).filter(|_| current) else { continue };
        ends.end(tx, &l, AttemptEnd::reported(c.outcome), p.now, "worker")?;
        out[i].ok = true;
    }
    ends.write(tx, p.now).await?;
    Ok(out)
}

/// The common path in one statement: successes whose token is current and
/// whose task no client asked to cancel end `succeeded` at once, without
/// a lock taken first. Answers the tasks it ended.
async fn succeed(tx: &mut Tx, p: &CompleteParams) -> Result<std::collections::HashSet<Uuid>> {
    let mut seen = std::collections::HashSet::new();
    let (mut ids, mut tokens, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for c in &p.results {
        if let quern_core::Outcome::Succeeded { result } = &c.outcome
            && seen.insert(c.task)
        {
            ids.push(c.task);
            tokens.push(c.token.as_str());
            results.push(result.get());
        }
    }
    let mut done = std::collections::HashSet::new();
    if ids.is_empty() {
        return Ok(done);
    }
    let rows = tx
        .query(
            "UPDATE tasks t SET status = 'succeeded', result = u.result, error = NULL, finished_at = $1, updated_at = $1, \
             lease_token = NULL, expires_at = NULL, timeout_at = NULL \
             FROM unnest($2::uuid[], $3::text[], $4::text[]) AS u(id, token, result) \
             WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running' AND NOT t.cancel_requested \
             RETURNING t.id, t.name, t.queue, t.attempt, t.worker, t.compact, t.workflow, \
             t.awaited AND t.workflow IS NULL, t.started_at, t.created_at",
            &[&p.now, &ids, &tokens, &results],
        )
        .await?;
    let mut entries = Entries::default();
    let mut closed = Vec::new();
    // Tasks outside workflows that later submissions wait for.
    let mut awaited = Vec::new();
    for r in &rows {
        let (id, name, queue): (Uuid, String, String) = (r.get(0), r.get(1), r.get(2));
        let attempt = u32_of(r.get(3));
        if !r.get::<_, bool>(5) {
            entries.push(id, entry(p.now, Status::Running, Status::Succeeded, attempt, r.get(4), "worker", None));
        }
        let m = Move::new(id, (&name, &queue, attempt), Some(Status::Running), Status::Succeeded, p.now);
        tx.push_move(&m.timed(r.get(8), Some(r.get(9))))?;
        tx.effects.ended.push(id);
        if let Some(w) = r.get::<_, Option<Uuid>>(6) {
            closed.push((id, w));
        }
        if r.get::<_, bool>(7) {
            awaited.push(id);
        }
        done.insert(id);
    }
    entries.write(tx).await?;
    for (id, workflow) in closed {
        dependents::closed(tx, workflow, p.now).await?;
        dependents::ended(tx, id, p.now).await?;
    }
    for id in awaited {
        dependents::ended(tx, id, p.now).await?;
    }
    Ok(done)
}

/// Attempts that end their task, as columns: id, status, result, error,
/// whether the row stays compact.
#[derive(Default)]
struct Done(Vec<Uuid>, Vec<&'static str>, Vec<Option<String>>, Vec<Option<String>>, Vec<bool>);

/// Attempts whose task goes back, as columns: id, status, error, run_at,
/// whether the attempt was given back.
#[derive(Default)]
struct Back(Vec<Uuid>, Vec<&'static str>, Vec<Option<String>>, Vec<i64>, Vec<i32>);

/// Ended attempts, written together: one statement for those that end
/// their task, one for those that go back, one for their history.
#[derive(Default)]
struct Ends {
    entries: Entries,
    done: Done,
    back: Back,
    /// Ended tasks of workflows: their ends are judged once written.
    closed: Vec<(Uuid, Uuid)>,
}

impl Ends {
    /// Decides how attempt `l` ends and queues its writes.
    fn end(&mut self, tx: &mut Tx, l: &Loaded, end: AttemptEnd, now: Millis, actor: &str) -> Result<()> {
        let t = &l.task;
        let worker = t.worker.clone().unwrap_or_default();
        let running = Running {
            id: t.id,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            retry: &t.retry,
            cancel_requested: t.cancel_requested,
            worker: &worker,
            lease_ms: l.lease_ms.unwrap_or(0).unsigned_abs(),
            timeout_ms: t.timeout_ms,
            compact: l.compact,
        };
        let Decision { to, result, error, run_at, given_back, note, stays_compact, retrying } =
            decide(&running, end, now, actor);
        if !stays_compact {
            let e = HistoryEntry {
                at: now,
                from: Some(Status::Running),
                to,
                attempt: t.attempt,
                worker: t.worker.clone(),
                actor: actor.to_owned(),
                note,
                by: None,
            };
            self.entries.record(l, e);
        }
        let error = error.as_ref().map(json);
        if to.is_terminal() {
            self.done.0.push(t.id);
            self.done.1.push(to.as_str());
            self.done.2.push(result.map(|r| r.get().to_owned()));
            self.done.3.push(error);
            self.done.4.push(stays_compact);
            tx.effects.ended.push(t.id);
            if let Some(w) = t.workflow {
                self.closed.push((t.id, w));
            }
        } else {
            self.back.0.push(t.id);
            self.back.1.push(to.as_str());
            self.back.2.push(error);
            self.back.3.push(run_at);
            self.back.4.push(i32_of(given_back));
            if to == Status::Queued {
                tx.effects.ready_in(&t.queue, 1);
            } else {
                tx.effects.due_at(run_at);
            }
        }
        let m = Move::new(t.id, (&t.name, &t.queue, t.attempt), Some(Status::Running), to, now)
            .timed(t.started_at, Some(t.created_at));
        let m = Move { retrying, ..m };
        tx.push_move(&m)
    }

    async fn write(self, tx: &mut Tx, now: Millis) -> Result<()> {
        let Self { entries, done, back, closed } = self;
        entries.write(tx).await?;
        // Tasks outside workflows that later submissions wait for.
        let mut awaited: Vec<Uuid> = Vec::new();
        if !done.0.is_empty() {
            let rows = tx
                .query(
                    "UPDATE tasks t SET status = u.status, result = u.result, error = u.error, finished_at = $1, \
                     updated_at = $1, lease_token = NULL, expires_at = NULL, timeout_at = NULL, compact = u.compact \
                     FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bool[]) \
                     AS u(id, status, result, error, compact) WHERE t.id = u.id \
                     RETURNING t.id, t.awaited AND t.workflow IS NULL",
                    &[&now, &done.0, &done.1, &done.2, &done.3, &done.4],
                )
                .await?;
            awaited.extend(rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get::<_, Uuid>(0)));
        }
        if !back.0.is_empty() {
            tx.execute(
                "UPDATE tasks t SET status = u.status, error = coalesce(u.error, t.error), run_at = u.run_at, \
                 updated_at = $1, lease_token = NULL, expires_at = NULL, timeout_at = NULL, \
                 attempt = t.attempt - u.given_back, compact = false \
                 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::int4[]) \
                 AS u(id, status, error, run_at, given_back) WHERE t.id = u.id",
                &[&now, &back.0, &back.1, &back.2, &back.3, &back.4],
            )
            .await?;
        }
        for (id, workflow) in closed {
            dependents::closed(tx, workflow, now).await?;
            dependents::ended(tx, id, now).await?;
        }
        for id in awaited {
            dependents::ended(tx, id, now).await?;
        }
        Ok(())
    }
}

/// Ends task `l` (pending or queued) as `cancelled` by a client; `hold`
/// leaves its dependents unjudged (its whole workflow is being cancelled).
async fn cancel_waiting(tx: &mut Tx, l: &Loaded, now: Millis, hold: bool, by: Option<String>) -> Result<()> {
    let t = &l.task;
    let mut entries = Entries::default();
    let e = HistoryEntry {
        at: now,
        from: Some(t.status),
        to: Status::Cancelled,
        attempt: t.attempt,
        worker: None,
        actor: "client".to_owned(),
        note: Some("cancelled by a client".to_owned()),
        by,
    };
    entries.record(l, e);
    entries.write(tx).await?;
    let error = json(&TaskError::new(ErrorKind::Cancelled, "cancelled by a client"));
    tx.execute(
        "UPDATE tasks SET status = 'cancelled', error = $2, finished_at = $3, updated_at = $3, compact = false, \
         approval_due = NULL WHERE id = $1",
        &[&t.id, &error, &now],
    )
    .await?;
    let m = Move::new(t.id, (&t.name, &t.queue, t.attempt), Some(t.status), Status::Cancelled, now);
    dependents::moved(tx, &m, t.workflow).await?;
    tx.effects.ended.push(t.id);
    if !hold {
        dependents::ended(tx, t.id, now).await?;
    }
    Ok(())
}

pub(super) async fn cancel(tx: &mut Tx, id: Uuid, now: Millis, hold: bool, by: Option<String>) -> Result<Task> {
    let l = load(tx, id, true).await?;
    match l.task.status {
        Status::Running => {
            if !l.task.cancel_requested {
                tx.execute("UPDATE tasks SET cancel_requested = true, updated_at = $2 WHERE id = $1", &[&id, &now])
                    .await?;
            }
            if let Some(worker) = &l.task.worker {
                tx.effects.stops.push(crate::Stop {
                    worker: worker.clone(),
                    task: id,
                    queue: l.task.queue.clone(),
                    reason: crate::StopReason::Cancel,
                });
            }
        }
        Status::Pending | Status::Queued => cancel_waiting(tx, &l, now, hold, by).await?,
        status => {
            return Err(StoreError::InvalidTransition {
                id,
                status,
                message: "a finished task cannot be cancelled".to_owned(),
            });
        }
    }
    get(tx, id).await
}

pub(super) async fn retry(tx: &mut Tx, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
    let l = load(tx, id, true).await?;
    let t = &l.task;
    if !t.status.can_manual_retry() {
        return Err(StoreError::InvalidTransition {
            id,
            status: t.status,
            message: "only failed, timed_out or cancelled tasks can be retried".to_owned(),
        });
    }
    let mut entries = Entries::default();
    let e = HistoryEntry {
        at: now,
        from: Some(t.status),
        to: Status::Queued,
        attempt: t.attempt,
        worker: None,
        actor: "client".to_owned(),
        note: Some("manual retry".to_owned()),
        by,
    };
    entries.record(&l, e);
    entries.write(tx).await?;
    let due = approval_due(&t.name, t.timeout_ms, now);
    tx.execute(
        "UPDATE tasks SET status = 'queued', run_at = $2, updated_at = $2, finished_at = NULL, result = NULL, \
         cancel_requested = false, max_attempts = greatest(max_attempts, attempt + 1), compact = false, \
         approval_due = $3 WHERE id = $1",
        &[&id, &now, &due],
    )
    .await?;
    let m = Move::new(id, (&t.name, &t.queue, t.attempt), Some(t.status), Status::Queued, now);
    dependents::moved(tx, &m, t.workflow).await?;
    match due {
        Some(d) => tx.effects.due_at(d),
        None => tx.effects.ready_in(&t.queue, 1),
    }
    get(tx, id).await
}

pub(super) async fn tick(tx: &mut Tx, now: Millis) -> Result<TickOutcome> {
    let mut outcome = TickOutcome::default();
    let mut full = false;
    // Delays and backoffs whose time came.
    let rows = tx
        .query(
            "UPDATE tasks t SET status = 'queued', updated_at = $1, \
             approval_due = CASE WHEN t.name = 'approval' THEN $1 + t.timeout_ms END \
             WHERE t.id IN (SELECT id FROM tasks WHERE status = 'pending' AND unmet = 0 AND run_at <= $1 \
             ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING t.id, t.name, t.queue, t.attempt, t.compact, t.approval_due",
            &[&now, &TICK_BATCH],
        )
        .await?;
    full |= rows.len() as i64 == TICK_BATCH;
    let mut entries = Entries::default();
    for r in &rows {
        let (id, name, queue, attempt): (Uuid, String, String, i32) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let attempt = u32_of(attempt);
        if !r.get::<_, bool>(4) {
            entries
                .push(id, entry(now, Status::Pending, Status::Queued, attempt, None, "server", Some("run_at reached")));
        }
        match r.get::<_, Option<i64>>(5) {
            Some(due) => tx.effects.due_at(due),
            None if name != APPROVAL => tx.effects.ready_in(&queue, 1),
            None => {}
        }
        tx.push_move(&Move::new(id, (&name, &queue, attempt), Some(Status::Pending), Status::Queued, now))?;
        outcome.promoted += 1;
    }
    entries.write(tx).await?;
    // Leases that ran out and attempts past their timeout.
    let sql = format!(
        "SELECT {COLS}, t.timeout_at FROM tasks t WHERE t.status = 'running' AND (t.expires_at <= $1 OR t.timeout_at <= $1) \
         ORDER BY t.id LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = tx.query(&sql, &[&now, &TICK_BATCH]).await?;
    full |= rows.len() as i64 == TICK_BATCH;
    let mut ends = Ends::default();
    for r in &rows {
        let l = Loaded::from_row(r)?;
        let timeout_at: Option<i64> = r.get(31);
        let end = if timeout_at.is_some_and(|t| t <= now) {
            outcome.timed_out += 1;
            tx.effects.tally.timed_out(&l.task.queue);
            AttemptEnd::TimedOut
        } else {
            outcome.expired += 1;
            tx.effects.tally.lease_expired(&l.task.queue);
            AttemptEnd::Lost
        };
        if let Some(worker) = &l.task.worker {
            tx.effects.stops.push(crate::Stop {
                worker: worker.clone(),
                task: l.task.id,
                queue: l.task.queue.clone(),
                reason: crate::StopReason::Ended,
            });
        }
        ends.end(tx, &l, end, now, "server")?;
    }
    ends.write(tx, now).await?;
    // Approvals that got no decision in time.
    let sql = format!(
        "SELECT {COLS} FROM tasks t WHERE t.approval_due <= $1 AND t.status = 'queued' \
         ORDER BY t.approval_due LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = tx.query(&sql, &[&now, &TICK_BATCH]).await?;
    full |= rows.len() as i64 == TICK_BATCH;
    for r in &rows {
        let l = Loaded::from_row(r)?;
        outcome.timed_out += usize::from(dependents::time_out_approval(tx, &l, now).await?);
    }
    let row = tx
        .query_opt(
            "SELECT least((SELECT min(run_at) FROM tasks WHERE status = 'pending' AND unmet = 0), \
             (SELECT min(expires_at) FROM tasks WHERE status = 'running'), \
             (SELECT min(timeout_at) FROM tasks WHERE status = 'running' AND timeout_at IS NOT NULL), \
             (SELECT min(approval_due) FROM tasks WHERE approval_due IS NOT NULL))",
            &[],
        )
        .await?;
    let next: Option<i64> = row.and_then(|r| r.get(0));
    let moved = outcome.promoted + outcome.expired + outcome.timed_out;
    outcome.next_due = match next {
        _ if full => Some(now),
        // Due but locked by another node, which is moving it now: look
        // again shortly rather than spin.
        Some(due) if due <= now && moved == 0 => Some(now + 50),
        other => other,
    };
    Ok(outcome)
}

pub(super) async fn purge(tx: &mut Tx, finished_before: Millis, limit: usize) -> Result<usize> {
    let bound = uuid_upper_bound(finished_before);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE id < $1 AND finished_at < $2 LIMIT $3 \
             FOR UPDATE SKIP LOCKED) RETURNING id, queue, status",
            &[&bound, &finished_before, &limit],
        )
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    for r in &rows {
        tx.uncount(r.get(1), status_of(r.get(2))?);
    }
    if !ids.is_empty() {
        tx.execute("DELETE FROM history WHERE task = ANY($1)", &[&ids]).await?;
        tx.execute("DELETE FROM edges WHERE child = ANY($1)", &[&ids]).await?;
    }
    Ok(ids.len())
}

pub(super) async fn set_paused(tx: &mut Tx, queue: String, paused: bool) -> Result<()> {
    tx.execute(
        "INSERT INTO queues (name, paused) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET paused = $2",
        &[&queue, &paused],
    )
    .await?;
    if !paused {
        tx.effects.ready_in(&queue, usize::MAX);
    }
    Ok(())
}
