//! How answers look on stdout: pretty JSON with `--output json`, tables and
//! `key: value` blocks otherwise.
//!
//! Every function returns the text rather than printing it, so that what a
//! user sees is pinned by unit tests. Table keys and columns use the API's
//! field names, so what a person reads maps onto what a script reads.

use clap::ValueEnum;
use comfy_table::{Table, presets};
use quern_client::{Error, QueueInfo, Result, TaskTypeView, WorkerView};
use quern_core::time::format_rfc3339;
use quern_core::{HistoryEntry, Status, Task};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// The format of what commands print on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Tables and `key: value` blocks, for people.
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
}

/// `value` as pretty JSON.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Decode(format!("cannot render JSON: {e}")))
}

/// A typed answer as a JSON tree, for the renderings that pick fields by
/// name.
pub(crate) fn value<T: Serialize + ?Sized>(answer: &T) -> Result<serde_json::Value> {
    serde_json::to_value(answer).map_err(|e| Error::Decode(format!("cannot render JSON: {e}")))
}

/// One task as a `key: value` block. Optional fields appear only when set.
pub(crate) fn task_block(task: &Task) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", task.id.to_string()),
        ("name", task.name.clone()),
        ("queue", task.queue.clone()),
        ("status", status_text(task)),
        ("attempt", format!("{} of {}", task.attempt, task.max_attempts)),
        ("priority", task.priority.to_string()),
    ];
    if let Some(notice) = &task.notice {
        rows.push(("notice", notice.clone()));
    }
    if let Some(progress) = &task.progress {
        rows.push(("progress", progress_text(progress.percent, progress.message.as_deref())));
    }
    if !task.metadata.is_empty() {
        let pairs: Vec<String> = task
            .metadata
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(text) => format!("{k}={text}"),
                None => format!("{k}={v}"),
            })
            .collect();
        rows.push(("metadata", pairs.join(", ")));
    }
    if let Some(workflow) = task.workflow {
        rows.push(("workflow", workflow.to_string()));
    }
    if !task.depends_on.is_empty() {
        let parents: Vec<String> = task.depends_on.iter().map(|d| d.task.to_string()).collect();
        rows.push(("depends_on", parents.join(", ")));
    }
    if let Some(key) = &task.idempotency_key {
        rows.push(("idempotency_key", key.clone()));
    }
    if let Some(ms) = task.timeout_ms {
        rows.push(("timeout", humantime::format_duration(Duration::from_millis(ms)).to_string()));
    }
    if let Some(worker) = &task.worker {
        rows.push(("worker", worker.clone()));
    }
    rows.push(("created_at", format_rfc3339(task.created_at)));
    rows.push(("run_at", format_rfc3339(task.run_at)));
    if let Some(at) = task.started_at {
        rows.push(("started_at", format_rfc3339(at)));
    }
    if let Some(at) = task.finished_at {
        rows.push(("finished_at", format_rfc3339(at)));
    }
    rows.push(("input", task.input.get().to_owned()));
    if let Some(result) = &task.result {
        rows.push(("result", result.get().to_owned()));
    }
    if let Some(error) = &task.error {
        rows.push(("error", format!("{}: {}", error.kind.as_str(), error.message)));
        if let Some(details) = &error.details {
            rows.push(("error.details", details.to_string()));
        }
    }
    block(&rows)
}

/// Tasks as a table, one row each, with the next page's cursor below when
/// there is one.
pub(crate) fn task_table(tasks: &[Task], next_cursor: Option<&str>) -> String {
    let mut table = table(&["id", "name", "queue", "status", "attempt", "priority", "created_at"]);
    for t in tasks {
        table.add_row(vec![
            t.id.to_string(),
            t.name.clone(),
            t.queue.clone(),
            status_text(t),
            format!("{}/{}", t.attempt, t.max_attempts),
            t.priority.to_string(),
            format_rfc3339(t.created_at),
        ]);
    }
    let mut out = table.trim_fmt();
    if let Some(cursor) = next_cursor {
        let _ = write!(out, "\nnext cursor: {cursor}");
    }
    out
}

/// A task's history as a table, oldest first.
pub(crate) fn history_table(entries: &[HistoryEntry]) -> String {
    let mut table = table(&["at", "from", "to", "attempt", "worker", "actor", "note"]);
    for e in entries {
        table.add_row(vec![
            format_rfc3339(e.at),
            e.from.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            e.to.to_string(),
            e.attempt.to_string(),
            e.worker.clone().unwrap_or_else(|| "-".to_owned()),
            e.actor.clone(),
            e.note.clone().unwrap_or_default(),
        ]);
    }
    table.trim_fmt()
}

