//! Consumer groups: several members share one stream of events, each event
//! handed to one member at a time until it is acknowledged.
//!
//! A group's state — how far it has read and which handed-out events await
//! their acknowledgement (each until its visibility deadline, after which
//! the next read hands it out again) — is kept by the store, and every read
//! and ack replaces it by version: with several nodes on one database,
//! members of one group may ask any node. The cursor — the offset at or below
//! which every event is done — is committed with each change. The embedded
//! store keeps the state in memory, so after a restart a group starts from
//! its committed cursor and an event that was handed out but not
//! acknowledged is handed out again: delivery is at least once, and exactly
//! once while members ack in time.
//!
//! Invariant: an offset is handed to at most one member per visibility
//! period; the committed cursor never passes an unacknowledged event.

use crate::caller::Caller;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use quern_core::{Event, EventFilter};
use quern_store::{EventPage, EventQuery, GroupState, StoreError};
use std::collections::HashMap;
use std::time::Duration;

/// How many times a read or an ack takes the group's state again after
/// another node's (or member's) change got in first.
const MAX_TRIES: usize = 64;
/// The most events one read for redeliveries takes.
const READ_AGAIN_PAGE: usize = 1_000;

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

/// What one claim handed a member.
struct Claimed {
    events: Vec<Event>,
    next_after: u64,
    head: u64,
    /// The soonest visibility deadline among the events still out.
    next_expiry: Option<quern_core::Millis>,
}

fn lost_race(group: &str) -> EngineError {
    EngineError::Contended(format!(
        "consumer group {group}: other reads and acks changed its state {MAX_TRIES} times in a row; try again"
    ))
}

