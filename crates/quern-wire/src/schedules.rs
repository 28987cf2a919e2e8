//! Schedules: how the API shows one, and what an apply did.

use quern_core::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The most runs one answer lists.
pub const MAX_RUNS: usize = 1_000;

/// A schedule as the API shows it: its spec as written, its state, and its
/// next fire time in UTC and in its own time zone.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The spec as it was written (`name`, `cron`/`every`/`at`, `timezone`,
    /// `task`, `overlap`, `description`): kept as stored, so that a
    /// schedule written by an older build still shows.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: Map<String, Value>,
    /// Whether it fires.
    pub enabled: bool,
    /// When it fires next, in UTC.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_fire_at: Option<Millis>,
    /// The same instant in the schedule's time zone.
    pub next_fire_local: Option<String>,
    /// When it last fired.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_fired_at: Option<Millis>,
    /// The task it last made.
    pub last_task: Option<Uuid>,
    /// When it was first stored.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    /// When it was last changed.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
    /// In the answer to a `PUT`: `created`, `updated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `GET /v1/schedules`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleView>,
}

/// What an apply did (or, dry, would do), by schedule name.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Nothing was changed: this is what would be done.
    #[serde(default)]
    pub dry_run: bool,
    /// New schedules.
    pub created: Vec<String>,
    /// Changed ones.
    pub updated: Vec<String>,
    /// Deleted (with `prune`): stored, and not in the file.
    pub deleted: Vec<String>,
    /// In the file and stored alike.
    pub unchanged: Vec<String>,
}
