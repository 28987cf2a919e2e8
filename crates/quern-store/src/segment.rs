//! The event log's storage format, the same in every backend: the events of
//! one transaction are one segment (one row), a JSON array, so that an event
//! costs no row write of its own.
//!
//! Invariant: a segment's events take the offsets `first .. first + count`,
//! in array order; a task's move is stored as a short tuple and its payload
//! made again when read, so the log stays small however many tasks move.

use crate::{EventPage, EventQuery, Result, StoreError};
use quern_core::{Event, Millis, NewEvent, Status};
use serde_json::value::RawValue;
use std::fmt::Write as _;
use uuid::Uuid;

/// The source of the events the engine publishes itself.
pub(crate) const SOURCE: &str = "quern";

/// The most segments one read scans: a filter that matches little answers
/// with how far it got (`next_after`) rather than reading the whole log.
pub(crate) const MAX_SCAN_SEGMENTS: i64 = 256;

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
                let payload = RawValue::from_string(payload).map_err(crate::error::backend)?;
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
                let payload = RawValue::from_string(payload).map_err(crate::error::backend)?;
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
    /// When the task entered the status it leaves, when the caller knows:
    /// for a start, when it became ready; for an attempt's end, when it
    /// started (the metrics' wait and run times).
    pub(crate) since: Option<Millis>,
    /// When the task was submitted, when the caller knows (its latency).
    pub(crate) created: Option<Millis>,
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
        Self { id, name, queue, attempt, from, to, retrying: false, at, workflow: None, since: None, created: None }
    }

    /// The move, with when the task entered the status it leaves and when
    /// it was submitted (see [`crate::tally`]).
    pub(crate) fn timed(self, since: Option<Millis>, created: Option<Millis>) -> Self {
        Self { since, created, ..self }
    }

    /// The event this move publishes, as its code in [`MOVE_TYPES`]:
    /// `task.queued` on entering the queue, `task.started` on a lease,
    /// `task.retrying` when a failed attempt goes back, `task.<status>` on an
    /// end; none for entering `pending` otherwise.
    pub(crate) fn event(&self) -> Option<usize> {
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

    /// The state machine's checkpoint, which every move of every backend
    /// passes on its way into the log: a new task starts `pending` or
    /// `queued`; a move follows [`Status::can_move`], or is a manual retry
    /// of a failed, timed-out or cancelled task. Anything else is a bug of
    /// the store, refused before its transaction commits.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let allowed = match self.from {
            None => self.to.can_start_in(),
            Some(from) => {
                from.can_move(self.to)
                    || (from.can_manual_retry() && matches!(self.to, Status::Queued | Status::Pending))
            }
        };
        if allowed {
            return Ok(());
        }
        let from = self.from.map_or("nothing", Status::as_str);
        Err(crate::StoreError::Backend(format!(
            "refused a move of task {} from {from} to {}: the state machine does not allow it",
            self.id, self.to
        )))
    }

    /// The move ends the task (it leaves the unfinished statuses).
    pub(crate) fn closes(&self) -> bool {
        self.from.is_some_and(|f| !f.is_terminal()) && self.to.is_terminal()
    }

    /// The move gives a finished task another attempt.
    pub(crate) fn reopens(&self) -> bool {
        self.from.is_some_and(Status::is_terminal) && !self.to.is_terminal()
    }
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

/// The events of one open transaction, encoded as they come.
#[derive(Debug, Default)]
pub(crate) struct SegmentBuilder {
    /// The offset the first event of the segment gets (0 when the backend
    /// learns it only at commit: offsets are then relative).
    pub(crate) first: u64,
    /// The events as the segment's JSON array, without its closing bracket.
    text: String,
    /// How many events `text` holds.
    pub(crate) count: u64,
    /// When the first and the last of them happened.
    pub(crate) first_at: Millis,
    pub(crate) last_at: Millis,
}

impl SegmentBuilder {
    /// An empty segment whose first event gets offset `first`.
    pub(crate) fn starting_at(first: u64) -> Self {
        Self { first, ..Self::default() }
    }

    /// Starts one more element of the array; answers its offset.
    fn open(&mut self, at: Millis) -> u64 {
        self.text.push(if self.count == 0 { '[' } else { ',' });
        if self.count == 0 {
            self.first_at = at;
        }
        self.last_at = at;
        self.count += 1;
        self.first + self.count - 1
    }

