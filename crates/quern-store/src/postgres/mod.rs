//! The PostgreSQL backend: every server node is stateless and shares one
//! database, so any number of nodes can serve the same tasks.
//!
//! Each operation is one transaction on a pooled connection, retried when
//! PostgreSQL reports a serialization failure, a deadlock or a unique-key
//! race (nothing of a failed try is kept). Work that any node may do (leasing,
//! timers, releasing dependents, firing schedules) locks its rows with
//! `FOR UPDATE` (`SKIP LOCKED` where another node's share can be left to
//! it), so each piece is done once, by whichever node gets there first. A
//! commit raises this node's signals at once and the others' through
//! `NOTIFY`, which a dedicated connection per node listens for.
//!
//! How it differs from SQLite: leases, timers and the ready queue are rows
//! and indexes, not a writer's memory; a transaction appends its events as
//! a pending segment and the node's sequencer gives them offsets after the
//! commit, from one locked row, so offsets become visible in order while
//! writers commit side by side (see `sequencer`).

mod audit;
mod combine;
mod dependents;
mod events;
mod listen;
mod reads;
mod rows;
mod schedules;
pub mod schema;
mod sequencer;
mod tasks;
mod tls;
mod tokens;
mod webhooks;
mod workflows;

use crate::error::backend;
use crate::segment::SegmentBuilder;
use crate::stored::json;
use crate::{
    Approval, AuditEntry, AuditQuery, AuditRecord, CompleteAnswer, CompleteParams, Delivery, DueSchedules, EventPage,
    EventQuery, Fire, FireOutcome, GroupState, HeartbeatAnswer, HeartbeatParams, HistoryEntry, LeaseParams, ListQuery,
    NewWorkflow, QueueInfo, Result, ScheduleRecord, ScheduleWrite, Signals, Store, StoreError, Submitted, TaskPage,
    TaskTypeRecord, TickOutcome, TokenRecord, WebhookRecord, WorkerRecord, WorkflowPage, WorkflowQuery, WorkflowRecord,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use quern_core::{Event, Millis, NewEvent, NewTask, Task};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// How to open a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/database`, as libpq takes it.
    pub url: String,
    /// The schema Quern's tables live in; created if missing.
    pub schema: String,
    /// Pooled connections of this node (besides its one listening connection).
    pub pool_size: usize,
}

impl PgOptions {
    /// Options for `url` with the default schema (`public`) and pool size.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), schema: "public".to_owned(), pool_size: DEFAULT_POOL_SIZE }
    }
}

/// Pooled connections per node by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The most tries of one operation when PostgreSQL asks for a retry.
const MAX_TRIES: usize = 8;

/// The store on PostgreSQL.
pub struct PgStore {
    core: Arc<Core>,
    listener: tokio::task::JoinHandle<()>,
    numbering: tokio::task::JoinHandle<()>,
    /// Submits from many clients, merged into shared transactions.
    submits: Arc<combine::Combiner<Vec<NewTask>, Vec<Submitted>>>,
    /// Completions from many workers, merged likewise.
    completes: Arc<combine::Combiner<CompleteParams, Vec<CompleteAnswer>>>,
    /// Lease requests, merged likewise when they lease alike (same queues,
    /// names and lease period).
    leases: std::sync::Mutex<std::collections::HashMap<LeaseKind, Arc<LeaseCombiner>>>,
}

type LeaseCombiner = combine::Combiner<LeaseParams, Vec<Task>>;

/// What lease requests that may share a transaction have in common.
type LeaseKind = (Vec<String>, Option<Vec<String>>, u64);

/// The most kinds of lease requests merged; requests of further kinds run
/// alone (a bound on what clients naming ever new filters can make a node
/// keep).
const MAX_LEASE_KINDS: usize = 256;

/// What every transaction of the node needs: its connections, its signals,
/// its sequencer.
struct Core {
    pool: Pool,
    signals: Arc<Signals>,
    channel: String,
    sequencer: Arc<sequencer::Sequencer>,
    /// The earliest timer the last tick saw: a transaction that makes
    /// something due sooner wakes this node's timer loop.
    earliest_due: Arc<AtomicI64>,
    vacuum: Arc<Vacuum>,
    /// The node's commits, for the metrics.
    commits: crate::stats::Commits,
    /// The waits for a pooled connection, for the metrics.
    pool_waits: crate::stats::PoolWaits,
}

/// Events (about one per task move) this node's transactions append
/// between two vacuums of `tasks`.
const VACUUM_EVERY: u64 = 20_000;

