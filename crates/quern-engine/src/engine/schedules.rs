//! The engine's schedules: create, replace, enable and disable them, apply a
//! whole file, and fire their slots.
//!
//! Every change is planned from the stored record and written back fenced by
//! its version, so two requests (or two server nodes) never both act on one
//! state; a slot fires by the store's compare-and-set on `next_fire_at` in
//! the transaction that creates its task. Catch-up is `once`: slots missed
//! while no server ran fire as one task, for the latest of them.

use crate::caller::Caller;
use crate::engine::Engine;
use crate::error::{EngineError, Result, ScheduleError};
use quern_core::schedule::{Every, check_schedule_name};
use quern_core::{Millis, Overlap, Schedule, ScheduleSpec, Task, TaskSpec, ValidationError};
use quern_store::{Fire, FireOutcome, ScheduleRecord, ScheduleWrite, StoreError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

/// Schedules fired per transaction.
const FIRE_BATCH: usize = 1_000;
/// Plans retried when another writer changed a schedule meanwhile.
const MAX_PLAN_TRIES: usize = 8;
/// The longest the scheduler sleeps without looking again.
const MAX_SCHEDULER_SLEEP: Duration = Duration::from_secs(5);

/// A stored schedule with its checked spec.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    /// As stored.
    pub record: ScheduleRecord,
    /// Its spec, checked.
    pub schedule: Schedule,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new schedule.
    Created,
    /// A changed one.
    Updated,
    /// The same spec was stored already.
    Unchanged,
}

pub use quern_wire::schedules::ApplyReport;

fn invalid(error: ValidationError, entry: Option<String>) -> EngineError {
    EngineError::Schedule(ScheduleError { error, entry })
}

/// The next state of `existing` (or a new record) holding `s`; `None` when
/// nothing would change. A changed timing restarts the slots from `now`;
/// enabling resumes from the next slot after `now`, never with a burst of the
/// slots that passed while disabled.
fn plan_put(existing: Option<&ScheduleRecord>, s: &Schedule, now: Millis) -> Option<ScheduleWrite> {
    let Some(r) = existing else {
        let record = ScheduleRecord {
            name: s.name.clone(),
            spec: s.spec_json.clone(),
            timing: s.timing_key.clone(),
            enabled: s.enabled,
            anchor: now,
            next_fire_at: if s.enabled { s.timing.first(now) } else { None },
            last_fired_at: None,
            last_task: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        return Some(ScheduleWrite::Put { record, expected: None });
    };
    if r.spec == s.spec_json && r.enabled == s.enabled {
        return None;
    }
    let timing_changed = r.timing != s.timing_key;
    let anchor = if timing_changed { now } else { r.anchor };
    let next_fire_at = match (s.enabled, timing_changed, r.enabled) {
        (false, _, _) => None,
        (true, true, _) => s.timing.first(now),
        (true, false, true) => r.next_fire_at,
        (true, false, false) => s.timing.next_after(now, anchor),
    };
    let record = ScheduleRecord {
        spec: s.spec_json.clone(),
        timing: s.timing_key.clone(),
        enabled: s.enabled,
        anchor,
        next_fire_at,
        version: r.version + 1,
        updated_at: now,
        ..r.clone()
    };
    Some(ScheduleWrite::Put { record, expected: Some(r.version) })
}

/// An entry of the agent-scheduler `tasks:` format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentTask {
    name: String,
    #[serde(rename = "type")]
    kind: AgentKind,
    schedule: Value,
    function: String,
    #[serde(default)]
    kwargs: Option<Value>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    overlap: Overlap,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AgentKind {
    Cron,
    Interval,
}

impl AgentTask {
    fn into_spec(self) -> std::result::Result<ScheduleSpec, String> {
        let mut task = TaskSpec::named(self.function);
        task.queue = self.queue;
        if let Some(kwargs) = self.kwargs {
            task.input = serde_json::value::to_raw_value(&kwargs).map(Some).map_err(|e| e.to_string())?;
        }
        let (cron, every) = match (self.kind, self.schedule) {
            (AgentKind::Cron, Value::String(s)) => (Some(s), None),
            (AgentKind::Cron, other) => return Err(format!("schedule: a cron pattern is a string (got {other})")),
            (AgentKind::Interval, Value::String(s)) => (None, Some(Every::Text(s))),
            (AgentKind::Interval, Value::Number(n)) => (None, n.as_f64().map(Every::Seconds)),
            (AgentKind::Interval, other) => {
                return Err(format!("schedule: an interval is a string such as \"5 minutes\" (got {other})"));
            }
        };
        Ok(ScheduleSpec {
            name: Some(self.name),
            cron,
            every,
            at: None,
            timezone: self.timezone,
            task,
            enabled: self.enabled,
            overlap: self.overlap,
            description: self.description,
        })
    }
}

/// Reads a schedules file (YAML or JSON): `schedules:` entries as api.md
/// gives them, or the agent-scheduler `tasks:` format. An error names the
/// entry.
fn parse_file(text: &str) -> Result<Vec<(String, ScheduleSpec)>> {
    let file_error = |message: String| invalid(ValidationError::new("file", message), None);
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| file_error(format!("not YAML or JSON: {e}")))?;
    let Value::Object(mut top) = doc else {
        return Err(file_error("must be a mapping with a `schedules:` (or `tasks:`) list".into()));
    };
    let (key, entries) = match (top.remove("schedules"), top.remove("tasks")) {
        (Some(e), None) => ("schedules", e),
        (None, Some(e)) => ("tasks", e),
        (Some(_), Some(_)) => return Err(file_error("give `schedules:` or `tasks:`, not both".into())),
        (None, None) => return Err(file_error("must have a `schedules:` (or `tasks:`) list".into())),
    };
    if let Some(other) = top.keys().next() {
        return Err(file_error(format!("unknown top-level key {other:?}")));
    }
    let entries = match entries {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => return Err(file_error(format!("`{key}` must be a list"))),
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let name = entry.get("name").and_then(Value::as_str).map(str::to_owned);
        let label = match &name {
            Some(n) => format!("{key}[{i}] ({n})"),
            None => format!("{key}[{i}]"),
        };
        let shape = |message: String| invalid(ValidationError::new("entry", message), Some(label.clone()));
        // Through text, so that the task's input keeps its exact JSON.
        let text = serde_json::to_string(&entry).map_err(|e| shape(e.to_string()))?;
        let spec = if key == "schedules" {
            serde_json::from_str::<ScheduleSpec>(&text).map_err(|e| shape(e.to_string()))?
        } else {
            let agent: AgentTask = serde_json::from_str(&text).map_err(|e| shape(e.to_string()))?;
            agent.into_spec().map_err(shape)?
        };
        out.push((label, spec));
    }
    Ok(out)
}

