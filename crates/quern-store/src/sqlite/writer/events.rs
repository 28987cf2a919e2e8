//! The event log in SQLite: events appended in the transaction of the change
//! they tell, one segment row per transaction.
//!
//! Invariant: the events of one writer batch are one row, written in the
//! batch's own transaction just before it commits, with offsets that follow
//! the previous segment without a gap; a rolled-back batch leaves no event
//! and no hole. Storing a batch as one row keeps an event nearly free (no row
//! write per event), which is what lets the engine publish every task
//! transition without halving its throughput.

use super::{State, backend};
use crate::sqlite::rows::status_at;
use crate::{EventPage, EventQuery, Result, StoreError};
use quern_core::{Event, Millis, NewEvent, Status};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use std::fmt::Write as _;
use uuid::Uuid;

/// The source of the events the engine publishes itself.
pub(crate) const SOURCE: &str = "quern";

/// The most segments one read scans: a filter that matches little answers
/// with how far it got (`next_after`) rather than reading the whole log.
const MAX_SCAN_SEGMENTS: i64 = 256;

/// One stored event. A task's move is stored as
/// `[at, type code, id, name, queue, attempt, status code]` and its payload
/// made again when read; a published event as
/// `[at, type, source, target, payload as a JSON string]`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Move(Millis, usize, String, String, String, u32, usize),
    Published(Millis, String, String, Option<String>, String),
}

/// The task event types, by their stored code.
const MOVE_TYPES: [&str; 8] = [
    "task.queued",
    "task.started",
    "task.retrying",
    "task.succeeded",
    "task.failed",
    "task.cancelled",
    "task.timed_out",
    "task.skipped",
];

impl Stored {
    fn into_event(self, offset: u64) -> Result<Event> {
        match self {
            Stored::Published(at, kind, source, target, payload) => {
                let payload = RawValue::from_string(payload).map_err(backend)?;
                Ok(Event { offset, at, kind, source, target, payload })
            }
            Stored::Move(at, code, id, name, queue, attempt, status) => {
                let kind = MOVE_TYPES.get(code).copied().unwrap_or("task.unknown").to_owned();
                let status = Status::ALL.get(status).map_or("unknown", |s| s.as_str());
                let mut payload = format!("{{\"task\":\"{id}\",\"name\":");
                quoted(&mut payload, &name);
                payload.push_str(",\"queue\":");
                quoted(&mut payload, &queue);
                let _ = write!(payload, ",\"status\":\"{status}\",\"attempt\":{attempt}}}");
                let payload = RawValue::from_string(payload).map_err(backend)?;
                Ok(Event { offset, at, kind, source: SOURCE.to_owned(), target: None, payload })
            }
        }
    }

    fn selected_by(&self, filter: &quern_core::EventFilter) -> bool {
        match self {
            Stored::Published(_, kind, source, target, _) => filter.selects(kind, source, target.as_deref()),
            Stored::Move(_, code, ..) => filter.selects(MOVE_TYPES.get(*code).copied().unwrap_or(""), SOURCE, None),
        }
    }
}

/// The events of the open batch, encoded as they come, and where they start.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    /// The offset the next committed event gets.
    pub(super) next: u64,
    /// The open batch's events as the segment's JSON array, without its
    /// closing bracket.
    text: String,
    /// How many events `text` holds.
    count: u64,
    /// When the first and the last of them happened.
    first_at: Millis,
    last_at: Millis,
}

impl EventLog {
    /// A log whose next event gets offset `next`.
    pub(super) fn starting_at(next: u64) -> Self {
        Self { next, ..Self::default() }
    }

    /// Starts one more element of the array; answers its offset.
    fn open(&mut self, at: Millis) -> u64 {
        self.text.push(if self.count == 0 { '[' } else { ',' });
        if self.count == 0 {
            self.first_at = at;
        }
        self.last_at = at;
        self.count += 1;
        self.next + self.count - 1
    }
}

/// A task's move, as the counts and the event log see it.
pub(crate) struct Move<'a> {
    pub(crate) id: Uuid,
    pub(crate) name: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) attempt: u32,
    pub(crate) from: Option<Status>,
    pub(crate) to: Status,
    /// An attempt ended with an error and the task goes back for another.
    pub(crate) retrying: bool,
    pub(crate) at: Millis,
    /// The task's workflow when the caller knows it (`Some(None)`: none);
    /// `None` has it read from the task's row when it is needed.
    pub(crate) workflow: Option<Option<Uuid>>,
}

impl<'a> Move<'a> {
    /// A move of task `id` (name, queue, attempt) from `from` to `to` at `at`.
    pub(crate) fn new(
        id: Uuid,
        (name, queue, attempt): (&'a str, &'a str, u32),
        from: Option<Status>,
        to: Status,
        at: Millis,
    ) -> Self {
        Self { id, name, queue, attempt, from, to, retrying: false, at, workflow: None }
    }

