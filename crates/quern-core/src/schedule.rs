//! Schedules: tasks that recur (a cron pattern, a fixed interval) or run once
//! at a given time, and the pure rules that say when each slot is due.
//!
//! Invariant: a schedule's slots are a fixed sequence of instants, strictly
//! increasing, decided only by its timing and its anchor (for intervals), so
//! every node and every restart computes the same slots — which is what lets
//! "schedule + slot" name one task that is created once.
//!
//! Daylight saving follows Vixie cron (through croner): in a spring-forward
//! gap, a fixed-time pattern (`30 2 * * *`) runs once at the first instant
//! after the gap (03:00 that day) and a wildcard or step pattern skips the
//! missing times; in a fall-back overlap, a fixed-time pattern runs once, at
//! the first occurrence, and a wildcard or step pattern runs in both passes.

use crate::error::{ValidationError, ValidationResult};
use crate::spec::{ExecutionDefaults, TaskSpec};
use crate::time::Millis;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest schedule name, in bytes (the slot key must fit an
/// idempotency key).
pub const MAX_SCHEDULE_NAME_LEN: usize = 128;
/// The shortest interval: one second.
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// The longest interval: 366 days.
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3_600_000;
/// The longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 2_000;

/// What a due slot does while the schedule's previous run is unfinished.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Create the task anyway.
    #[default]
    Allow,
    /// Let the slot pass without a task.
    Skip,
}

/// An interval as written: a human string ("5 minutes", "30s") or a number
/// of seconds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Every {
    /// "30 seconds", "5 minutes", "1h 30m".
    Text(String),
    /// Seconds.
    Seconds(f64),
}

/// A schedule as clients send it: a `PUT` body or an entry of a schedules
/// file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique; optional in a `PUT` body, whose path names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A cron pattern: 5 fields, or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Every>,
    /// One time: RFC 3339, or a local time in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The IANA time zone `cron` and a local `at` are read in; UTC if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The task each slot creates.
    pub task: TaskSpec,
    /// Disabled schedules create nothing.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// What a slot does while the previous run is unfinished.
    #[serde(default)]
    pub overlap: Overlap,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// When a schedule's slots fall.
#[derive(Debug, Clone)]
pub enum Timing {
    /// A cron pattern read in a time zone.
    Cron {
        /// The pattern as given.
        pattern: String,
        /// The parsed pattern.
        cron: Box<Cron>,
        /// Where its wall clock hangs.
        zone: Tz,
    },
    /// Every `ms` milliseconds after the schedule's anchor.
    Every {
        /// The interval.
        ms: u64,
    },
    /// Once.
    At {
        /// The instant.
        at: Millis,
    },
}

impl Timing {
    /// The first slot strictly after `after`; `anchor` is where an interval
    /// counts from. `None` when no slot is left.
    pub fn next_after(&self, after: Millis, anchor: Millis) -> Option<Millis> {
        match self {
            Timing::Cron { cron, zone, .. } => {
                let start = zone.timestamp_millis_opt(floor_second(after)).single()?;
                cron.find_next_occurrence(&start, false).ok().map(|t| t.timestamp_millis())
            }
            Timing::Every { ms } => {
                let ms = i64::try_from(*ms).ok()?;
                let k = (after - anchor).div_euclid(ms).saturating_add(1).max(1);
                anchor.checked_add(k.checked_mul(ms)?)
            }
            Timing::At { at } => (*at > after).then_some(*at),
        }
    }

    /// The latest slot at or before `now`. Catch-up fires this one slot for
    /// every slot missed (the `once` policy).
    pub fn latest_at_or_before(&self, now: Millis, anchor: Millis) -> Option<Millis> {
        match self {
            Timing::Cron { cron, zone, .. } => {
                let start = zone.timestamp_millis_opt(floor_second(now)).single()?;
                cron.find_previous_occurrence(&start, true).ok().map(|t| t.timestamp_millis())
            }
            Timing::Every { ms } => {
                let ms = i64::try_from(*ms).ok()?;
                let k = (now - anchor).div_euclid(ms);
                (k >= 1).then(|| anchor.checked_add(k.checked_mul(ms)?)).flatten()
            }
            Timing::At { at } => (*at <= now).then_some(*at),
        }
    }

    /// The first slot of a schedule whose timing starts at `now` (created,
    /// or its timing changed): the next cron match, one interval from now,
    /// or the one time — even a time already passed, which then fires at
    /// once, as a missed slot does.
    pub fn first(&self, now: Millis) -> Option<Millis> {
        match self {
            Timing::At { at } => Some(*at),
            _ => self.next_after(now, now),
        }
    }
}

