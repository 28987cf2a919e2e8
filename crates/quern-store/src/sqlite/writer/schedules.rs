//! The writer's schedule operations: versioned puts and deletes, and firing
//! slots.
//!
//! Invariant: a slot creates its task in the transaction that moves the
//! schedule's `next_fire_at` past it, and only when `next_fire_at` still is
//! the slot the caller planned on (compare-and-set); the task's idempotency
//! key (schedule + slot) refuses a second task for one slot besides.

use super::State;
use crate::error::backend;
use crate::sqlite::rows::status_at;
use crate::{Fire, FireOutcome, Result, ScheduleRecord, ScheduleWrite, StoreError};
use quern_core::{Millis, Status};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

fn stored_version(conn: &Connection, name: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT version FROM schedules WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(backend)
}

/// What a fire needs of the stored schedule.
struct FireState {
    enabled: bool,
    next_fire_at: Option<Millis>,
    last_task: Option<Uuid>,
}

fn fire_state(conn: &Connection, name: &str) -> Result<Option<FireState>> {
    conn.prepare_cached("SELECT enabled, next_fire_at, last_task FROM schedules WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([name], |r| {
                let last: Option<Vec<u8>> = r.get(2)?;
                Ok(FireState {
                    enabled: r.get(0)?,
                    next_fire_at: r.get(1)?,
                    last_task: last.and_then(|b| Uuid::from_slice(&b).ok()),
                })
            })
            .optional()
        })
        .map_err(backend)
}

fn unfinished(conn: &Connection, task: Uuid) -> Result<bool> {
    let status = conn
        .prepare_cached("SELECT status FROM tasks WHERE id = ?1")
        .and_then(|mut s| s.query_row([task.as_bytes()], |r| status_at(r, 0)).optional())
        .map_err(backend)?;
    Ok(status.is_some_and(|s| !Status::is_terminal(s)))
}

fn key_taken(conn: &Connection, key: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM tasks WHERE idempotency_key = ?1")
        .and_then(|mut s| s.query_row([key], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(backend)
}

impl State {
    pub(crate) fn write_schedules(&mut self, conn: &Connection, writes: Vec<ScheduleWrite>) -> Result<()> {
        // Refusals first: a stale version anywhere refuses every change.
        for w in &writes {
            let (name, expected) = match w {
                ScheduleWrite::Put { record, expected } => (&record.name, *expected),
                ScheduleWrite::Delete { name, expected } => (name, Some(*expected)),
            };
            if stored_version(conn, name)? != expected {
                return Err(StoreError::ScheduleConflict(name.clone()));
            }
        }
        for w in writes {
            match w {
                ScheduleWrite::Put { record: r, expected } => {
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO schedules (name, spec, timing, enabled, anchor, next_fire_at, \
                         last_fired_at, last_task, version, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            r.name,
                            r.spec,
                            r.timing,
                            r.enabled,
                            r.anchor,
                            r.next_fire_at,
                            r.last_fired_at,
                            r.last_task.map(|t| *t.as_bytes()),
                            expected.unwrap_or(0) + 1,
                            r.created_at,
                            r.updated_at,
                        ])
                    })
                    .map_err(backend)?;
                }
                ScheduleWrite::Delete { name, .. } => {
                    conn.prepare_cached("DELETE FROM schedules WHERE name = ?1")
                        .and_then(|mut s| s.execute([name]))
                        .map_err(backend)?;
                }
            }
        }
        self.effects.schedules = true;
        Ok(())
    }

    pub(crate) fn fire_schedules(
        &mut self,
        conn: &Connection,
        fires: Vec<Fire>,
        now: Millis,
    ) -> Result<Vec<FireOutcome>> {
        let now = self.clock(now);
        let mut out = Vec::with_capacity(fires.len());
        for fire in fires {
            let Some(state) = fire_state(conn, &fire.name)? else {
                out.push(FireOutcome::Stale);
                continue;
            };
            if let Some((consumed, _)) = fire.advance
                && (!state.enabled || state.next_fire_at != Some(consumed))
            {
                out.push(FireOutcome::Stale);
                continue;
            }
            let next = fire.advance.map_or(state.next_fire_at, |(_, next)| next);
            let outcome =
                if fire.skip_if_running && state.last_task.map(|t| unfinished(conn, t)).transpose()? == Some(true) {
                    FireOutcome::Skipped
                } else if fire.task.idempotency_key.as_deref().map(|k| key_taken(conn, k)).transpose()? == Some(true) {
                    FireOutcome::Duplicate
                } else {
                    let task = self.submit(conn, vec![fire.task])?.pop().map(|s| s.task);
                    task.map_or(FireOutcome::Stale, |t| FireOutcome::Fired(Box::new(t)))
                };
            let (last_fired_at, last_task) = match &outcome {
                FireOutcome::Fired(t) => {
                    self.emit(now, crate::segment::schedule_fired(&fire.name, t, fire.advance.is_none()))?;
                    (Some(now), Some(*t.id.as_bytes()))
                }
                _ => (None, None),
            };
            conn.prepare_cached(
                "UPDATE schedules SET next_fire_at = ?2, last_fired_at = coalesce(?3, last_fired_at), \
                 last_task = coalesce(?4, last_task), version = version + 1, updated_at = ?5 WHERE name = ?1",
            )
            .and_then(|mut s| s.execute(params![fire.name, next, last_fired_at, last_task, now]))
            .map_err(backend)?;
            out.push(outcome);
        }
        Ok(out)
    }
}

/// The columns [`schedule_from_row`] reads, in order.
pub(crate) const SCHEDULE_COLUMNS: &str = "name, spec, timing, enabled, anchor, next_fire_at, last_fired_at, \
                                           last_task, version, created_at, updated_at";

pub(crate) fn schedule_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let last: Option<Vec<u8>> = r.get(7)?;
    Ok(ScheduleRecord {
        name: r.get(0)?,
        spec: r.get(1)?,
        timing: r.get(2)?,
        enabled: r.get(3)?,
        anchor: r.get(4)?,
        next_fire_at: r.get(5)?,
        last_fired_at: r.get(6)?,
        last_task: last.and_then(|b| Uuid::from_slice(&b).ok()),
        version: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}
