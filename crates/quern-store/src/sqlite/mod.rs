//! The embedded SQLite backend, Quern's default store.
//!
//! One writer thread owns the write connection and the in-memory indexes:
//! the ready queue (by queue, name, priority, run_at, id), the timers of
//! pending tasks, and the leases of running ones. Every write goes to it as
//! a job on a channel; the jobs waiting when it wakes share one transaction
//! (group commit). Reads use their own connections (`readers.rs`; the
//! queries of tasks are in `reads.rs`); they wait for the writer only to
//! have it write the leases it keeps in memory for a moment
//! (`writer/leases.rs`) when a read could otherwise miss one. See
//! `writer.rs` for the invariant between memory and file.

mod audit;
mod lock;
mod readers;
mod reads;
mod rows;
mod schema;
mod tokens;
mod webhooks;
mod writer;

pub use lock::LOCK_FILE;
pub use schema::{Durability, VERSION as SCHEMA_VERSION};

use crate::error::backend;
use crate::stored::end_page;
use crate::{
    Approval, CompleteAnswer, CompleteParams, DueSchedules, EventPage, EventQuery, Fire, FireOutcome, HeartbeatAnswer,
    HeartbeatParams, HistoryEntry, LeaseParams, ListQuery, NewWorkflow, QueueInfo, Result, ScheduleRecord,
    ScheduleWrite, Signals, Store, StoreError, Submitted, TaskPage, TickOutcome, WorkflowPage, WorkflowQuery,
    WorkflowRecord,
};
use crate::{
    AuditEntry, AuditQuery, AuditRecord, Delivery, GroupState, TaskTypeRecord, TokenRecord, WebhookRecord, WorkerRecord,
};
use async_trait::async_trait;
use quern_core::{Event, Millis, NewEvent, NewTask, Status, Task};
use rows::{TASK_COLUMNS, task_from_row};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use uuid::Uuid;
use writer::events::read_events;
use writer::schedules::{SCHEDULE_COLUMNS, schedule_from_row};
use writer::{Counts, Job, State, TypedJob};

/// The database file inside the data directory.
pub const DB_FILE: &str = "quern.db";

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The data directory; created if missing.
    pub dir: PathBuf,
    /// How much a commit survives.
    pub durability: Durability,
}

