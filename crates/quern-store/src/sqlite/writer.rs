//! The writer thread: the only code that changes the SQLite file, and the
//! owner of the in-memory indexes (ready queue, timers, leases, counts).
//! This file holds the thread's batch loop and the jobs it runs; the
//! operations are in rooms of their own (`tasks`, `workflows`, `schedules`,
//! `events`), as are the indexes they keep (`ready`), the leases written
//! late (`leases`) and the rebuilding of memory from the file (`recovery`).
//!
//! Invariant: the in-memory state and the file agree after every batch. Jobs
//! run one after another inside one transaction (group commit); a job checks
//! everything that could refuse it before it writes, so a refusal leaves no
//! trace. If the backend itself fails, the whole batch rolls back, every job
//! in it answers the error, and the memory is rebuilt from the file.

use crate::error::backend;
use crate::{Result, Signals, StoreError};
use quern_core::{Condition, Millis, RetryPolicy, Status};
use rusqlite::Connection;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;
use uuid::Uuid;

mod chunked;
pub(super) mod events;
mod leases;
mod ready;
mod recovery;
pub(super) mod schedules;
mod tasks;
mod workflows;

use chunked::ChunkedSet;

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;

/// Order in a ready set: priority (higher first), then run_at, then id.
type ReadyKey = (Reverse<i32>, Millis, Uuid);

/// Counts of tasks by queue and status, shared with readers.
pub(crate) type Counts = Arc<Mutex<BTreeMap<String, [u64; 8]>>>;

fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// What the memory knows of a running task.
#[derive(Debug, Clone)]
struct LeaseState {
    token: String,
    worker: String,
    queue: String,
    name: String,
    priority: i32,
    expires_at: Millis,
    timeout_at: Option<Millis>,
    lease_ms: u64,
    timeout_ms: Option<u64>,
    attempt: u32,
    max_attempts: u32,
    retry: RetryPolicy,
    cancel_requested: bool,
    compact: bool,
    /// The task's workflow, so that its end needs no read to learn it.
    workflow: Option<Uuid>,
    started_at: Millis,
    /// When the task was submitted (its latency, for the metrics).
    created_at: Millis,
    /// The journal row that lists this lease while the task's row does not
    /// say `running` yet (see `leases`).
    journal: Option<i64>,
}

impl LeaseState {
    fn due(&self) -> Millis {
        self.timeout_at.map_or(self.expires_at, |t| t.min(self.expires_at))
    }
}

/// Signals to raise once the batch is committed.
#[derive(Default)]
struct Effects {
    /// Tasks that became ready, by queue; `usize::MAX` for a queue resumed.
    ready: HashMap<String, usize>,
    timers: bool,
    schedules: bool,
    ended: Vec<Uuid>,
    /// Running tasks their workers should stop.
    stops: Vec<crate::Stop>,
}

pub(crate) struct State {
    ready: HashMap<String, HashMap<String, ChunkedSet<ReadyKey>>>,
    delayed: ChunkedSet<(Millis, Uuid)>,
    leases: HashMap<Uuid, LeaseState>,
    deadlines: BTreeSet<(Millis, Uuid)>,
    paused: Arc<Mutex<HashSet<String>>>,
    counts: Counts,
    effects: Effects,
    /// Approvals with a timeout, by deadline, and each one's deadline.
    approval_deadlines: BTreeSet<(Millis, Uuid)>,
    approval_due: HashMap<Uuid, Millis>,
    /// Workflow tasks waiting for their parents: parent → (child, the
    /// condition on that edge).
    waiting: HashMap<Uuid, Vec<(Uuid, Condition)>>,
    /// For each waiting child, how many of its edges have yet to be judged
    /// ready. Judging one edge at a time keeps a parent's end O(its
    /// children), however many parents a child has.
    unmet: HashMap<Uuid, usize>,
    /// Tasks whose end must not release their dependents (a workflow being
    /// cancelled as a whole).
    holding: HashSet<Uuid>,
    /// The event log's open batch.
    log: events::EventLog,
    /// Unfinished tasks of each workflow that has some: when the count of
    /// one reaches zero, it publishes its `workflow.*` event.
    open_workflows: HashMap<Uuid, u32>,
    /// The latest time an operation ran at: operations are stamped no earlier,
    /// so timestamps follow commit order even when callers read their clocks
    /// in another order.
    last_now: Millis,
    /// Leases not yet written into their rows.
    journal: leases::Journal,
    /// What the batch did to tasks, for the metrics (kept from batch to
    /// batch, so that counting allocates nothing).
    tally: crate::tally::Tally,
}

