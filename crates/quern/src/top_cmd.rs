//! `quern top`: a live view of a server in the terminal — its queues (depth,
//! tasks in and out per second, wait p50 and p95), its workers, the tasks
//! running with their progress, and the latest failures — read from
//! `/metrics`, `/v1/health`, `/v1/workers` and `/v1/tasks`.
//!
//! Invariant: the server is read at most once per `--interval`, never less
//! than a second apart, however fast keys are pressed; rates and wait
//! percentiles come from the difference between two reads of `/metrics`.

use crate::render::percent_of;
use clap::Args;
use quern_client::{Client, ListFilter, Result};
use quern_core::{Status, Task};
use quern_wire::WorkerView;
use quern_wire::ops::Health;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The shortest time between two reads of the server.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Running tasks and failures shown.
const LIST_LIMIT: u32 = 20;

/// Flags of `quern top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// How often to read the server (at least 1s).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
}

fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < MIN_INTERVAL {
        return Err("must be at least 1s: the view never reads the server more often".into());
    }
    Ok(interval)
}

/// One sample of the metrics: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped; a line
/// that does not parse is skipped too).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y"` (values escaped with `\\`, `\"`, `\n`).
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        text = rest.get(end + 1..)?.trim_start_matches(',');
    }
    Some(labels)
}

/// What the view shows of one queue at one read.
#[derive(Debug, Clone, Default)]
struct QueueRead {
    depth: BTreeMap<String, f64>,
    paused: bool,
    submitted: f64,
    finished: f64,
    /// The wait histogram's cumulative buckets: (upper bound, count).
    wait: Vec<(f64, f64)>,
}

/// Everything one read of `/metrics` tells of the queues.
fn queues_of(samples: &[Sample]) -> BTreeMap<String, QueueRead> {
    let mut queues: BTreeMap<String, QueueRead> = BTreeMap::new();
    for s in samples {
        let Some(queue) = s.labels.get("queue") else { continue };
        let q = queues.entry(queue.clone()).or_default();
        match s.name.as_str() {
            "quern_queue_depth" => {
                if let Some(status) = s.labels.get("status") {
                    q.depth.insert(status.clone(), s.value);
                }
            }
            "quern_queue_paused" => q.paused = s.value > 0.0,
            "quern_tasks_submitted_total" => q.submitted += s.value,
            "quern_tasks_finished_total" => q.finished += s.value,
            "quern_task_wait_seconds_bucket" => {
                let le =
                    s.labels.get("le").and_then(|l| if l == "+Inf" { Some(f64::INFINITY) } else { l.parse().ok() });
                if let Some(le) = le {
                    q.wait.push((le, s.value));
                }
            }
            _ => {}
        }
    }
    for q in queues.values_mut() {
        q.wait.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    queues
}

/// The `q` quantile (0..1) of a histogram's cumulative buckets, linear
/// within a bucket as Prometheus's `histogram_quantile` does; `None` when
/// it counts nothing.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let share = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// The buckets of `now` less those of `before` (the waits between two reads).
fn minus(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|(le, n)| {
            let earlier = before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, n)| *n);
            (*le, (n - earlier).max(0.0))
        })
        .collect()
}

/// One read of the server.
struct Read {
    at: Instant,
    health: Health,
    queues: BTreeMap<String, QueueRead>,
    workers: Vec<WorkerView>,
    running: Vec<Task>,
    failures: Vec<Task>,
}

/// Reads the server: its five requests at once, so that one read is one
/// round trip, not five in a row.
async fn read(client: &Client) -> Result<Read> {
    let page = |status: Vec<Status>| ListFilter { status, limit: Some(LIST_LIMIT), ..ListFilter::default() };
    let (running, failures) = (page(vec![Status::Running]), page(vec![Status::Failed, Status::TimedOut]));
    let (metrics, health, workers, running, failures) = tokio::try_join!(
        client.metrics(),
        client.health(),
        client.workers(),
        client.list(&running),
        client.list(&failures)
    )?;
    let queues = queues_of(&parse_metrics(&metrics));
    Ok(Read { at: Instant::now(), health, queues, workers, running: running.tasks, failures: failures.tasks })
}

