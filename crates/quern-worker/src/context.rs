//! What a handler sees of its task, and how it says it failed.

use quern_core::{ErrorKind, Progress, Task, TaskError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

use crate::flight::{Flight, Shared};

/// A running task, as its handler sees it. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    flight: Arc<Flight>,
    shared: Arc<Shared>,
}

impl TaskContext {
    pub(crate) fn new(flight: Arc<Flight>, shared: Arc<Shared>) -> Self {
        Self { flight, shared }
    }

    /// The task as the server leased it (id, name, input, attempt, …).
    pub fn task(&self) -> &Task {
        &self.flight.task
    }

    /// The task's id.
    pub fn id(&self) -> uuid::Uuid {
        self.flight.task.id
    }

    /// The attempt running now (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.flight.task.attempt
    }

    /// The input as JSON text.
    pub fn input_json(&self) -> &RawValue {
        &self.flight.task.input
    }

    /// The input as `T`. Input of another shape is refused: the task fails
    /// with kind `rejected` and is not retried.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, TaskFailure> {
        let task = &self.flight.task;
        serde_json::from_str(task.input.get())
            .map_err(|e| TaskFailure::rejected(format!("input does not fit task {}: {e}", task.name)))
    }

    /// Reports progress (0 to 100, clamped). It reaches the server with the
    /// next heartbeat, which a progress report brings forward.
    pub fn progress(&self, percent: f64, message: impl Into<String>) {
        let message = message.into();
        let progress =
            Progress { percent: percent.clamp(0.0, 100.0), message: (!message.is_empty()).then_some(message) };
        self.flight.set_progress(progress);
        self.shared.progress_changed.notify_one();
    }

    /// Resolves when the task should stop: a client cancelled it, its lease
    /// was lost, its timeout passed, or the worker is shutting down.
    pub async fn cancelled(&self) {
        self.flight.cancelled().await;
    }

    /// Has the task been asked to stop?
    pub fn is_cancelled(&self) -> bool {
        self.flight.is_cancelled()
    }
}

/// How a handler failed. Each maps to exactly one transition: `retryable`
/// failures are retried while attempts are left, `fatal` and `rejected` ones
/// end the task `failed`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// `exception` or `rejected` (or `timeout`, `cancelled` from the runtime).
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
    /// Anything that helps (a traceback, an exit code, output tails).
    pub details: Option<Value>,
    /// May the task be tried again (attempts permitting)?
    pub retry: bool,
}

impl TaskFailure {
    /// A failure worth another attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Exception, message: message.into(), details: None, retry: true }
    }

    /// A failure that another attempt would repeat.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Exception, message: message.into(), details: None, retry: false }
    }

    /// The handler will not run this input at all.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Rejected, message: message.into(), details: None, retry: false }
    }

    /// The same failure with `details` attached.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn into_error(self) -> (TaskError, bool) {
        (TaskError { kind: self.kind, message: self.message, details: self.details }, self.retry)
    }
}

/// What a handler returns: a JSON result, or how it failed.
pub type HandlerResult = Result<Value, TaskFailure>;