fn floor_second(ms: Millis) -> Millis {
    ms.div_euclid(1000) * 1000
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// When its slots fall.
    pub timing: Timing,
    /// The zone its times are shown in.
    pub zone: Tz,
    /// The task template.
    pub task: TaskSpec,
    /// Whether it fires.
    pub enabled: bool,
    /// What a slot does while the previous run is unfinished.
    pub overlap: Overlap,
    /// The spec as stored and compared: canonical JSON, without `enabled`
    /// (which is state the API can flip).
    pub spec_json: String,
    /// The timing alone, canonical: when it changes, the slots restart.
    pub timing_key: String,
}

impl Schedule {
    /// The task one slot creates: the template, with the schedule's name and
    /// the slot in its metadata and an idempotency key of schedule + slot.
    pub fn task_for(&self, key: String, slot: Millis) -> TaskSpec {
        let mut task = self.task.clone();
        task.metadata.insert("schedule".into(), self.name.clone().into());
        task.metadata.insert("schedule.slot".into(), crate::time::format_rfc3339(slot).into());
        task.idempotency_key = Some(key);
        task
    }

    /// The idempotency key of slot `slot`; keys of one schedule sort by slot.
    pub fn slot_key(&self, slot: Millis) -> String {
        format!("{}{slot:015}", run_key_prefix(&self.name))
    }

    /// The idempotency key of a manual trigger at `now`.
    pub fn trigger_key(&self, now: Millis) -> String {
        format!("{}{now:015}~m{}", run_key_prefix(&self.name), Uuid::new_v4().simple())
    }
}

/// Every run of schedule `name` has an idempotency key starting with this.
pub fn run_key_prefix(name: &str) -> String {
    format!("schedule:{name}@")
}

impl ScheduleSpec {
    /// Checks every rule; `name` is the name from the request path, which a
    /// name in the body must match. `defaults` and `now` check the template
    /// as a submission would be checked.
    pub fn validate(
        mut self,
        name: Option<&str>,
        defaults: &ExecutionDefaults,
        now: Millis,
    ) -> ValidationResult<Schedule> {
        let name = match (name, self.name.take()) {
            (Some(path), Some(body)) if path != body => {
                return Err(ValidationError::new("name", format!("the body names {body:?}, the path {path:?}")));
            }
            (Some(n), _) => n.to_owned(),
            (None, Some(n)) => n,
            (None, None) => return Err(ValidationError::new("name", "is required")),
        };
        check_schedule_name(&name)?;
        let zone = match &self.timezone {
            None => Tz::UTC,
            Some(z) => z.parse::<Tz>().map_err(|_| {
                ValidationError::new(
                    "timezone",
                    format!("unknown time zone {z:?}; use an IANA name such as Europe/Berlin or America/New_York"),
                )
            })?,
        };
        let timing = match (&self.cron, &self.every, &self.at) {
            (Some(pattern), None, None) => parse_cron(pattern, zone, now)?,
            (None, Some(every), None) => Timing::Every { ms: parse_every(every)? },
            (None, None, Some(at)) => Timing::At { at: parse_at(at, zone)? },
            (None, None, None) => return Err(ValidationError::new("cron", "give one of cron, every or at")),
            _ => {
                let given: Vec<&str> =
                    [("cron", self.cron.is_some()), ("every", self.every.is_some()), ("at", self.at.is_some())]
                        .into_iter()
                        .filter_map(|(f, set)| set.then_some(f))
                        .collect();
                return Err(ValidationError::new(
                    given[1],
                    format!("give only one of cron, every or at (got {})", given.join(" and ")),
                ));
            }
        };
        if let Some(d) = &self.description {
            crate::check::check_text("description", d, MAX_DESCRIPTION_LEN)?;
        }
        check_template(&self.task, defaults, now)?;
        let timing_key = serde_json::json!({
            "cron": self.cron, "every": match &timing { Timing::Every { ms } => Some(*ms), _ => None },
            "at": match &timing { Timing::At { at } => Some(*at), _ => None }, "timezone": zone.name(),
        })
        .to_string();
        let enabled = self.enabled;
        self.enabled = true;
        self.name = Some(name.clone());
        self.timezone = Some(zone.name().to_owned());
        let spec_json = serde_json::to_value(&self)
            .map(|v| v.to_string())
            .map_err(|e| ValidationError::new("task", e.to_string()))?;
        Ok(Schedule { name, timing, zone, task: self.task, enabled, overlap: self.overlap, spec_json, timing_key })
    }
}