/// Folds the queue-count deltas the commits wrote into the totals; each
/// delta is deleted, and so added, by one fold however many nodes run it.
async fn fold_counts(client: &Object) -> std::result::Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "WITH d AS (DELETE FROM queue_count_deltas RETURNING queue, status, n) \
             INSERT INTO queue_counts (queue, status, n) SELECT queue, status, sum(n) FROM d GROUP BY queue, status \
             ON CONFLICT (queue, status) DO UPDATE SET n = queue_counts.n + excluded.n",
        )
        .await
}

/// The node's vacuuming of `tasks`. A queue turns its rows over fast, and
/// every move leaves a dead row version whose index entries the next lease
/// scan must step over; autovacuum comes at most once a minute per database,
/// too seldom, so each node vacuums after its own share of moves, counted by
/// the events its commits appended (skipping it when another node is at it).
#[derive(Default)]
struct Vacuum {
    moves: std::sync::atomic::AtomicU64,
    running: AtomicBool,
}

impl Vacuum {
    /// Counts `moves` and starts a vacuum when enough have gathered.
    fn count(self: &Arc<Self>, moves: u64, pool: &Pool) {
        let total = self.moves.fetch_add(moves, Ordering::Relaxed) + moves;
        if total < VACUUM_EVERY || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.moves.store(0, Ordering::Relaxed);
        let (this, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            if let Ok(client) = pool.get().await {
                if let Err(e) = fold_counts(&client).await {
                    tracing::warn!(error = %e, "folding the queue counts failed");
                }
                // Apart: VACUUM cannot run in the implicit transaction of a
                // multi-statement query.
                // The event log too: a numbered segment leaves behind the
                // index entry of its pending key, which every pass steps over.
                if let Err(e) = client.batch_execute("VACUUM (SKIP_LOCKED) tasks, event_segments").await {
                    tracing::warn!(error = %e, "vacuum of tasks and events failed");
                }
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

fn parse_config(opts: &PgOptions) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    if !schema::valid_schema(&opts.schema) {
        return Err(StoreError::Backend(format!(
            "schema {:?}: use lowercase letters, digits and _ (at most 63)",
            opts.schema
        )));
    }
    let (url, ssl_mode, tls) = tls::connector(&opts.url)?;
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Backend(format!("database URL: {e}")))?;
    config.ssl_mode(ssl_mode);
    config.options(format!("-c search_path={} -c plan_cache_mode=force_generic_plan", opts.schema));
    if config.get_application_name().is_none() {
        config.application_name("quern");
    }
    Ok((config, tls))
}

impl PgStore {
    /// Connects, runs the migrations the database lacks, gives running tasks
    /// their lease period again from `now` (their workers could not reach a
    /// server while this node was down), and starts listening for the other
    /// nodes' notifications.
    pub async fn open(opts: &PgOptions, now: Millis) -> Result<Self> {
        let (config, tls) = parse_config(opts)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager).max_size(opts.pool_size.max(2)).build().map_err(backend)?;
        let mut client = pool.get().await.map_err(|e| StoreError::Backend(format!("cannot connect: {e}")))?;
        schema::migrate(&mut client, &opts.schema, now).await?;
        client
            .execute(
                "UPDATE tasks SET expires_at = $1 + lease_ms, timeout_at = CASE WHEN timeout_at IS NOT NULL THEN greatest(timeout_at, $1 + lease_ms) END \
                 WHERE status = 'running' AND expires_at < $1 + lease_ms",
                &[&now],
            )
            .await
            .map_err(backend)?;
        drop(client);
        let signals = Arc::new(Signals::default());
        let channel = format!("quern:{}", opts.schema);
        let sequencer = sequencer::Sequencer::new();
        let numbering = sequencer.spawn(config.clone(), tls.clone(), channel.clone(), signals.clone());
        let own = sequencer.own_pid.clone();
        let listener = listen::spawn(config, tls, channel.clone(), signals.clone(), own).await?;
        let core = Arc::new(Core {
            pool,
            signals,
            channel,
            sequencer,
            earliest_due: Arc::new(AtomicI64::new(i64::MIN)),
            vacuum: Arc::default(),
            commits: crate::stats::Commits::default(),
            pool_waits: crate::stats::PoolWaits::default(),
        });
        let c = core.clone();
        let submits = combine::Combiner::new(
            Vec::len,
            Arc::new(move |requests: Vec<Vec<NewTask>>| {
                let c = c.clone();
                Box::pin(async move {
                    let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
                    let tasks: Vec<NewTask> = requests.into_iter().flatten().collect();
                    let out = c.write_merged(sizes.len(), |tx| Box::pin(tasks::submit(tx, tasks.clone()))).await?;
                    Ok(split(out, &sizes))
                })
            }),
        );
        let c = core.clone();
        let completes = combine::Combiner::new(
            |r: &CompleteParams| r.results.len(),
            Arc::new(move |requests: Vec<CompleteParams>| {
                let c = c.clone();
                Box::pin(async move {
                    let sizes: Vec<usize> = requests.iter().map(|r| r.results.len()).collect();
                    let params = CompleteParams {
                        // Not read by the statement: each task keeps the
                        // worker its lease named.
                        worker: requests.first().map(|r| r.worker.clone()).unwrap_or_default(),
                        now: requests.iter().map(|r| r.now).max().unwrap_or(0),
                        results: requests.into_iter().flat_map(|r| r.results).collect(),
                    };
                    let out = c.write_merged(sizes.len(), |tx| Box::pin(tasks::complete(tx, params.clone()))).await?;
                    Ok(split(out, &sizes))
                })
            }),
        );
        Ok(Self { core, listener, numbering, submits, completes, leases: std::sync::Mutex::default() })
    }

    /// Runs the migrations alone; answers the versions applied.
    pub async fn migrate(opts: &PgOptions, now: Millis) -> Result<Vec<i64>> {
        let (config, tls) = parse_config(opts)?;
        let manager = Manager::from_config(config, tls, ManagerConfig::default());
        let pool = Pool::builder(manager).max_size(1).build().map_err(backend)?;
        let mut client = pool.get().await.map_err(|e| StoreError::Backend(format!("cannot connect: {e}")))?;
        schema::migrate(&mut client, &opts.schema, now).await
    }

    /// Folds the queue-count deltas into the totals, as the node does before
    /// each of its vacuums; safe at any time, on any number of nodes at once.
    pub async fn fold_counts(&self) -> Result<()> {
        let client = self.core.pool.get().await.map_err(backend)?;
        fold_counts(&client).await.map_err(backend)
    }

    /// Stops listening and closes the pool; later calls answer
    /// [`StoreError::Closed`]. Safe to call twice.
    pub fn close(&self) {
        self.listener.abort();
        self.numbering.abort();
        self.core.pool.close();
    }
}

impl Core {
    /// Runs `op` in a transaction, retried from the start when PostgreSQL
    /// asks for it. Its events get their offsets from the sequencer after
    /// the commit, or, when `numbered`, before it: then the answer carries
    /// the first of them.
    async fn transact<R, F>(&self, numbered: bool, requests: usize, mut op: F) -> Result<(R, Option<u64>)>
    where
        R: Send,
        F: for<'a> FnMut(&'a mut Tx) -> BoxFuture<'a, Result<R>> + Send,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut tx = Tx::begin(self.connection().await?).await?;
            let began = std::time::Instant::now();
            let outcome = match op(&mut tx).await {
                Ok(r) => {
                    let moves = tx.log.count;
                    let committed = tx.commit(&self.channel, numbered).await.map(|c| (r, c));
                    if committed.is_ok() {
                        self.vacuum.count(moves, &self.pool);
                        self.commits.commit(requests, began.elapsed());
                    }
                    committed
                }
                Err(e) => {
                    tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Ok((r, Committed { base, pending, mut effects })) => {
                    if !numbered {
                        self.sequencer.push(sequencer::Notice::of(&mut effects), pending);
                    }
                    self.raise(effects);
                    return Ok((r, base));
                }
                Err(e) if tx.retry.load(Ordering::Relaxed) && tries < MAX_TRIES => {
                    tracing::debug!(error = %e, tries, "transaction retried");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `op`, which only reads, on a pooled connection without a
    /// transaction: under READ COMMITTED each statement sees its own
    /// snapshot either way, and this saves the BEGIN and COMMIT.
    async fn read<R, F>(&self, mut op: F) -> Result<R>
    where
        R: Send,
        F: for<'a> FnMut(&'a mut Tx) -> BoxFuture<'a, Result<R>> + Send,
    {
        let mut tx = Tx::unbegun(self.connection().await?);
        let out = op(&mut tx).await;
        tx.client.take();
        out
    }

    async fn connection(&self) -> Result<Object> {
        let asked = std::time::Instant::now();
        let got = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            e => StoreError::Backend(format!("cannot connect: {e}")),
        });
        self.pool_waits.waited(asked.elapsed());
        got
    }

