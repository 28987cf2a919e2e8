//! The node's sequencer: gives committed event segments their offsets, and
//! tells the other nodes what this node's transactions changed.
//!
//! A write transaction appends its events as a pending segment, keyed by a
//! negative number from `event_pending_keys`, and commits without waiting
//! for any other writer; then it hands the sequencer what the other nodes
//! should hear (tasks ready, tasks ended, stops). One pass of the sequencer
//! is one transaction: it locks the row of `event_head`, numbers every
//! committed pending segment from the head (lowest key first), advances the
//! head, sends the notifications of every writer it serves, and commits.
//!
//! Invariant: offsets become visible in order. Only a pass (or a
//! `publish`, which numbers its own segment the same way) hands out
//! offsets, and it holds the `event_head` row lock until it commits, so when
//! a reader sees a segment, every segment below it is committed and
//! visible. Writers never hold that lock, nor PostgreSQL's lock on
//! notifications, across their commit: concurrent requests commit side by
//! side, and one pass numbers the segments of many of them.
//!
//! A node that stops between a writer's commit and the pass leaves its
//! segments pending; every node's sequencer looks for pending segments once
//! a second and numbers whatever it finds, so no event is lost with a node.

use super::Effects;
use crate::{Result, Signals, Stop, StoreError, error::backend};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// How often a sequencer looks for segments that nobody numbered (their
/// node stopped between its commit and its pass).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long to wait before trying a failed pass again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The longest a read waits for this node's own segments to be numbered.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// The most bytes of one notification's payload (PostgreSQL's limit is 8000).
const MAX_NOTIFY: usize = 7_900;

/// What the other nodes should hear of some committed transactions.
#[derive(Debug, Default)]
pub(crate) struct Notice {
    /// Tasks that became ready, by queue.
    ready: std::collections::BTreeMap<String, usize>,
    schedules: bool,
    ended: Vec<Uuid>,
    stops: Vec<Stop>,
}

impl Notice {
    /// What the other nodes should hear of a transaction with `effects`;
    /// takes its stops, which this node hears through `NOTIFY` too.
    pub(crate) fn of(effects: &mut Effects) -> Self {
        Self {
            ready: effects.ready.clone(),
            schedules: effects.schedules,
            ended: effects.ended.clone(),
            stops: std::mem::take(&mut effects.stops),
        }
    }

    fn merge(&mut self, other: Self) {
        for (queue, n) in other.ready {
            let count = self.ready.entry(queue).or_default();
            *count = count.saturating_add(n);
        }
        self.schedules |= other.schedules;
        self.ended.extend(other.ended);
        self.stops.extend(other.stops);
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && !self.schedules && self.ended.is_empty() && self.stops.is_empty()
    }

    /// The notification payloads (see `listen`), with the `e`vents flag
    /// when `events` were numbered.
    pub(crate) fn payloads(&self, events: bool) -> Vec<String> {
        let mut notes = Vec::new();
        let flags: String =
            [(self.schedules, 's'), (events, 'e')].into_iter().filter_map(|(on, flag)| on.then_some(flag)).collect();
        if !flags.is_empty() {
            notes.push(flags);
        }
        let mut ready = String::new();
        for (queue, n) in &self.ready {
            let pair = format!("\t{queue}\t{n}");
            if ready.len() + pair.len() > MAX_NOTIFY {
                notes.push(std::mem::take(&mut ready));
            }
            if ready.is_empty() {
                ready.push('r');
            }
            ready.push_str(&pair);
        }
        if !ready.is_empty() {
            notes.push(ready);
        }
        let mut ended = String::new();
        for id in &self.ended {
            if ended.len() + 37 > MAX_NOTIFY {
                notes.push(std::mem::take(&mut ended));
            }
            ended.push(if ended.is_empty() { 'x' } else { ',' });
            ended.push_str(&id.simple().to_string());
        }
        if !ended.is_empty() {
            notes.push(ended);
        }
        let mut stops = String::new();
        for stop in &self.stops {
            let line = super::listen::stop_line(stop);
            if stops.len() + line.len() + 1 > MAX_NOTIFY {
                notes.push(std::mem::take(&mut stops));
            }
            stops.push(if stops.is_empty() { 'k' } else { '\n' });
            stops.push_str(&line);
        }
        if !stops.is_empty() {
            notes.push(stops);
        }
        notes
    }
}

/// What waits for the next pass.
#[derive(Default)]
struct Queued {
    notice: Notice,
    /// A writer committed a pending segment since the last pass began.
    pending: bool,
    /// Pending segments handed in so far (a read waits for its own).
    ticket: u64,
}

/// The node's sequencer (see the module's doc).
pub(crate) struct Sequencer {
    /// The backend process of the sequencer's connection, whose
    /// notifications this node's listener skips (0 before it connects).
    pub(super) own_pid: Arc<AtomicI32>,
    queued: Mutex<Queued>,
    wake: Notify,
    /// The ticket of the last pending segment numbered.
    done: watch::Sender<u64>,
}

