//! Quern's domain: what a task is, how its status may move, how it retries,
//! and what a valid submission looks like.
//!
//! Everything here is pure: no I/O and no async runtime. Time enters as a
//! `now` argument (milliseconds since the Unix epoch) or through [`Clock`], and
//! randomness (retry jitter) as an argument, so every decision is a function
//! that unit and property tests can pin down.
//!
//! # Layout
//! - [`status`]: the status set and the transition table every backend obeys.
//! - [`retry`]: retry policies and the backoff they produce.
//! - [`spec`]: a submission as clients send it, its validation and defaults.
//! - [`task`]: the task as the API shows it, with its errors and progress.
//! - [`time`]: the clock seam and RFC 3339 rendering of timestamps.
//! - [`workflow`]: graph checks (keys, edges, cycles) and dependency readiness.
//! - [`schedule`]: cron, interval and one-time schedules, and when each slot is due.
//! - [`event`]: events as published and logged, and the filters subscribers read through.
//! - [`auth`]: roles, the permissions they grant, and queue scopes.
//! - [`integrity`]: lease signatures, which let a worker refuse a task changed on the way.
//! - [`check`]: the limits every free-form field shares (text length, JSON depth).
//! - [`error`]: the validation error every layer above maps to a 4xx.

pub mod auth;
pub mod check;
pub mod error;
pub mod event;
pub mod integrity;
pub mod retry;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod task;
pub mod time;
pub mod workflow;

pub use error::{Rule, ValidationError, ValidationResult};
pub use event::{Event, EventFilter, EventSpec, NewEvent};
pub use retry::{Backoff, RetryPolicy, jitter_unit};
pub use schedule::{Overlap, Schedule, ScheduleSpec, Timing};
pub use spec::{ExecutionDefaults, NewTask, TaskSpec};
pub use status::Status;
pub use task::{
    Condition, Dependency, ErrorKind, HistoryEntry, Lease, LeaseSignature, Metadata, Outcome, OutcomeCondition,
    ParentOutcome, Progress, Task, TaskError,
};
pub use time::{Clock, ManualClock, Millis, SystemClock};
