//! What an engine operation can fail with, and the one table that gives
//! each failure its stable code, message and details: every door (HTTP
//! today; MCP and gRPC next) answers a failure with the same code and
//! details, and only picks its own status for the code.
//!
//! Invariant: internals (SQL, paths) never leave the engine in a
//! [`Failure`]: backend failures are logged here and become `internal`.

use crate::registry::RegisterError;
use quern_core::{Rule, ValidationError};
use quern_store::StoreError;
use serde_json::{Value, json};

/// A schedule that cannot be stored: the rule broken, and in a file, the entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{error}", entry.as_ref().map(|e| format!("{e}: ")).unwrap_or_default())]
pub struct ScheduleError {
    /// The rule broken.
    pub error: ValidationError,
    /// `schedules[2] (daily_report)`, in a file.
    pub entry: Option<String>,
}

/// What an engine call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input breaks a rule; `index` is its position in a batch.
    #[error("{error}")]
    Invalid {
        /// The rule broken.
        error: ValidationError,
        /// The position in a batch.
        index: Option<usize>,
    },
    /// A field of a request is out of its bounds.
    #[error("{field}: {message}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is allowed.
        message: String,
    },
    /// The input does not match its task type's schema.
    #[error("input does not match the schema of task type {name}: {message}")]
    InputRejected {
        /// The task type.
        name: String,
        /// What does not match.
        message: String,
        /// The position in a batch.
        index: Option<usize>,
    },
    /// A workflow whose graph cannot run.
    #[error("{0}")]
    Workflow(ValidationError),
    /// A schedule that cannot be stored.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A worker registration that cannot be accepted.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Others kept changing what the request had to change; trying again
    /// may succeed.
    #[error("{0}")]
    Contended(String),
    /// No such thing (a token, by name).
    #[error("{0}")]
    NotFound(String),
    /// No valid token: none where one is required, or one that is unknown,
    /// expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The token does not allow the operation (its role or its queues).
    #[error("{0}")]
    Forbidden(String),
    /// The token sent more requests than its rate allows.
    #[error("{message}")]
    RateLimited {
        /// Which limit.
        message: String,
        /// When one more request is allowed.
        retry_after_ms: u64,
    },
    /// A webhook target it may not reach (an internal address, credentials
    /// in the URL).
    #[error("url: {0}")]
    Target(String),
    /// A name only the engine writes (`task.*` events, `schedule:` keys).
    #[error("{field}: {message}")]
    Reserved {
        /// The field.
        field: &'static str,
        /// What is reserved.
        message: String,
    },
}

/// An engine call's result.
pub type Result<T> = std::result::Result<T, EngineError>;

impl From<ValidationError> for EngineError {
    fn from(error: ValidationError) -> Self {
        EngineError::Invalid { error, index: None }
    }
}

/// The stable codes of the failures an operation can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The request does not fit the contract.
    InvalidRequest,
    /// The input does not match its task type's schema.
    InvalidInput,
    /// A workflow whose graph cannot run.
    InvalidWorkflow,
    /// A schedule that cannot run.
    InvalidSchedule,
    /// JSON nested deeper than the limit.
    JsonTooDeep,
    /// Others kept changing the same thing; try again.
    Conflict,
    /// The events after the asked offset were deleted by retention.
    OffsetExpired,
    /// No such task, workflow, schedule or webhook.
    NotFound,
    /// The task's status does not allow the operation.
    InvalidTransition,
    /// An idempotency key was reused with another spec.
    IdempotencyConflict,
    /// The server is stopping.
    ShuttingDown,
    /// No valid token.
    Unauthorized,
    /// The token does not allow it.
    Forbidden,
    /// Over the token's request rate.
    RateLimited,
    /// A name only the engine writes.
    ReservedName,
    /// A webhook target that may not be reached.
    InvalidWebhook,
    /// Something broke on our side.
    Internal,
}

impl Code {
    /// The code as every door spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidInput => "invalid_input",
            Code::InvalidWorkflow => "invalid_workflow",
            Code::InvalidSchedule => "invalid_schedule",
            Code::JsonTooDeep => "json_too_deep",
            Code::Conflict => "conflict",
            Code::OffsetExpired => "offset_expired",
            Code::NotFound => "not_found",
            Code::InvalidTransition => "invalid_transition",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::ShuttingDown => "shutting_down",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::RateLimited => "rate_limited",
            Code::ReservedName => "reserved_name",
            Code::InvalidWebhook => "invalid_webhook",
            Code::Internal => "internal",
        }
    }

    /// Every code, for the doors' tests.
    pub const ALL: [Code; 17] = [
        Code::InvalidRequest,
        Code::InvalidInput,
        Code::InvalidWorkflow,
        Code::InvalidSchedule,
        Code::JsonTooDeep,
        Code::Conflict,
        Code::OffsetExpired,
        Code::NotFound,
        Code::InvalidTransition,
        Code::IdempotencyConflict,
        Code::ShuttingDown,
        Code::Unauthorized,
        Code::Forbidden,
        Code::RateLimited,
        Code::ReservedName,
        Code::InvalidWebhook,
        Code::Internal,
    ];
}

/// A failure as every door tells it: a code, a message for people, and
/// details for programs (the field, the index in a batch, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The stable code.
    pub code: Code,
    /// What went wrong.
    pub message: String,
    /// Where, and what else a program needs to act on it.
    pub details: Value,
}