fn seconds_text(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) => format!("{:.0}m", s / 60.0),
    }
}

fn rate_text(now: f64, before: Option<f64>, seconds: f64) -> String {
    match before {
        Some(b) if seconds > 0.0 => format!("{:.1}", (now - b).max(0.0) / seconds),
        _ => "-".into(),
    }
}

fn short_id(id: &quern_client::Uuid) -> String {
    let text = id.to_string();
    text.get(text.len() - 8..).unwrap_or(&text).to_owned()
}

fn ago(now_ms: i64, then_ms: Option<i64>) -> String {
    then_ms.map_or_else(|| "-".into(), |t| seconds_text(Some((now_ms - t).max(0) as f64 / 1000.0)))
}

/// Draws one frame from the latest read (and the one before, for rates).
fn draw(frame: &mut ratatui::Frame, server: &str, now: &Read, before: Option<&Read>, error: Option<&str>) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let [top, queues, workers, running, failures] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(7),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(frame.area());
    let h = &now.health;
    let mut header = vec![Line::from(format!(
        "quern top — {server} — {} {} — store {} — up {}s — {} live workers — q quits",
        h.status, h.version, h.store.backend, h.uptime_s, h.workers.live
    ))];
    if let Some(e) = error {
        header.push(Line::from(format!("last read failed: {e}")));
    }
    frame.render_widget(Paragraph::new(header), top);

    let seconds = before.map_or(0.0, |b| now.at.duration_since(b.at).as_secs_f64());
    let rows = now.queues.iter().map(|(name, q)| {
        let earlier = before.and_then(|b| b.queues.get(name));
        let waits = earlier.map_or_else(|| q.wait.clone(), |e| minus(&q.wait, &e.wait));
        let waits = if waits.last().is_some_and(|w| w.1 > 0.0) { waits } else { q.wait.clone() };
        let depth = |s: &str| format!("{}", q.depth.get(s).copied().unwrap_or(0.0));
        Row::new(vec![
            if q.paused { format!("{name} (paused)") } else { name.clone() },
            depth("queued"),
            depth("running"),
            depth("pending"),
            depth("succeeded"),
            depth("failed"),
            rate_text(q.submitted, earlier.map(|e| e.submitted), seconds),
            rate_text(q.finished, earlier.map(|e| e.finished), seconds),
            seconds_text(quantile(0.5, &waits)),
            seconds_text(quantile(0.95, &waits)),
        ])
    });
    let widths = [
        Constraint::Min(16),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let head = Row::new([
        "QUEUE",
        "QUEUED",
        "RUNNING",
        "PENDING",
        "SUCCEEDED",
        "FAILED",
        "IN/s",
        "OUT/s",
        "WAIT p50",
        "WAIT p95",
    ])
    .style(bold);
    frame.render_widget(Table::new(rows, widths).header(head).block(Block::bordered().title(" queues ")), queues);

    let now_ms = quern_core::Clock::now(&quern_core::SystemClock);
    let rows = now.workers.iter().filter(|w| w.live).map(|w| {
        Row::new(vec![w.id.clone(), w.queues.join(","), w.in_flight.to_string(), ago(now_ms, Some(w.last_seen))])
    });
    let widths = [Constraint::Min(20), Constraint::Min(16), Constraint::Length(10), Constraint::Length(10)];
    let head = Row::new(["WORKER", "QUEUES", "IN FLIGHT", "SEEN AGO"]).style(bold);
    frame.render_widget(Table::new(rows, widths).header(head).block(Block::bordered().title(" workers ")), workers);

    let rows = now.running.iter().map(|t| {
        let progress = t.progress.as_ref();
        let bar = progress.map_or_else(String::new, |p| {
            let percent = percent_of(p.percent);
            let filled = usize::try_from(percent / 10).unwrap_or(0).min(10);
            format!("{}{} {percent:>3}%", "█".repeat(filled), "░".repeat(10 - filled))
        });
        Row::new(vec![
            short_id(&t.id),
            t.name.clone(),
            t.queue.clone(),
            t.worker.clone().unwrap_or_default(),
            ago(now_ms, t.started_at),
            bar,
            progress.and_then(|p| p.message.clone()).unwrap_or_default(),
        ])
    });
    let widths = [
        Constraint::Length(9),
        Constraint::Min(14),
        Constraint::Min(10),
        Constraint::Min(12),
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Min(20),
    ];
    let head = Row::new(["TASK", "NAME", "QUEUE", "WORKER", "RUNNING", "PROGRESS", "MESSAGE"]).style(bold);
    let title = format!(" running ({} shown) ", now.running.len());
    frame.render_widget(Table::new(rows, widths).header(head).block(Block::bordered().title(title)), running);

    let rows = now.failures.iter().map(|t| {
        let error = t.error.as_ref().map(|e| format!("{}: {}", e.kind.as_str(), e.message)).unwrap_or_default();
        Row::new(vec![
            short_id(&t.id),
            t.name.clone(),
            t.queue.clone(),
            t.status.to_string(),
            ago(now_ms, t.finished_at),
            error,
        ])
    });
    let widths = [
        Constraint::Length(9),
        Constraint::Min(14),
        Constraint::Min(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Min(30),
    ];
    let head = Row::new(["TASK", "NAME", "QUEUE", "STATUS", "AGO", "ERROR"]).style(bold);
    frame.render_widget(
        Table::new(rows, widths).header(head).block(Block::bordered().title(" latest failures ")),
        failures,
    );
}

/// Runs the view until `q`, Esc or Ctrl-C.
pub(crate) fn run(client: &Client, args: &TopArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quern top: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The first read before the screen is taken, so that a server that
    // cannot be read is reported on a plain terminal.
    let mut latest = match runtime.block_on(read(client)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quern top: cannot read {}: {}", client.base_url(), e.message());
            return ExitCode::from(2);
        }
    };
    let mut before: Option<Read> = None;
    let mut error: Option<String> = None;
    let mut terminal = ratatui::init();
    let outcome = loop {
        if let Err(e) = terminal.draw(|f| draw(f, client.base_url(), &latest, before.as_ref(), error.as_deref())) {
            break Err(e);
        }
        let next = latest.at.max(before.as_ref().map_or(latest.at, |b| b.at)) + args.interval;
        match wait_for_key(next) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        match runtime.block_on(read(client)) {
            Ok(r) => {
                before = Some(std::mem::replace(&mut latest, r));
                error = None;
            }
            Err(e) => error = Some(e.message().to_owned()),
        }
    };
    ratatui::restore();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quern top: {e}");
            ExitCode::from(2)
        }
    }
}

/// Waits for a key until `until`; answers whether it asks to quit.
fn wait_for_key(until: Instant) -> std::io::Result<bool> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()? {
            let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_their_labels() {
        let text = "# HELP x y\nquern_queue_depth{queue=\"a \\\"b\\\"\",status=\"queued\"} 3\nquern_workers_live 2\n\
                    quern_task_wait_seconds_bucket{queue=\"a\",le=\"+Inf\"} 7\n";
        let samples = parse_metrics(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["queue"], "a \"b\"");
        assert_eq!(samples[0].labels["status"], "queued");
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("quern_workers_live", 2.0));
        assert_eq!(samples[2].labels["le"], "+Inf");
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let buckets = [(0.01, 0.0), (0.1, 10.0), (1.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        let p95 = quantile(0.95, &buckets).expect("a value");
        assert!((p95 - 0.91).abs() < 1e-9, "{p95}");
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 4.0)]), Some(1.0));
    }

    #[test]
    fn the_interval_is_never_under_a_second() {
        assert!(parse_interval("500ms").is_err());
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
    }
}
