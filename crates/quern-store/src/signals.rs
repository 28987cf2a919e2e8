//! How a store tells the engine what changed: tasks ready, timers due
//! sooner, schedules changed, events appended, tasks ended, running tasks
//! to stop; and, for the metrics, the totals of what committed transactions
//! did to tasks (see [`crate::tally`]).
//!
//! Invariant: a store raises a signal only once the change it tells of is
//! committed, and a waiter that registers before it reads a task misses no
//! end of that task; a stop for a worker that watches is kept until the
//! worker takes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// Why a running task should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled it (or its workflow).
    Cancel,
    /// The server ended the attempt: its timeout passed, or its lease ran out.
    Ended,
}

/// One running task its worker should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The worker holding the task.
    pub worker: String,
    /// The task.
    pub task: Uuid,
    /// Its queue (a token confined to queues hears only of its own).
    pub queue: String,
    /// Why.
    pub reason: StopReason,
}

/// A worker's mailbox of stops, made when it first watches.
#[derive(Debug)]
struct Mailbox {
    pending: Vec<Stop>,
    notify: Arc<Notify>,
    watched_at: Instant,
}

impl Mailbox {
    fn new(now: Instant) -> Self {
        Self { pending: Vec::new(), notify: Arc::new(Notify::new()), watched_at: now }
    }
}

/// The most stops a mailbox keeps for a worker that does not take them.
const MAX_PENDING_STOPS: usize = 10_000;
/// A worker that has not watched for this long loses its mailbox.
const MAILBOX_IDLE: Duration = Duration::from_secs(600);

/// How a store tells the engine what changed, without the engine polling.
#[derive(Debug, Default)]
pub struct Signals {
    /// Tasks became ready: parked lease requests should try again.
    pub ready: crate::ready::Ready,
    /// Something new is due earlier than the timer thought: tick again.
    pub timers: Notify,
    /// Schedules changed: the scheduler should look again.
    pub schedules: Notify,
    /// Events were appended: parked readers should read again.
    pub events: Notify,
    waiters: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
    /// Stops for the workers that watch for them, by worker id.
    stops: Mutex<HashMap<String, Mailbox>>,
    /// What the committed transactions did to tasks, for the metrics.
    totals: Mutex<crate::tally::Totals>,
}

impl Signals {
    /// Adds what a committed transaction did to tasks to the totals, and
    /// zeroes its tally for the next.
    pub(crate) fn add_tally(&self, tally: &mut crate::tally::Tally) {
        if tally.is_empty() {
            return;
        }
        if let Ok(mut totals) = self.totals.lock() {
            totals.add(tally);
        }
    }

    /// What the committed transactions did to tasks since the store opened,
    /// as counted by this process.
    pub fn totals(&self) -> crate::tally::Tally {
        self.totals.lock().map(|t| t.tally.clone()).unwrap_or_default()
    }

    /// Bounds the totals' labels: at most `max_names` task names per queue
    /// and `max_queues` queues; the rest count as `other`.
    pub fn bound_totals(&self, max_names: usize, max_queues: usize) {
        if let Ok(mut totals) = self.totals.lock() {
            totals.max_names = max_names;
            totals.max_queues = max_queues;
        }
    }

    /// A receiver that fires when task `id` reaches a terminal status.
    /// Register before reading the task, so that an end between the read and
    /// the wait is not missed.
    pub fn wait_for_end(&self, id: Uuid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.entry(id).or_default().push(tx);
        }
        rx
    }

    /// Wakes whoever waits for these tasks to end.
    pub fn ended(&self, ids: impl IntoIterator<Item = Uuid>) {
        let Ok(mut w) = self.waiters.lock() else { return };
        if w.is_empty() {
            return;
        }
        for id in ids {
            if let Some(senders) = w.remove(&id) {
                for s in senders {
                    let _ = s.send(());
                }
            }
        }
    }

    /// Tells the workers that watch to stop these tasks; a stop for a
    /// worker that never watched nor leased is dropped (it hears at its
    /// heartbeat).
    pub fn stop(&self, stops: impl IntoIterator<Item = Stop>) {
        let Ok(mut boxes) = self.stops.lock() else { return };
        if boxes.is_empty() {
            return;
        }
        for stop in stops {
            let Some(mailbox) = boxes.get_mut(&stop.worker) else { continue };
            if mailbox.pending.len() >= MAX_PENDING_STOPS {
                mailbox.pending.remove(0);
            }
            mailbox.pending.push(stop);
            mailbox.notify.notify_waiters();
        }
    }

    /// Makes `worker`'s mailbox if it has none, so that a stop raised before
    /// its first watch (a worker that leases as it opens its watch) waits
    /// for that watch rather than for a heartbeat.
    pub fn expect_stops(&self, worker: &str) {
        let Ok(mut boxes) = self.stops.lock() else { return };
        if !boxes.contains_key(worker) {
            boxes.insert(worker.to_owned(), Mailbox::new(Instant::now()));
        }
    }

    /// The wake-up of `worker`'s watch, made on its first call. Take its
    /// `notified()` future before [`Signals::take_stops`], so that a stop
    /// raised between the two is not missed.
    pub fn watch_stops(&self, worker: &str) -> Arc<Notify> {
        let Ok(mut boxes) = self.stops.lock() else { return Arc::new(Notify::new()) };
        let now = Instant::now();
        if boxes.len() > 256 {
            boxes.retain(|_, m| now.duration_since(m.watched_at) < MAILBOX_IDLE);
        }
        let mailbox = boxes.entry(worker.to_owned()).or_insert_with(|| Mailbox::new(now));
        mailbox.watched_at = now;
        mailbox.notify.clone()
    }

    /// The stops waiting for `worker`, taken.
    pub fn take_stops(&self, worker: &str) -> Vec<Stop> {
        self.stops
            .lock()
            .ok()
            .and_then(|mut b| b.get_mut(worker).map(|m| std::mem::take(&mut m.pending)))
            .unwrap_or_default()
    }

    /// Drops the registrations of waiters that gave up.
    pub fn forget_closed(&self, id: Uuid) {
        if let Ok(mut w) = self.waiters.lock()
            && let Some(senders) = w.get_mut(&id)
        {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                w.remove(&id);
            }
        }
    }
}
