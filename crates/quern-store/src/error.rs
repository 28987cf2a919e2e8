//! What a store operation answers when it does not succeed.
//!
//! Invariant: an operation that answers an error changed nothing: a refusal
//! is decided before the operation's first write, and a backend failure
//! rolls back the whole transaction it happened in.

use quern_core::Status;
use uuid::Uuid;

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
    /// A token already has this name (tokens keep their names for ever).
    #[error("a token named {0:?} exists (revoked tokens keep their names)")]
    TokenExists(String),
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
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another quern process ({holder}): one server owns a data \
         directory; stop that one, or give this one a directory of its own (--data)"
    )]
    Locked {
        /// The directory.
        dir: String,
        /// Who holds it: its pid, and the address it serves when it said.
        holder: String,
    },
    /// The backend failed (disk, database); nothing was changed.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// A store operation's result.
pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn backend(e: impl std::error::Error) -> StoreError {
    // The whole chain: PostgreSQL's client says only `db error` and keeps
    // the server's message in its source.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = inner.source();
    }
    StoreError::Backend(message)
}