    async fn write<R, F>(&self, op: F) -> Result<R>
    where
        R: Send,
        F: for<'a> FnMut(&'a mut Tx) -> BoxFuture<'a, Result<R>> + Send,
    {
        self.transact(false, 1, op).await.map(|(r, _)| r)
    }

    /// [`Core::write`] for a transaction that carries `requests` merged
    /// requests (counted as such by the metrics).
    async fn write_merged<R, F>(&self, requests: usize, op: F) -> Result<R>
    where
        R: Send,
        F: for<'a> FnMut(&'a mut Tx) -> BoxFuture<'a, Result<R>> + Send,
    {
        self.transact(false, requests, op).await.map(|(r, _)| r)
    }

    /// Raises this node's signals for a committed transaction.
    fn raise(&self, mut effects: Effects) {
        if effects.events {
            self.signals.events.notify_waiters();
        }
        self.signals.ended(effects.ended);
        for (queue, n) in &effects.ready {
            self.signals.ready.raise(queue, *n);
        }
        if effects.schedules {
            self.signals.schedules.notify_one();
        }
        if let Some(due) = effects.due
            && due < self.earliest_due.load(Ordering::Relaxed)
        {
            self.signals.timers.notify_one();
        }
        self.signals.add_tally(&mut effects.tally);
    }
}

