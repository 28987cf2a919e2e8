//! The writer's in-memory indexes, kept in step with the rows by every
//! operation: the ready sets (by queue and task name), the delayed set of
//! pending tasks, the leases with their deadlines, the deadlines of
//! approvals, and the counts by queue and status.
//!
//! Invariant: an unfinished task is in the one index its status names: a
//! queued task in the ready set of its queue and name (an approval in none:
//! it waits for `approve`), a pending task in the delayed set unless it waits
//! for parents, a running task among the leases with its deadline. Whatever
//! makes a timer due sooner than the earliest one raises `effects.timers`.

use super::chunked::ChunkedSet;
use super::{LeaseState, ReadyKey, State, status_index};
use crate::LeaseParams;
use crate::stored::{APPROVAL, ms_i64};
use quern_core::{Millis, Status};
use std::cmp::Reverse;
use uuid::Uuid;

impl State {
    pub(super) fn push_ready(&mut self, queue: &str, name: &str, priority: i32, run_at: Millis, id: Uuid) {
        // Approvals wait for `approve`, never for a worker.
        if name == APPROVAL {
            return;
        }
        // Looked up by reference first: the names are allocated only for a
        // queue or task name the ready sets do not hold yet.
        let names = match self.ready.get_mut(queue) {
            Some(names) => names,
            None => self.ready.entry(queue.to_owned()).or_default(),
        };
        let set = match names.get_mut(name) {
            Some(set) => set,
            None => names.entry(name.to_owned()).or_default(),
        };
        set.insert((Reverse(priority), run_at, id));
        match self.effects.ready.get_mut(queue) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                self.effects.ready.insert(queue.to_owned(), 1);
            }
        }
    }

    pub(super) fn remove_ready(&mut self, queue: &str, name: &str, priority: i32, run_at: Millis, id: Uuid) {
        if let Some(names) = self.ready.get_mut(queue) {
            if let Some(set) = names.get_mut(name) {
                set.remove(&(Reverse(priority), run_at, id));
                if set.is_empty() {
                    names.remove(name);
                }
            }
            if names.is_empty() {
                self.ready.remove(queue);
            }
        }
    }

    pub(super) fn count(&mut self, queue: &str, from: Option<Status>, to: Option<Status>) {
        let Ok(mut counts) = self.counts.lock() else { return };
        if !counts.contains_key(queue) {
            counts.insert(queue.to_owned(), [0; 8]);
        }
        if let Some(c) = counts.get_mut(queue) {
            if let Some(f) = from {
                let i = status_index(f);
                c[i] = c[i].saturating_sub(1);
            }
            if let Some(t) = to {
                c[status_index(t)] += 1;
            }
        }
    }

    pub(super) fn schedule(&mut self, run_at: Millis, id: Uuid) {
        if self.delayed.first().is_none_or(|(first, _)| run_at < *first) {
            self.effects.timers = true;
        }
        self.delayed.insert((run_at, id));
    }

    pub(super) fn set_lease(&mut self, id: Uuid, lease: LeaseState) {
        let due = lease.due();
        if self.deadlines.first().is_none_or(|(first, _)| due < *first) {
            self.effects.timers = true;
        }
        if let Some(old) = self.leases.insert(id, lease) {
            self.deadlines.remove(&(old.due(), id));
        }
        self.deadlines.insert((due, id));
    }

    pub(super) fn take_lease(&mut self, id: Uuid) -> Option<LeaseState> {
        let lease = self.leases.remove(&id)?;
        self.deadlines.remove(&(lease.due(), id));
        Some(lease)
    }

    pub(super) fn next_due(&self) -> Option<Millis> {
        [self.delayed.first(), self.deadlines.first(), self.approval_deadlines.first()]
            .into_iter()
            .flatten()
            .map(|(t, _)| *t)
            .min()
    }

    /// Starts the decision deadline of an `approval` task with a timeout
    /// that became queued at `since`.
    pub(super) fn arm_approval(&mut self, id: Uuid, name: &str, timeout_ms: Option<u64>, since: Millis) {
        if name != APPROVAL {
            return;
        }
        let Some(timeout) = timeout_ms else { return };
        let due = since.saturating_add(ms_i64(timeout));
        if self.approval_deadlines.first().is_none_or(|(first, _)| due < *first) {
            self.effects.timers = true;
        }
        if let Some(old) = self.approval_due.insert(id, due) {
            self.approval_deadlines.remove(&(old, id));
        }
        self.approval_deadlines.insert((due, id));
    }

    pub(super) fn disarm_approval(&mut self, id: Uuid) {
        if let Some(due) = self.approval_due.remove(&id) {
            self.approval_deadlines.remove(&(due, id));
        }
    }

    /// Takes up to `max` ids off the ready sets of the asked, unpaused queues,
    /// best first.
    pub(super) fn pick_ready(&mut self, p: &LeaseParams) -> Vec<Uuid> {
        let paused = self.paused.lock().map(|p| p.clone()).unwrap_or_default();
        let mut sets: Vec<&mut ChunkedSet<ReadyKey>> = Vec::new();
        for (queue, names) in &mut self.ready {
            if !p.queues.iter().any(|q| q == queue) || paused.contains(queue) {
                continue;
            }
            for (name, set) in names.iter_mut() {
                if p.names.as_ref().is_none_or(|ns| ns.iter().any(|n| quern_core::spec::lease_name_matches(n, name))) {
                    sets.push(set);
                }
            }
        }
        let mut picked = Vec::with_capacity(p.max.min(1024));
        while picked.len() < p.max {
            let best = sets.iter().enumerate().filter_map(|(i, s)| s.first().map(|k| (*k, i))).min();
            let Some((key, i)) = best else { break };
            sets[i].pop_first();
            picked.push(key.2);
        }
        self.ready.retain(|_, names| {
            names.retain(|_, set| !set.is_empty());
            !names.is_empty()
        });
        picked
    }
}