    /// The event this move publishes, as its code in [`MOVE_TYPES`]:
    /// `task.queued` on entering the queue, `task.started` on a lease,
    /// `task.retrying` when a failed attempt goes back, `task.<status>` on an
    /// end; none for entering `pending` otherwise.
    fn event(&self) -> Option<usize> {
        Some(match self.to {
            Status::Queued | Status::Pending if self.retrying => 2,
            Status::Queued => 0,
            Status::Pending => return None,
            Status::Running => 1,
            Status::Succeeded => 3,
            Status::Failed => 4,
            Status::Cancelled => 5,
            Status::TimedOut => 6,
            Status::Skipped => 7,
        })
    }
}

/// The first offset the log has not used.
pub(super) fn next_offset(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT coalesce(max(first_offset + count), 1) FROM event_segments", [], |r| r.get::<_, i64>(0))
        .map(i64::unsigned_abs)
}

/// Appends `s` as a JSON string. Names and queues need no escaping (their
/// characters are checked on submit), so the common case copies them.
fn quoted(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
    }
}

impl State {
    /// Counts a task's move and publishes its event, in the transaction
    /// that moves it.
    pub(crate) fn moved(&mut self, conn: &Connection, m: &Move<'_>) -> Result<()> {
        self.count(m.queue, m.from, Some(m.to));
        let closes = m.from.is_some_and(|f| !f.is_terminal()) && m.to.is_terminal();
        let reopens = m.from.is_some_and(Status::is_terminal) && !m.to.is_terminal();
        // Plain tasks (no workflow open anywhere) pay nothing for this.
        if (closes && !self.open_workflows.is_empty()) || reopens {
            self.workflow_moved(conn, m)?;
        }
        let Some(code) = m.event() else { return Ok(()) };
        self.log.open(m.at);
        let text = &mut self.log.text;
        let _ = write!(text, "[{},{code},\"{}\",", m.at, m.id);
        quoted(text, m.name);
        text.push(',');
        quoted(text, m.queue);
        let status = Status::ALL.iter().position(|s| *s == m.to).unwrap_or(0);
        let _ = write!(text, ",{},{status}]", m.attempt);
        Ok(())
    }

    /// Keeps the count of a workflow's unfinished tasks as one ends (or a
    /// finished one is retried), and publishes `workflow.<status>` when the
    /// last one ends.
    fn workflow_moved(&mut self, conn: &Connection, m: &Move<'_>) -> Result<()> {
        let workflow = match m.workflow {
            Some(known) => known,
            None => conn
                .prepare_cached("SELECT workflow FROM tasks WHERE id = ?1")
                .and_then(|mut s| s.query_row([m.id.as_bytes()], |r| r.get::<_, Option<Vec<u8>>>(0)).optional())
                .map_err(backend)?
                .flatten()
                .and_then(|b| Uuid::from_slice(&b).ok()),
        };
        let Some(workflow) = workflow else { return Ok(()) };
        let open = self.open_workflows.entry(workflow).or_insert(0);
        if !m.to.is_terminal() {
            *open += 1;
            return Ok(());
        }
        *open = open.saturating_sub(1);
        if *open > 0 {
            return Ok(());
        }
        self.open_workflows.remove(&workflow);
        let mut statuses = Vec::new();
        let mut stmt = conn
            .prepare_cached("SELECT status, count(*) FROM tasks WHERE workflow = ?1 GROUP BY status")
            .map_err(backend)?;
        let mut rows = stmt.query([workflow.as_bytes()]).map_err(backend)?;
        let mut counts = String::from("{");
        while let Some(r) = rows.next().map_err(backend)? {
            let status = status_at(r, 0).map_err(backend)?;
            let n: i64 = r.get(1).map_err(backend)?;
            if counts.len() > 1 {
                counts.push(',');
            }
            let _ = write!(counts, "\"{}\":{n}", status.as_str());
            statuses.push(status);
        }
        counts.push('}');
        let name: String = conn
            .query_row("SELECT name FROM workflows WHERE id = ?1", [workflow.as_bytes()], |r| r.get(0))
            .optional()
            .map_err(backend)?
            .unwrap_or_default();
        let status = quern_core::workflow::overall_status(statuses);
        let mut payload = format!("{{\"workflow\":\"{workflow}\",\"name\":");
        quoted(&mut payload, &name);
        let _ = write!(payload, ",\"status\":\"{status}\",\"counts\":{counts}}}");
        let e = NewEvent { kind: format!("workflow.{status}"), source: SOURCE.to_owned(), target: None, payload };
        self.emit(m.at, e).map(|_| ())
    }

    /// Appends published events to this batch.
    pub(crate) fn publish(&mut self, events: Vec<NewEvent>, now: Millis) -> Result<Vec<Event>> {
        let at = self.clock(now);
        events.into_iter().map(|e| self.emit(at, e)).collect()
    }

