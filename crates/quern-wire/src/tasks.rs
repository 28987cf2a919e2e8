//! Tasks: batch submission and listing. A single submission is a
//! [`TaskSpec`] and a single answer a [`Task`], both in `quern_core`.

use quern_core::{Task, TaskSpec};
use serde::{Deserialize, Serialize};

/// The most tasks one batch may hold.
pub const MAX_BATCH: usize = 10_000;
/// The most tasks a list page may hold.
pub const MAX_LIST: usize = 1_000;
/// The longest `?wait=` on a task, in milliseconds.
pub const MAX_TASK_WAIT_MS: u64 = 300_000;

/// `POST /v1/tasks/batch`: tasks submitted all or none.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBatch {
    /// The tasks, at most 10,000.
    pub tasks: Vec<TaskSpec>,
}

/// The answer to a batch: the tasks, in the order given.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedTasks {
    /// One task per spec; an idempotent repeat answers the task it made.
    pub tasks: Vec<Task>,
}

/// `GET /v1/tasks`: a page of tasks, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    /// The page.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}
