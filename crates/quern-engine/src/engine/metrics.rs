//! What the engine counts for the metrics beyond what the store counts
//! (events published, webhook deliveries, schedule fires), and the one read
//! a scrape makes of everything: the store's task totals and machinery, the
//! queues' counts, the live workers, the consumer groups' lag.
//!
//! Invariant: counting costs an atomic add or one short lock, never I/O;
//! a scrape reads counts the server keeps and never scans tasks; every
//! label is bounded (at most [`MAX_LABELS`] webhooks, schedules and groups,
//! the rest under `other`); a token confined to queues sees only its
//! queues' series.

use super::Engine;
use crate::caller::Caller;
use crate::error::Result;
use quern_store::QueueInfo;
use quern_store::stats::StoreStats;
use quern_store::tally::{OTHER, Tally};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most webhooks, schedules and consumer groups shown by name.
pub(crate) const MAX_LABELS: usize = 1_000;

/// Counts by name, bounded: names past [`MAX_LABELS`] count under `other`.
#[derive(Debug, Default)]
struct Named(Mutex<BTreeMap<String, [u64; 2]>>);

impl Named {
    fn add(&self, name: &str, which: usize) {
        let Ok(mut counts) = self.0.lock() else { return };
        let key = if counts.contains_key(name) || counts.len() < MAX_LABELS { name } else { OTHER };
        if let Some(c) = counts.get_mut(key) {
            c[which] += 1;
        } else {
            let mut c = [0; 2];
            c[which] = 1;
            counts.insert(key.to_owned(), c);
        }
    }

    fn read(&self) -> Vec<(String, [u64; 2])> {
        self.0.lock().map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }
}

/// The engine's own counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Events published through the API.
    events_published: AtomicU64,
    /// Webhook deliveries by webhook: delivered, failed.
    deliveries: Named,
    /// Schedule slots by schedule: fired, skipped.
    fires: Named,
}

impl Counters {
    /// `n` events were published through the API.
    pub(crate) fn published(&self, n: usize) {
        self.events_published.fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }

    /// A delivery of `webhook` was tried.
    pub(crate) fn delivery(&self, webhook: &str, delivered: bool) {
        self.deliveries.add(webhook, usize::from(!delivered));
    }

    /// A slot of `schedule` fired a task, or was skipped.
    pub(crate) fn slot(&self, schedule: &str, fired: bool) {
        self.fires.add(schedule, usize::from(!fired));
    }
}

/// Everything a scrape shows, read at once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// What committed transactions did to tasks, by queue (this process's
    /// counts since it started).
    pub tasks: Tally,
    /// The queues' tasks by status (every node's).
    pub queues: Vec<QueueInfo>,
    /// Whether the caller sees the server-wide series (it is confined to no
    /// queues): everything below is empty otherwise.
    pub whole: bool,
    /// Workers heard from within the last minute.
    pub live_workers: usize,
    /// The kind of store.
    pub backend: &'static str,
    /// The store's machinery.
    pub store: Option<StoreStats>,
    /// Events published through the API.
    pub events_published: u64,
    /// The event log's last offset.
    pub event_head: u64,
    /// Consumer groups and how many events they are behind the head.
    pub group_lag: Vec<(String, u64)>,
    /// Webhook deliveries by webhook: delivered, failed.
    pub webhook_deliveries: Vec<(String, [u64; 2])>,
    /// Schedule slots by schedule: fired, skipped.
    pub schedule_slots: Vec<(String, [u64; 2])>,
    /// Background loops by name: whether each runs, and how often it was
    /// started again after a panic.
    pub loops: Vec<(&'static str, bool, u64)>,
}

impl Engine {
    /// What `/metrics` shows to `caller`.
    pub async fn observe(&self, caller: &Caller) -> Result<Observed> {
        self.admit(caller, "metrics")?;
        let mut tasks = self.store.signals().totals();
        tasks.queues.retain(|q, _| caller.covers(q) && (caller.scope().is_none() || q != OTHER));
        let mut queues = self.store.queues().await?;
        queues.retain(|q| caller.covers(&q.name));
        fold_queues(&mut queues, self.metrics_max_queues);
        let whole = caller.scope().is_none();
        let observed = Observed { tasks, queues, whole, backend: self.backend, ..Observed::default() };
        if !whole {
            return Ok(observed);
        }
        let head = self.event_head(caller).await?;
        let group_lag = self
            .store
            .group_cursors(MAX_LABELS)
            .await?
            .into_iter()
            .map(|(name, cursor)| (name, head.saturating_sub(cursor)))
            .collect();
        Ok(Observed {
            live_workers: self.live_workers().await,
            store: Some(self.store.stats()),
            events_published: self.counters.events_published.load(Ordering::Relaxed),
            event_head: head,
            group_lag,
            webhook_deliveries: self.counters.deliveries.read(),
            schedule_slots: self.counters.fires.read(),
            loops: self.loops.states().into_iter().map(|(name, s)| (name, s.running, s.restarts)).collect(),
            ..observed
        })
    }
}

/// Keeps the first `max` queues and adds the counts of the rest into one
/// queue named `other`, so that the depths of a scrape stay bounded however
/// many queues clients made.
fn fold_queues(queues: &mut Vec<QueueInfo>, max: usize) {
    if queues.len() <= max {
        return;
    }
    let mut other = QueueInfo { name: OTHER.to_owned(), counts: BTreeMap::new(), paused: false };
    for q in queues.drain(max..) {
        for (status, n) in q.counts {
            *other.counts.entry(status).or_default() += n;
        }
    }
    queues.push(other);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_past_the_bound_fold_into_other() {
        let queue = |name: &str, n: u64| QueueInfo {
            name: name.to_owned(),
            counts: BTreeMap::from([(quern_core::Status::Queued, n)]),
            paused: false,
        };
        let mut queues = vec![queue("a", 1), queue("b", 2), queue("c", 3), queue("d", 4)];
        fold_queues(&mut queues, 2);
        let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["a", "b", OTHER]);
        assert_eq!(queues[2].counts[&quern_core::Status::Queued], 7);
    }

    #[test]
    fn names_past_the_bound_count_as_other() {
        let named = Named::default();
        for i in 0..MAX_LABELS + 5 {
            named.add(&format!("w{i}"), 1);
        }
        named.add("w0", 0);
        let read = named.read();
        assert_eq!(read.len(), MAX_LABELS + 1);
        assert_eq!(read.iter().find(|(k, _)| k == OTHER).map(|(_, c)| *c), Some([0, 5]));
        assert_eq!(read.iter().find(|(k, _)| k == "w0").map(|(_, c)| *c), Some([1, 1]));
    }
}
