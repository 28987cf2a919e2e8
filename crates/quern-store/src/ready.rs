//! Parked lease requests and the wake-ups that reach them when tasks
//! become ready.
//!
//! Requests that lease from the same queues with the same names park
//! together in a [`Lot`]. When `n` tasks become ready in a queue, each lot
//! that leases from it wakes `n` of its requests (or all, if it holds
//! fewer), not every one: with sixteen workers parked, a single submit used
//! to wake sixteen lease attempts of which fifteen found nothing.
//!
//! Invariant: no ready task is left with a parked request able to take it
//! and none woken. Each lot is told of every task that becomes ready in its
//! queues; a wake-up given to a request that then leaves without leasing is
//! passed to the next request of its lot (tokio's `Notified` does so when
//! dropped); and where the queues are unknown (a lost connection to the
//! other nodes) every parked request is woken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// What a lot's requests lease: their queues and, if filtered, names.
type Filter = (Vec<String>, Option<Vec<String>>);

/// Lease requests parked with one filter.
#[derive(Debug)]
pub struct Lot {
    notify: Notify,
    filter: Filter,
    /// Requests in the lot (parked, or looking for tasks before parking).
    requests: AtomicUsize,
}

impl Lot {
    /// A future that completes when this lot is woken; `enable` it before
    /// looking for tasks, so that a wake-up meanwhile is not missed.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    fn new(filter: Filter) -> Self {
        Self { notify: Notify::new(), filter, requests: AtomicUsize::new(0) }
    }
}

/// The parked lease requests of a node, by lot.
#[derive(Debug, Default)]
pub struct Ready {
    lots: Mutex<HashMap<Filter, Arc<Lot>>>,
}

impl Ready {
    /// Joins a request to the lot of requests leasing from `queues` with
    /// `names`, until the answer is dropped (even if the request is).
    pub fn join(&self, queues: &[String], names: Option<&[String]>) -> Joined<'_> {
        Joined { ready: self, lot: self.lot(queues, names) }
    }

    fn lot(&self, queues: &[String], names: Option<&[String]>) -> Arc<Lot> {
        let filter: Filter = (queues.to_vec(), names.map(<[String]>::to_vec));
        let lot = match self.lots.lock() {
            Ok(mut lots) => match lots.get(&filter) {
                Some(lot) => lot.clone(),
                None => lots.entry(filter.clone()).or_insert_with(|| Arc::new(Lot::new(filter))).clone(),
            },
            Err(_) => Arc::new(Lot::new(filter)),
        };
        lot.requests.fetch_add(1, Ordering::AcqRel);
        lot
    }

    /// A request is done with `lot`; the lot goes when no request holds it.
    fn leave(&self, lot: &Lot) {
        let Ok(mut lots) = self.lots.lock() else { return };
        if lot.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            lots.remove(&lot.filter);
        }
    }

    /// `n` tasks became ready in `queue`: wakes `n` requests of each lot
    /// leasing from it, or all of a lot's when it holds fewer.
    pub fn raise(&self, queue: &str, n: usize) {
        let Ok(lots) = self.lots.lock() else { return };
        for lot in lots.values().filter(|l| l.filter.0.iter().any(|q| q == queue)) {
            let requests = lot.requests.load(Ordering::Acquire);
            if n >= requests {
                lot.notify.notify_waiters();
            } else {
                for _ in 0..n {
                    lot.notify.notify_one();
                }
            }
        }
    }

    /// Tasks became ready in queues not known: wakes every parked request.
    pub fn raise_all(&self) {
        let Ok(lots) = self.lots.lock() else { return };
        for lot in lots.values() {
            lot.notify.notify_waiters();
        }
    }
}

/// A request's place in its lot, left when dropped.
#[derive(Debug)]
pub struct Joined<'a> {
    ready: &'a Ready,
    lot: Arc<Lot>,
}

impl std::ops::Deref for Joined<'_> {
    type Target = Lot;

    fn deref(&self) -> &Lot {
        &self.lot
    }
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        self.ready.leave(&self.lot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn q(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        matches!(f.poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(_))
    }

    #[test]
    fn one_ready_task_wakes_one_parked_request_of_each_lot_leasing_its_queue() {
        let ready_tasks = Ready::default();
        let a = ready_tasks.lot(&q(&["default"]), None);
        let b = ready_tasks.lot(&q(&["default"]), None);
        let other = ready_tasks.lot(&q(&["other"]), None);
        let filtered = ready_tasks.lot(&q(&["default", "other"]), Some(&q(&["mail.*"])));
        let (mut fa, mut fb) = (pin!(a.notified()), pin!(b.notified()));
        let (mut fo, mut ff) = (pin!(other.notified()), pin!(filtered.notified()));
        for f in [fa.as_mut(), fb.as_mut(), fo.as_mut(), ff.as_mut()] {
            f.enable();
        }
        ready_tasks.raise("default", 1);
        let woken = [ready(fa.as_mut()), ready(fb.as_mut())];
        assert_eq!(woken.iter().filter(|w| **w).count(), 1, "one of the two requests of the lot");
        assert!(!ready(fo.as_mut()), "a lot of another queue sleeps on");
        assert!(ready(ff.as_mut()), "each lot leasing the queue gets its wake-up");
    }

    #[test]
    fn a_wake_up_not_used_goes_to_the_next_request_and_lots_go_when_left() {
        let ready_tasks = Ready::default();
        let lot = ready_tasks.lot(&q(&["default"]), None);
        let again = ready_tasks.lot(&q(&["default"]), None);
        assert!(Arc::ptr_eq(&lot, &again), "one lot per filter");
        {
            let mut first = Box::pin(lot.notified());
            first.as_mut().enable();
            let mut second = pin!(lot.notified());
            second.as_mut().enable();
            ready_tasks.raise("default", 1);
            // The first leaves (its deadline came) without leasing.
            drop(first);
            assert!(ready(second.as_mut()), "the wake-up passed to the next request");
        }
        let mut every = (pin!(lot.notified()), pin!(again.notified()));
        every.0.as_mut().enable();
        every.1.as_mut().enable();
        ready_tasks.raise_all();
        assert!(ready(every.0.as_mut()) && ready(every.1.as_mut()), "queues unknown: all wake");
        ready_tasks.leave(&again);
        assert_eq!(ready_tasks.lots.lock().map(|l| l.len()).unwrap_or(9), 1, "still held");
        ready_tasks.leave(&lot);
        assert_eq!(ready_tasks.lots.lock().map(|l| l.len()).unwrap_or(9), 0, "left by all");
    }
}
