//! The task as the API shows it, and the pieces it is made of.

use crate::check::{MAX_ERROR_MESSAGE_LEN, MAX_PROGRESS_MESSAGE_LEN, check_json_depth, check_text};
use crate::error::{ValidationError, ValidationResult};
use crate::retry::RetryPolicy;
use crate::status::Status;
use crate::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Why an attempt did not succeed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The handler failed (raised, returned an error, exited non-zero).
    Exception,
    /// The attempt ran past its timeout.
    Timeout,
    /// A client cancelled the task.
    Cancelled,
    /// The worker's lease expired: the worker died or lost the server.
    Lost,
    /// A dependency ended in a way that rules this task out.
    Dependency,
    /// The worker refused the task (bad input, unknown name).
    Rejected,
}

impl ErrorKind {
    /// The name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Exception => "exception",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Lost => "lost",
            ErrorKind::Dependency => "dependency",
            ErrorKind::Rejected => "rejected",
        }
    }
}

/// The error of a task's latest unsuccessful attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of failure it was.
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
    /// Anything the worker attached (a traceback, an exit code, a stderr tail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl TaskError {
    /// An error of `kind` with `message` and no details.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), details: None }
    }

    /// Checks a worker's report of a failure, sent as `field`: a message of
    /// at most [`MAX_ERROR_MESSAGE_LEN`] bytes without NUL, and details at
    /// most [`crate::check::MAX_JSON_DEPTH`] deep.
    pub fn validate(&self, field: &str) -> ValidationResult<()> {
        check_text(&format!("{field}.message"), &self.message, MAX_ERROR_MESSAGE_LEN)?;
        if let Some(details) = &self.details {
            check_json_depth(&format!("{field}.details"), &details.to_string())?;
        }
        Ok(())
    }
}

/// How far a running task has come, as its worker last reported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0 to 100.
    pub percent: f64,
    /// What it is doing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Progress {
    /// Checks a worker's report, sent as `field`: a percent from 0 to 100
    /// and a message of at most [`MAX_PROGRESS_MESSAGE_LEN`] bytes without
    /// NUL.
    pub fn validate(&self, field: &str) -> ValidationResult<()> {
        if !(0.0..=100.0).contains(&self.percent) {
            return Err(ValidationError::new(format!("{field}.percent"), "must be 0 to 100"));
        }
        if let Some(m) = &self.message {
            check_text(&format!("{field}.message"), m, MAX_PROGRESS_MESSAGE_LEN)?;
        }
        Ok(())
    }
}

/// When a dependent task may run, judged on its parent's outcome.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// One of `success`, `failure`, `completion`.
    Outcome(OutcomeCondition),
    /// A CEL expression over the parent's `status`, `result` and `error`.
    Expr {
        /// The expression.
        expr: String,
    },
}

impl Condition {
    /// The parent succeeded: the condition when none is given.
    pub fn success() -> Self {
        Condition::Outcome(OutcomeCondition::Success)
    }
}

/// The named dependency conditions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeCondition {
    /// The parent succeeded.
    Success,
    /// The parent ended unsuccessfully.
    Failure,
    /// The parent ended, whatever the outcome.
    Completion,
}

/// One edge of a task's dependencies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The parent task.
    pub task: Uuid,
    /// The condition on the parent's outcome; `success` when left out.
    #[serde(default = "Condition::success")]
    pub on: Condition,
}

/// A worker's hold on a running task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The fencing token: heartbeats and completions must present it.
    pub token: String,
    /// When the lease runs out unless a heartbeat extends it.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Millis,
    /// The server's HMAC-SHA256 of the task's id and digest, when the server
    /// has a lease key: a worker holding the key checks it before it runs
    /// the task (see [`crate::integrity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<LeaseSignature>,
}

/// A lease's signature: which key made it, and the HMAC.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSignature {
    /// The key's id: the first 8 bytes of the SHA-256 of its secret, in hex.
    pub key: String,
    /// The HMAC-SHA256, in hex, of `quern-lease-v1`, a zero byte, the
    /// task id's 16 bytes and the task's digest.
    pub hmac: String,
}

/// A task's labels: each value a string, a number or a boolean (checked at
/// submit), compared by type in listings' filters.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// A task, as every API answer shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// UUIDv7, so ids sort by creation time.
    pub id: Uuid,
    /// The task type, which selects the handler.
    pub name: String,
    /// The queue it waits in.
    pub queue: String,
    /// The JSON input the handler receives.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub input: Box<RawValue>,
    /// Where it stands.
    pub status: Status,
    /// Higher runs first.
    pub priority: i32,
    /// Labels (strings, numbers or booleans), filterable in listings.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    /// How many attempts have started.
    pub attempt: u32,
    /// How many attempts it may have in all.
    pub max_attempts: u32,
    /// The longest one attempt may run.
    pub timeout_ms: Option<u64>,
    /// When a failed attempt is tried again.
    pub retry: RetryPolicy,
    /// When it becomes (or became) runnable.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub run_at: Millis,
    /// The latest progress report of the running attempt.
    pub progress: Option<Progress>,
    /// The handler's result, once succeeded.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub result: Option<Box<RawValue>>,
    /// The latest attempt's error.
    pub error: Option<TaskError>,
    /// When it was submitted.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    /// When its latest attempt started.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<Millis>,
    /// When it reached its terminal status.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<Millis>,
    /// When anything about it last changed.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
    /// The worker running (or that last ran) it.
    pub worker: Option<String>,
    /// The workflow it belongs to.
    pub workflow: Option<Uuid>,
    /// Its key in that workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its parents and the conditions on them.
    pub depends_on: Vec<Dependency>,
    /// The key that makes its submission idempotent.
    pub idempotency_key: Option<String>,
    /// `sha256:` and the hex digest of its canonical spec.
    pub digest: String,
    /// A cancel was requested while it was running.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The lease, present only in answers to a lease request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// In answers to a lease request, the outcome of each parent, by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<BTreeMap<String, ParentOutcome>>,
    /// Why a queued task is not running, when the server can tell: no
    /// live worker takes its name from its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// The W3C trace context the task continues, when its submit gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A parent's outcome, as a leased child sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParentOutcome {
    /// The parent's task id.
    pub task: Uuid,
    /// How it ended.
    pub status: Status,
    /// Its result, if it succeeded.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub result: Option<Box<RawValue>>,
    /// Its error, if it did not.
    pub error: Option<TaskError>,
}

/// One move in a task's audit trail.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// The status before; `null` for the submission itself.
    pub from: Option<Status>,
    /// The status after.
    pub to: Status,
    /// The attempt the move belongs to.
    pub attempt: u32,
    /// The worker involved, if any.
    pub worker: Option<String>,
    /// Who or what made the move: `client`, `worker`, `server`.
    pub actor: String,
    /// Why, for a person.
    pub note: Option<String>,
    /// Who made a client's move (a cancel, a retry, an approval): the
    /// request's token, or for an approval without one the approver named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What a worker reports at the end of an attempt. Each maps to exactly one
/// transition (see `Status`): success ends the task; failure retries it while
/// attempts are left and `retry` holds, else ends it `failed`.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The handler returned `result`.
    Succeeded {
        /// The JSON result.
        result: Box<RawValue>,
    },
    /// The handler failed.
    Failed {
        /// Why.
        error: TaskError,
        /// May it be tried again (attempts permitting)?
        retry: bool,
    },
    /// The worker gives the task back unfinished (it is shutting down): the
    /// task is queued again at once, and the attempt does not count.
    Released,
}