impl Sequencer {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            own_pid: Arc::default(),
            queued: Mutex::default(),
            wake: Notify::new(),
            done: watch::Sender::new(0),
        })
    }

    /// Hands in what a committed transaction tells: its notice, and whether
    /// it left a pending segment.
    pub(super) fn push(&self, notice: Notice, pending: bool) {
        if notice.is_empty() && !pending {
            return;
        }
        if let Ok(mut q) = self.queued.lock() {
            q.notice.merge(notice);
            if pending {
                q.pending = true;
                q.ticket += 1;
            }
        }
        self.wake.notify_one();
    }

    /// Waits until every segment this node committed so far has its
    /// offsets (at most [`SETTLE_WAIT`]), so that a read on this node sees
    /// this node's writes.
    pub(super) async fn settle(&self) {
        let ticket = self.queued.lock().map_or(0, |q| q.ticket);
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(SETTLE_WAIT, done.wait_for(|d| *d >= ticket)).await;
    }

    fn take(&self) -> (Notice, bool, u64) {
        self.queued.lock().map_or_else(
            |_| (Notice::default(), false, 0),
            |mut q| {
                let pending = std::mem::take(&mut q.pending);
                (std::mem::take(&mut q.notice), pending, q.ticket)
            },
        )
    }

    /// Runs the passes in a task of its own, on a connection of its own,
    /// until aborted.
    pub(super) fn spawn(
        self: &Arc<Self>,
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        channel: String,
        signals: Arc<Signals>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            loop {
                let swept = tokio::select! {
                    () = this.wake.notified() => false,
                    () = tokio::time::sleep(SWEEP_EVERY) => true,
                };
                let (notice, pending, ticket) = this.take();
                loop {
                    let passed = match this.connected(&mut conn, &config, &tls).await {
                        Ok(c) => pass(c, &channel, &notice, pending, swept).await,
                        Err(e) => Err(e),
                    };
                    match passed {
                        Ok(numbered) => {
                            if numbered > 0 {
                                signals.events.notify_waiters();
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "numbering events or notifying the other nodes failed");
                            conn = None;
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
                this.done.send_replace(ticket);
            }
        })
    }
}

/// The sequencer's connection and its statements.
struct Conn {
    client: Client,
    pid: i32,
    lock: Statement,
    any: Statement,
    number: Statement,
    advance: Statement,
    notify: Statement,
}

impl Conn {
    async fn open(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Result<Self> {
        let (client, connection) = config
            .connect(tls.clone())
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to number events: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the sequencer's connection ended");
            }
        });
        let prepare = async |sql: &str| client.prepare(sql).await.map_err(backend);
        let lock = prepare("SELECT next FROM event_head FOR UPDATE").await?;
        let any = prepare("SELECT EXISTS (SELECT 1 FROM event_segments WHERE first_offset < 0)").await?;
        let number = prepare(
            "WITH p AS (SELECT first_offset AS key, count, sum(count) OVER (ORDER BY first_offset DESC) AS upto \
             FROM event_segments WHERE first_offset < 0), \
             u AS (UPDATE event_segments s SET first_offset = $1 + p.upto - p.count FROM p \
             WHERE s.first_offset = p.key RETURNING s.count) \
             SELECT coalesce(sum(count), 0)::bigint FROM u",
        )
        .await?;
        let advance = prepare("UPDATE event_head SET next = next + $1").await?;
        let notify = prepare("SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n").await?;
        let pid = client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(backend)?.get(0);
        Ok(Self { client, pid, lock, any, number, advance, notify })
    }
}

impl Sequencer {
    /// The sequencer's connection, opened first if there is none (and its
    /// backend remembered, for the listener to skip what it sends).
    async fn connected<'c>(
        &self,
        conn: &'c mut Option<Conn>,
        config: &tokio_postgres::Config,
        tls: &MakeRustlsConnect,
    ) -> Result<&'c Conn> {
        match conn {
            Some(c) => Ok(c),
            None => {
                let c = Conn::open(config, tls).await?;
                self.own_pid.store(c.pid, Ordering::Relaxed);
                Ok(conn.insert(c))
            }
        }
    }
}

/// One pass: numbers the pending segments (when this node left some, or
/// when a `sweep` finds any) and sends `notice`, in one transaction;
/// answers how many events were numbered.
async fn pass(c: &Conn, channel: &str, notice: &Notice, pending: bool, sweep: bool) -> Result<i64> {
    let number = pending || (sweep && c.client.query_one(&c.any, &[]).await.map_err(backend)?.get::<_, bool>(0));
    if !number && notice.is_empty() {
        return Ok(0);
    }
    c.client.batch_execute("BEGIN").await.map_err(backend)?;
    let mut numbered = 0;
    if number {
        let head: i64 = c.client.query_one(&c.lock, &[]).await.map_err(backend)?.get(0);
        numbered = c.client.query_one(&c.number, &[&head]).await.map_err(backend)?.get(0);
        if numbered > 0 {
            c.client.execute(&c.advance, &[&numbered]).await.map_err(backend)?;
        }
    }
    let payloads = notice.payloads(numbered > 0);
    if !payloads.is_empty() {
        c.client.execute(&c.notify, &[&channel, &payloads]).await.map_err(backend)?;
    }
    c.client.batch_execute("COMMIT").await.map_err(backend)?;
    Ok(numbered)
}
