//! Operations: health, readiness, queues; and the error body of every
//! non-2xx answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `GET /v1/health`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` when the store cannot be reached.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: i64,
    /// The store.
    pub store: StoreHealth,
    /// Every queue with its counts.
    pub queues: Vec<QueueView>,
    /// Workers heard from within the last minute.
    pub workers: LiveWorkers,
    /// What an operator should know of how the server runs (listening
    /// beyond loopback without tokens).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The store, as health shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Reachable.
    pub ok: bool,
}

/// Live workers, as health counts them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWorkers {
    /// Heard from within the last minute, by any node.
    pub live: usize,
}

/// A queue with its tasks counted by status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Tasks by status.
    pub counts: BTreeMap<String, u64>,
    /// Paused: no task is leased from it.
    pub paused: bool,
}

/// The answer to pausing or resuming a queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePaused {
    /// The queue.
    pub name: String,
    /// Paused now.
    pub paused: bool,
}

/// `GET /healthz`: the process answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`: the store answers and every background loop runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// Each background loop's state, by name.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub loops: Value,
}

/// The body of every non-2xx answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for people and for programs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code (`docs/errors.md` lists them all).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Where: the field, the index in a batch, and more by code.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}
