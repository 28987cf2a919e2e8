//! The event log in SQLite: events appended in the transaction of the change
//! they tell, one segment row per transaction.
//!
//! Invariant: the events of one writer batch are one row, written in the
//! batch's own transaction just before it commits, with offsets that follow
//! the previous segment without a gap; a rolled-back batch leaves no event
//! and no hole. Storing a batch as one row keeps an event nearly free (no row
//! write per event), which is what lets the engine publish every task
//! transition without halving its throughput.

use super::State;
use crate::error::backend;
use crate::segment::{MAX_SCAN_SEGMENTS, ReadPlan, SegmentBuilder, plan_read, read_segment, workflow_event};
use crate::sqlite::rows::workflow_counts;
use crate::{EventPage, EventQuery, Result};
use quern_core::{Event, Millis, NewEvent};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

pub(crate) use crate::segment::Move;

/// The event log's open batch: a segment whose first offset follows the
/// previous one.
pub(crate) type EventLog = SegmentBuilder;

/// The first offset the log has not used.
pub(super) fn next_offset(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT coalesce(max(first_offset + count), 1) FROM event_segments", [], |r| r.get::<_, i64>(0))
        .map(i64::unsigned_abs)
}

impl State {
    /// Counts a task's move and publishes its event, in the transaction
    /// that moves it.
    pub(crate) fn moved(&mut self, conn: &Connection, m: &Move<'_>) -> Result<()> {
        self.count(m.queue, m.from, Some(m.to));
        self.tally.record(m);
        // Plain tasks (no workflow open anywhere) pay nothing for this.
        if (m.closes() && !self.open_workflows.is_empty()) || m.reopens() {
            self.workflow_moved(conn, m)?;
        }
        self.log.push_move(m)?;
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
        let counts = workflow_counts(conn, workflow)?;
        let name: String = conn
            .query_row("SELECT name FROM workflows WHERE id = ?1", [workflow.as_bytes()], |r| r.get(0))
            .optional()
            .map_err(backend)?
            .unwrap_or_default();
        self.emit(m.at, workflow_event(workflow, &name, &counts)).map(|_| ())
    }

    /// Appends published events to this batch.
    pub(crate) fn publish(&mut self, events: Vec<NewEvent>, now: Millis) -> Result<Vec<Event>> {
        let at = self.clock(now);
        events.into_iter().map(|e| self.emit(at, e)).collect()
    }

    /// Appends an event to this batch; answers it with its offset.
    pub(crate) fn emit(&mut self, at: Millis, e: NewEvent) -> Result<Event> {
        self.log.push(at, e)
    }

    /// Writes this batch's events as one segment; runs inside the batch's
    /// transaction, before it commits.
    pub(crate) fn flush_events(&mut self, conn: &Connection) -> Result<()> {
        let Some(text) = self.log.finish() else { return Ok(()) };
        let l = &self.log;
        conn.prepare_cached(
            "INSERT INTO event_segments (first_offset, count, first_at, last_at, events) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![l.first as i64, l.count as i64, l.first_at, l.last_at, text]))
        .map_err(backend)?;
        Ok(())
    }

    /// After a commit: the batch's events are in the log.
    pub(crate) fn events_committed(&mut self) -> bool {
        let any = self.log.count > 0;
        let next = self.log.first + self.log.count;
        self.log.reset(next);
        any
    }

    /// Deletes whole segments whose newest event is older than `before`, and
    /// those wholly beyond the newest `keep` events; answers how many events
    /// went. The newest segment always stays: it is what tells, after a
    /// restart, where offsets go on.
    pub(crate) fn purge_events(&mut self, conn: &Connection, before: Millis, keep: u64) -> Result<u64> {
        const DOOMED: &str = "(last_at < ?1 OR first_offset + count - 1 <= ?2) \
                              AND first_offset < (SELECT max(first_offset) FROM event_segments)";
        let floor = self.log.first.saturating_sub(1).saturating_sub(keep) as i64;
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
    let (mut page, after) = match plan_read(q, earliest.map(i64::unsigned_abs), head.unsigned_abs())? {
        ReadPlan::Done(page) => return Ok(page),
        ReadPlan::Scan(page, after) => (page, after),
    };
    let start = conn
        .prepare_cached("SELECT max(first_offset) FROM event_segments WHERE first_offset <= ?1")
        .and_then(|mut s| s.query_row([(after + 1) as i64], |r| r.get::<_, Option<i64>>(0)).optional())
        .map_err(backend)?
        .flatten()
        .unwrap_or(0);
    let mut stmt = conn
        .prepare_cached(
            "SELECT first_offset, events FROM event_segments WHERE first_offset >= ?1 ORDER BY first_offset LIMIT ?2",
        )
        .map_err(backend)?;
    let mut rows = stmt.query(params![start, MAX_SCAN_SEGMENTS]).map_err(backend)?;
    while let Some(row) = rows.next().map_err(backend)? {
        let first: i64 = row.get(0).map_err(backend)?;
        let text: String = row.get(1).map_err(backend)?;
        if read_segment(&mut page, q, after, first.unsigned_abs(), &text)? {
            break;
        }
    }
    Ok(page)
}
