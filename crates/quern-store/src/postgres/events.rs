//! The event log and consumer groups' cursors and delivery state in
//! PostgreSQL.
//!
//! Invariant: offsets become visible in order. Concurrent transactions
//! commit in any order, so a log that took offsets from a sequence could
//! show N+1 to a reader while N is still uncommitted, and that reader
//! would skip N for good. Here offsets are handed out only by a holder of
//! the `event_head` row lock, held until it commits (the node's sequencer,
//! or a `publish`): so when a reader sees a segment, every segment below it
//! is committed and visible. Segments still waiting for their offsets have
//! negative keys, and every read here skips them.

use super::Tx;
use crate::error::backend;
use crate::segment::{MAX_SCAN_SEGMENTS, ReadPlan, plan_read, read_segment};
use crate::stored::json;
use crate::{EventPage, EventQuery, GroupState, Result};
use quern_core::Millis;

pub(super) async fn read(tx: &mut Tx, q: EventQuery) -> Result<EventPage> {
    let row = tx
        .query_opt(
            "SELECT min(first_offset), coalesce(max(first_offset + count), 1) - 1 FROM event_segments \
             WHERE first_offset > 0",
            &[],
        )
        .await?;
    let (earliest, head): (Option<i64>, i64) = row.map_or((None, 0), |r| (r.get(0), r.get(1)));
    let (mut page, after) = match plan_read(&q, earliest.map(i64::unsigned_abs), head.unsigned_abs())? {
        ReadPlan::Done(page) => return Ok(page),
        ReadPlan::Scan(page, after) => (page, after),
    };
    let from = i64::try_from(after + 1).unwrap_or(i64::MAX);
    let start: i64 = tx
        .query_opt(
            "SELECT max(first_offset) FROM event_segments WHERE first_offset > 0 AND first_offset <= $1",
            &[&from],
        )
        .await?
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    let rows = tx
        .query(
            "SELECT first_offset, events FROM event_segments WHERE first_offset >= $1 ORDER BY first_offset LIMIT $2",
            &[&start.max(1), &MAX_SCAN_SEGMENTS],
        )
        .await?;
    for r in rows {
        let first: i64 = r.get(0);
        let text: &str = r.get(1);
        if read_segment(&mut page, &q, after, first.unsigned_abs(), text)? {
            break;
        }
    }
    Ok(page)
}

/// Deletes whole segments whose newest event is older than `before`, and
/// those wholly beyond the newest `keep` events; the newest segment always
/// stays. Answers how many events went.
pub(super) async fn purge(tx: &mut Tx, before: Millis, keep: u64) -> Result<u64> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let row = tx
        .query_opt(
            "WITH gone AS (DELETE FROM event_segments WHERE (last_at < $1 \
             OR first_offset + count - 1 <= (SELECT next - 1 FROM event_head) - $2) \
             AND first_offset > 0 AND first_offset < (SELECT max(first_offset) FROM event_segments) RETURNING count) \
             SELECT coalesce(sum(count), 0)::bigint FROM gone",
            &[&before, &keep],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0).unsigned_abs()))
}

pub(super) async fn group_cursor(tx: &mut Tx, group: String) -> Result<Option<u64>> {
    let row = tx.query_opt("SELECT cursor FROM event_groups WHERE name = $1", &[&group]).await?;
    Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
}

pub(super) async fn group_cursors(tx: &mut Tx, limit: usize) -> Result<Vec<(String, u64)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx.query("SELECT name, cursor FROM event_groups ORDER BY name LIMIT $1", &[&limit]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1).unsigned_abs())).collect())
}

pub(super) async fn save_group_cursor(tx: &mut Tx, group: String, cursor: u64, now: Millis) -> Result<()> {
    let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO event_groups (name, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) \
         DO UPDATE SET cursor = greatest(event_groups.cursor, excluded.cursor), updated_at = excluded.updated_at",
        &[&group, &cursor, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn group_state(tx: &mut Tx, group: String) -> Result<Option<(u64, GroupState)>> {
    let Some(row) = tx.query_opt("SELECT version, state FROM group_states WHERE name = $1", &[&group]).await? else {
        return Ok(None);
    };
    let state: GroupState = serde_json::from_str(row.get(1)).map_err(backend)?;
    Ok(Some((row.get::<_, i64>(0).unsigned_abs(), state)))
}

pub(super) async fn put_group_state(
    tx: &mut Tx,
    group: String,
    version: Option<u64>,
    state: GroupState,
    now: Millis,
) -> Result<bool> {
    let text = json(&state);
    let changed = match version {
        None => {
            tx.execute(
                "INSERT INTO group_states (name, version, state) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING",
                &[&group, &text],
            )
            .await?
        }
        Some(v) => {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE group_states SET version = version + 1, state = $3 WHERE name = $1 AND version = $2",
                &[&group, &v, &text],
            )
            .await?
        }
    };
    if changed == 0 {
        return Ok(false);
    }
    save_group_cursor(tx, group, state.cursor(), now).await?;
    Ok(true)
}