impl Failure {
    /// A failure with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: json!({}) }
    }

    /// An `invalid_request` naming a field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: Code::InvalidRequest,
            message: format!("{field}: {}", message.into()),
            details: json!({"field": field}),
        }
    }

    /// The answer to a broken rule: `invalid_request`, or `json_too_deep`.
    pub fn rule(error: &ValidationError) -> Self {
        Self::broken(error.rule, error.to_string(), json!({"field": error.field}))
    }

    fn broken(rule: Rule, message: String, details: Value) -> Self {
        let code = match rule {
            Rule::Broken => Code::InvalidRequest,
            Rule::TooDeep => Code::JsonTooDeep,
        };
        Self { code, message, details }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { error, index } => {
                let mut details = json!({"field": error.field});
                let message = match index {
                    Some(i) => {
                        details["index"] = json!(i);
                        format!("tasks[{i}].{error}")
                    }
                    None => error.to_string(),
                };
                Failure::broken(error.rule, message, details)
            }
            EngineError::Field { field, message } => Failure::invalid_field(field, message),
            EngineError::InputRejected { name, message, index } => {
                let mut details = json!({"name": name});
                if let Some(i) = index {
                    details["index"] = json!(i);
                }
                Failure {
                    code: Code::InvalidInput,
                    message: format!("input does not match the schema of {name}: {message}"),
                    details,
                }
            }
            EngineError::Register(e) if e.conflict => Failure {
                code: Code::Conflict,
                message: format!("{}: {}", e.field, e.message),
                details: json!({"field": e.field}),
            },
            EngineError::Register(e) => Failure::invalid_field(&e.field, e.message),
            EngineError::Workflow(error) => Failure {
                code: Code::InvalidWorkflow,
                details: json!({"field": error.field}),
                message: error.to_string(),
            },
            EngineError::Schedule(e) => {
                let mut details = json!({"field": e.error.field});
                if let Some(entry) = &e.entry {
                    details["entry"] = json!(entry);
                }
                Failure { code: Code::InvalidSchedule, message: e.to_string(), details }
            }
            EngineError::Store(s) => s.into(),
            EngineError::ShuttingDown => {
                Failure::new(Code::ShuttingDown, "the server is shutting down; try another or retry later")
            }
            EngineError::Contended(message) => Failure::new(Code::Conflict, message),
            EngineError::NotFound(message) => Failure::new(Code::NotFound, message),
            EngineError::Target(message) => Failure {
                code: Code::InvalidWebhook,
                message: format!("url: {message}"),
                details: json!({"field": "url"}),
            },
            EngineError::Unauthorized(message) => Failure::new(Code::Unauthorized, message),
            EngineError::Forbidden(message) => Failure::new(Code::Forbidden, message),
            EngineError::RateLimited { message, retry_after_ms } => Failure {
                code: Code::RateLimited,
                message: format!("{message}; try again in {retry_after_ms} ms"),
                details: json!({"retry_after_ms": retry_after_ms}),
            },
            EngineError::Reserved { field, message } => Failure {
                code: Code::ReservedName,
                message: format!("{field}: {message}"),
                details: json!({"field": field}),
            },
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Failure::new(Code::NotFound, format!("no task with id {id}")),
            StoreError::WorkflowNotFound(id) => Failure::new(Code::NotFound, format!("no workflow with id {id}")),
            StoreError::InvalidTransition { .. } => Failure::new(Code::InvalidTransition, e.to_string()),
            StoreError::IdempotencyConflict { index, ref key, existing } => Failure {
                code: Code::IdempotencyConflict,
                details: json!({"index": index, "idempotency_key": key, "existing": existing}),
                message: e.to_string(),
            },
            StoreError::ScheduleNotFound(_) | StoreError::WebhookNotFound(_) => {
                Failure::new(Code::NotFound, e.to_string())
            }
            StoreError::TokenExists(_) => Failure::new(Code::Conflict, e.to_string()),
            StoreError::ScheduleConflict(_) => Failure::new(Code::Conflict, format!("{e}, again and again; try again")),
            StoreError::OffsetExpired { earliest, .. } => Failure {
                code: Code::OffsetExpired,
                message: format!("{e}; read from after={} to take what is kept", earliest.saturating_sub(1)),
                details: json!({"earliest": earliest}),
            },
            StoreError::InvalidCursor => Failure::invalid_field("cursor", "not a cursor this server handed out"),
            StoreError::Backend(_) | StoreError::Locked { .. } => {
                let cause = e.to_string();
                tracing::error!(%cause, "store failure");
                Failure::new(Code::Internal, "internal error; the server log has the cause")
            }
            StoreError::Closed => {
                Failure::new(Code::ShuttingDown, "the server is shutting down; try another or retry later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contended_request_is_a_conflict_to_try_again() {
        let f: Failure = EngineError::Contended("consumer group g: try again".into()).into();
        assert_eq!(f.code, Code::Conflict);
    }

    #[test]
    fn a_backend_failure_tells_nothing_of_the_backend() {
        let f: Failure = EngineError::Store(StoreError::Backend("SELECT * FROM secret_table".into())).into();
        assert_eq!(f.code, Code::Internal);
        assert!(!f.message.contains("secret_table"));
    }
}
