//! Where Quern keeps its tasks: the [`Store`] trait, the embedded SQLite
//! backend, and the signals a store raises for the engine.
//!
//! Invariants every backend keeps (the conformance suite in `tests/` pins
//! them): each operation is atomic; an operation that answers `Ok` is
//! durable at the backend's durability level; a status moves only along
//! [`quern_core::Status::can_move`] (every move of both backends passes
//! `segment::Move::check`, which refuses any other); a completion or heartbeat that does not
//! carry the task's current lease token changes nothing; every transition is
//! recorded in the task's history.
//!
//! # Layout
//! - [`Store`] and the parameter and answer types of its operations.
//! - [`Signals`]: how a store tells the engine that tasks became ready, that a
//!   task ended, or that its timers changed.
//! - [`sqlite`]: the embedded backend (one writer thread with group commit,
//!   reader connections, ready queue and leases in memory).
//! - [`postgres`]: the backend for several server nodes on one database
//!   (leases with `FOR UPDATE SKIP LOCKED`, wake-ups with LISTEN/NOTIFY).
//! - What both backends decide alike: `attempt` (how an attempt ends),
//!   `dependency` (judging a workflow edge), `history` (what a compact row
//!   tells) and `segment` (the event log's format).

mod attempt;
mod dependency;
mod history;
pub mod postgres;
mod segment;
pub mod sqlite;

use async_trait::async_trait;
use quern_core::{Event, EventFilter, Millis, NewEvent, NewTask, Outcome, Progress, Status, Task};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

pub use quern_core::HistoryEntry;

/// What can go wrong in a store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No task has this id.
    #[error("no task with id {0}")]
    NotFound(Uuid),
    /// No workflow has this id.
    #[error("no workflow with id {0}")]
    WorkflowNotFound(Uuid),
    /// The task's status does not allow the operation.
    #[error("task {id} is {status}: {message}")]
    InvalidTransition {
        /// The task.
        id: Uuid,
        /// Its status.
        status: Status,
        /// What was refused.
        message: String,
    },
    /// An idempotency key was reused with a different spec.
    #[error("idempotency key {key:?} already names task {existing}, whose spec differs")]
    IdempotencyConflict {
        /// The position of the offending task in its batch.
        index: usize,
        /// The key.
        key: String,
        /// The task that holds the key.
        existing: Uuid,
    },
    /// No schedule has this name.
    #[error("no schedule named {0:?}")]
    ScheduleNotFound(String),
    /// No webhook has this name.
    #[error("no webhook named {0:?}")]
    WebhookNotFound(String),
    /// A schedule changed between the read a write was planned on and the
    /// write; nothing was changed, and the write may be planned again.
    #[error("schedule {0:?} changed meanwhile")]
    ScheduleConflict(String),
    /// The events after this offset were deleted by retention.
    #[error("events after offset {after} are gone (retention); the earliest kept is {earliest}")]
    OffsetExpired {
        /// The offset asked for.
        after: u64,
        /// The earliest offset still kept.
        earliest: u64,
    },
    /// A list cursor that this store did not hand out.
    #[error("cursor is not one this server handed out")]
    InvalidCursor,
    /// The backend failed (disk, database); nothing was changed.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// A store operation's result.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One submitted task and whether this submission created it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task (the existing one when an idempotency key matched).
    pub task: Task,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}

/// Parameters of [`Store::lease`].
#[derive(Debug, Clone)]
pub struct LeaseParams {
    /// Who leases.
    pub worker: String,
    /// The queues to take from.
    pub queues: Vec<String>,
    /// Only these task names, when given.
    pub names: Option<Vec<String>>,
    /// At most this many tasks.
    pub max: usize,
    /// The lease length.
    pub lease_ms: u64,
    /// Now.
    pub now: Millis,
}

/// One lease in a heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatLease {
    /// The task.
    pub task: Uuid,
    /// Its lease token.
    pub token: String,
    /// Progress to record.
    pub progress: Option<Progress>,
}

/// Parameters of [`Store::heartbeat`].
#[derive(Debug, Clone)]
pub struct HeartbeatParams {
    /// Who beats.
    pub worker: String,
    /// The leases to extend.
    pub leases: Vec<HeartbeatLease>,
    /// Now.
    pub now: Millis,
}

