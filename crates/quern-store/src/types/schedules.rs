//! What the schedule operations take and answer: a schedule as stored, the
//! changes and fires written against it, and the ones due.
//!
//! Invariant: every change names the version it replaces and every due fire
//! the `next_fire_at` it consumes, so two writers (two requests, two server
//! nodes) never both act on one state.

use quern_core::{Millis, NewTask, Task};
use uuid::Uuid;

/// A schedule as stored. The engine plans every change from a record and
/// writes it back fenced by `version`, so that two writers (two requests,
/// two server nodes) never both act on one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its unique name.
    pub name: String,
    /// The spec, canonical JSON (see [`quern_core::Schedule::spec_json`]).
    pub spec: String,
    /// The timing alone, canonical: when it changes, slots restart.
    pub timing: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Where an interval counts from.
    pub anchor: Millis,
    /// The next slot; `None` when none is left (a one-time schedule that ran).
    pub next_fire_at: Option<Millis>,
    /// When it last created a task.
    pub last_fired_at: Option<Millis>,
    /// The last task it created.
    pub last_task: Option<Uuid>,
    /// Raised by every write; a write names the version it replaces.
    pub version: i64,
    /// When it was first stored.
    pub created_at: Millis,
    /// When its spec or state last changed.
    pub updated_at: Millis,
}

/// One change of [`Store::write_schedules`](crate::Store::write_schedules).
#[derive(Debug, Clone)]
pub enum ScheduleWrite {
    /// Stores `record`, replacing version `expected` (`None`: the name must
    /// be free). The stored version is `expected + 1` (or 1).
    Put {
        /// The new state.
        record: ScheduleRecord,
        /// The version replaced.
        expected: Option<i64>,
    },
    /// Deletes the schedule at version `expected`.
    Delete {
        /// Its name.
        name: String,
        /// The version deleted.
        expected: i64,
    },
}

/// One slot (or manual trigger) of [`Store::fire_schedules`](crate::Store::fire_schedules).
#[derive(Debug, Clone)]
pub struct Fire {
    /// The schedule.
    pub name: String,
    /// For a due slot: the `next_fire_at` this fire consumes (the
    /// compare-and-set) and the one it leaves. `None` for a manual trigger,
    /// which leaves `next_fire_at` alone.
    pub advance: Option<(Millis, Option<Millis>)>,
    /// Let the slot pass without a task while the last run is unfinished.
    pub skip_if_running: bool,
    /// The task to create; its idempotency key names schedule and slot.
    pub task: NewTask,
}

/// What one [`Fire`] did.
#[derive(Debug, Clone)]
pub enum FireOutcome {
    /// The task was created.
    Fired(Box<Task>),
    /// The last run is unfinished and the schedule skips overlaps: the slot
    /// passed without a task.
    Skipped,
    /// A task with this slot's key exists already: the slot had fired.
    Duplicate,
    /// The schedule is gone, disabled, or its `next_fire_at` is no longer
    /// the one consumed: someone else fired or changed it. Nothing changed.
    Stale,
}

/// Due schedules and when the next one falls due.
#[derive(Debug, Clone, Default)]
pub struct DueSchedules {
    /// Enabled schedules whose `next_fire_at` has come, earliest first.
    pub due: Vec<ScheduleRecord>,
    /// The earliest `next_fire_at` of the rest.
    pub next_due: Option<Millis>,
}
