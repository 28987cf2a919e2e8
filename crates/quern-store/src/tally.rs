//! What committed transactions did to tasks, counted for the metrics: the
//! moves of each queue and task name by the event they publish, how long
//! tasks waited, ran and took end to end, and the attempts the server ended
//! (leases run out, timeouts). Every backend counts at the one checkpoint
//! all moves pass ([`crate::segment::Move`]), into a tally of the open
//! transaction, and adds that tally to the store's totals once it commits.
//!
//! Invariant: a move is counted once, and only once its transaction has
//! committed; the totals hold at most [`Totals::max_names`] task names per
//! queue (the rest count under [`OTHER`]) and [`Totals::max_queues`] queues,
//! so no client can make them grow without bound.

use crate::segment::Move;
use hashbrown::HashMap;
use quern_core::{Millis, Status};

/// The label that task names (and queues) past the bound count under.
pub const OTHER: &str = "other";

/// The events a move publishes, in the order of their codes
/// ([`Move::event`]), without their `task.` prefix; then [`SUBMITTED`].
pub const MOVE_KINDS: [&str; 9] =
    ["queued", "started", "retrying", "succeeded", "failed", "cancelled", "timed_out", "skipped", "submitted"];

/// The count of tasks submitted (a task's first move, into `queued` or
/// `pending`) in [`QueueTally::moves`].
pub const SUBMITTED: usize = 8;

/// The upper bounds of the duration buckets, in milliseconds (the store's
/// clock counts milliseconds, so nothing finer can be told apart).
pub const BUCKETS_MS: [Millis; 17] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000];

/// A histogram of durations: the count in each bucket of [`BUCKETS_MS`]
/// (not cumulative; the last counts what passes every bound), their count
/// and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations {
    /// Counts by bucket, one more than [`BUCKETS_MS`] for the rest.
    pub buckets: [u64; BUCKETS_MS.len() + 1],
    /// How many durations.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: u64,
}

impl Durations {
    /// Counts one duration (a negative one, from clocks that disagree, as 0).
    pub fn observe(&mut self, ms: Millis) {
        let ms = ms.max(0);
        let bucket = BUCKETS_MS.partition_point(|b| *b < ms);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(u64::try_from(ms).unwrap_or(0));
    }

    fn add(&mut self, other: &Durations) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }
}

/// Adds `from` into `into`, and zeroes `from`.
fn drain(into: &mut [u64], from: &mut [u64]) {
    for (a, b) in into.iter_mut().zip(from.iter_mut()) {
        *a += std::mem::take(b);
    }
}

/// One queue's share of a tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueTally {
    /// Moves by task name, by event code ([`MOVE_KINDS`]).
    pub moves: HashMap<String, [u64; 9]>,
    /// From ready (queued, or due) to started.
    pub wait: Durations,
    /// From started to the end of the attempt.
    pub run: Durations,
    /// From submitted to the end of an attempt that ended the task.
    pub latency: Durations,
    /// Attempts ended because their lease ran out.
    pub lease_expired: u64,
    /// Attempts the server ended at their timeout.
    pub timed_out: u64,
}

impl QueueTally {
    /// Adds `other` and zeroes it, keeping its names (a tally is used
    /// again, so that counting the next transaction allocates nothing).
    fn drain(&mut self, other: &mut QueueTally, max_names: usize) {
        for (name, counts) in &mut other.moves {
            if counts.iter().all(|n| *n == 0) {
                continue;
            }
            let name =
                if self.moves.contains_key(name.as_str()) || self.moves.len() < max_names { name } else { OTHER };
            drain(self.moves.entry_ref(name).or_default(), counts);
        }
        self.wait.add(&other.wait);
        self.run.add(&other.run);
        self.latency.add(&other.latency);
        self.lease_expired += other.lease_expired;
        self.timed_out += other.timed_out;
        other.wait = Durations::default();
        other.run = Durations::default();
        other.latency = Durations::default();
        other.lease_expired = 0;
        other.timed_out = 0;
    }
}

/// A tally that holds more names than this is emptied once added, so that
/// one kept for reuse stays small.
const KEPT_NAMES: usize = 256;

/// What one transaction did to tasks, by queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// By queue.
    pub queues: HashMap<String, QueueTally>,
    /// Something was counted since the tally was last added.
    counted: bool,
}

impl Tally {
    /// The queue's share; its name is copied only the first time.
    fn queue(&mut self, queue: &str) -> &mut QueueTally {
        self.counted = true;
        self.queues.entry_ref(queue).or_default()
    }

    /// Counts a move by the event it publishes, and as a submission when
    /// it is the task's first; and the durations it ends: a start ends a
    /// wait; an end of a running attempt ends a run and, when it ends the
    /// task, the task's whole latency.
    pub(crate) fn record(&mut self, m: &Move<'_>) {
        let code = m.event();
        if code.is_none() && m.from.is_some() {
            return;
        }
        let q = self.queue(m.queue);
        let counts = q.moves.entry_ref(m.name).or_default();
        if let Some(code) = code {
            counts[code] += 1;
        }
        if m.from.is_none() {
            counts[SUBMITTED] += 1;
        }
        if let Some(since) = m.since {
            if m.to == Status::Running {
                q.wait.observe(m.at - since);
            } else if m.from == Some(Status::Running) {
                q.run.observe(m.at - since);
            }
        }
        if let Some(created) = m.created
            && m.from == Some(Status::Running)
            && m.to.is_terminal()
        {
            q.latency.observe(m.at - created);
        }
    }

    /// Counts an attempt of `queue` the server ended as its lease ran out.
    pub(crate) fn lease_expired(&mut self, queue: &str) {
        self.queue(queue).lease_expired += 1;
    }