/// Checks a schedule name: the characters of a task name, at most
/// [`MAX_SCHEDULE_NAME_LEN`] bytes.
pub fn check_schedule_name(name: &str) -> ValidationResult<()> {
    crate::spec::check_identifier("name", name, MAX_SCHEDULE_NAME_LEN)
}

fn check_template(task: &TaskSpec, defaults: &ExecutionDefaults, now: Millis) -> ValidationResult<()> {
    if task.idempotency_key.is_some() {
        return Err(ValidationError::new("task.idempotency_key", "is set by the schedule (schedule + slot)"));
    }
    if task.run_at.is_some() {
        return Err(ValidationError::new(
            "task.run_at",
            "a scheduled task runs at its slot; use delay_ms to run later",
        ));
    }
    task.clone()
        .validate(defaults, Uuid::nil(), now)
        .map(|_| ())
        .map_err(|e| ValidationError::new(format!("task.{}", e.field), e.message))
}

fn parse_cron(pattern: &str, zone: Tz, now: Millis) -> ValidationResult<Timing> {
    let fields = pattern.split_whitespace().count();
    if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(ValidationError::new(
            "cron",
            format!("{pattern:?} has {fields} fields; give 5 (minute hour day month weekday) or 6 (seconds first)"),
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|e| ValidationError::new("cron", format!("{pattern:?} is not a cron pattern: {e}")))?;
    let timing = Timing::Cron { pattern: pattern.to_owned(), cron: Box::new(cron), zone };
    if timing.next_after(now, now).is_none() {
        return Err(ValidationError::new("cron", format!("{pattern:?} never matches a future time")));
    }
    Ok(timing)
}

fn parse_every(every: &Every) -> ValidationResult<u64> {
    let ms = match every {
        Every::Seconds(s) if s.is_finite() && *s > 0.0 => (s * 1000.0).round(),
        Every::Seconds(s) => {
            return Err(ValidationError::new("every", format!("must be a positive interval (got {s})")));
        }
        Every::Text(text) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                ValidationError::new(
                    "every",
                    format!("{text:?} is not an interval such as \"30 seconds\", \"5 minutes\" or \"1 hour\": {e}"),
                )
            })?;
            d.as_millis() as f64
        }
    };
    let max = MAX_INTERVAL_MS as f64;
    if ms < MIN_INTERVAL_MS as f64 {
        return Err(ValidationError::new("every", "must be at least 1 second"));
    }
    if ms > max {
        return Err(ValidationError::new("every", "must be at most 366 days"));
    }
    // In range 1 s..=366 days, so the conversion is exact.
    Ok(ms as u64)
}

/// Local times `at` may be written in, read in the schedule's zone.
const LOCAL_FORMATS: [&str; 4] = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];

/// Reads `at`: a time Quern can render, 1970 to 9999 UTC, or an error.
fn parse_at(at: &str, zone: Tz) -> ValidationResult<Millis> {
    let ms = parse_at_any(at, zone)?;
    if !crate::time::in_range(ms) {
        return Err(ValidationError::new(
            "at",
            format!("{at:?} is outside the times Quern takes (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)"),
        ));
    }
    Ok(ms)
}

fn parse_at_any(at: &str, zone: Tz) -> ValidationResult<Millis> {
    let at = at.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(at) {
        return Ok(t.with_timezone(&Utc).timestamp_millis());
    }
    let naive = LOCAL_FORMATS.iter().find_map(|f| NaiveDateTime::parse_from_str(at, f).ok()).ok_or_else(|| {
        ValidationError::new(
            "at",
            format!("{at:?} is not a time such as 2026-12-24T18:00:00+01:00 or 2026-12-24 18:00 (in timezone)"),
        )
    })?;
    zone.from_local_datetime(&naive).earliest().map(|t| t.timestamp_millis()).ok_or_else(|| {
        ValidationError::new("at", format!("{at} does not exist in {} (a daylight-saving gap)", zone.name()))
    })
}

/// Renders `ms` in `zone`, with its offset (what the CLI shows).
pub fn format_in_zone(ms: Millis, zone: Tz) -> String {
    zone.timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| crate::time::format_rfc3339(ms), |t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
}

#[cfg(test)]
mod tests;
