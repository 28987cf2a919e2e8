//! Leases written late: a compact task's lease (see `compact` in the
//! schema) lives in the writer's memory and in one journal row per lease
//! call; the task's own row is updated to `running`
//! only if the task is still running [`WRITE_DELAY`] later, or when
//! something is about to read that row. A task that ends sooner (the common
//! case for short tasks) has its lease and its end written in one row
//! update, so it costs two row writes (insert, end) instead of three.
//!
//! Invariants:
//! - Every lease whose task row does not say `running` yet is listed, with
//!   its token, in a committed `lease_journal` row: after a crash the reload
//!   writes those leases out before anything else, so a restart holds their
//!   tasks back for a lease period like any running task and their workers'
//!   tokens still work. A journal row is deleted in the transaction that
//!   resolves its last lease.
//! - A row that says `queued` while its task holds an unwritten lease has
//!   `updated_at` no later than the lease's journal time; every later write of
//!   that row (the lease itself, a retry, an end) either leaves `queued` or
//!   stamps a later time. That is how recovery tells such rows apart.
//! - Readers see no unwritten lease that was answered: the count of
//!   unwritten leases is published after each commit (before any answer goes
//!   out), and a reader that finds it non-zero before it reads asks the
//!   writer to write them all first.

use super::{LeaseState, State};
use crate::Result;
use crate::error::backend;
use quern_core::Millis;
use rusqlite::{Connection, params};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a lease may stay unwritten. Short tasks end well within it; a
/// longer one gets its row written while it runs. Wall time, not the
/// injected clock: it changes when a row is written, never what any reader
/// or worker sees.
pub(super) const WRITE_DELAY: Duration = Duration::from_millis(50);

/// The bytes one lease takes in a journal row: the task id, then the random
/// part of its token.
const ENTRY: usize = 32;

/// The journal's memory.
#[derive(Default)]
pub(super) struct Journal {
    /// Unresolved leases of each journal row.
    open: HashMap<i64, usize>,
    /// Leases in the order they were taken, to write those still running
    /// after [`WRITE_DELAY`].
    due: VecDeque<(Instant, Uuid)>,
    /// The journal row the next lease call writes.
    next_seq: i64,
    /// Unwritten leases now, and as last published to readers.
    unwritten: usize,
    published: Arc<AtomicUsize>,
}

impl Journal {
    pub(super) fn new(published: Arc<AtomicUsize>) -> Self {
        Self { published, ..Self::default() }
    }
}

/// A lease call's journal row, filled while the call leases.
pub(super) struct Entries {
    seq: i64,
    /// Each lease's task id and token nonce.
    leases: Vec<(Uuid, Uuid)>,
}

impl Entries {
    pub(super) fn push(&mut self, id: Uuid, nonce: Uuid) {
        self.leases.push((id, nonce));
    }

    /// The journal row these entries go in.
    pub(super) fn seq(&self) -> i64 {
        self.seq
    }
}

/// Writes a lease into its task's row.
pub(super) fn write_row(conn: &Connection, id: Uuid, lease: &LeaseState) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET status = 'running', attempt = ?2, started_at = ?3, updated_at = ?3, worker = ?4, \
         lease_token = ?5, lease_ms = ?6, progress = NULL, cancel_requested = 0 WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.as_bytes(),
            lease.attempt,
            lease.started_at,
            lease.worker,
            lease.token,
            crate::stored::ms_i64(lease.lease_ms)
        ])
    })
    .map_err(backend)?;
    Ok(())
}

/// Writes an unwritten lease into its row; answers the journal row it
/// leaves, to be resolved.
fn write_out(conn: &Connection, id: Uuid, lease: &mut LeaseState) -> Result<Option<i64>> {
    let Some(seq) = lease.journal.take() else { return Ok(None) };
    write_row(conn, id, lease)?;
    Ok(Some(seq))
}

impl State {
    /// Starts a lease call's journal row.
    pub(super) fn journal_entries(&mut self, capacity: usize) -> Entries {
        let seq = self.journal.next_seq;
        self.journal.next_seq += 1;
        Entries { seq, leases: Vec::with_capacity(capacity) }
    }

    /// Writes a lease call's journal row; its leases are now unwritten.
    pub(super) fn write_journal(
        &mut self,
        conn: &Connection,
        entries: Entries,
        at: Millis,
        worker: &str,
        lease_ms: u64,
    ) -> Result<()> {
        if entries.leases.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.leases.len() * ENTRY);
        for (id, nonce) in &entries.leases {
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(nonce.as_bytes());
        }
        conn.prepare_cached(
            "INSERT INTO lease_journal (seq, at, worker, lease_ms, leases) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![entries.seq, at, worker, crate::stored::ms_i64(lease_ms), bytes]))
        .map_err(backend)?;
        self.journal.open.insert(entries.seq, entries.leases.len());
        self.journal.unwritten += entries.leases.len();
        let now = Instant::now();
        self.journal.due.extend(entries.leases.into_iter().map(|(id, _)| (now, id)));
        Ok(())
    }

