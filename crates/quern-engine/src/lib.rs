//! Quern's engine: every operation of every front door, over one store.
//!
//! The doors (the HTTP API in `quern-server`; MCP, gRPC and the dashboard
//! to come) are thin adapters: they parse a request into the engine's typed
//! request, name the [`Caller`], call one operation, and render its typed
//! answer or its [`Failure`]. So every door answers alike, with the same
//! limits and the same error codes.
//!
//! Invariants: only the engine changes state, and only through the store;
//! nothing reaches the store that [`quern_core`] has not validated; no time
//! is read except through the engine's clock; every operation takes the
//! caller.
//!
//! # Layout
//! - [`Engine`] (`engine.rs`): the operations on tasks, the worker
//!   protocol, queues, and the timers and sweepers; `engine/` the rest by
//!   area (events, consumer groups, schedules, webhooks) and the supervisor
//!   of the background loops.
//! - [`registry`]: workers and the task types they serve.
//! - [`workflow`]: workflow graphs into tasks, their renderings.
//! - [`config`]: what the server can be told, and its defaults.
//! - [`Caller`], [`EngineError`] and [`Failure`]: who calls, what fails, and
//!   the stable code of each failure.
//! - `open`: the store an engine runs on.
//! - [`types`]: the value types of the operations that the store defines.

mod caller;
pub mod config;
mod engine;
mod error;
mod open;
pub mod registry;
pub mod workflow;

pub use caller::{Caller, Principal};
pub use config::Config;
pub use engine::supervise;
pub use engine::{
    ApplyReport, Engine, GroupRead, Observed, PutOutcome, RESERVED_KEY_PREFIX, SIGNATURE_HEADER, ScheduleView,
    WebhookSpec, permission_of, signature,
};
pub use error::{Code, EngineError, Failure, Result, ScheduleError};
pub use open::{OpenError, Storage};

/// The value types the engine's operations take and answer that are the
/// store's own too (queries, pages, records): passed through unchanged.
pub mod types {
    pub use quern_store::stats::{Histogram, PoolStats, StoreStats};
    pub use quern_store::tally::{BUCKETS_MS, Durations, MOVE_KINDS, OTHER, QueueTally, SUBMITTED, Tally};
    pub use quern_store::{
        Approval, Delivery, EventPage, EventQuery, ListQuery, QueueInfo, Submitted, TaskPage, WebhookRecord,
        WorkflowPage, WorkflowQuery, WorkflowRecord,
    };
}
