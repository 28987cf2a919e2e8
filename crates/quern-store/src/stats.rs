//! How a store's own machinery is doing, for the metrics: its commits (how
//! many requests each carried and how long each took), the SQLite writer's
//! queue and write-ahead log, the PostgreSQL connection pool.
//!
//! Invariant: reading the stats runs no query and waits on no I/O; the
//! committing side pays one short lock per commit, not per request.

use std::sync::Mutex;
use std::time::Duration;

/// A histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// The buckets' upper bounds, ascending.
    pub bounds: &'static [f64],
    /// Counts by bucket (not cumulative), one more than `bounds` for what
    /// passes them all.
    pub buckets: Vec<u64>,
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: vec![0; bounds.len() + 1], count: 0, sum: 0.0 }
    }

    /// Counts `value`.
    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        if let Some(n) = self.buckets.get_mut(bucket) {
            *n += 1;
        }
        self.count += 1;
        self.sum += value;
    }
}

/// The bounds of commit durations, in seconds.
pub const COMMIT_SECONDS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// The bounds of requests per commit.
pub const COMMIT_REQUESTS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// The bounds of waits for a pooled connection, in seconds.
pub const POOL_WAIT_SECONDS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A store's machinery, as read now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStats {
    /// How long each commit took, from the transaction's start.
    pub commit_seconds: Histogram,
    /// How many requests each commit carried (group commit on SQLite,
    /// merged transactions on PostgreSQL).
    pub commit_requests: Histogram,
    /// Requests waiting for the SQLite writer.
    pub writer_queue: Option<u64>,
    /// The size of SQLite's write-ahead log, in bytes.
    pub wal_bytes: Option<u64>,
    /// PostgreSQL's connection pool.
    pub pool: Option<PoolStats>,
}

/// A connection pool, as read now.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    /// The most connections it opens.
    pub max: u64,
    /// Connections open.
    pub open: u64,
    /// Of those, idle.
    pub idle: u64,
    /// Requests waiting for a connection.
    pub waiting: u64,
    /// How long each request waited for its connection.
    pub wait_seconds: Histogram,
}

/// The commits of a store, counted as they happen.
#[derive(Debug)]
pub(crate) struct Commits(Mutex<(Histogram, Histogram)>);

impl Default for Commits {
    fn default() -> Self {
        Self(Mutex::new((Histogram::new(&COMMIT_SECONDS), Histogram::new(&COMMIT_REQUESTS))))
    }
}

impl Commits {
    /// Counts a commit of `requests` requests that took `took`.
    pub(crate) fn commit(&self, requests: usize, took: Duration) {
        if let Ok(mut c) = self.0.lock() {
            c.0.observe(took.as_secs_f64());
            c.1.observe(requests as f64);
        }
    }

    /// The stats of the commits so far, and nothing else yet.
    pub(crate) fn stats(&self) -> StoreStats {
        let (seconds, requests) = match self.0.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        StoreStats {
            commit_seconds: seconds,
            commit_requests: requests,
            writer_queue: None,
            wal_bytes: None,
            pool: None,
        }
    }
}

/// Waits for a pooled connection, counted as they happen.
#[derive(Debug)]
pub(crate) struct PoolWaits(Mutex<Histogram>);

impl Default for PoolWaits {
    fn default() -> Self {
        Self(Mutex::new(Histogram::new(&POOL_WAIT_SECONDS)))
    }
}

impl PoolWaits {
    /// Counts one wait.
    pub(crate) fn waited(&self, took: Duration) {
        if let Ok(mut h) = self.0.lock() {
            h.observe(took.as_secs_f64());
        }
    }

    /// The waits so far.
    pub(crate) fn histogram(&self) -> Histogram {
        self.0.lock().map(|h| h.clone()).unwrap_or_else(|_| Histogram::new(&POOL_WAIT_SECONDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bound() {
        let mut h = Histogram::new(&COMMIT_REQUESTS);
        h.observe(1.0);
        h.observe(3.0);
        h.observe(1_000.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.buckets[COMMIT_REQUESTS.len()], 1);
        assert_eq!((h.count, h.sum), (3, 1_004.0));
    }
}