/// The embedded store.
pub struct SqliteStore {
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: readers::Readers,
    signals: Arc<Signals>,
    counts: Counts,
    paused: Arc<Mutex<HashSet<String>>>,
    /// How many leases the writer has not written into their rows yet, as
    /// of its last commit: reads of task rows have them written first.
    unwritten: Arc<AtomicUsize>,
    /// Roles and their holders: one process has the file, so they live in
    /// its memory.
    leaders: Mutex<std::collections::HashMap<String, (String, Millis)>>,
    /// Workers, by id: as with roles, one process serves them all.
    workers: Mutex<std::collections::HashMap<String, WorkerRecord>>,
    /// Consumer groups' delivery state and its version; their cursors are
    /// in the file.
    groups: Mutex<std::collections::HashMap<String, (u64, GroupState)>>,
    /// The data directory's lock, held until [`SqliteStore::close`].
    lock: Mutex<Option<lock::DirLock>>,
    /// The writer's commits and the requests waiting for it.
    writer_stats: Arc<writer::WriterStats>,
    /// The write-ahead log's file.
    wal: std::path::PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `opts.dir` and rebuilds its
    /// memory from the file; `now` starts the hold-back of tasks that were
    /// running when the previous process stopped.
    pub fn open(opts: &SqliteOptions, now: Millis) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| StoreError::Backend(format!("cannot create data directory {}: {e}", opts.dir.display())))?;
        let dir_lock = lock::DirLock::take(&opts.dir)?;
        let path = opts.dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(backend)?;
        private(&opts.dir)?;
        schema::configure(&conn, opts.durability).map_err(backend)?;
        schema::configure_writer(&conn).map_err(backend)?;
        let applied = schema::migrate(&conn)?;
        if !applied.is_empty() {
            tracing::info!(?applied, version = schema::VERSION, "data directory schema migrated");
        }
        let counts: Counts = Arc::default();
        let paused: Arc<Mutex<HashSet<String>>> = Arc::default();
        let unwritten: Arc<AtomicUsize> = Arc::default();
        let state = State::load(&conn, now, counts.clone(), paused.clone(), unwritten.clone()).map_err(backend)?;
        let signals = Arc::new(Signals::default());
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let writer_signals = signals.clone();
        let log_long: Arc<AtomicBool> = Arc::default();
        let writer_log_long = log_long.clone();
        let writer_stats: Arc<writer::WriterStats> = Arc::default();
        let stats = writer_stats.clone();
        let writer = std::thread::Builder::new()
            .name("quern-sqlite-writer".into())
            .spawn(move || {
                let clock = quern_core::SystemClock;
                let now = || quern_core::Clock::now(&clock);
                writer::run_writer(&conn, state, &rx, &writer_signals, &now, &writer_log_long, &stats);
            })
            .map_err(backend)?;
        let checkpointer = spawn_checkpointer(&path, opts.durability, log_long)?;
        let wal = opts.dir.join(format!("{DB_FILE}-wal"));
        let readers = readers::Readers::start(path, opts.durability)?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers,
            signals,
            counts,
            paused,
            unwritten,
            leaders: Mutex::default(),
            workers: Mutex::default(),
            groups: Mutex::default(),
            lock: Mutex::new(Some(dir_lock)),
            writer_stats,
            wal,
        })
    }

    /// Stops the writer after the jobs already sent; later calls answer
    /// [`StoreError::Closed`]. Safe to call twice.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some((stop, h)) = checkpointer {
            drop(stop);
            let _ = h.join();
        }
        self.readers.close();
        if let Ok(mut held) = self.lock.lock() {
            held.take();
        }
    }

    /// Writes into the data directory's lock file the address this process
    /// serves, so that a second server refused the directory can name it.
    pub fn announce(&self, url: &str) -> Result<()> {
        match self.lock.lock().ok().as_ref().and_then(|l| l.as_ref()) {
            Some(held) => held.announce(url),
            None => Err(StoreError::Closed),
        }
    }

    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut State, &Connection) -> Result<R> + Send + 'static,
    {
        let (job, rx) = TypedJob::boxed(f);
        {
            let jobs = self.jobs.lock().map_err(|_| StoreError::Closed)?;
            let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
            self.writer_stats.queued.fetch_add(1, Ordering::Relaxed);
            if sender.send(job).is_err() {
                self.writer_stats.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Closed);
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Has the writer put every lease it has answered into its task's row,
    /// so that a read of task rows that follows sees them (see
    /// `writer::leases`).
    async fn settle(&self) -> Result<()> {
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        self.write(|st, conn| st.write_due_leases(conn, true)).await
    }

    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        self.readers.read(f).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Makes the data directory 0700 and the database's files 0600: task
/// inputs, results and webhook secrets are for the server's user alone.
fn private(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::Backend(format!("cannot make {} private: {e}", path.display())))
    };
    set(dir, 0o700)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.join(format!("{DB_FILE}{suffix}"));
        if file.exists() {
            set(&file, 0o600)?;
        }
    }
    Ok(())
}

/// The length of the write-ahead log (in 4 KiB frames: 32 MiB) past which the
/// writer finishes a checkpoint between two batches, so that its next
/// transaction starts the log again from its beginning.
const RESTART_WAL_FRAMES: i64 = 8_192;

/// How few frames the checkpointer may have left uncopied for the writer to
/// finish its checkpoint (4 MiB): the writer pauses only as long as copying
/// that little takes. Under a load the checkpointer cannot follow, the log
/// grows to [`MAX_WAL_FRAMES`] as before.
const CATCH_UP_FRAMES: i64 = 1_024;

