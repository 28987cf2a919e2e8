//! Waiting for a task to end: long polls of `GET /v1/tasks/{id}?wait=`, with
//! the task's progress shown on stderr while it runs.
//!
//! Invariant: stdout is untouched here, so `--output json` stays one JSON
//! document however long the wait. On a terminal, progress is a bar redrawn
//! in place; elsewhere (logs, CI) it is a plain line per change.

use crate::render::{percent_of, progress_text};
use indicatif::{ProgressBar, ProgressStyle};
use quern_client::{Client, Result, Uuid};
use quern_core::{Status, Task};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The longest single long poll. Shorter than common proxy idle timeouts, and
/// the server's own limit on `wait`.
const LONG_POLL: Duration = Duration::from_secs(30);

/// The poll length while a progress bar is shown, so that the bar follows the
/// worker's reports.
const BAR_POLL: Duration = Duration::from_secs(1);

/// The shortest time between two polls, in case a server answers at once
/// instead of holding the request.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The task reached a terminal status.
    Ended(Task),
    /// The timeout elapsed first; the task as last seen.
    GaveUp(Task),
}

/// Waits until the task `id` is terminal, or until `timeout` elapses.
/// `known` is the task as already seen (e.g. just submitted), which saves the
/// first read.
pub(crate) async fn wait_for(
    client: &Client,
    id: Uuid,
    timeout: Option<Duration>,
    known: Option<Task>,
) -> Result<Waited> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut view = View::new(std::io::stderr().is_terminal());
    let mut task = match known {
        Some(task) => task,
        None => client.get(id, None).await?,
    };
    // The first poll is short, so that a task no live worker serves is
    // named at once rather than after a whole long poll.
    let mut first = true;
    loop {
        view.show(&task);
        if task.status.is_terminal() {
            view.finish();
            return Ok(Waited::Ended(task));
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            view.finish();
            return Ok(Waited::GaveUp(task));
        }
        let poll = poll_length(view.is_bar() || std::mem::take(&mut first), remaining);
        let started = Instant::now();
        task = client.get(id, Some(poll)).await?;
        let spent = started.elapsed();
        if !task.status.is_terminal() && spent < MIN_POLL_INTERVAL.min(poll) {
            tokio::time::sleep(MIN_POLL_INTERVAL.min(poll) - spent).await;
        }
    }
}

/// How long the next poll may be held by the server: a second when `short`.
fn poll_length(short: bool, remaining: Option<Duration>) -> Duration {
    let wanted = if short { BAR_POLL } else { LONG_POLL };
    remaining.map_or(wanted, |r| r.min(wanted))
}

/// The exit code for a task that ended: 0 when it succeeded, 1 otherwise.
pub(crate) fn exit_code(status: Status) -> u8 {
    u8::from(status != Status::Succeeded)
}

/// Where the progress of a waited-on task is shown.
enum View {
    /// An in-place bar on a terminal.
    Bar(ProgressBar),
    /// A line per change, remembering the last one printed.
    Lines(Option<String>),
}

impl View {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return View::Lines(None);
        }
        let bar = ProgressBar::new(100);
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos:>3}% {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        View::Bar(bar)
    }

    fn is_bar(&self) -> bool {
        matches!(self, View::Bar(_))
    }

    fn show(&mut self, task: &Task) {
        match self {
            View::Bar(bar) => {
                let percent = task.progress.as_ref().map_or(0, |p| percent_of(p.percent));
                bar.set_position(percent);
                bar.set_message(bar_message(task));
            }
            View::Lines(last) => {
                let line = status_line(task);
                if last.as_deref() != Some(line.as_str()) {
                    // A closed stderr must not end the wait.
                    let _ = writeln!(std::io::stderr(), "{line}");
                    *last = Some(line);
                }
            }
        }
    }

    fn finish(&self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The bar's message: the status, then the worker's own words.
fn bar_message(task: &Task) -> String {
    if let Some(notice) = &task.notice {
        return format!("{}: {notice}", task.status);
    }
    match task.progress.as_ref().and_then(|p| p.message.as_deref()) {
        Some(message) if !message.is_empty() => format!("{}: {message}", task.status),
        _ => task.status.to_string(),
    }
}

/// The line printed when a task's status or progress changes off a terminal.
fn status_line(task: &Task) -> String {
    match &task.progress {
        Some(p) if !task.status.is_terminal() => {
            format!("{} {} {}", task.id, task.status, progress_text(p.percent, p.message.as_deref()))
        }
        _ => match &task.notice {
            Some(notice) => format!("{} {}: {notice}", task.id, task.status),
            None => format!("{} {}", task.id, task.status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::sample_task;
    use quern_core::Progress;

    #[test]
    fn polls_are_short_under_a_bar_and_never_pass_the_deadline() {
        assert_eq!(poll_length(true, None), BAR_POLL);
        assert_eq!(poll_length(false, None), LONG_POLL);
        assert_eq!(poll_length(false, Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(poll_length(true, Some(Duration::from_millis(300))), Duration::from_millis(300));
    }

    #[test]
    fn only_success_exits_zero() {
        assert_eq!(exit_code(Status::Succeeded), 0);
        for s in [Status::Failed, Status::Cancelled, Status::TimedOut, Status::Skipped] {
            assert_eq!(exit_code(s), 1, "{s}");
        }
    }

    #[test]
    fn lines_carry_progress_while_running() {
        let mut task = sample_task();
        task.status = Status::Running;
        task.progress = Some(Progress { percent: 42.0, message: Some("copying".into()) });
        assert_eq!(status_line(&task), format!("{} running 42% copying", task.id));
        assert_eq!(bar_message(&task), "running: copying");
        task.status = Status::Succeeded;
        assert_eq!(status_line(&task), format!("{} succeeded", task.id));
        task.progress = None;
        assert_eq!(bar_message(&task), "succeeded");
    }
}
