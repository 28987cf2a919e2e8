//! What leasing takes and answers: a lease, the heartbeats that extend it,
//! and the completions that end its attempt.
//!
//! Invariant: a heartbeat or completion names its lease by token, and its
//! answer says `ok: false` exactly when that token is no longer the task's
//! (and then nothing changed).

use quern_core::{Millis, Outcome, Progress};
use uuid::Uuid;

/// Parameters of [`Store::lease`](crate::Store::lease).
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

/// Parameters of [`Store::heartbeat`](crate::Store::heartbeat).
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

/// Parameters of [`Store::complete`](crate::Store::complete).
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