impl PgStore {
    /// The combiner of lease requests of `params`' kind, kept for the next
    /// ones unless [`MAX_LEASE_KINDS`] are kept already.
    fn lease_combiner(&self, params: &LeaseParams) -> Arc<LeaseCombiner> {
        let kind: LeaseKind = (params.queues.clone(), params.names.clone(), params.lease_ms);
        let mut kinds = self.leases.lock().ok();
        if let Some(c) = kinds.as_ref().and_then(|k| k.get(&kind)) {
            return c.clone();
        }
        let core = self.core.clone();
        let c = combine::Combiner::new(
            |p: &LeaseParams| p.max,
            Arc::new(move |requests: Vec<LeaseParams>| {
                let core = core.clone();
                let n = requests.len();
                Box::pin(async move { core.write_merged(n, |tx| Box::pin(tasks::lease(tx, requests.clone()))).await })
            }),
        );
        if let Some(kinds) = kinds.as_mut().filter(|k| k.len() < MAX_LEASE_KINDS) {
            kinds.insert(kind, c.clone());
        }
        c
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a committed transaction tells: this node's signals to raise, and
/// the other nodes' through `NOTIFY`.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Tasks that became ready, by queue (`usize::MAX`: a queue resumed).
    pub(crate) ready: std::collections::BTreeMap<String, usize>,
    /// Schedules changed.
    pub(crate) schedules: bool,
    /// Events were appended and numbered.
    pub(crate) events: bool,
    /// Tasks that ended.
    pub(crate) ended: Vec<Uuid>,
    /// Running tasks their workers should stop: told to every node (this
    /// one included) through `NOTIFY` alone, so that each is told once.
    pub(crate) stops: Vec<crate::Stop>,
    /// The earliest timer the transaction set.
    pub(crate) due: Option<Millis>,
    /// What the transaction did to tasks, for the metrics.
    pub(crate) tally: crate::tally::Tally,
}

impl Effects {
    /// `n` tasks became ready in `queue`.
    pub(crate) fn ready_in(&mut self, queue: &str, n: usize) {
        match self.ready.get_mut(queue) {
            Some(count) => *count = count.saturating_add(n),
            None => {
                self.ready.insert(queue.to_owned(), n);
            }
        }
    }

    /// A timer at `at` was set.
    pub(crate) fn due_at(&mut self, at: Millis) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }
}

/// `out`, cut into consecutive parts of `sizes`.
fn split<T>(out: Vec<T>, sizes: &[usize]) -> Vec<Vec<T>> {
    let mut out = out.into_iter();
    sizes.iter().map(|n| out.by_ref().take(*n).collect()).collect()
}

/// What a commit answers.
struct Committed {
    /// The first offset of the transaction's events, when it numbered them.
    base: Option<u64>,
    /// It appended a pending segment for the sequencer to number.
    pending: bool,
    effects: Effects,
}

/// One open transaction on a pooled connection, with the events it appends
/// and the effects it will have. Dropped unfinished (its future cancelled),
/// it takes its connection out of the pool, which closes it and so rolls
/// the transaction back: an open transaction never goes back to the pool.
pub(crate) struct Tx {
    client: Option<Object>,
    /// The transaction's events; task moves come through
    /// [`Tx::push_move`], which also counts them.
    log: SegmentBuilder,
    pub(crate) effects: Effects,
    /// How the transaction changes each queue's count of each status,
    /// written as one delta row per pair at commit.
    counts: std::collections::BTreeMap<(String, &'static str), i64>,
    /// A statement failed in a way that a new try may not (a serialization
    /// failure, a deadlock, a unique-key race).
    retry: AtomicBool,
}

impl Tx {
    async fn begin(client: Object) -> Result<Self> {
        client.batch_execute("BEGIN").await.map_err(backend)?;
        Ok(Self::unbegun(client))
    }