/// The answer for one lease of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The task.
    pub task: Uuid,
    /// The lease is still the task's current one, and was extended.
    pub ok: bool,
    /// The worker must stop the task.
    pub cancel: bool,
    /// The lease's new end, when `ok`.
    pub expires_at: Option<Millis>,
}

/// One attempt's end, as a worker reports it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The task.
    pub task: Uuid,
    /// Its lease token.
    pub token: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Parameters of [`Store::complete`].
#[derive(Debug, Clone)]
pub struct CompleteParams {
    /// Who reports.
    pub worker: String,
    /// The outcomes.
    pub results: Vec<Completion>,
    /// Now.
    pub now: Millis,
}

/// The answer for one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteAnswer {
    /// The task.
    pub task: Uuid,
    /// Recorded; `false` means the token was stale and nothing changed.
    pub ok: bool,
}

/// Filters of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Any of these statuses.
    pub statuses: Vec<Status>,
    /// This queue.
    pub queue: Option<String>,
    /// This task name.
    pub name: Option<String>,
    /// This workflow.
    pub workflow: Option<Uuid>,
    /// Metadata entries that must all match.
    pub metadata: BTreeMap<String, String>,
    /// Page size.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// The cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// A queue and how many tasks it holds in each status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Tasks by status.
    pub counts: BTreeMap<Status, u64>,
    /// Paused queues lease nothing.
    pub paused: bool,
}

/// What a timer tick did.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    /// Pending tasks whose time came.
    pub promoted: usize,
    /// Leases that expired (tasks re-queued or failed as `lost`).
    pub expired: usize,
    /// Running tasks that passed their timeout.
    pub timed_out: usize,
    /// The next time something is due, if anything is.
    pub next_due: Option<Millis>,
}

/// A workflow to insert with its tasks.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub created_at: Millis,
}

/// A workflow and its tasks, as stored.
#[derive(Debug, Clone)]
pub struct WorkflowRecord {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub created_at: Millis,
    /// Its tasks, in submission order.
    pub tasks: Vec<Task>,
}

/// What [`Store::workflow_page`] reads: a workflow and one page of its
/// tasks, in submission order, after task `after`.
#[derive(Debug, Clone)]
pub struct WorkflowQuery {
    /// The workflow.
    pub id: Uuid,
    /// The last task of the previous page.
    pub after: Option<Uuid>,
    /// Tasks in the page at most.
    pub limit: usize,
}

/// A workflow's head, how many of its tasks are in each status, and one
/// page of its tasks.
#[derive(Debug, Clone)]
pub struct WorkflowPage {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub created_at: Millis,
    /// Its tasks by status (statuses with none left out).
    pub counts: BTreeMap<Status, usize>,
    /// The unfinished task submitted first, if any.
    pub first_open: Option<Uuid>,
    /// The page, in submission order.
    pub tasks: Vec<Task>,
    /// Where the next page starts, when there is one.
    pub next_after: Option<Uuid>,
}

/// A decision on an `approval` task.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Approved (the task succeeds) or rejected (it fails, kind `rejected`).
    pub approved: bool,
    /// Who decided.
    pub by: Option<String>,
    /// Why.
    pub comment: Option<String>,
}

/// A schedule as stored. The engine plans every change from a record and
/// writes it back fenced by `version`, so that two writers (two requests,
/// two server nodes) never both act on one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its unique name.
    pub name: String,
    /// The spec, canonical JSON (see [`quern_core::Schedule::spec_json`]).
    pub spec: String,
    /// The timing alone, canonical: when it changes, slots restart.
    pub timing: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Where an interval counts from.
    pub anchor: Millis,
    /// The next slot; `None` when none is left (a one-time schedule that ran).
    pub next_fire_at: Option<Millis>,
    /// When it last created a task.
    pub last_fired_at: Option<Millis>,
    /// The last task it created.
    pub last_task: Option<Uuid>,
    /// Raised by every write; a write names the version it replaces.
    pub version: i64,
    /// When it was first stored.
    pub created_at: Millis,
    /// When its spec or state last changed.
    pub updated_at: Millis,
}

