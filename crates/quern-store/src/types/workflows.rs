//! What the workflow operations take and answer: a workflow to submit with
//! its tasks, one read whole or a page at a time, and a decision on an
//! `approval` task.
//!
//! Invariant: a workflow's tasks come in submission order in every record
//! and page, and a page says where the next one starts only when one follows.

use quern_core::{Millis, Status, Task};
use std::collections::BTreeMap;
use uuid::Uuid;

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

/// What [`Store::workflow_page`](crate::Store::workflow_page) reads: a workflow and one page of its
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