impl Engine {
    /// Events for one member of a group: first those whose visibility ran
    /// out unacknowledged, then new ones; with `wait`, parked until there are
    /// some.
    pub async fn read_group(
        &self,
        caller: &Caller,
        mut query: EventQuery,
        read: &GroupRead,
        wait: Option<Duration>,
    ) -> Result<EventPage> {
        self.admit(caller, "read_group")?;
        super::events::read_as(caller, &mut query.filter)?;
        if let Some(scope) = caller.scope() {
            return Err(EngineError::Forbidden(format!(
                "{caller} is confined to the queues {}: consumer groups are read by tokens of every queue",
                scope.join(", ")
            )));
        }
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
        loop {
            // Armed before the read, so a publish in between still wakes it.
            let appended = self.store.signals().events.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let c = self.claim(&query, read).await?;
            if !c.events.is_empty() || tokio::time::Instant::now() >= deadline || self.shutting_down() {
                return Ok(EventPage { events: c.events, next_after: c.next_after, head: c.head });
            }
            // Park until a publish, the next visibility deadline, or the wait's end.
            let until_expiry = c.next_expiry.map_or(Duration::MAX, |t| {
                Duration::from_millis(u64::try_from(t.saturating_sub(self.now())).unwrap_or(0))
            });
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = &mut appended => {}
                () = tokio::time::sleep(until_expiry) => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
    }

    /// Hands `read.member` up to `query.limit` events and records that in
    /// the group's state, taking the state again if another read or ack
    /// replaced it meanwhile: so an event goes to one member per visibility
    /// period, whichever node each member asks.
    async fn claim(&self, query: &EventQuery, read: &GroupRead) -> Result<Claimed> {
        for _ in 0..MAX_TRIES {
            let now = self.now();
            let visible_until = now.saturating_add(i64::try_from(read.visibility.as_millis()).unwrap_or(i64::MAX));
            let (version, mut g) = match self.store.group_state(read.group.clone()).await? {
                Some((v, g)) => (Some(v), g),
                None => {
                    // A new group starts from its committed cursor, or else
                    // at the log's head.
                    let start = match self.store.group_cursor(read.group.clone()).await? {
                        Some(c) => c,
                        None => self.store.read_events(EventQuery { limit: 0, ..query.clone() }).await?.next_after,
                    };
                    (None, GroupState { read_upto: start, ..GroupState::default() })
                }
            };
            let mut changed = version.is_none();
            // Redeliveries first.
            let expired: Vec<u64> =
                g.inflight.iter().filter(|(_, (_, until))| *until <= now).map(|(o, _)| *o).take(query.limit).collect();
            let mut events = Vec::with_capacity(expired.len());
            let mut again = self.events_at(&expired).await?;
            for offset in expired {
                changed = true;
                match again.remove(&offset) {
                    Some(e) => {
                        g.inflight.insert(offset, (read.member.clone(), visible_until));
                        events.push(e);
                    }
                    // Purged by retention meanwhile: nothing to hand out.
                    None => {
                        g.inflight.remove(&offset);
                    }
                }
            }
            let mut head = g.read_upto;
            if events.len() < query.limit {
                let q = EventQuery { after: Some(g.read_upto), limit: query.limit - events.len(), ..query.clone() };
                let page = match self.store.read_events(q.clone()).await {
                    Ok(page) => page,
                    // Retention took events the group had not read yet:
                    // they are gone for every reader, so the group goes on
                    // from the earliest kept rather than failing for good.
                    Err(StoreError::OffsetExpired { earliest, .. }) => {
                        tracing::warn!(
                            group = %read.group,
                            lost = earliest.saturating_sub(g.read_upto + 1),
                            "consumer group fell behind event retention; going on from the earliest kept event"
                        );
                        g.read_upto = earliest.saturating_sub(1);
                        changed = true;
                        self.store.read_events(EventQuery { after: Some(g.read_upto), ..q }).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                head = page.head;
                for e in page.events {
                    g.inflight.insert(e.offset, (read.member.clone(), visible_until));
                    events.push(e);
                }
                changed |= page.next_after > g.read_upto;
                g.read_upto = g.read_upto.max(page.next_after);
            }
            let next_expiry = g.inflight.values().map(|(_, until)| *until).min();
            let (next_after, head) = (g.read_upto, head.max(g.read_upto));
            if changed && !self.store.put_group_state(read.group.clone(), version, g, now).await? {
                continue;
            }
            events.sort_by_key(|e| e.offset);
            return Ok(Claimed { events, next_after, head, next_expiry });
        }
        Err(lost_race(&read.group))
    }

    /// The events at `offsets` (ascending) that the log still keeps: one
    /// read for a run of neighbouring offsets, one per run at most.
    async fn events_at(&self, offsets: &[u64]) -> Result<HashMap<u64, Event>> {
        let mut found = HashMap::new();
        let mut i = 0;
        while let Some(&from) = offsets.get(i) {
            let span = offsets.last().map_or(1, |last| last - from + 1);
            let q = EventQuery {
                after: Some(from - 1),
                filter: EventFilter::default(),
                limit: usize::try_from(span).unwrap_or(usize::MAX).min(READ_AGAIN_PAGE),
            };
            // Everything up to `covered` was either found or is gone.
            let covered = match self.store.read_events(q).await {
                Ok(page) => {
                    found.extend(
                        page.events
                            .into_iter()
                            .filter(|e| offsets.binary_search(&e.offset).is_ok())
                            .map(|e| (e.offset, e)),
                    );
                    page.next_after.max(from)
                }
                Err(StoreError::OffsetExpired { earliest, .. }) => earliest - 1,
                Err(e) => return Err(e.into()),
            };
            while offsets.get(i).is_some_and(|o| *o <= covered) {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Acknowledges events of a group; answers how many were awaiting their
    /// ack, and the group's cursor after them.
    pub async fn ack_events(&self, caller: &Caller, group: &str, offsets: &[u64]) -> Result<(usize, u64)> {
        self.admit(caller, "ack_events")?;
        for _ in 0..MAX_TRIES {
            let Some((version, mut g)) = self.store.group_state(group.to_owned()).await? else { return Ok((0, 0)) };
            let acked = offsets.iter().filter(|o| g.inflight.remove(o).is_some()).count();
            let cursor = g.cursor();
            if acked == 0 {
                return Ok((0, cursor));
            }
            if self.store.put_group_state(group.to_owned(), Some(version), g, self.now()).await? {
                return Ok((acked, cursor));
            }
        }
        Err(lost_race(group))
    }
}
