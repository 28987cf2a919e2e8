//! One leased task while it runs ([`Flight`]), and the set of them the
//! worker's loops and the task contexts share ([`Shared`]).
//!
//! Invariant: a flight's outcome is claimed once ([`Flight::finish`]), by its
//! handler's end or by a hand-back, whichever comes first; the set is locked
//! once per lease and once per heartbeat, never per task.

use quern_core::{Progress, Task};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// State shared by the loops and the task contexts.
pub(crate) struct Shared {
    /// Every leased task not yet known to be finished. Finished ones are
    /// swept out once per lease, so a task costs no lock of its own.
    pub(crate) flights: Mutex<Vec<Arc<Flight>>>,
    pub(crate) progress_changed: Notify,
}

/// One leased task while it runs: what its handler, the heartbeat and a
/// hand-back need of it, in one allocation.
pub(crate) struct Flight {
    pub(crate) task: Task,
    pub(crate) token: String,
    /// Set once, by whichever comes first: the handler's end (which then
    /// completes the task) or a hand-back (which releases it).
    finished: AtomicBool,
    cancelled: AtomicBool,
    /// Wakes `cancelled()` waiters.
    stop: Notify,
    pub(crate) progress: Mutex<Option<Progress>>,
    progress_dirty: AtomicBool,
    /// The handler's tokio task, aborted when the task is handed back.
    pub(crate) abort: OnceLock<AbortHandle>,
}

impl Flight {
    pub(crate) fn new(task: Task, token: String) -> Self {
        Self {
            task,
            token,
            finished: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            stop: Notify::new(),
            progress: Mutex::new(None),
            progress_dirty: AtomicBool::new(false),
            abort: OnceLock::new(),
        }
    }

    pub(crate) fn set_progress(&self, progress: Progress) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(progress);
            self.progress_dirty.store(true, Ordering::Release);
        }
    }

    /// The progress to send with the next heartbeat, if it changed.
    pub(crate) fn take_progress(&self) -> Option<Progress> {
        if !self.progress_dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.progress.lock().ok().and_then(|p| p.clone())
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) async fn cancelled(&self) {
        loop {
            // Created before the check, so a cancel in between still wakes it.
            let woken = self.stop.notified();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }

    /// Claims the task's outcome; false when it was already claimed.
    pub(crate) fn finish(&self) -> bool {
        !self.finished.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

impl Shared {
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.iter().filter(|f| !f.is_finished()).count()).unwrap_or(0)
    }

    /// Adds a lease's tasks, dropping those that finished since the last.
    pub(crate) fn track(&self, new: &[Arc<Flight>]) {
        if let Ok(mut f) = self.flights.lock() {
            f.retain(|flight| !flight.is_finished());
            f.extend(new.iter().cloned());
        }
    }
}