/// One change of [`Store::write_schedules`].
#[derive(Debug, Clone)]
pub enum ScheduleWrite {
    /// Stores `record`, replacing version `expected` (`None`: the name must
    /// be free). The stored version is `expected + 1` (or 1).
    Put {
        /// The new state.
        record: ScheduleRecord,
        /// The version replaced.
        expected: Option<i64>,
    },
    /// Deletes the schedule at version `expected`.
    Delete {
        /// Its name.
        name: String,
        /// The version deleted.
        expected: i64,
    },
}

/// One slot (or manual trigger) of [`Store::fire_schedules`].
#[derive(Debug, Clone)]
pub struct Fire {
    /// The schedule.
    pub name: String,
    /// For a due slot: the `next_fire_at` this fire consumes (the
    /// compare-and-set) and the one it leaves. `None` for a manual trigger,
    /// which leaves `next_fire_at` alone.
    pub advance: Option<(Millis, Option<Millis>)>,
    /// Let the slot pass without a task while the last run is unfinished.
    pub skip_if_running: bool,
    /// The task to create; its idempotency key names schedule and slot.
    pub task: NewTask,
}

/// What one [`Fire`] did.
#[derive(Debug, Clone)]
pub enum FireOutcome {
    /// The task was created.
    Fired(Box<Task>),
    /// The last run is unfinished and the schedule skips overlaps: the slot
    /// passed without a task.
    Skipped,
    /// A task with this slot's key exists already: the slot had fired.
    Duplicate,
    /// The schedule is gone, disabled, or its `next_fire_at` is no longer
    /// the one consumed: someone else fired or changed it. Nothing changed.
    Stale,
}

/// Due schedules and when the next one falls due.
#[derive(Debug, Clone, Default)]
pub struct DueSchedules {
    /// Enabled schedules whose `next_fire_at` has come, earliest first.
    pub due: Vec<ScheduleRecord>,
    /// The earliest `next_fire_at` of the rest.
    pub next_due: Option<Millis>,
}

/// What [`Store::read_events`] reads.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events after this offset; `None` is from the earliest kept.
    pub after: Option<u64>,
    /// Which events.
    pub filter: EventFilter,
    /// At most this many.
    pub limit: usize,
}

/// A page of the event log.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// The offset the next read continues after: the last event returned,
    /// or, when the filter matched little, the last one looked at.
    pub next_after: u64,
    /// The newest offset in the log (0 when it is empty).
    pub head: u64,
}

/// A webhook as stored: where to POST which events, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Its unique name.
    pub name: String,
    /// The `http://` URL events are POSTed to.
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
    /// The HMAC-SHA256 key of the signature header, when set.
    pub secret: Option<String>,
    /// Failed attempts in a row after which it is paused.
    pub max_attempts: u32,
    /// Paused webhooks deliver nothing until resumed.
    pub paused: bool,
    /// Every event at or below this offset was delivered (or passed by).
    pub cursor: u64,
    /// Failed attempts in a row at the event after `cursor`.
    pub failures: u32,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
}

/// A task type as the store shares it between nodes: its latest
/// declaration by any worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTypeRecord {
    /// The task name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// The JSON Schema inputs must match, as JSON text.
    pub input_schema: Option<String>,
    /// When it was declared.
    pub declared_at: Millis,
}

/// A consumer group's delivery state, which every node serving the group
/// reads and replaces by version (see [`Store::put_group_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupState {
    /// Every event at or below this offset was handed out or passed over.
    pub read_upto: u64,
    /// Handed-out events awaiting their ack: offset → (member, visibility
    /// deadline).
    pub inflight: BTreeMap<u64, (String, Millis)>,
}

impl GroupState {
    /// The group's cursor: every event at or below it is done.
    pub fn cursor(&self) -> u64 {
        self.inflight.keys().next().map_or(self.read_upto, |first| first - 1)
    }
}

/// A worker as a node last heard from it, shared so that every node lists
/// the workers of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The worker's id.
    pub id: String,
    /// The queues it takes from.
    pub queues: Vec<String>,
    /// The task types it declared.
    pub task_types: Vec<String>,
    /// Tasks it held, as of its last call.
    pub in_flight: u64,
    /// When it was last heard from.
    pub last_seen: Millis,
}

/// One attempt to deliver one event to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook.
    pub webhook: String,
    /// The event.
    pub offset: u64,
    /// 1 for the first try of this event, then 2, 3, …
    pub attempt: u32,
    /// When it was tried.
    pub at: Millis,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
}