/// Queues as a table with one column per status.
pub(crate) fn queue_table(queues: &[QueueInfo]) -> String {
    let mut header = vec!["name", "paused"];
    header.extend(Status::ALL.iter().map(|s| s.as_str()));
    let mut table = table(&header);
    for q in queues {
        let mut row = vec![q.name.clone(), if q.paused { "yes" } else { "no" }.to_owned()];
        row.extend(Status::ALL.iter().map(|s| q.counts.get(s.as_str()).copied().unwrap_or(0).to_string()));
        table.add_row(row);
    }
    table.trim_fmt()
}

/// Workers as a table: id, live or not, queues, task types, tasks in
/// flight, last seen.
pub(crate) fn worker_table(workers: &[WorkerView]) -> String {
    let mut table = table(&["id", "live", "queues", "task types", "in flight", "last seen"]);
    for w in workers {
        table.add_row(vec![
            w.id.clone(),
            if w.live { "yes" } else { "no" }.to_owned(),
            w.queues.join(","),
            w.task_types.join(","),
            w.in_flight.to_string(),
            format_rfc3339(w.last_seen),
        ]);
    }
    table.trim_fmt()
}

/// Task types as a table: name, live workers serving it, whether it has an
/// input schema, its description.
pub(crate) fn task_type_table(types: &[TaskTypeView]) -> String {
    let mut table = table(&["name", "workers", "schema", "description"]);
    for t in types {
        table.add_row(vec![
            t.name.clone(),
            t.workers.to_string(),
            if t.input_schema.is_some() { "yes" } else { "no" }.to_owned(),
            t.description.clone().unwrap_or_default(),
        ]);
    }
    table.trim_fmt()
}

/// What `queues pause|resume` reports.
pub(crate) fn queue_state(output: Output, name: &str, paused: bool) -> Result<String> {
    match output {
        Output::Json => json(&serde_json::json!({ "name": name, "paused": paused })),
        Output::Table => Ok(format!("queue {name} {}", if paused { "paused" } else { "resumed" })),
    }
}

/// A task's progress as `42% message`.
pub(crate) fn progress_text(percent: f64, message: Option<&str>) -> String {
    let percent = percent_of(percent);
    match message {
        Some(m) if !m.is_empty() => format!("{percent}% {m}"),
        _ => format!("{percent}%"),
    }
}

/// A progress percentage as a whole number from 0 to 100.
pub(crate) fn percent_of(percent: f64) -> u64 {
    if percent.is_nan() {
        return 0;
    }
    // In range after the clamp, so the cast neither truncates nor wraps.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = percent.clamp(0.0, 100.0).round() as u64;
    whole
}

/// The status, marked when a cancel waits for the worker to hear of it.
fn status_text(task: &Task) -> String {
    if task.cancel_requested && !task.status.is_terminal() {
        format!("{} (cancel requested)", task.status)
    } else {
        task.status.to_string()
    }
}

