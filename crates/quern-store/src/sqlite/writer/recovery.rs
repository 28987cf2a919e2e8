//! What the writer does at open, and again after a batch failed: it
//! rebuilds its memory (indexes, counts, paused queues, open workflows, the
//! event log's next offset) from the file.
//!
//! Invariant: after a rebuild the memory says what the rows say, and every
//! task that was running (with the leases the journal held) gets its lease
//! period again from `now`: a worker that was running one before a restart
//! keeps it for that long, so one task never has two live runs.

use super::chunked::ChunkedSet;
use super::{Counts, Effects, LeaseState, State, events, leases, status_index};
use crate::sqlite::rows::{status_at, uuid_at};
use crate::stored::ms_i64;
use quern_core::{Dependency, Millis, Status};
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

impl State {
    pub(crate) fn load(
        conn: &Connection,
        now: Millis,
        counts: Counts,
        paused: Arc<Mutex<HashSet<String>>>,
        unwritten: Arc<AtomicUsize>,
    ) -> rusqlite::Result<Self> {
        let mut st = Self {
            ready: HashMap::new(),
            delayed: ChunkedSet::default(),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            paused,
            counts,
            effects: Effects::default(),
            waiting: HashMap::new(),
            unmet: HashMap::new(),
            holding: HashSet::new(),
            approval_deadlines: BTreeSet::new(),
            approval_due: HashMap::new(),
            log: events::EventLog::default(),
            open_workflows: HashMap::new(),
            last_now: now,
            journal: leases::Journal::new(unwritten),
            tally: crate::tally::Tally::default(),
        };
        st.reload(conn, now)?;
        Ok(st)
    }

    /// Rebuilds every index from the file. Running tasks (with the leases
    /// the journal held) get their lease period again from `now`: a worker
    /// that was running one before a restart keeps it for that long, so one
    /// task never has two live runs.
    pub(super) fn reload(&mut self, conn: &Connection, now: Millis) -> rusqlite::Result<()> {
        self.recover_leases(conn)?;
        self.log = events::EventLog::starting_at(events::next_offset(conn)?);
        self.open_workflows.clear();
        let mut stmt = conn.prepare(
            "SELECT workflow, count(*) FROM tasks WHERE workflow IS NOT NULL \
             AND status IN ('pending', 'queued', 'running') GROUP BY workflow",
        )?;
        for row in stmt.query_map([], |r| Ok((uuid_at(r, 0)?, r.get::<_, i64>(1)?)))? {
            let (workflow, open) = row?;
            self.open_workflows.insert(workflow, u32::try_from(open).unwrap_or(u32::MAX));
        }
        self.ready.clear();
        self.delayed.clear();
        self.leases.clear();
        self.deadlines.clear();
        self.waiting.clear();
        self.unmet.clear();
        self.approval_deadlines.clear();
        self.approval_due.clear();
        let mut paused = HashSet::new();
        let mut stmt = conn.prepare("SELECT name FROM queues WHERE paused = 1")?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            paused.insert(name?);
        }
        if let Ok(mut p) = self.paused.lock() {
            *p = paused;
        }
        let mut counts: BTreeMap<String, [u64; 8]> = BTreeMap::new();
        let mut stmt = conn.prepare("SELECT queue, status, count(*) FROM tasks GROUP BY queue, status")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let n: i64 = row.get(2)?;
            counts.entry(row.get(0)?).or_default()[status_index(status_at(row, 1)?)] = n.unsigned_abs();
        }
        if let Ok(mut c) = self.counts.lock() {
            *c = counts;
        }
        let mut stmt = conn.prepare(
            "SELECT id, queue, name, status, priority, run_at, lease_token, lease_ms, timeout_ms, started_at, \
             attempt, max_attempts, retry, worker, cancel_requested, compact, depends_on, updated_at, workflow, \
             created_at FROM tasks WHERE status IN ('pending', 'queued', 'running')",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = uuid_at(row, 0)?;
            let queue: String = row.get(1)?;
            let name: String = row.get(2)?;
            let priority: i32 = row.get(4)?;
            let run_at: Millis = row.get(5)?;
            match status_at(row, 3)? {
                Status::Pending => {
                    let deps: Vec<Dependency> = row
                        .get::<_, Option<String>>(16)?
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or_default();
                    // Edges to parents that already ended were judged ready
                    // when they ended (else the task would be skipped):
                    // only the unfinished parents are still to be judged.
                    let mut unmet = 0;
                    for d in deps {
                        let parent: Option<String> = conn
                            .query_row("SELECT status FROM tasks WHERE id = ?1", [d.task.as_bytes()], |r| r.get(0))
                            .optional()?;
                        let parent_done = parent.and_then(|p| p.parse::<Status>().ok()).is_none_or(Status::is_terminal);
                        if !parent_done {
                            unmet += 1;
                            self.waiting.entry(d.task).or_default().push((id, d.on));
                        }
                    }
                    if unmet > 0 {
                        self.unmet.insert(id, unmet);
                    } else {
                        self.delayed.insert((run_at, id));
                    }
                }
                Status::Queued => {
                    let timeout_ms = row.get::<_, Option<i64>>(8)?.map(i64::unsigned_abs);
                    let since: Millis = row.get(17)?;
                    self.arm_approval(id, &name, timeout_ms, since);
                    self.push_ready(&queue, &name, priority, run_at, id);
                }
                _ => {
                    let lease_ms = row.get::<_, Option<i64>>(7)?.unwrap_or(30_000).unsigned_abs();
                    let timeout_ms = row.get::<_, Option<i64>>(8)?.map(i64::unsigned_abs);
                    let started: Millis = row.get::<_, Option<i64>>(9)?.unwrap_or(now);
                    let hold = now.saturating_add(ms_i64(lease_ms));
                    let retry: String = row.get(12)?;
                    let lease = LeaseState {
                        token: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        worker: row.get::<_, Option<String>>(13)?.unwrap_or_default(),
                        queue,
                        name,
                        priority,
                        expires_at: hold,
                        timeout_at: timeout_ms.map(|t| started.saturating_add(ms_i64(t)).max(hold)),
                        lease_ms,
                        timeout_ms,
                        attempt: row.get(10)?,
                        max_attempts: row.get(11)?,
                        retry: serde_json::from_str(&retry).unwrap_or_default(),
                        cancel_requested: row.get(14)?,
                        compact: row.get(15)?,
                        workflow: row.get::<_, Option<Vec<u8>>>(18)?.and_then(|b| Uuid::from_slice(&b).ok()),
                        started_at: started,
                        created_at: row.get(19)?,
                        journal: None,
                    };
                    self.deadlines.insert((lease.due(), id));
                    self.leases.insert(id, lease);
                }
            }
        }
        Ok(())
    }
}
