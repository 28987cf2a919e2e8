//! Schedules in PostgreSQL: versioned puts and deletes, and firing slots.
//!
//! Invariant: a slot creates its task in the transaction that moves the
//! schedule's `next_fire_at` past it, under the schedule's row lock, and
//! only when `next_fire_at` still is the slot the caller planned on; so
//! however many nodes fire at once, one creates the task and the others
//! find the slot stale. The task's idempotency key refuses a second task
//! for one slot besides.

use super::Tx;
use super::rows::{COLS, Loaded, status_of};
use super::tasks;
use crate::segment::schedule_fired;
use crate::{DueSchedules, Fire, FireOutcome, Result, ScheduleRecord, ScheduleWrite, StoreError};
use quern_core::{Millis, Task};
use tokio_postgres::Row;

const COLUMNS: &str =
    "name, spec, timing, enabled, anchor, next_fire_at, last_fired_at, last_task, version, created_at, updated_at";

fn record(r: &Row) -> ScheduleRecord {
    ScheduleRecord {
        name: r.get(0),
        spec: r.get(1),
        timing: r.get(2),
        enabled: r.get(3),
        anchor: r.get(4),
        next_fire_at: r.get(5),
        last_fired_at: r.get(6),
        last_task: r.get(7),
        version: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
    }
}

pub(super) async fn list(tx: &mut Tx, name: Option<String>) -> Result<Vec<ScheduleRecord>> {
    let rows = match &name {
        Some(n) => tx.query(&format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"), &[n]).await?,
        None => tx.query(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"), &[]).await?,
    };
    match name {
        Some(n) if rows.is_empty() => Err(StoreError::ScheduleNotFound(n)),
        _ => Ok(rows.iter().map(record).collect()),
    }
}

pub(super) async fn write(tx: &mut Tx, writes: Vec<ScheduleWrite>) -> Result<()> {
    // Refusals first: a stale version anywhere refuses every change.
    for w in &writes {
        let (name, expected) = match w {
            ScheduleWrite::Put { record, expected } => (&record.name, *expected),
            ScheduleWrite::Delete { name, expected } => (name, Some(*expected)),
        };
        let stored = tx.query_opt("SELECT version FROM schedules WHERE name = $1 FOR UPDATE", &[name]).await?;
        if stored.map(|r| r.get::<_, i64>(0)) != expected {
            return Err(StoreError::ScheduleConflict(name.clone()));
        }
    }
    for w in writes {
        match w {
            ScheduleWrite::Put { record: r, expected } => {
                let version = expected.unwrap_or(0) + 1;
                tx.execute(
                    &format!(
                        "INSERT INTO schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, timing = excluded.timing, \
                         enabled = excluded.enabled, anchor = excluded.anchor, next_fire_at = excluded.next_fire_at, \
                         last_fired_at = excluded.last_fired_at, last_task = excluded.last_task, \
                         version = excluded.version, created_at = excluded.created_at, updated_at = excluded.updated_at"
                    ),
                    &[
                        &r.name,
                        &r.spec,
                        &r.timing,
                        &r.enabled,
                        &r.anchor,
                        &r.next_fire_at,
                        &r.last_fired_at,
                        &r.last_task,
                        &version,
                        &r.created_at,
                        &r.updated_at,
                    ],
                )
                .await?;
            }
            ScheduleWrite::Delete { name, .. } => {
                tx.execute("DELETE FROM schedules WHERE name = $1", &[&name]).await?;
            }
        }
    }
    tx.effects.schedules = true;
    Ok(())
}

pub(super) async fn due(tx: &mut Tx, now: Millis, limit: usize) -> Result<DueSchedules> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM schedules WHERE enabled AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2"
            ),
            &[&now, &limit],
        )
        .await?;
    let next =
        tx.query_opt("SELECT min(next_fire_at) FROM schedules WHERE enabled AND next_fire_at > $1", &[&now]).await?;
    Ok(DueSchedules { due: rows.iter().map(record).collect(), next_due: next.and_then(|r| r.get(0)) })
}

pub(super) async fn fire(tx: &mut Tx, fires: Vec<Fire>, now: Millis) -> Result<Vec<FireOutcome>> {
    let mut out = Vec::with_capacity(fires.len());
    for fire in fires {
        let state = tx
            .query_opt(
                "SELECT enabled, next_fire_at, last_task FROM schedules WHERE name = $1 FOR UPDATE",
                &[&fire.name],
            )
            .await?;
        let Some(state) = state else {
            out.push(FireOutcome::Stale);
            continue;
        };
        let (enabled, next_fire_at, last_task): (bool, Option<i64>, Option<uuid::Uuid>) =
            (state.get(0), state.get(1), state.get(2));
        if let Some((consumed, _)) = fire.advance
            && (!enabled || next_fire_at != Some(consumed))
        {
            out.push(FireOutcome::Stale);
            continue;
        }
        let next = fire.advance.map_or(next_fire_at, |(_, next)| next);
        let running = match last_task.filter(|_| fire.skip_if_running) {
            Some(t) => tx
                .query_opt("SELECT status FROM tasks WHERE id = $1", &[&t])
                .await?
                .map(|r| status_of(r.get(0)))
                .transpose()?
                .is_some_and(|s| !s.is_terminal()),
            None => false,
        };
        let taken = match fire.task.idempotency_key.as_deref() {
            Some(k) => tx.query_opt("SELECT 1 FROM tasks WHERE idempotency_key = $1", &[&k]).await?.is_some(),
            None => false,
        };
        let outcome = if running {
            FireOutcome::Skipped
        } else if taken {
            FireOutcome::Duplicate
        } else {
            let task = tasks::submit(tx, vec![fire.task]).await?.pop().map(|s| s.task);
            task.map_or(FireOutcome::Stale, |t| FireOutcome::Fired(Box::new(t)))
        };
        let (last_fired_at, last_task) = match &outcome {
            FireOutcome::Fired(t) => {
                tx.emit(now, schedule_fired(&fire.name, t, fire.advance.is_none()))?;
                (Some(now), Some(t.id))
            }
            _ => (None, None),
        };
        tx.execute(
            "UPDATE schedules SET next_fire_at = $2, last_fired_at = coalesce($3, last_fired_at), \
             last_task = coalesce($4, last_task), version = version + 1, updated_at = $5 WHERE name = $1",
            &[&fire.name, &next, &last_fired_at, &last_task, &now],
        )
        .await?;
        out.push(outcome);
    }
    Ok(out)
}

pub(super) async fn runs(tx: &mut Tx, name: String, limit: usize) -> Result<Vec<Task>> {
    // Run keys are `schedule:NAME@<slot>`: one range of the idempotency key
    // index (bytewise, the column's collation is "C"), in slot order.
    let from = quern_core::schedule::run_key_prefix(&name);
    let to = format!("{}A", &from[..from.len() - 1]);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {COLS} FROM tasks t WHERE t.idempotency_key >= $1 AND t.idempotency_key < $2 \
         ORDER BY t.idempotency_key DESC LIMIT $3"
    );
    let rows = tx.query(&sql, &[&from, &to, &limit]).await?;
    rows.iter().map(|r| Loaded::from_row(r).map(|l| l.task)).collect()
}