/// The storage seam. Every method is one atomic operation; `now` comes from
/// the caller's clock so that backends never read time themselves.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts tasks, all or none. An idempotency key seen before answers the
    /// existing task (same spec) or fails the whole call (different spec).
    async fn submit(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>>;
    /// One task.
    async fn get(&self, id: Uuid) -> Result<Task>;
    /// A page of tasks, newest first.
    async fn list(&self, query: ListQuery) -> Result<TaskPage>;
    /// A task's transitions, oldest first.
    async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>>;
    /// Leases up to `max` ready tasks: highest priority, then earliest
    /// `run_at`, then oldest. Each comes back `running` with a new lease.
    async fn lease(&self, params: LeaseParams) -> Result<Vec<Task>>;
    /// Extends leases and records progress.
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<HeartbeatAnswer>>;
    /// Records attempts' outcomes, fenced by lease token.
    async fn complete(&self, params: CompleteParams) -> Result<Vec<CompleteAnswer>>;
    /// Cancels a task now (pending, queued) or asks its worker to stop
    /// (running).
    async fn cancel(&self, id: Uuid, now: Millis) -> Result<Task>;
    /// Gives a failed, timed-out or cancelled task a new attempt.
    async fn retry(&self, id: Uuid, now: Millis) -> Result<Task>;
    /// Moves what is due at `now`: pending tasks whose time came, expired
    /// leases, running tasks past their timeout.
    async fn tick(&self, now: Millis) -> Result<TickOutcome>;
    /// Deletes up to `limit` terminal tasks (and their history) that finished
    /// before `finished_before`; answers how many.
    async fn purge(&self, finished_before: Millis, limit: usize) -> Result<usize>;
    /// Every queue that holds tasks or was paused.
    async fn queues(&self) -> Result<Vec<QueueInfo>>;
    /// Pauses or resumes a queue.
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()>;
    /// Inserts a workflow and its tasks, all or none. Tasks with
    /// dependencies wait (`pending`) until their parents' ends are judged.
    async fn submit_workflow(&self, workflow: NewWorkflow, tasks: Vec<NewTask>) -> Result<Vec<Submitted>>;
    /// A workflow and its tasks.
    async fn workflow(&self, id: Uuid) -> Result<WorkflowRecord>;
    /// A workflow's counts by status and one page of its tasks: what an
    /// answer about a workflow of any size reads, without loading them all.
    async fn workflow_page(&self, query: WorkflowQuery) -> Result<WorkflowPage>;
    /// Cancels every unfinished task of a workflow; answers how many.
    async fn cancel_workflow(&self, id: Uuid, now: Millis) -> Result<usize>;
    /// Decides an `approval` task.
    async fn approve(&self, id: Uuid, approval: Approval, now: Millis) -> Result<Task>;
    /// Every schedule by name, or the one named.
    async fn schedules(&self, name: Option<String>) -> Result<Vec<ScheduleRecord>>;
    /// Applies schedule changes, all or none: a change whose expected
    /// version is not the stored one fails the call with
    /// [`StoreError::ScheduleConflict`].
    async fn write_schedules(&self, writes: Vec<ScheduleWrite>) -> Result<()>;
    /// Enabled schedules due at `now` (at most `limit`), and the next due time
    /// of the others.
    async fn due_schedules(&self, now: Millis, limit: usize) -> Result<DueSchedules>;
    /// Fires slots: for each, in one transaction, checks and advances
    /// `next_fire_at` and creates the task, so that a slot fires once
    /// however many nodes try.
    async fn fire_schedules(&self, fires: Vec<Fire>, now: Millis) -> Result<Vec<FireOutcome>>;
    /// The tasks schedule `name` created that are still kept, newest first.
    async fn schedule_runs(&self, name: String, limit: usize) -> Result<Vec<Task>>;
    /// Appends events to the log; answers them with their offsets.
    async fn publish(&self, events: Vec<NewEvent>, now: Millis) -> Result<Vec<Event>>;
    /// Reads the log.
    async fn read_events(&self, query: EventQuery) -> Result<EventPage>;
    /// Deletes events older than `before`, and all but the newest `keep`;
    /// answers how many went.
    async fn purge_events(&self, before: Millis, keep: u64) -> Result<u64>;
    /// The cursor a consumer group committed: every event at or below it is
    /// done for the group.
    async fn group_cursor(&self, group: String) -> Result<Option<u64>>;
    /// Commits a consumer group's cursor.
    async fn save_group_cursor(&self, group: String, cursor: u64, now: Millis) -> Result<()>;
    /// A consumer group's delivery state and its version; `None` before the
    /// group's first read.
    async fn group_state(&self, group: String) -> Result<Option<(u64, GroupState)>>;
    /// Replaces a group's state if its version is still `version` (`None`:
    /// the group has none yet) and commits its cursor with it; answers
    /// whether it did (false: another read or ack got there first).
    async fn put_group_state(
        &self,
        group: String,
        version: Option<u64>,
        state: GroupState,
        now: Millis,
    ) -> Result<bool>;
    /// Every webhook by name.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>>;
    /// Creates or replaces a webhook.
    async fn put_webhook(&self, webhook: WebhookRecord) -> Result<()>;
    /// Deletes a webhook and its deliveries; answers whether it existed.
    async fn delete_webhook(&self, name: String) -> Result<bool>;
    /// Records a delivery attempt (if any) and the webhook's state after it
    /// (`cursor`, `failures`, `paused`, `last_error`), in one transaction.
    async fn webhook_progress(&self, state: WebhookRecord, delivery: Option<Delivery>) -> Result<()>;
    /// A webhook's latest delivery attempts, newest first.
    async fn deliveries(&self, name: String, limit: usize) -> Result<Vec<Delivery>>;
    /// Stores task types as workers declared them; a declaration older than
    /// the stored one of the same name changes nothing.
    async fn put_task_types(&self, types: Vec<TaskTypeRecord>) -> Result<()>;
    /// Every task type declared, by name.
    async fn task_types(&self) -> Result<Vec<TaskTypeRecord>>;
    /// Stores what a node heard of its workers; a record older than the
    /// stored one of the same worker changes nothing.
    async fn put_workers(&self, workers: Vec<WorkerRecord>) -> Result<()>;
    /// The workers any node heard from at or after `since`.
    async fn workers(&self, since: Millis) -> Result<Vec<WorkerRecord>>;
    /// Claims or renews role `role` (a service that must run on one node at
    /// a time, such as webhook delivery) for `node` until `now + ttl_ms`;
    /// answers whether `node` holds it. Another node gets it only once its
    /// holder stops renewing it and the term runs out.
    async fn lead(&self, role: String, node: String, now: Millis, ttl_ms: u64) -> Result<bool>;
    /// Is the backend reachable?
    async fn ready(&self) -> Result<()>;
    /// The store's signals.
    fn signals(&self) -> &Signals;
}