impl Engine {
    fn check_schedule(&self, spec: ScheduleSpec, name: Option<&str>, entry: Option<String>) -> Result<Schedule> {
        let s = spec.validate(name, &self.defaults, self.now()).map_err(|e| invalid(e, entry.clone()))?;
        let input = s.task.input.as_ref().map_or("null", |raw| raw.get());
        self.registry.check_input(&s.task.name, input).map_err(|message| {
            invalid(
                ValidationError::new("task.input", format!("does not match the schema of {}: {message}", s.task.name)),
                entry,
            )
        })?;
        Ok(s)
    }

    fn view(&self, record: ScheduleRecord) -> Result<ScheduleView> {
        let spec: ScheduleSpec = serde_json::from_str(&record.spec)
            .map_err(|e| StoreError::Backend(format!("stored schedule {:?} does not parse: {e}", record.name)))?;
        let mut schedule = spec
            .validate(Some(&record.name), &self.defaults, self.now())
            .map_err(|e| StoreError::Backend(format!("stored schedule {:?} no longer validates: {e}", record.name)))?;
        schedule.enabled = record.enabled;
        Ok(ScheduleView { record, schedule })
    }

    async fn stored(&self, name: &str) -> Result<Option<ScheduleRecord>> {
        match self.store.schedules(Some(name.to_owned())).await {
            Ok(mut found) => Ok(found.pop()),
            Err(StoreError::ScheduleNotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Plans `plan` on the stored state of `name` and writes it, again while
    /// another writer changed the schedule meanwhile.
    async fn change_schedule<T>(
        &self,
        name: &str,
        plan: impl Fn(Option<&ScheduleRecord>, Millis) -> Result<(Option<ScheduleWrite>, T)>,
    ) -> Result<T> {
        for _ in 0..MAX_PLAN_TRIES {
            let existing = self.stored(name).await?;
            let (write, out) = plan(existing.as_ref(), self.now())?;
            let Some(write) = write else { return Ok(out) };
            match self.store.write_schedules(vec![write]).await {
                Ok(()) => return Ok(out),
                Err(StoreError::ScheduleConflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::ScheduleConflict(name.to_owned()).into())
    }

    /// Creates or replaces schedule `name`.
    pub async fn put_schedule(
        &self,
        caller: &Caller,
        name: &str,
        spec: ScheduleSpec,
    ) -> Result<(ScheduleView, PutOutcome)> {
        self.admit(caller, "put_schedule")?;
        self.read_task_types().await?;
        let schedule = self.check_schedule(spec, Some(name), None)?;
        let outcome = self
            .change_schedule(name, |existing, now| {
                let outcome = match existing {
                    None => PutOutcome::Created,
                    Some(_) => PutOutcome::Updated,
                };
                match plan_put(existing, &schedule, now) {
                    None => Ok((None, PutOutcome::Unchanged)),
                    write => Ok((write, outcome)),
                }
            })
            .await?;
        let view = self.schedule(caller, name).await?;
        self.record(
            caller,
            "schedule.put",
            name,
            Some(serde_json::json!({"outcome": format!("{outcome:?}").to_lowercase()})),
        )
        .await;
        Ok((view, outcome))
    }

    /// Every schedule, by name. A stored schedule that no longer reads (one
    /// written before a rule was tightened) is left out with a warning
    /// rather than failing the list for everyone; it can still be deleted.
    pub async fn schedules(&self, caller: &Caller) -> Result<Vec<ScheduleView>> {
        self.admit(caller, "schedules")?;
        let records = self.store.schedules(None).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let name = r.name.clone();
                self.view(r).map_err(|e| tracing::warn!(schedule = %name, error = %e, "schedule left out")).ok()
            })
            .collect())
    }

    /// One schedule.
    pub async fn schedule(&self, caller: &Caller, name: &str) -> Result<ScheduleView> {
        self.admit(caller, "schedule")?;
        check_schedule_name(name).map_err(|_| StoreError::ScheduleNotFound(name.to_owned()))?;
        let record = self.stored(name).await?.ok_or_else(|| StoreError::ScheduleNotFound(name.to_owned()))?;
        self.view(record)
    }

    /// Deletes a schedule; the tasks it created stay. Answers what was
    /// deleted, or `None` for a stored schedule that no longer reads.
    pub async fn delete_schedule(&self, caller: &Caller, name: &str) -> Result<Option<ScheduleView>> {
        self.admit(caller, "delete_schedule")?;
        check_schedule_name(name).map_err(|_| StoreError::ScheduleNotFound(name.to_owned()))?;
        let record = self.stored(name).await?.ok_or_else(|| StoreError::ScheduleNotFound(name.to_owned()))?;
        let view = self.view(record).ok();
        self.change_schedule(name, |existing, _| {
            let r = existing.ok_or_else(|| StoreError::ScheduleNotFound(name.to_owned()))?;
            Ok((Some(ScheduleWrite::Delete { name: name.to_owned(), expected: r.version }), ()))
        })
        .await?;
        self.record(caller, "schedule.delete", name, None).await;
        Ok(view)
    }

    /// Enables or disables a schedule. Enabling resumes from the next slot.
    pub async fn set_schedule_enabled(&self, caller: &Caller, name: &str, enabled: bool) -> Result<ScheduleView> {
        self.admit(caller, "set_schedule_enabled")?;
        self.schedule(caller, name).await?;
        self.change_schedule(name, |existing, now| {
            let r = existing.ok_or_else(|| StoreError::ScheduleNotFound(name.to_owned()))?;
            let mut s = self.view(r.clone())?.schedule;
            s.enabled = enabled;
            Ok((plan_put(Some(r), &s, now), ()))
        })
        .await?;
        self.record(caller, if enabled { "schedule.enable" } else { "schedule.disable" }, name, None).await;
        self.schedule(caller, name).await
    }

    /// Runs a schedule now: a task outside its slots, which leaves the next
    /// slot as it was.
    pub async fn trigger_schedule(&self, caller: &Caller, name: &str) -> Result<Task> {
        self.admit(caller, "trigger_schedule")?;
        let view = self.schedule(caller, name).await?;
        let now = self.now();
        let s = &view.schedule;
        let mut spec = s.task_for(s.trigger_key(now), now);
        self.registry.with_defaults(&mut spec);
        let task = spec.validate(&self.defaults, Uuid::now_v7(), now).map_err(|e| invalid(e, None))?;
        let fire = Fire { name: name.to_owned(), advance: None, skip_if_running: false, task };
        match self.store.fire_schedules(vec![fire], now).await?.pop() {
            Some(FireOutcome::Fired(task)) => {
                self.record(caller, "schedule.trigger", name, Some(serde_json::json!({"task": task.id}))).await;
                Ok(*task)
            }
            _ => Err(StoreError::ScheduleNotFound(name.to_owned()).into()),
        }
    }

    /// The tasks a schedule created, newest first.
    pub async fn schedule_runs(&self, caller: &Caller, name: &str, limit: usize) -> Result<Vec<Task>> {
        self.admit(caller, "schedule_runs")?;
        self.schedule(caller, name).await?;
        Ok(self.store.schedule_runs(name.to_owned(), limit).await?)
    }

    /// Makes the stored schedules match a file: every entry created or
    /// updated, and with `prune` every other schedule deleted — all or
    /// nothing. With `dry_run`, only says what it would do.
    pub async fn apply_schedules(
        &self,
        caller: &Caller,
        text: &str,
        dry_run: bool,
        prune: bool,
    ) -> Result<ApplyReport> {
        self.admit(caller, "apply_schedules")?;
        self.read_task_types().await?;
        let mut wanted: BTreeMap<String, Schedule> = BTreeMap::new();
        for (label, spec) in parse_file(text)? {
            let s = self.check_schedule(spec, None, Some(label.clone()))?;
            if wanted.contains_key(&s.name) {
                return Err(invalid(
                    ValidationError::new("name", format!("{:?} is in the file twice", s.name)),
                    Some(label),
                ));
            }
            wanted.insert(s.name.clone(), s);
        }
        for _ in 0..MAX_PLAN_TRIES {
            let now = self.now();
            let stored: BTreeMap<String, ScheduleRecord> =
                self.store.schedules(None).await?.into_iter().map(|r| (r.name.clone(), r)).collect();
            let mut report = ApplyReport { dry_run, ..ApplyReport::default() };
            let mut writes = Vec::new();
            for (name, s) in &wanted {
                let existing = stored.get(name);
                match plan_put(existing, s, now) {
                    None => report.unchanged.push(name.clone()),
                    Some(w) => {
                        if existing.is_some() { &mut report.updated } else { &mut report.created }.push(name.clone());
                        writes.push(w);
                    }
                }
            }
            if prune {
                let keep: BTreeSet<&String> = wanted.keys().collect();
                for r in stored.values().filter(|r| !keep.contains(&r.name)) {
                    report.deleted.push(r.name.clone());
                    writes.push(ScheduleWrite::Delete { name: r.name.clone(), expected: r.version });
                }
            }
            if dry_run || writes.is_empty() {
                return Ok(report);
            }
            match self.store.write_schedules(writes).await {
                Ok(()) => {
                    let changed = serde_json::json!({
                        "created": report.created, "updated": report.updated, "deleted": report.deleted
                    });
                    self.record(caller, "schedules.apply", "", Some(changed)).await;
                    return Ok(report);
                }
                Err(StoreError::ScheduleConflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::ScheduleConflict("(several)".into()).into())
    }

    /// The fire of a due schedule at `now`: the latest slot that has come
    /// (one task for any number missed) and the first slot after `now`.
    fn plan_fire(&self, r: &ScheduleRecord, now: Millis) -> Result<Option<Fire>> {
        let Some(consumed) = r.next_fire_at else { return Ok(None) };
        let s = self.view(r.clone())?.schedule;
        let slot = s.timing.latest_at_or_before(now, r.anchor).filter(|slot| *slot >= consumed).unwrap_or(consumed);
        let next = s.timing.next_after(slot.max(now), r.anchor);
        let mut spec = s.task_for(s.slot_key(slot), slot);
        self.registry.with_defaults(&mut spec);
        let task = spec.validate(&self.defaults, Uuid::now_v7(), now).map_err(|e| invalid(e, None))?;
        Ok(Some(Fire {
            name: r.name.clone(),
            advance: Some((consumed, next)),
            skip_if_running: s.overlap == Overlap::Skip,
            task,
        }))
    }

    /// Fires every schedule due now; answers when the next one falls due.
    /// The scheduler calls it in a loop; tests call it after moving the clock.
    pub async fn fire_due_schedules(&self) -> Result<Option<Millis>> {
        loop {
            let now = self.now();
            let due = self.store.due_schedules(now, FIRE_BATCH).await?;
            let mut fires = Vec::with_capacity(due.due.len());
            let mut broken = Vec::new();
            for r in &due.due {
                match self.plan_fire(r, now) {
                    Ok(Some(fire)) => fires.push(fire),
                    Ok(None) => {}
                    Err(e) => {
                        // Left enabled, it would stay due and be planned
                        // again at once, for ever.
                        tracing::error!(schedule = %r.name, error = %e, "cannot fire schedule; disabling it");
                        let record = ScheduleRecord {
                            enabled: false,
                            next_fire_at: None,
                            version: r.version + 1,
                            updated_at: now,
                            ..r.clone()
                        };
                        broken.push(ScheduleWrite::Put { record, expected: Some(r.version) });
                    }
                }
            }
            if !broken.is_empty() {
                match self.store.write_schedules(broken).await {
                    Ok(()) | Err(StoreError::ScheduleConflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if fires.is_empty() {
                return Ok(due.next_due);
            }
            let names: Vec<String> = fires.iter().map(|f| f.name.clone()).collect();
            for (name, outcome) in names.iter().zip(self.store.fire_schedules(fires, now).await?) {
                match outcome {
                    FireOutcome::Fired(t) => {
                        self.counters.slot(name, true);
                        tracing::debug!(schedule = %name, task = %t.id, "schedule fired");
                    }
                    FireOutcome::Skipped => {
                        self.counters.slot(name, false);
                        tracing::info!(schedule = %name, "slot skipped: the last run is unfinished");
                    }
                    FireOutcome::Duplicate | FireOutcome::Stale => {}
                }
            }
        }
    }

    /// Fires schedules when they fall due, until shutdown. It sleeps until
    /// the next due time (timers, not scanning) or until a schedule changes.
    pub async fn run_scheduler(&self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let changed = self.store.signals().schedules.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let sleep = match self.fire_due_schedules().await {
                Ok(next) => next.map_or(MAX_SCHEDULER_SLEEP, |due| {
                    Duration::from_millis(u64::try_from(due - self.now()).unwrap_or(0)).min(MAX_SCHEDULER_SLEEP)
                }),
                Err(EngineError::Store(StoreError::Closed)) => return,
                Err(e) => {
                    tracing::error!(error = %e, "firing schedules failed");
                    MAX_SCHEDULER_SLEEP
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = &mut changed => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_both_formats_parse_and_errors_name_the_entry() {
        let api = "schedules:\n  - name: daily_report\n    cron: \"0 9 * * *\"\n    timezone: Europe/Berlin\n    task: {name: report.generate, input: {format: pdf}}\n";
        let parsed = parse_file(api).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[0].0, "schedules[0] (daily_report)");
        let agent = "tasks:\n  - name: emails\n    type: interval\n    schedule: \"5 minutes\"\n    function: \"app.email:process\"\n    kwargs: {batch_size: 10}\n";
        let parsed = parse_file(agent).unwrap_or_else(|e| panic!("{e}"));
        let spec = &parsed[0].1;
        assert_eq!(spec.task.name, "app.email:process");
        assert_eq!(spec.task.input.as_ref().map(|r| r.get()), Some(r#"{"batch_size":10}"#));
        let bad = "tasks:\n  - name: x\n    type: weekly\n    schedule: \"1\"\n    function: f\n";
        match parse_file(bad) {
            Err(EngineError::Schedule(e)) => assert_eq!(e.entry.as_deref(), Some("tasks[0] (x)")),
            other => panic!("{other:?}"),
        }
        assert!(parse_file("schedules: 5").is_err());
        assert!(parse_file("[1, 2]").is_err());
        assert!(parse_file("{\"schedules\": []}").is_ok_and(|v| v.is_empty()));
    }
}
