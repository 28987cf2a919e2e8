//! Consumer groups: several members share one stream of events, each event
//! handed to one member at a time until it is acknowledged.
//!
//! A group keeps, in memory, how far it has read and which handed-out events
//! await their acknowledgement (each until its visibility deadline, after
//! which the next read hands it out again); it commits its cursor — the
//! offset at or below which every event is done — to the store as acks move
//! it. After a restart a group starts from its committed cursor, so an event
//! that was handed out but not acknowledged is handed out again: delivery is
//! at least once, and exactly once while members ack in time.
//!
//! Invariant: an offset is handed to at most one member per visibility
//! period; the committed cursor never passes an unacknowledged event.

use super::Result;
use crate::engine::Engine;
use quern_core::{Event, Millis};
use quern_store::{EventPage, EventQuery};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// One group's state.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Every event at or below this was handed out or passed the filter by.
    read_upto: u64,
    /// Handed-out events awaiting their ack: member and visibility deadline.
    inflight: BTreeMap<u64, (String, Millis, Event)>,
    /// The cursor last committed to the store.
    committed: u64,
}

impl Group {
    /// Every event at or below the cursor is done.
    fn cursor(&self) -> u64 {
        self.inflight.keys().next().map_or(self.read_upto, |first| first - 1)
    }
}

/// The groups this server knows, by name.
#[derive(Debug, Default)]
pub(crate) struct Groups(Mutex<HashMap<String, Group>>);

/// A read for a member of a group.
#[derive(Debug, Clone)]
pub struct GroupRead {
    /// The group.
    pub group: String,
    /// Who reads.
    pub member: String,
    /// How long a handed-out event stays with this member unacknowledged.
    pub visibility: Duration,
}

impl Engine {
    /// Locks the groups; a poisoned lock (a panic while held) still holds
    /// consistent state, as every change is a few map operations.
    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events for one member of a group: first those whose visibility ran
    /// out unacknowledged, then new ones; with `wait`, parked until there are
    /// some.
    pub async fn read_group(&self, query: EventQuery, read: &GroupRead, wait: Option<Duration>) -> Result<EventPage> {
        if !self.groups().contains_key(&read.group) {
            let committed = self.store.group_cursor(read.group.clone()).await?;
            let start = match committed {
                Some(c) => c,
                None => self.store.read_events(EventQuery { limit: 0, ..query.clone() }).await?.next_after,
            };
            self.groups().entry(read.group.clone()).or_insert(Group {
                read_upto: start,
                committed: start,
                ..Group::default()
            });
        }
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
        loop {
            let now = self.now();
            let visible_until = now.saturating_add(i64::try_from(read.visibility.as_millis()).unwrap_or(i64::MAX));
            // Redeliveries first.
            let (mut events, read_upto, next_expiry) = {
                let mut groups = self.groups();
                let g = groups.entry(read.group.clone()).or_default();
                let expired: Vec<u64> = g
                    .inflight
                    .iter()
                    .filter(|(_, (_, until, _))| *until <= now)
                    .map(|(o, _)| *o)
                    .take(query.limit)
                    .collect();
                let mut events = Vec::with_capacity(expired.len());
                for offset in expired {
                    if let Some(entry) = g.inflight.get_mut(&offset) {
                        *entry = (read.member.clone(), visible_until, entry.2.clone());
                        events.push(entry.2.clone());
                    }
                }
                let next_expiry = g.inflight.values().map(|(_, until, _)| *until).min();
                (events, g.read_upto, next_expiry)
            };
            let mut head = read_upto;
            if events.len() < query.limit {
                let q = EventQuery { after: Some(read_upto), limit: query.limit - events.len(), ..query.clone() };
                let page = self.store.read_events(q).await?;
                head = page.head;
                let mut groups = self.groups();
                let g = groups.entry(read.group.clone()).or_default();
                // Another member may have read the same stretch meanwhile.
                for e in page.events.into_iter().filter(|e| e.offset > g.read_upto) {
                    g.inflight.insert(e.offset, (read.member.clone(), visible_until, e.clone()));
                    events.push(e);
                }
                g.read_upto = g.read_upto.max(page.next_after);
            }
            let next_after = self.groups().get(&read.group).map_or(read_upto, |g| g.read_upto);
            let head = head.max(next_after);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline || self.shutting_down() {
                events.sort_by_key(|e| e.offset);
                return Ok(EventPage { events, next_after, head });
            }
            // Park until a publish, the next visibility deadline, or the wait's end.
            let appended = self.store.signals().events.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let until_expiry = next_expiry.map_or(Duration::MAX, |t| {
                Duration::from_millis(u64::try_from(t.saturating_sub(self.now())).unwrap_or(0))
            });
            let again =
                self.store.read_events(EventQuery { after: Some(read_upto), limit: 1, ..query.clone() }).await?;
            if again.events.is_empty() {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    () = &mut appended => {}
                    () = tokio::time::sleep(until_expiry) => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
        }
    }

    /// Acknowledges events of a group; answers how many were awaiting their
    /// ack, and the group's cursor after them.
    pub async fn ack_events(&self, group: &str, offsets: &[u64]) -> Result<(usize, u64)> {
        let (acked, cursor, commit) = {
            let mut groups = self.groups();
            let Some(g) = groups.get_mut(group) else { return Ok((0, 0)) };
            let acked = offsets.iter().filter(|o| g.inflight.remove(o).is_some()).count();
            let cursor = g.cursor();
            let commit = cursor > g.committed;
            if commit {
                g.committed = cursor;
            }
            (acked, cursor, commit)
        };
        if commit {
            self.store.save_group_cursor(group.to_owned(), cursor, self.now()).await?;
        }
        Ok((acked, cursor))
    }
}