    /// Checks a task's move ([`Move::check`]) and appends it, if it
    /// publishes an event.
    pub(crate) fn push_move(&mut self, m: &Move<'_>) -> crate::Result<()> {
        m.check()?;
        let Some(code) = m.event() else { return Ok(()) };
        self.open(m.at);
        // Written piece by piece rather than with `write!`: every task move
        // passes here on the writer thread, and the formatting machinery was
        // a few percent of its time.
        let text = &mut self.text;
        let mut number = itoa::Buffer::new();
        text.push('[');
        text.push_str(number.format(m.at));
        text.push(',');
        text.push_str(number.format(code));
        text.push_str(",\"");
        text.push_str(m.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        text.push_str("\",");
        quoted(text, m.name);
        text.push(',');
        quoted(text, m.queue);
        let status = Status::ALL.iter().position(|s| *s == m.to).unwrap_or(0);
        text.push(',');
        text.push_str(number.format(m.attempt));
        text.push(',');
        text.push_str(number.format(status));
        text.push(']');
        Ok(())
    }

    /// Appends a published event; answers it with its offset.
    pub(crate) fn push(&mut self, at: Millis, e: NewEvent) -> Result<Event> {
        let payload = RawValue::from_string(e.payload).map_err(crate::error::backend)?;
        let offset = self.open(at);
        let text = &mut self.text;
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

    /// The segment's text, closed; `None` when it holds no event.
    pub(crate) fn finish(&mut self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let mut text = std::mem::take(&mut self.text);
        text.push(']');
        Some(text)
    }

    /// Forgets the segment's events (after a commit or a rollback); the next
    /// event takes offset `first`.
    pub(crate) fn reset(&mut self, first: u64) {
        self.first = first;
        self.count = 0;
        self.text.clear();
    }
}

/// The `workflow.<status>` event of a workflow whose last task ended, from
/// its name and how many of its tasks ended in each status.
pub(crate) fn workflow_event(workflow: Uuid, name: &str, counts: &[(Status, i64)]) -> NewEvent {
    let mut text = String::from("{");
    for (status, n) in counts {
        if text.len() > 1 {
            text.push(',');
        }
        let _ = write!(text, "\"{}\":{n}", status.as_str());
    }
    text.push('}');
    let status = quern_core::workflow::overall_status(counts.iter().map(|(s, _)| *s));
    let mut payload = format!("{{\"workflow\":\"{workflow}\",\"name\":");
    quoted(&mut payload, name);
    let _ = write!(payload, ",\"status\":\"{status}\",\"counts\":{text}}}");
    NewEvent { kind: format!("workflow.{status}"), source: SOURCE.to_owned(), target: None, payload }
}

/// The `schedule.fired` event of a slot (or a manual trigger, without
/// `advance`) of schedule `name` that created task `t`.
pub(crate) fn schedule_fired(name: &str, t: &quern_core::Task, manual: bool) -> NewEvent {
    let payload = serde_json::json!({
        "schedule": name, "task": t.id, "name": t.name,
        "slot": t.metadata.get("schedule.slot"), "manual": manual,
    });
    NewEvent {
        kind: "schedule.fired".to_owned(),
        source: SOURCE.to_owned(),
        target: None,
        payload: payload.to_string(),
    }
}

/// Where a read of the log starts, from the bounds of what is kept.
pub(crate) enum ReadPlan {
    /// Nothing to read: the page as it stands.
    Done(EventPage),
    /// Scan the segments from the one holding `after + 1`.
    Scan(EventPage, u64),
}

/// Plans a read from the earliest kept offset (`None`: the log is empty or
/// fully purged) and the newest offset.
pub(crate) fn plan_read(q: &EventQuery, earliest: Option<u64>, head: u64) -> Result<ReadPlan> {
    let earliest = earliest.unwrap_or(head + 1);
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
        return Ok(ReadPlan::Done(page));
    }
    Ok(ReadPlan::Scan(page, after))
}

/// Adds the events of the segment starting at offset `first` that come
/// after `after` and pass the filter; answers whether the page is full.
pub(crate) fn read_segment(page: &mut EventPage, q: &EventQuery, after: u64, first: u64, text: &str) -> Result<bool> {
    let stored: Vec<Stored> = serde_json::from_str(text).map_err(crate::error::backend)?;
    for (i, e) in stored.into_iter().enumerate() {
        let offset = first + i as u64;
        if offset <= after {
            continue;
        }
        if e.selected_by(&q.filter) {
            page.events.push(e.into_event(offset)?);
        }
        page.next_after = offset;
        if page.events.len() >= q.limit {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_lets_through_exactly_the_moves_the_state_machine_allows() {
        let id = Uuid::nil();
        for to in Status::ALL {
            let new = Move::new(id, ("t", "q", 0), None, to, 0);
            assert_eq!(new.check().is_ok(), matches!(to, Status::Pending | Status::Queued), "new -> {to}");
            for from in Status::ALL {
                let m = Move::new(id, ("t", "q", 1), Some(from), to, 0);
                let retry = from.can_manual_retry() && matches!(to, Status::Queued | Status::Pending);
                assert_eq!(m.check().is_ok(), from.can_move(to) || retry, "{from} -> {to}");
                let mut log = SegmentBuilder::starting_at(1);
                assert_eq!(log.push_move(&m).is_ok(), m.check().is_ok(), "{from} -> {to} through the log");
            }
        }
    }
}
