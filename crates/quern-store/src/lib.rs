//! Where Quern keeps its tasks: the [`Store`] trait, the embedded SQLite
//! backend, and the signals a store raises for the engine.
//!
//! Invariants every backend keeps (the conformance suite in `tests/` pins
//! them): each operation is atomic; an operation that answers `Ok` is
//! durable at the backend's durability level; a status moves only along
//! [`quern_core::Status::can_move`] (every move of both backends passes
//! `segment::Move::check`, which refuses any other); a completion or heartbeat that does not
//! carry the task's current lease token changes nothing; every transition is
//! recorded in the task's history.
//!
//! # Layout
//! - [`Store`] (`store`) and the parameter and answer types of its
//!   operations, by domain (`types`: tasks, leases, workflows, schedules,
//!   events, workers).
//! - [`StoreError`] (`error`): what an operation answers when it does not
//!   succeed.
//! - [`Signals`] (`signals`): how a store tells the engine that tasks became
//!   ready, that a task ended, or that its timers changed; [`ready`]: the
//!   parked lease requests, woken as many as tasks became ready.
//! - [`sqlite`]: the embedded backend (one writer thread with group commit,
//!   reader connections, ready queue and leases in memory).
//! - [`postgres`]: the backend for several server nodes on one database
//!   (leases with `FOR UPDATE SKIP LOCKED`, wake-ups with LISTEN/NOTIFY).
//!   Where the two backends hold the same concern, their files share its
//!   name: `rows`, `reads`, `schema`, `webhooks`, and the operations on
//!   `tasks`, `workflows`, `schedules` and `events` (under `writer/` in
//!   SQLite, where the writer thread runs them).
//! - What both backends decide alike: `attempt` (how an attempt ends),
//!   `dependency` (judging a workflow edge), `history` (what a compact row
//!   tells) and `segment` (the event log's format); and what they store
//!   alike: `stored` (JSON and millisecond columns, a fresh task's view, a
//!   page's end).

mod attempt;
mod dependency;
mod error;
mod history;
pub mod postgres;
pub mod ready;
mod segment;
mod signals;
pub mod sqlite;
pub mod stats;
mod store;
mod stored;
pub mod tally;
mod types;

pub use error::{Result, StoreError};
pub use quern_core::HistoryEntry;
pub use signals::{Signals, Stop, StopReason};
pub use store::Store;
pub use types::audit::{AuditEntry, AuditQuery, AuditRecord};
pub use types::events::{Delivery, EventPage, EventQuery, GroupState, WebhookRecord};
pub use types::leases::{
    CompleteAnswer, CompleteParams, Completion, HeartbeatAnswer, HeartbeatLease, HeartbeatParams, LeaseParams,
};
pub use types::schedules::{DueSchedules, Fire, FireOutcome, ScheduleRecord, ScheduleWrite};
pub use types::tasks::{ListQuery, QueueInfo, Submitted, TaskPage, TickOutcome};
pub use types::tokens::TokenRecord;
pub use types::workers::{TaskTypeRecord, WorkerRecord};
pub use types::workflows::{Approval, NewWorkflow, WorkflowPage, WorkflowQuery, WorkflowRecord};
