//! The request and answer types of Quern's HTTP contract (`docs/api.md`),
//! defined once: the server reads requests and writes answers with them,
//! the Rust client and the bench write requests and read answers with them.
//!
//! Invariant: a type here serializes to exactly the JSON the contract
//! names; the server's own tests and the client's both go through it, so
//! the two cannot drift apart.
//!
//! # Layout
//! - [`tasks`], [`workflows`], [`schedules`], [`events`], [`webhooks`]:
//!   each area's requests, answers and limits.
//! - [`worker`]: the worker protocol (register, lease, heartbeat, complete)
//!   and the registry's views.
//! - [`ops`]: health, readiness, queues, and the error body.
//! - [`tokens`]: API tokens; [`audit`]: the audit log.
//!
//! With the `openapi` feature every type also describes its JSON Schema,
//! from which the server builds `/openapi.json`.

pub mod audit;
pub mod events;
pub mod ops;
pub mod schedules;
pub mod tasks;
pub mod tokens;
pub mod webhooks;
pub mod worker;
pub mod workflows;

pub use worker::{
    CompleteAnswer, CompleteRequest, Completed, Completion, HeartbeatAnswer, HeartbeatRequest, Heartbeats, LeaseBeat,
    LeaseRequest, Leased, OutcomeKind, Refusal, RegisterRequest, Registered, StopNotice, StopReason, Stops,
    StopsRequest, TaskDefaults, TaskTypeDecl, TaskTypeView, TaskTypes, WorkerView, Workers,
};
