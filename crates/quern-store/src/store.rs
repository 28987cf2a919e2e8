//! The storage seam: the [`Store`] trait, which the engine calls and each
//! backend implements.
//!
//! Invariant: every method is one atomic operation, and time comes from the
//! caller (`now`), never from the backend's own clock.

use crate::error::Result;
use crate::signals::Signals;
use crate::types::audit::{AuditEntry, AuditQuery, AuditRecord};
use crate::types::events::{Delivery, EventPage, EventQuery, GroupState, WebhookRecord};
use crate::types::leases::{CompleteAnswer, CompleteParams, HeartbeatAnswer, HeartbeatParams, LeaseParams};
use crate::types::schedules::{DueSchedules, Fire, FireOutcome, ScheduleRecord, ScheduleWrite};
use crate::types::tasks::{ListQuery, QueueInfo, Submitted, TaskPage, TickOutcome};
use crate::types::tokens::TokenRecord;
use crate::types::workers::{TaskTypeRecord, WorkerRecord};
use crate::types::workflows::{Approval, NewWorkflow, WorkflowPage, WorkflowQuery, WorkflowRecord};
use async_trait::async_trait;
use quern_core::{Event, HistoryEntry, Millis, NewEvent, NewTask, Task};
use uuid::Uuid;

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
    async fn cancel(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task>;
    /// Gives a failed, timed-out or cancelled task a new attempt.
    async fn retry(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task>;
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
    async fn cancel_workflow(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<usize>;
    /// Decides an `approval` task.
    async fn approve(&self, id: Uuid, approval: Approval, now: Millis) -> Result<Task>;
    /// Every schedule by name, or the one named.
    async fn schedules(&self, name: Option<String>) -> Result<Vec<ScheduleRecord>>;
    /// Applies schedule changes, all or none: a change whose expected
    /// version is not the stored one fails the call with
    /// [`StoreError::ScheduleConflict`](crate::StoreError::ScheduleConflict).
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
    /// The first `limit` consumer groups by name, with their cursors.
    async fn group_cursors(&self, limit: usize) -> Result<Vec<(String, u64)>>;
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
    /// Appends an entry to the audit log.
    async fn audit(&self, entry: AuditEntry) -> Result<()>;
    /// Audit entries, newest first.
    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>>;
    /// Deletes audit entries older than `before`; answers how many went.
    async fn purge_audit(&self, before: Millis) -> Result<u64>;
    /// Every token, revoked ones too, by name.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Stores a new token; a name already used (even by a revoked token) is
    /// [`StoreError::TokenExists`](crate::StoreError::TokenExists).
    async fn create_token(&self, token: TokenRecord) -> Result<()>;
    /// Revokes a token at `at`; answers it as it is now, or `None` when no
    /// token has the name. Revoking twice keeps the first time.
    async fn revoke_token(&self, name: String, at: Millis) -> Result<Option<TokenRecord>>;
    /// Claims or renews role `role` (a service that must run on one node at
    /// a time, such as webhook delivery) for `node` until `now + ttl_ms`;
    /// answers whether `node` holds it. Another node gets it only once its
    /// holder stops renewing it and the term runs out.
    async fn lead(&self, role: String, node: String, now: Millis, ttl_ms: u64) -> Result<bool>;
    /// Is the backend reachable?
    async fn ready(&self) -> Result<()>;
    /// The store's signals.
    fn signals(&self) -> &Signals;
    /// How the store's machinery is doing (commits, queue, pool), read
    /// without a query.
    fn stats(&self) -> crate::stats::StoreStats;
}
