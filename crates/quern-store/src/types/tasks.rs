//! What the task operations of [`Store`](crate::Store) take and answer:
//! submitting, listing, queues and the timer's tick.
//!
//! Invariant: a listing is newest first, and its cursor, when set, takes the
//! next page up right after the page's last task; a submission answers
//! `created: false` exactly when an idempotency key named an existing task.

use quern_core::{Millis, Status, Task};
use std::collections::BTreeMap;
use uuid::Uuid;

/// One submitted task and whether this submission created it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task (the existing one when an idempotency key matched).
    pub task: Task,
    /// False when the idempotency key named an existing task.
    pub created: bool,
}

/// Filters of [`Store::list`](crate::Store::list).
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
    /// Metadata entries that must all match, compared by type.
    pub metadata: quern_core::Metadata,
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