    /// Counts an attempt of `queue` the server ended at its timeout.
    pub(crate) fn timed_out(&mut self, queue: &str) {
        self.queue(queue).timed_out += 1;
    }

    /// Nothing counted since the tally was last added.
    pub(crate) fn is_empty(&self) -> bool {
        !self.counted
    }

    /// Forgets what was counted (its transaction rolled back).
    pub(crate) fn discard(&mut self) {
        self.queues.clear();
        self.counted = false;
    }
}

/// A store's totals since it opened, by queue.
#[derive(Debug, Clone)]
pub struct Totals {
    /// The tally of every committed transaction.
    pub tally: Tally,
    /// The most task names kept per queue.
    pub max_names: usize,
    /// The most queues kept.
    pub max_queues: usize,
}

impl Default for Totals {
    fn default() -> Self {
        Self { tally: Tally::default(), max_names: 100, max_queues: 1_000 }
    }
}

impl Totals {
    /// Adds a committed transaction's tally, and zeroes it for the next.
    pub fn add(&mut self, tally: &mut Tally) {
        let mut names = 0;
        for (queue, q) in &mut tally.queues {
            names += q.moves.len();
            let known = self.tally.queues.contains_key(queue.as_str()) || self.tally.queues.len() < self.max_queues;
            let queue = if known { queue.as_str() } else { OTHER };
            self.tally.queues.entry_ref(queue).or_default().drain(q, self.max_names);
        }
        self.tally.counted = true;
        tally.counted = false;
        if names > KEPT_NAMES {
            tally.queues.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn moved(name: &str, from: Option<Status>, to: Status, at: Millis) -> Move<'_> {
        Move::new(Uuid::nil(), (name, "q", 1), from, to, at)
    }

    #[test]
    fn a_task_that_runs_counts_its_moves_and_durations() {
        let mut t = Tally::default();
        t.record(&moved("a", None, Status::Queued, 1_000));
        t.record(&moved("a", Some(Status::Queued), Status::Running, 1_004).timed(Some(1_000), Some(1_000)));
        t.record(&moved("a", Some(Status::Running), Status::Succeeded, 1_104).timed(Some(1_004), Some(1_000)));
        let q = &t.queues["q"];
        assert_eq!(q.moves["a"], [1, 1, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!((q.wait.count, q.wait.sum_ms), (1, 4));
        assert_eq!(q.wait.buckets[2], 1, "4 ms is in the ≤ 5 ms bucket");
        assert_eq!((q.run.count, q.run.sum_ms), (1, 100));
        assert_eq!((q.latency.count, q.latency.sum_ms), (1, 104));
    }

    #[test]
    fn a_retry_ends_a_run_but_not_the_latency() {
        let mut t = Tally::default();
        let back = Move { retrying: true, ..moved("a", Some(Status::Running), Status::Queued, 50) };
        t.record(&back.timed(Some(10), Some(0)));
        let q = &t.queues["q"];
        assert_eq!(q.moves["a"][2], 1);
        assert_eq!((q.run.count, q.latency.count), (1, 0));
    }

    #[test]
    fn a_task_held_at_submit_counts_as_submitted_and_queued_when_due() {
        let mut t = Tally::default();
        t.record(&moved("a", None, Status::Pending, 0));
        assert_eq!(t.queues["q"].moves["a"][SUBMITTED], 1);
        t.record(&moved("a", Some(Status::Pending), Status::Queued, 10));
        assert_eq!(t.queues["q"].moves["a"], [1, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn names_and_queues_past_the_bound_count_as_other() {
        let mut totals = Totals { max_names: 2, max_queues: 1, ..Totals::default() };
        for name in ["a", "b", "c", "d"] {
            let mut t = Tally::default();
            t.record(&moved(name, None, Status::Queued, 0));
            totals.add(&mut t);
        }
        let mut t = Tally::default();
        t.record(&Move::new(Uuid::nil(), ("a", "elsewhere", 0), None, Status::Queued, 0));
        totals.add(&mut t);
        let q = &totals.tally.queues["q"];
        assert_eq!(q.moves.len(), 3);
        assert_eq!(q.moves[OTHER][SUBMITTED], 2);
        assert_eq!(totals.tally.queues[OTHER].moves["a"][SUBMITTED], 1);
    }

    #[test]
    fn a_tally_added_is_zeroed_and_counts_again_from_nothing() {
        let mut totals = Totals::default();
        let mut t = Tally::default();
        for _ in 0..2 {
            t.record(&moved("a", None, Status::Queued, 0));
            t.record(&moved("a", Some(Status::Queued), Status::Running, 5).timed(Some(0), None));
            totals.add(&mut t);
            assert!(t.is_empty());
            assert_eq!(t.queues["q"].moves["a"], [0; 9], "zeroed, its names kept");
            assert_eq!(t.queues["q"].wait, Durations::default());
        }
        let q = &totals.tally.queues["q"];
        assert_eq!((q.moves["a"][SUBMITTED], q.moves["a"][1]), (2, 2));
        assert_eq!((q.wait.count, q.wait.sum_ms), (2, 10));
        t.record(&moved("b", None, Status::Queued, 0));
        t.discard();
        assert!(t.is_empty() && t.queues.is_empty(), "a rolled-back batch counts nothing");
    }

    #[test]
    fn the_last_bucket_takes_what_passes_every_bound() {
        let mut d = Durations::default();
        d.observe(-5);
        d.observe(1);
        d.observe(7_200_000);
        assert_eq!(d.buckets[0], 2);
        assert_eq!(d.buckets[BUCKETS_MS.len()], 1);
        assert_eq!(d.count, 3);
    }
}