impl State {
    /// `now`, or the latest time an earlier operation ran at if that is later.
    fn clock(&mut self, now: Millis) -> Millis {
        self.last_now = self.last_now.max(now);
        self.last_now
    }
}

/// A unit of work for the writer thread.
pub(crate) trait Job: Send {
    /// Runs inside the open transaction; answers whether the backend failed.
    fn run(&mut self, st: &mut State, conn: &Connection) -> bool;
    /// Sends the answer, or `err` in its place when the batch failed.
    fn finish(self: Box<Self>, err: Option<StoreError>);
}

pub(crate) struct TypedJob<R, F> {
    f: Option<F>,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> TypedJob<R, F>
where
    R: Send + 'static,
    F: FnOnce(&mut State, &Connection) -> Result<R> + Send + 'static,
{
    pub(crate) fn boxed(f: F) -> (Box<dyn Job>, oneshot::Receiver<Result<R>>) {
        let (reply, rx) = oneshot::channel();
        (Box::new(Self { f: Some(f), result: None, reply }), rx)
    }
}

impl<R, F> Job for TypedJob<R, F>
where
    R: Send + 'static,
    F: FnOnce(&mut State, &Connection) -> Result<R> + Send + 'static,
{
    fn run(&mut self, st: &mut State, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let result = f(st, conn);
        let failed = matches!(result, Err(StoreError::Backend(_)));
        self.result = Some(result);
        failed
    }

    fn finish(self: Box<Self>, err: Option<StoreError>) {
        let answer = match err {
            Some(e) => Err(e),
            None => self.result.unwrap_or(Err(StoreError::Closed)),
        };
        let _ = self.reply.send(answer);
    }
}

/// What the writer counts for the metrics: its commits, and the requests
/// sent to it and not yet taken.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub(crate) commits: crate::stats::Commits,
    pub(crate) queued: std::sync::atomic::AtomicUsize,
}

/// The writer thread's loop: take what is waiting, run it in one
/// transaction, commit, answer, signal.
pub(crate) fn run_writer(
    conn: &Connection,
    mut st: State,
    rx: &mpsc::Receiver<Box<dyn Job>>,
    signals: &Signals,
    now_at_reload: &dyn Fn() -> Millis,
    log_long: &std::sync::atomic::AtomicBool,
    stats: &WriterStats,
) {
    loop {
        // With leases unwritten, wait no longer than the first one may stay
        // so; a batch without jobs then just writes them.
        let first = match st.next_lease_write() {
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut jobs = Vec::with_capacity(16);
        jobs.extend(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(jobs.len(), std::sync::atomic::Ordering::Relaxed);
        let began = std::time::Instant::now();
        let mut failure = conn.execute_batch("BEGIN IMMEDIATE").err().map(backend);
        if failure.is_none() {
            for job in &mut jobs {
                if job.run(&mut st, conn) {
                    failure = Some(StoreError::Backend("a statement failed; the batch was rolled back".into()));
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = st.write_due_leases(conn, false).err();
        }
        if failure.is_none() {
            failure = st.flush_events(conn).err();
        }
        if failure.is_none() {
            failure = conn.execute_batch("COMMIT").err().map(backend);
        }
        if let Some(err) = failure {
            tracing::error!(error = %err, jobs = jobs.len(), "write batch failed; rolling back");
            let _ = conn.execute_batch("ROLLBACK");
            st.effects = Effects::default();
            st.tally.discard();
            if let Err(e) = st.reload(conn, now_at_reload()) {
                tracing::error!(error = %e, "reloading the store's memory failed");
            }
            for job in jobs {
                job.finish(Some(err.clone()));
            }
            continue;
        }
        stats.commits.commit(jobs.len(), began.elapsed());
        // Counted before the answers, so that a client reads its own moves.
        signals.add_tally(&mut st.tally);
        st.publish_unwritten();
        for job in jobs {
            job.finish(None);
        }
        if st.events_committed() {
            signals.events.notify_waiters();
        }
        let effects = std::mem::take(&mut st.effects);
        signals.ended(effects.ended);
        signals.stop(effects.stops);
        for (queue, n) in effects.ready {
            signals.ready.raise(&queue, n);
        }
        if effects.timers {
            signals.timers.notify_one();
        }
        if effects.schedules {
            signals.schedules.notify_one();
        }
        // The checkpointer found the log long: finish the checkpoint here,
        // with nothing being written, so that the next batch restarts the
        // log (see `spawn_checkpointer`).
        if log_long.swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "the writer's WAL checkpoint failed");
        }
    }
}
