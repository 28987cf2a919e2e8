//! How a store tells the engine what changed: tasks ready, timers due
//! sooner, schedules changed, events appended, tasks ended.
//!
//! Invariant: a store raises a signal only once the change it tells of is
//! committed, and a waiter that registers before it reads a task misses no
//! end of that task.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// How a store tells the engine what changed, without the engine polling.
#[derive(Debug, Default)]
pub struct Signals {
    /// Tasks became ready: parked lease requests should try again.
    pub ready: Notify,
    /// Something new is due earlier than the timer thought: tick again.
    pub timers: Notify,
    /// Schedules changed: the scheduler should look again.
    pub schedules: Notify,
    /// Events were appended: parked readers should read again.
    pub events: Notify,
    waiters: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
}

impl Signals {
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