/// How a store tells the engine what changed, without the engine polling.
#[derive(Debug, Default)]
pub struct Signals {
    /// Tasks became ready: parked lease requests should try again.
    pub ready: Notify,
    /// Something new is due earlier than the timer thought: tick again.
    pub timers: Notify,
    /// Schedules changed: the scheduler should look again.
    pub schedules: Notify,
    /// Events were appended: parked readers should read again.
    pub events: Notify,
    waiters: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
}

impl Signals {
    /// A receiver that fires when task `id` reaches a terminal status.
    /// Register before reading the task, so that an end between the read and
    /// the wait is not missed.
    pub fn wait_for_end(&self, id: Uuid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.entry(id).or_default().push(tx);
        }
        rx
    }

    /// Wakes whoever waits for these tasks to end.
    pub fn ended(&self, ids: impl IntoIterator<Item = Uuid>) {
        let Ok(mut w) = self.waiters.lock() else { return };
        if w.is_empty() {
            return;
        }
        for id in ids {
            if let Some(senders) = w.remove(&id) {
                for s in senders {
                    let _ = s.send(());
                }
            }
        }
    }

    /// Drops the registrations of waiters that gave up.
    pub fn forget_closed(&self, id: Uuid) {
        if let Ok(mut w) = self.waiters.lock()
            && let Some(senders) = w.get_mut(&id)
        {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                w.remove(&id);
            }
        }
    }
}

/// The built-in task name that waits for `approve` instead of a worker.
pub(crate) const APPROVAL: &str = "approval";

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

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
    })
}