    /// A handle on `client` outside any transaction, for reads.
    fn unbegun(client: Object) -> Self {
        Self {
            client: Some(client),
            log: SegmentBuilder::default(),
            effects: Effects::default(),
            counts: std::collections::BTreeMap::new(),
            retry: AtomicBool::new(false),
        }
    }

    fn client(&self) -> Result<&Object> {
        self.client.as_ref().ok_or(StoreError::Closed)
    }

    fn fail(&self, e: &tokio_postgres::Error) -> StoreError {
        use tokio_postgres::error::SqlState;
        if let Some(code) = e.code()
            && (*code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION)
        {
            self.retry.store(true, Ordering::Relaxed);
        }
        let message = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
        StoreError::Backend(message)
    }

    async fn statement(&self, sql: &str) -> Result<Statement> {
        self.client()?.prepare_cached(sql).await.map_err(|e| self.fail(&e))
    }

    /// Runs a statement; answers its rows.
    pub(crate) async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql).await?;
        self.client()?.query(&stmt, params).await.map_err(|e| self.fail(&e))
    }

    /// Runs a statement that answers at most one row.
    pub(crate) async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let stmt = self.statement(sql).await?;
        self.client()?.query_opt(&stmt, params).await.map_err(|e| self.fail(&e))
    }

    /// Runs a statement; answers how many rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let stmt = self.statement(sql).await?;
        self.client()?.execute(&stmt, params).await.map_err(|e| self.fail(&e))
    }

    /// Records a task's move: its event, and the queue counts it changes.
    /// A move the state machine does not allow fails the transaction.
    pub(crate) fn push_move(&mut self, m: &crate::segment::Move<'_>) -> Result<()> {
        self.log.push_move(m)?;
        self.effects.tally.record(m);
        if let Some(from) = m.from {
            self.uncount(m.queue, from);
        }
        *self.counts.entry((m.queue.to_owned(), m.to.as_str())).or_default() += 1;
        Ok(())
    }

    /// Records that a task of `queue` in `status` is gone.
    pub(crate) fn uncount(&mut self, queue: &str, status: quern_core::Status) {
        *self.counts.entry((queue.to_owned(), status.as_str())).or_default() -= 1;
    }

    /// Writes the transaction's queue-count deltas, appends its events as
    /// one segment and commits. When `numbered`, the segment takes its
    /// offsets from `event_head` now and the other nodes are told in the
    /// transaction; otherwise it is left pending for the sequencer, which
    /// also tells the other nodes.
    async fn commit(&mut self, channel: &str, numbered: bool) -> Result<Committed> {
        self.counts.retain(|_, n| *n != 0);
        if !self.counts.is_empty() {
            let counts = std::mem::take(&mut self.counts);
            let (mut queues, mut statuses, mut ns) = (Vec::new(), Vec::new(), Vec::new());
            for ((q, st), n) in counts {
                queues.push(q);
                statuses.push(st);
                ns.push(n);
            }
            self.execute(
                "INSERT INTO queue_count_deltas (queue, status, n) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])",
                &[&queues, &statuses, &ns],
            )
            .await?;
        }
        let mut effects = std::mem::take(&mut self.effects);
        let mut base = None;
        let mut pending = false;
        if let Some(text) = self.log.finish() {
            let count = i32::try_from(self.log.count).unwrap_or(i32::MAX);
            if numbered {
                // Taken last, held until the commit, as a sequencer's pass
                // does: offsets become visible in the order handed out.
                let total = i64::from(count);
                let row = self
                    .query_opt("UPDATE event_head SET next = next + $1 RETURNING next - $1", &[&total])
                    .await?
                    .ok_or_else(|| StoreError::Backend("event_head has no row".into()))?;
                let first: i64 = row.get(0);
                self.execute(
                    "INSERT INTO event_segments (first_offset, count, first_at, last_at, events) VALUES ($1, $2, $3, $4, $5)",
                    &[&first, &count, &self.log.first_at, &self.log.last_at, &text],
                )
                .await?;
                base = Some(first.unsigned_abs());
            } else {
                self.execute(
                    "INSERT INTO event_segments (first_offset, count, first_at, last_at, events) \
                     VALUES (-nextval('event_pending_keys'), $1, $2, $3, $4)",
                    &[&count, &self.log.first_at, &self.log.last_at, &text],
                )
                .await?;
                pending = true;
            }
        }
        if numbered {
            let notes = sequencer::Notice::of(&mut effects).payloads(base.is_some());
            if !notes.is_empty() {
                self.execute("SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n", &[&channel, &notes]).await?;
            }
        }
        let client = self.client()?;
        client.batch_execute("COMMIT").await.map_err(|e| self.fail(&e))?;
        self.client.take();
        Ok(Committed { base, pending, effects: Effects { events: base.is_some(), ..effects } })
    }

    async fn rollback(&mut self) {
        if let Some(client) = self.client.as_ref()
            && client.batch_execute("ROLLBACK").await.is_ok()
        {
            self.client.take();
        }
    }

    /// Adds a published event; answers it with its offset in this
    /// transaction (the commit adds the segment's first offset).
    pub(crate) fn emit(&mut self, at: Millis, e: NewEvent) -> Result<Event> {
        self.log.push(at, e)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Still open (or its end is unknown): never reuse it.
            drop(Object::take(client));
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn submit(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        self.submits.call(tasks).await
    }

    async fn get(&self, id: Uuid) -> Result<Task> {
        self.core.read(|tx| Box::pin(rows::get(tx, id))).await
    }

    async fn list(&self, query: ListQuery) -> Result<TaskPage> {
        self.core.read(|tx| Box::pin(reads::list(tx, query.clone()))).await
    }

    async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        self.core.read(|tx| Box::pin(reads::history(tx, id))).await
    }

    async fn lease(&self, params: LeaseParams) -> Result<Vec<Task>> {
        self.lease_combiner(&params).call(params).await
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<HeartbeatAnswer>> {
        self.core.write(|tx| Box::pin(tasks::heartbeat(tx, params.clone()))).await
    }

    async fn complete(&self, params: CompleteParams) -> Result<Vec<CompleteAnswer>> {
        self.completes.call(params).await
    }

    async fn cancel(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        self.core.write(|tx| Box::pin(tasks::cancel(tx, id, now, false, by.clone()))).await
    }

    async fn retry(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<Task> {
        self.core.write(|tx| Box::pin(tasks::retry(tx, id, now, by.clone()))).await
    }

    async fn tick(&self, now: Millis) -> Result<TickOutcome> {
        let out = self.core.write(|tx| Box::pin(tasks::tick(tx, now))).await?;
        self.core.earliest_due.store(out.next_due.unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(out)
    }

    async fn purge(&self, finished_before: Millis, limit: usize) -> Result<usize> {
        self.core.write(|tx| Box::pin(tasks::purge(tx, finished_before, limit))).await
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.core.read(|tx| Box::pin(reads::queues(tx))).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let queue = queue.to_owned();
        self.core.write(|tx| Box::pin(tasks::set_paused(tx, queue.clone(), paused))).await
    }

    async fn submit_workflow(&self, workflow: NewWorkflow, tasks: Vec<NewTask>) -> Result<Vec<Submitted>> {
        self.core.write(|tx| Box::pin(workflows::submit_workflow(tx, workflow.clone(), tasks.clone()))).await
    }

    async fn workflow(&self, id: Uuid) -> Result<WorkflowRecord> {
        self.core.read(|tx| Box::pin(workflows::workflow(tx, id))).await
    }

    async fn workflow_page(&self, query: WorkflowQuery) -> Result<WorkflowPage> {
        self.core.read(|tx| Box::pin(workflows::workflow_page(tx, query.clone()))).await
    }

    async fn cancel_workflow(&self, id: Uuid, now: Millis, by: Option<String>) -> Result<usize> {
        self.core.write(|tx| Box::pin(workflows::cancel_workflow(tx, id, now, by.clone()))).await
    }

    async fn approve(&self, id: Uuid, approval: Approval, now: Millis) -> Result<Task> {
        self.core.write(|tx| Box::pin(workflows::approve(tx, id, approval.clone(), now))).await
    }

    async fn schedules(&self, name: Option<String>) -> Result<Vec<ScheduleRecord>> {
        self.core.read(|tx| Box::pin(schedules::list(tx, name.clone()))).await
    }

    async fn write_schedules(&self, writes: Vec<ScheduleWrite>) -> Result<()> {
        self.core.write(|tx| Box::pin(schedules::write(tx, writes.clone()))).await
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> Result<DueSchedules> {
        self.core.read(|tx| Box::pin(schedules::due(tx, now, limit))).await
    }

    async fn fire_schedules(&self, fires: Vec<Fire>, now: Millis) -> Result<Vec<FireOutcome>> {
        self.core.write(|tx| Box::pin(schedules::fire(tx, fires.clone(), now))).await
    }

    async fn schedule_runs(&self, name: String, limit: usize) -> Result<Vec<Task>> {
        self.core.read(|tx| Box::pin(schedules::runs(tx, name.clone(), limit))).await
    }

    async fn publish(&self, events: Vec<NewEvent>, now: Millis) -> Result<Vec<Event>> {
        let (mut out, base) = self
            .core
            .transact(true, 1, |tx| {
                let events = events.clone();
                Box::pin(async move { events.into_iter().map(|e| tx.emit(now, e)).collect::<Result<Vec<_>>>() })
            })
            .await?;
        let base = base.unwrap_or(0);
        for e in &mut out {
            e.offset += base;
        }
        Ok(out)
    }

    async fn read_events(&self, query: EventQuery) -> Result<EventPage> {
        self.core.sequencer.settle().await;
        self.core.read(|tx| Box::pin(events::read(tx, query.clone()))).await
    }

    async fn purge_events(&self, before: Millis, keep: u64) -> Result<u64> {
        self.core.write(|tx| Box::pin(events::purge(tx, before, keep))).await
    }

    async fn group_cursor(&self, group: String) -> Result<Option<u64>> {
        self.core.read(|tx| Box::pin(events::group_cursor(tx, group.clone()))).await
    }

    async fn group_cursors(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        self.core.read(|tx| Box::pin(events::group_cursors(tx, limit))).await
    }

    async fn save_group_cursor(&self, group: String, cursor: u64, now: Millis) -> Result<()> {
        self.core.write(|tx| Box::pin(events::save_group_cursor(tx, group.clone(), cursor, now))).await
    }

    async fn group_state(&self, group: String) -> Result<Option<(u64, GroupState)>> {
        self.core.read(|tx| Box::pin(events::group_state(tx, group.clone()))).await
    }

    async fn put_group_state(
        &self,
        group: String,
        version: Option<u64>,
        state: GroupState,
        now: Millis,
    ) -> Result<bool> {
        self.core.write(|tx| Box::pin(events::put_group_state(tx, group.clone(), version, state.clone(), now))).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.core.write(|tx| Box::pin(audit::append(tx, entry.clone()))).await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        self.core.read(|tx| Box::pin(audit::read(tx, query.clone()))).await
    }

    async fn purge_audit(&self, before: Millis) -> Result<u64> {
        self.core.write(|tx| Box::pin(audit::purge(tx, before))).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.core.read(|tx| Box::pin(tokens::list(tx))).await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<()> {
        self.core.write(|tx| Box::pin(tokens::create(tx, token.clone()))).await
    }

    async fn revoke_token(&self, name: String, at: Millis) -> Result<Option<TokenRecord>> {
        self.core.write(|tx| Box::pin(tokens::revoke(tx, name.clone(), at))).await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        self.core.read(|tx| Box::pin(webhooks::list(tx))).await
    }

    async fn put_webhook(&self, webhook: WebhookRecord) -> Result<()> {
        self.core.write(|tx| Box::pin(webhooks::put(tx, webhook.clone()))).await
    }

    async fn delete_webhook(&self, name: String) -> Result<bool> {
        self.core.write(|tx| Box::pin(webhooks::delete(tx, name.clone()))).await
    }

    async fn webhook_progress(&self, state: WebhookRecord, delivery: Option<Delivery>) -> Result<()> {
        self.core.write(|tx| Box::pin(webhooks::progress(tx, state.clone(), delivery.clone()))).await
    }

    async fn deliveries(&self, name: String, limit: usize) -> Result<Vec<Delivery>> {
        self.core.read(|tx| Box::pin(webhooks::deliveries(tx, name.clone(), limit))).await
    }

    async fn put_task_types(&self, types: Vec<TaskTypeRecord>) -> Result<()> {
        let names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
        let descriptions: Vec<Option<String>> = types.iter().map(|t| t.description.clone()).collect();
        let schemas: Vec<Option<String>> = types.iter().map(|t| t.input_schema.clone()).collect();
        let at: Vec<i64> = types.iter().map(|t| t.declared_at).collect();
        let defaults: Vec<Option<String>> = types.iter().map(|t| t.defaults.clone()).collect();
        self.core
            .write(|tx| {
                let (names, descriptions, schemas, at, defaults) =
                    (names.clone(), descriptions.clone(), schemas.clone(), at.clone(), defaults.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO task_types (name, description, input_schema, declared_at, defaults) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[]) \
                     ON CONFLICT (name) \
                     DO UPDATE SET description = excluded.description, input_schema = excluded.input_schema, \
                     declared_at = excluded.declared_at, defaults = excluded.defaults \
                     WHERE excluded.declared_at >= task_types.declared_at",
                        &[&names, &descriptions, &schemas, &at, &defaults],
                    )
                    .await
                    .map(|_| ())
                })
            })
            .await
    }

    async fn task_types(&self) -> Result<Vec<TaskTypeRecord>> {
        self.core
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                    .query(
                        "SELECT name, description, input_schema, declared_at, defaults FROM task_types ORDER BY name",
                        &[],
                    )
                    .await?;
                    Ok(rows
                        .iter()
                        .map(|r| TaskTypeRecord {
                            name: r.get(0),
                            description: r.get(1),
                            input_schema: r.get(2),
                            declared_at: r.get(3),
                            defaults: r.get(4),
                        })
                        .collect())
                })
            })
            .await
    }

    async fn put_workers(&self, workers: Vec<WorkerRecord>) -> Result<()> {
        let ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
        let queues: Vec<String> = workers.iter().map(|w| json(&w.queues)).collect();
        let types: Vec<String> = workers.iter().map(|w| json(&w.task_types)).collect();
        let leases: Vec<Option<String>> = workers.iter().map(|w| w.leases.as_ref().map(json)).collect();
        let in_flight: Vec<i64> = workers.iter().map(|w| i64::try_from(w.in_flight).unwrap_or(i64::MAX)).collect();
        let seen: Vec<i64> = workers.iter().map(|w| w.last_seen).collect();
        self.core
            .write(|tx| {
                let (ids, queues, types, leases, in_flight, seen) =
                    (ids.clone(), queues.clone(), types.clone(), leases.clone(), in_flight.clone(), seen.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO workers (id, queues, task_types, leases, in_flight, last_seen) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[]) \
                     ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, task_types = excluded.task_types, \
                     leases = excluded.leases, in_flight = excluded.in_flight, last_seen = excluded.last_seen \
                     WHERE excluded.last_seen >= workers.last_seen",
                        &[&ids, &queues, &types, &leases, &in_flight, &seen],
                    )
                    .await
                    .map(|_| ())
                })
            })
            .await
    }

    async fn workers(&self, since: Millis) -> Result<Vec<WorkerRecord>> {
        self.core.read(|tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT id, queues, task_types, in_flight, last_seen, leases FROM workers WHERE last_seen >= $1",
                        &[&since],
                    )
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(WorkerRecord {
                            id: r.get(0),
                            queues: serde_json::from_str(r.get(1)).map_err(backend)?,
                            task_types: serde_json::from_str(r.get(2)).map_err(backend)?,
                            leases: r
                                .get::<_, Option<&str>>(5)
                                .map(serde_json::from_str)
                                .transpose()
                                .map_err(backend)?,
                            in_flight: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                            last_seen: r.get(4),
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn lead(&self, role: String, node: String, now: Millis, ttl_ms: u64) -> Result<bool> {
        let until = now.saturating_add(crate::stored::ms_i64(ttl_ms));
        self.core
            .write(|tx| {
                let (role, node) = (role.clone(), node.clone());
                Box::pin(async move {
                    let row = tx
                        .query_opt(
                            "INSERT INTO leaders (role, node, until) VALUES ($1, $2, $3) ON CONFLICT (role) DO UPDATE \
                         SET node = excluded.node, until = excluded.until \
                         WHERE leaders.node = excluded.node OR leaders.until < $4 RETURNING node",
                            &[&role, &node, &until, &now],
                        )
                        .await?;
                    Ok(row.is_some())
                })
            })
            .await
    }

    async fn ready(&self) -> Result<()> {
        self.core.read(|tx| Box::pin(async move { tx.query("SELECT 1", &[]).await.map(|_| ()) })).await
    }

    fn signals(&self) -> &Signals {
        &self.core.signals
    }

    fn stats(&self) -> crate::stats::StoreStats {
        let status = self.core.pool.status();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        crate::stats::StoreStats {
            pool: Some(crate::stats::PoolStats {
                max: count(status.max_size),
                open: count(status.size),
                idle: count(status.available),
                waiting: count(status.waiting),
                wait_seconds: self.core.pool_waits.histogram(),
            }),
            ..self.core.commits.stats()
        }
    }
}