    /// Counts one lease of a journal row as resolved (its row written, or
    /// the task's end written in its place); deletes the row with its last.
    pub(super) fn resolve(&mut self, conn: &Connection, seq: i64) -> Result<()> {
        self.journal.unwritten = self.journal.unwritten.saturating_sub(1);
        let Some(open) = self.journal.open.get_mut(&seq) else { return Ok(()) };
        *open = open.saturating_sub(1);
        if *open > 0 {
            return Ok(());
        }
        self.journal.open.remove(&seq);
        conn.prepare_cached("DELETE FROM lease_journal WHERE seq = ?1")
            .and_then(|mut s| s.execute([seq]))
            .map_err(backend)?;
        Ok(())
    }

    /// Whether the task holds a lease its row does not show yet.
    pub(super) fn is_unwritten(&self, id: Uuid) -> bool {
        self.leases.get(&id).is_some_and(|l| l.journal.is_some())
    }

    /// Writes the task's lease into its row if it is not written yet.
    pub(super) fn write_lease(&mut self, conn: &Connection, id: Uuid) -> Result<()> {
        let Some(lease) = self.leases.get_mut(&id) else { return Ok(()) };
        let seq = write_out(conn, id, lease)?;
        seq.map_or(Ok(()), |seq| self.resolve(conn, seq))
    }

    /// Writes a lease that was taken out of memory (its attempt is ending)
    /// into its row, if it is not written yet.
    pub(super) fn write_taken_lease(&mut self, conn: &Connection, id: Uuid, lease: &mut LeaseState) -> Result<()> {
        let seq = write_out(conn, id, lease)?;
        seq.map_or(Ok(()), |seq| self.resolve(conn, seq))
    }

    /// Writes the leases taken at least [`WRITE_DELAY`] ago that are still
    /// unwritten; all of them with `all`.
    pub(crate) fn write_due_leases(&mut self, conn: &Connection, all: bool) -> Result<()> {
        let now = Instant::now();
        while let Some(&(at, id)) = self.journal.due.front() {
            if !all && now.duration_since(at) < WRITE_DELAY {
                break;
            }
            self.journal.due.pop_front();
            self.write_lease(conn, id)?;
        }
        Ok(())
    }

    /// How long the writer may wait for work before a lease falls due;
    /// `None` when no lease is unwritten.
    pub(super) fn next_lease_write(&mut self) -> Option<Duration> {
        while let Some(&(at, id)) = self.journal.due.front() {
            if self.is_unwritten(id) {
                return Some(WRITE_DELAY.saturating_sub(at.elapsed()));
            }
            self.journal.due.pop_front();
        }
        None
    }

    /// Tells readers how many leases are unwritten: after a commit, before
    /// its answers.
    pub(super) fn publish_unwritten(&self) {
        self.journal.published.store(self.journal.unwritten, Ordering::Release);
    }

    /// Writes out the leases a crash (or a failed batch) left in the
    /// journal, then empties it; runs first in a reload, outside any batch.
    pub(super) fn recover_leases(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.journal.open.clear();
        self.journal.due.clear();
        self.journal.unwritten = 0;
        self.publish_unwritten();
        let rows: Vec<(Millis, String, i64, Vec<u8>)> = conn
            .prepare("SELECT at, worker, lease_ms, leases FROM lease_journal ORDER BY seq")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        self.journal.next_seq = 1;
        if rows.is_empty() {
            return Ok(());
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let written =
            write_recovered(conn, &rows).and_then(|()| conn.execute_batch("DELETE FROM lease_journal; COMMIT"));
        if written.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        written
    }
}

/// Writes each journal lease whose row still says `queued` as it stood
/// before its lease (see the module's invariants) as a running lease.
fn write_recovered(conn: &Connection, rows: &[(Millis, String, i64, Vec<u8>)]) -> rusqlite::Result<()> {
    let mut write = conn.prepare_cached(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, started_at = ?2, updated_at = ?2, \
         worker = ?3, lease_token = (attempt + 1) || '.' || lower(hex(?4)), lease_ms = ?5, progress = NULL, \
         cancel_requested = 0 WHERE id = ?1 AND status = 'queued' AND updated_at <= ?2",
    )?;
    for (at, worker, lease_ms, leases) in rows {
        for entry in leases.chunks_exact(ENTRY) {
            let (id, nonce) = entry.split_at(16);
            write.execute(params![id, at, worker, nonce, lease_ms])?;
        }
    }
    Ok(())
}