/// An empty table with `header`: no borders, two spaces between columns.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// `key: value` lines with the values aligned.
fn block(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<width$}{value}", format!("{key}:"));
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use quern_core::{ErrorKind, Progress, TaskError};

    /// A succeeded task as the server would send it.
    pub(crate) fn sample_task() -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "01900000-0000-7000-8000-000000000001",
            "name": "email.send",
            "queue": "default",
            "input": {"to": "a@example.com"},
            "status": "succeeded",
            "priority": 5,
            "metadata": {"env": "prod", "team": "growth"},
            "attempt": 1,
            "max_attempts": 3,
            "timeout_ms": 30000,
            "retry": {"backoff": "exponential", "initial_ms": 1000, "max_ms": 300000, "jitter": 0.0},
            "run_at": "2026-01-01T00:00:00.000Z",
            "progress": null,
            "result": {"sent": true},
            "error": null,
            "created_at": "2026-01-01T00:00:00.000Z",
            "started_at": "2026-01-01T00:00:01.000Z",
            "finished_at": "2026-01-01T00:00:02.000Z",
            "updated_at": "2026-01-01T00:00:02.000Z",
            "worker": "w1",
            "workflow": null,
            "depends_on": [],
            "idempotency_key": null,
            "digest": "sha256:00"
        }))
        .expect("sample task parses")
    }

    #[test]
    fn a_task_block_shows_what_is_set() {
        let text = task_block(&sample_task());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "id:          01900000-0000-7000-8000-000000000001");
        assert!(lines.contains(&"status:      succeeded"), "{text}");
        assert!(lines.contains(&"attempt:     1 of 3"), "{text}");
        assert!(lines.contains(&"metadata:    env=prod, team=growth"), "{text}");
        assert!(lines.contains(&"timeout:     30s"), "{text}");
        assert!(lines.contains(&"finished_at: 2026-01-01T00:00:02.000Z"), "{text}");
        assert!(lines.contains(&r#"input:       {"to":"a@example.com"}"#), "{text}");
        assert!(lines.contains(&r#"result:      {"sent":true}"#), "{text}");
        assert!(!text.contains("error"), "{text}");
        assert!(!text.contains("progress"), "{text}");
    }

    #[test]
    fn a_failed_task_block_shows_its_error_and_progress() {
        let mut task = sample_task();
        task.status = Status::Failed;
        task.result = None;
        task.progress = Some(Progress { percent: 41.6, message: Some("copying".into()) });
        task.error = Some(TaskError {
            kind: ErrorKind::Exception,
            message: "boom".into(),
            details: Some(serde_json::json!({"exit_code": 3})),
        });
        let text = task_block(&task);
        assert!(text.contains("\nprogress:      42% copying\n"), "{text}");
        assert!(text.contains("\nerror:         exception: boom\n"), "{text}");
        assert!(text.ends_with("error.details: {\"exit_code\":3}"), "{text}");
    }

    #[test]
    fn a_task_table_has_one_row_per_task_and_the_cursor() {
        let task = sample_task();
        let text = task_table(&[task.clone(), task], Some("next-page"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("id  "), "{text}");
        for column in ["name", "queue", "status", "attempt", "priority", "created_at"] {
            assert!(lines[0].contains(column), "{text}");
        }
        assert!(lines[1].starts_with("01900000-0000-7000-8000-000000000001  email.send  default  succeeded  1/3"));
        assert_eq!(lines[3], "next cursor: next-page");
        assert!(lines.iter().all(|l| l == &l.trim_end()), "no trailing spaces: {text:?}");
    }

    #[test]
    fn an_empty_listing_is_just_the_header() {
        assert_eq!(task_table(&[], None).lines().count(), 1);
    }

    #[test]
    fn queues_show_every_status_column() {
        let q = QueueInfo {
            name: "emails".into(),
            counts: [("queued".to_owned(), 7), ("failed".to_owned(), 2)].into_iter().collect(),
            paused: true,
        };
        let text = queue_table(&[q]);
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "name",
                "paused",
                "pending",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "timed_out",
                "skipped"
            ]
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(row, ["emails", "yes", "0", "7", "0", "0", "2", "0", "0", "0"]);
    }

    #[test]
    fn history_rows_mark_missing_values() {
        let entry = HistoryEntry {
            at: 0,
            from: None,
            to: Status::Queued,
            attempt: 0,
            worker: None,
            actor: "client".into(),
            note: None,
            by: None,
        };
        let text = history_table(&[entry]);
        let row: Vec<&str> = text.lines().nth(1).unwrap_or_default().split_whitespace().collect();
        assert_eq!(row, ["1970-01-01T00:00:00.000Z", "-", "queued", "0", "-", "client"]);
    }

    #[test]
    fn json_is_the_api_shape() {
        let text = json(&sample_task()).expect("renders");
        let back: serde_json::Value = serde_json::from_str(&text).expect("is JSON");
        assert_eq!(back["status"], "succeeded");
        assert_eq!(back["result"], serde_json::json!({"sent": true}));
        assert_eq!(back["created_at"], "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn queue_state_speaks_both_formats() {
        assert_eq!(queue_state(Output::Table, "emails", true).ok(), Some("queue emails paused".into()));
        let text = queue_state(Output::Json, "emails", false).expect("renders");
        assert!(text.contains("\"paused\": false"), "{text}");
    }

    #[test]
    fn percentages_are_whole_and_bounded() {
        assert_eq!(progress_text(41.5, None), "42%");
        assert_eq!(progress_text(150.0, Some("")), "100%");
        assert_eq!(progress_text(-3.0, Some("starting")), "0% starting");
        assert_eq!(percent_of(f64::NAN), 0);
    }
}