    /// Appends an event to this batch; answers it with its offset.
    pub(crate) fn emit(&mut self, at: Millis, e: NewEvent) -> Result<Event> {
        let payload = RawValue::from_string(e.payload).map_err(backend)?;
        let offset = self.log.open(at);
        let text = &mut self.log.text;
        let _ = write!(text, "[{at},");
        quoted(text, &e.kind);
        text.push(',');
        quoted(text, &e.source);
        text.push(',');
        match &e.target {
            Some(t) => quoted(text, t),
            None => text.push_str("null"),
        }
        text.push(',');
        quoted(text, payload.get());
        text.push(']');
        Ok(Event { offset, at, kind: e.kind, source: e.source, target: e.target, payload })
    }

    /// Writes this batch's events as one segment; runs inside the batch's
    /// transaction, before it commits.
    pub(crate) fn flush_events(&mut self, conn: &Connection) -> Result<()> {
        if self.log.count == 0 {
            return Ok(());
        }
        self.log.text.push(']');
        let l = &self.log;
        conn.prepare_cached(
            "INSERT INTO event_segments (first_offset, count, first_at, last_at, events) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![l.next as i64, l.count as i64, l.first_at, l.last_at, l.text]))
        .map_err(backend)?;
        Ok(())
    }

    /// After a commit: the batch's events are in the log.
    pub(crate) fn events_committed(&mut self) -> bool {
        let any = self.log.count > 0;
        self.log.next += self.log.count;
        self.log.count = 0;
        self.log.text.clear();
        any
    }

    /// Deletes whole segments whose newest event is older than `before`, and
    /// those wholly beyond the newest `keep` events; answers how many events
    /// went. The newest segment always stays: it is what tells, after a
    /// restart, where offsets go on.
    pub(crate) fn purge_events(&mut self, conn: &Connection, before: Millis, keep: u64) -> Result<u64> {
        const DOOMED: &str = "(last_at < ?1 OR first_offset + count - 1 <= ?2) \
                              AND first_offset < (SELECT max(first_offset) FROM event_segments)";
        let floor = self.log.next.saturating_sub(1).saturating_sub(keep) as i64;
        let gone: i64 = conn
            .query_row(
                &format!("SELECT coalesce(sum(count), 0) FROM event_segments WHERE {DOOMED}"),
                params![before, floor],
                |r| r.get(0),
            )
            .map_err(backend)?;
        conn.execute(&format!("DELETE FROM event_segments WHERE {DOOMED}"), params![before, floor]).map_err(backend)?;
        Ok(gone.unsigned_abs())
    }
}

/// The events after `q.after` that pass `q.filter`, oldest first.
pub(crate) fn read_events(conn: &Connection, q: &EventQuery) -> Result<EventPage> {
    let (earliest, head): (Option<i64>, i64) = conn
        .query_row(
            "SELECT min(first_offset), coalesce(max(first_offset + count), 1) - 1 FROM event_segments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    let head = head.unsigned_abs();
    let earliest = earliest.map_or(head + 1, i64::unsigned_abs);
    let after = match q.after {
        None => earliest.saturating_sub(1),
        Some(a) if a.saturating_add(1) < earliest && a < head => {
            return Err(StoreError::OffsetExpired { after: a, earliest });
        }
        Some(a) => a,
    };
    let mut page = EventPage { events: Vec::new(), next_after: after.max(earliest.saturating_sub(1)), head };
    if after >= head || q.limit == 0 {
        page.next_after = page.next_after.min(head.max(after));
        return Ok(page);
    }
    let start = conn
        .prepare_cached("SELECT max(first_offset) FROM event_segments WHERE first_offset <= ?1")
        .and_then(|mut s| s.query_row([(after + 1) as i64], |r| r.get::<_, Option<i64>>(0)).optional())
        .map_err(backend)?
        .flatten()
        .unwrap_or(0);
    let mut stmt = conn
        .prepare_cached(
            "SELECT first_offset, count, events FROM event_segments WHERE first_offset >= ?1 ORDER BY first_offset LIMIT ?2",
        )
        .map_err(backend)?;
    let mut rows = stmt.query(params![start, MAX_SCAN_SEGMENTS]).map_err(backend)?;
    while let Some(row) = rows.next().map_err(backend)? {
        let first: i64 = row.get(0).map_err(backend)?;
        let text: String = row.get(2).map_err(backend)?;
        let stored: Vec<Stored> = serde_json::from_str(&text).map_err(backend)?;
        for (i, e) in stored.into_iter().enumerate() {
            let offset = first.unsigned_abs() + i as u64;
            if offset <= after {
                continue;
            }
            if e.selected_by(&q.filter) {
                page.events.push(e.into_event(offset)?);
            }
            page.next_after = offset;
            if page.events.len() >= q.limit {
                return Ok(page);
            }
        }
    }
    Ok(page)
}