/// The longest the write-ahead log may grow (in 4 KiB frames: 256 MiB) before
/// the checkpointer truncates it, pausing the writer: only when restarting
/// keeps failing (a reader holding an old snapshot for long).
const MAX_WAL_FRAMES: i64 = 65_536;

/// How often the checkpointer moves the write-ahead log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints the WAL from its own thread and connection, so that the
/// writer never stops to copy pages (its own automatic checkpoints are off).
/// Passive checkpoints never block the writer or the readers; the last one,
/// when the store closes, empties the log.
///
/// Under a steady write load a passive checkpoint never finds the log
/// wholly copied, and SQLite starts the log again from its beginning only at
/// a write that does: the log would only grow, until a truncation pauses the
/// writer for as long as copying and syncing it takes (135–254 ms at 256 MiB).
/// So past [`RESTART_WAL_FRAMES`], when this thread has copied all but
/// [`CATCH_UP_FRAMES`] of it, this sets `log_long`, and the writer runs the
/// last passive checkpoint itself between two batches: with nothing written
/// meanwhile it copies those few frames, and the writer's next transaction
/// restarts the log.
fn spawn_checkpointer(
    path: &std::path::Path,
    durability: Durability,
    log_long: Arc<AtomicBool>,
) -> Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let conn = Connection::open(path).map_err(backend)?;
    schema::configure(&conn, durability).map_err(backend)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("quern-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                // (busy, frames in the log, frames checkpointed)
                let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match passive {
                    // Under a steady write load a passive checkpoint never
                    // catches up, and the log would only grow: past the cap,
                    // pause the writer once to copy everything and truncate.
                    Ok((frames, _)) if frames > MAX_WAL_FRAMES => {
                        tracing::info!(frames, "the write-ahead log did not restart: truncating it");
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                            tracing::warn!(error = %e, "WAL truncation failed");
                        }
                    }
                    Ok((frames, copied)) if frames > RESTART_WAL_FRAMES && frames - copied <= CATCH_UP_FRAMES => {
                        log_long.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
            // Stopped after the writer: move the whole log into the
            // database, so that a cleanly stopped data directory is its one
            // file (to copy, or to read the schema version from).
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "the last WAL checkpoint failed");
            }
        })
        .map_err(backend)?;
    Ok((stop, handle))
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        self.write(move |st, conn| st.submit(conn, tasks)).await
    }

    async fn get(&self, id: Uuid) -> Result<Task> {
        // Only a row that says `queued` can hide an unwritten lease: the
        // count is looked at before the read, so a lease answered before
        // this call began is either written in what the read sees or counted.
        let unwritten = self.unwritten.load(Ordering::Acquire);
        let read = move |conn: &Connection| {
            conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id.as_bytes()], task_from_row).optional())
                .map_err(backend)?
                .ok_or(StoreError::NotFound(id))
        };
        let task = self.read(read).await?;
        if unwritten == 0 || task.status != Status::Queued {
            return Ok(task);
        }
        self.settle().await?;
        self.read(read).await
    }

    async fn list(&self, query: ListQuery) -> Result<TaskPage> {
        self.settle().await?;
        self.read(move |conn| reads::list(conn, &query)).await
    }

    async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        self.settle().await?;
        self.read(move |conn| reads::history(conn, id)).await
    }

    async fn lease(&self, params: LeaseParams) -> Result<Vec<Task>> {
        self.write(move |st, conn| st.lease(conn, &params)).await
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<HeartbeatAnswer>> {
        self.write(move |st, conn| st.heartbeat(conn, params)).await
    }

    async fn complete(&self, params: CompleteParams) -> Result<Vec<CompleteAnswer>> {
        self.write(move |st, conn| st.complete(conn, params)).await
    }

    async fn cancel(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        self.write(move |st, conn| st.cancel(conn, id, now, by)).await
    }

    async fn retry(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        self.write(move |st, conn| st.retry(conn, id, now, by)).await
    }

    async fn tick(&self, now: Millis) -> Result<TickOutcome> {
        self.write(move |st, conn| st.tick(conn, now)).await
    }

    async fn purge(&self, finished_before: Millis, limit: usize) -> Result<usize> {
        self.write(move |st, conn| st.purge(conn, finished_before, limit)).await
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let paused = self.paused.lock().map(|p| p.clone()).unwrap_or_default();
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        let mut out: Vec<QueueInfo> = counts
            .into_iter()
            .map(|(name, by_status)| QueueInfo {
                paused: paused.contains(&name),
                counts: Status::ALL.into_iter().zip(by_status).filter(|(_, n)| *n > 0).collect(),
                name,
            })
            .collect();
        for name in paused {
            if !out.iter().any(|q| q.name == name) {
                out.push(QueueInfo { name, counts: Default::default(), paused: true });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let queue = queue.to_owned();
        self.write(move |st, conn| st.set_paused(conn, &queue, paused)).await
    }

    async fn submit_workflow(&self, workflow: NewWorkflow, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        self.write(move |st, conn| {
            st.insert_workflow(conn, workflow.id, &workflow.name, workflow.created_at, tasks.len())?;
            st.submit(conn, tasks)
        })
        .await
    }

    async fn workflow(&self, id: Uuid) -> Result<WorkflowRecord> {
        self.settle().await?;
        self.read(move |conn| {
            let (name, created_at) = reads::workflow_head(conn, id)?;
            let tasks = conn
                .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE workflow = ?1 ORDER BY id"))
                .and_then(|mut s| s.query_map([id.as_bytes()], task_from_row)?.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend)?;
            Ok(WorkflowRecord { id, name, created_at, tasks })
        })
        .await
    }

    async fn workflow_page(&self, q: WorkflowQuery) -> Result<WorkflowPage> {
        self.settle().await?;
        self.read(move |conn| {
            let id = q.id;
            let (name, created_at) = reads::workflow_head(conn, id)?;
            let counts = rows::workflow_counts(conn, id)?
                .into_iter()
                .map(|(status, n)| (status, usize::try_from(n).unwrap_or(0)))
                .collect();
            let first_open = conn
                .prepare_cached(
                    "SELECT id FROM tasks WHERE workflow = ?1 \
                     AND (status = 'pending' OR status = 'queued' OR status = 'running') ORDER BY id LIMIT 1",
                )
                .and_then(|mut s| s.query_row([id.as_bytes()], |r| r.get::<_, [u8; 16]>(0)).optional())
                .map_err(backend)?
                .map(Uuid::from_bytes);
            let after = q.after.map_or([0u8; 16], |a| a.into_bytes());
            let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
            let mut tasks = conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE workflow = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ))
                .and_then(|mut s| {
                    s.query_map(rusqlite::params![id.as_bytes(), &after[..], limit], task_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend)?;
            let next_after = end_page(&mut tasks, q.limit);
            Ok(WorkflowPage { id, name, created_at, counts, first_open, tasks, next_after })
        })
        .await
    }

    async fn cancel_workflow(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<usize> {
        self.write(move |st, conn| {
            let exists = conn
                .query_row("SELECT 1 FROM workflows WHERE id = ?1", [id.as_bytes()], |_| Ok(()))
                .optional()
                .map_err(backend)?;
            exists.ok_or(StoreError::WorkflowNotFound(id))?;
            st.cancel_workflow(conn, id, now, by)
        })
        .await
    }

    async fn approve(&self, id: Uuid, approval: Approval, now: Millis) -> Result<Task> {
        self.write(move |st, conn| st.approve(conn, id, approval.approved, approval.by, approval.comment, now)).await
    }

    async fn schedules(&self, name: Option<String>) -> Result<Vec<ScheduleRecord>> {
        self.read(move |conn| {
            let found = match &name {
                Some(n) => conn
                    .prepare_cached(&format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1"))
                    .and_then(|mut s| s.query_map([n], schedule_from_row)?.collect::<rusqlite::Result<Vec<_>>>()),
                None => conn
                    .prepare_cached(&format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"))
                    .and_then(|mut s| s.query_map([], schedule_from_row)?.collect::<rusqlite::Result<Vec<_>>>()),
            }
            .map_err(backend)?;
            match name {
                Some(n) if found.is_empty() => Err(StoreError::ScheduleNotFound(n)),
                _ => Ok(found),
            }
        })
        .await
    }

    async fn write_schedules(&self, writes: Vec<ScheduleWrite>) -> Result<()> {
        self.write(move |st, conn| st.write_schedules(conn, writes)).await
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> Result<DueSchedules> {
        self.read(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let due = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE enabled = 1 AND next_fire_at <= ?1 \
                     ORDER BY next_fire_at LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![now, limit], schedule_from_row)?.collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend)?;
            let next_due = conn
                .prepare_cached("SELECT min(next_fire_at) FROM schedules WHERE enabled = 1 AND next_fire_at > ?1")
                .and_then(|mut s| s.query_row([now], |r| r.get(0)))
                .map_err(backend)?;
            Ok(DueSchedules { due, next_due })
        })
        .await
    }

    async fn fire_schedules(&self, fires: Vec<Fire>, now: Millis) -> Result<Vec<FireOutcome>> {
        self.write(move |st, conn| st.fire_schedules(conn, fires, now)).await
    }

    async fn schedule_runs(&self, name: String, limit: usize) -> Result<Vec<Task>> {
        self.settle().await?;
        self.read(move |conn| {
            // Run keys are `schedule:NAME@<slot>`: one range of the
            // idempotency key index, in slot order.
            let from = quern_core::schedule::run_key_prefix(&name);
            let to = format!("{}A", &from[..from.len() - 1]);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            conn.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key >= ?1 AND idempotency_key < ?2 \
                 ORDER BY idempotency_key DESC LIMIT ?3"
            ))
            .and_then(|mut s| s.query_map(params![from, to, limit], task_from_row)?.collect())
            .map_err(backend)
        })
        .await
    }

    async fn publish(&self, events: Vec<NewEvent>, now: Millis) -> Result<Vec<Event>> {
        self.write(move |st, _| st.publish(events, now)).await
    }

    async fn read_events(&self, query: EventQuery) -> Result<EventPage> {
        self.read(move |conn| read_events(conn, &query)).await
    }

    async fn purge_events(&self, before: Millis, keep: u64) -> Result<u64> {
        self.write(move |st, conn| st.purge_events(conn, before, keep)).await
    }

    async fn group_cursor(&self, group: String) -> Result<Option<u64>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT cursor FROM event_groups WHERE name = ?1")
                .and_then(|mut s| s.query_row([group], |r| r.get::<_, i64>(0)).optional())
                .map(|c| c.map(i64::unsigned_abs))
                .map_err(backend)
        })
        .await
    }

    async fn group_cursors(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        self.read(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt =
                conn.prepare_cached("SELECT name, cursor FROM event_groups ORDER BY name LIMIT ?1").map_err(backend)?;
            let rows = stmt
                .query_map([limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.unsigned_abs())))
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn save_group_cursor(&self, group: String, cursor: u64, now: Millis) -> Result<()> {
        self.write(move |_, conn| {
            conn.prepare_cached(
                "INSERT INTO event_groups (name, cursor, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET cursor = max(cursor, excluded.cursor), updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![group, i64::try_from(cursor).unwrap_or(i64::MAX), now]))
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.write(move |_, conn| audit::append(conn, &entry)).await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        self.read(move |conn| audit::read(conn, &query)).await
    }

    async fn purge_audit(&self, before: Millis) -> Result<u64> {
        self.write(move |_, conn| audit::purge(conn, before)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(tokens::list).await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<()> {
        self.write(move |_, conn| tokens::create(conn, &token)).await
    }

    async fn revoke_token(&self, name: String, at: Millis) -> Result<Option<TokenRecord>> {
        self.write(move |_, conn| tokens::revoke(conn, &name, at)).await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        self.read(webhooks::list).await
    }

    async fn put_webhook(&self, webhook: WebhookRecord) -> Result<()> {
        self.write(move |_, conn| webhooks::put(conn, &webhook)).await
    }

    async fn delete_webhook(&self, name: String) -> Result<bool> {
        self.write(move |_, conn| webhooks::delete(conn, &name)).await
    }

    async fn webhook_progress(&self, state: WebhookRecord, delivery: Option<Delivery>) -> Result<()> {
        self.write(move |_, conn| webhooks::progress(conn, &state, delivery.as_ref())).await
    }

    async fn deliveries(&self, name: String, limit: usize) -> Result<Vec<Delivery>> {
        self.read(move |conn| webhooks::deliveries(conn, &name, limit)).await
    }

    async fn put_task_types(&self, types: Vec<TaskTypeRecord>) -> Result<()> {
        self.write(move |_, conn| {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO task_types (name, description, input_schema, declared_at, defaults) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
                     input_schema = excluded.input_schema, declared_at = excluded.declared_at, \
                     defaults = excluded.defaults \
                     WHERE excluded.declared_at >= task_types.declared_at",
                )
                .map_err(backend)?;
            for t in &types {
                stmt.execute(params![t.name, t.description, t.input_schema, t.declared_at, t.defaults])
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn task_types(&self) -> Result<Vec<TaskTypeRecord>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT name, description, input_schema, declared_at, defaults FROM task_types ORDER BY name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(TaskTypeRecord {
                        name: r.get(0)?,
                        description: r.get(1)?,
                        input_schema: r.get(2)?,
                        declared_at: r.get(3)?,
                        defaults: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(backend)
        })
        .await
    }

    async fn group_state(&self, group: String) -> Result<Option<(u64, GroupState)>> {
        Ok(self.groups.lock().map_err(|_| StoreError::Closed)?.get(&group).cloned())
    }

    async fn put_group_state(
        &self,
        group: String,
        version: Option<u64>,
        state: GroupState,
        now: Millis,
    ) -> Result<bool> {
        let advanced = {
            let mut groups = self.groups.lock().map_err(|_| StoreError::Closed)?;
            let current = groups.get(&group);
            if current.map(|(v, _)| *v) != version {
                return Ok(false);
            }
            let before = current.map(|(_, g)| g.cursor());
            let cursor = state.cursor();
            groups.insert(group.clone(), (version.map_or(1, |v| v + 1), state));
            (before.is_none_or(|b| cursor > b)).then_some(cursor)
        };
        if let Some(cursor) = advanced {
            self.save_group_cursor(group, cursor, now).await?;
        }
        Ok(true)
    }

    async fn put_workers(&self, records: Vec<WorkerRecord>) -> Result<()> {
        let mut workers = self.workers.lock().map_err(|_| StoreError::Closed)?;
        for r in records {
            if workers.get(&r.id).is_none_or(|w| w.last_seen <= r.last_seen) {
                workers.insert(r.id.clone(), r);
            }
        }
        Ok(())
    }

    async fn workers(&self, since: Millis) -> Result<Vec<WorkerRecord>> {
        let mut workers = self.workers.lock().map_err(|_| StoreError::Closed)?;
        workers.retain(|_, w| w.last_seen >= since);
        Ok(workers.values().cloned().collect())
    }

    async fn lead(&self, role: String, node: String, now: Millis, ttl_ms: u64) -> Result<bool> {
        let mut leaders = self.leaders.lock().map_err(|_| StoreError::Closed)?;
        let until = now.saturating_add(crate::stored::ms_i64(ttl_ms));
        let holder = leaders.entry(role).or_insert_with(|| (node.clone(), until));
        if holder.0 == node || holder.1 < now {
            *holder = (node, until);
            return Ok(true);
        }
        Ok(false)
    }

    async fn ready(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend)).await
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }

    fn stats(&self) -> crate::stats::StoreStats {
        crate::stats::StoreStats {
            writer_queue: Some(u64::try_from(self.writer_stats.queued.load(Ordering::Relaxed)).unwrap_or(0)),
            wal_bytes: Some(std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0)),
            ..self.writer_stats.commits.stats()
        }
    }
}
