//! What the event log takes and answers: reads of the log, a consumer
//! group's delivery state, webhooks and their delivery attempts.
//!
//! Invariant: offsets only grow, and a cursor (a group's, a webhook's) means
//! that every event at or below its offset is done with.

use quern_core::{Event, EventFilter, Millis};
use std::collections::BTreeMap;

/// What [`Store::read_events`](crate::Store::read_events) reads.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events after this offset; `None` is from the earliest kept.
    pub after: Option<u64>,
    /// Which events.
    pub filter: EventFilter,
    /// At most this many.
    pub limit: usize,
}

/// A page of the event log.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// The offset the next read continues after: the last event returned,
    /// or, when the filter matched little, the last one looked at.
    pub next_after: u64,
    /// The newest offset in the log (0 when it is empty).
    pub head: u64,
}

/// A consumer group's delivery state, which every node serving the group
/// reads and replaces by version (see [`Store::put_group_state`](crate::Store::put_group_state)).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupState {
    /// Every event at or below this offset was handed out or passed over.
    pub read_upto: u64,
    /// Handed-out events awaiting their ack: offset → (member, visibility
    /// deadline).
    pub inflight: BTreeMap<u64, (String, Millis)>,
}

impl GroupState {
    /// The group's cursor: every event at or below it is done.
    pub fn cursor(&self) -> u64 {
        self.inflight.keys().next().map_or(self.read_upto, |first| first - 1)
    }
}

/// A webhook as stored: where to POST which events, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Its unique name.
    pub name: String,
    /// The `http://` URL events are POSTed to.
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
    /// The HMAC-SHA256 key of the signature header, when set.
    pub secret: Option<String>,
    /// Failed attempts in a row after which it is paused.
    pub max_attempts: u32,
    /// Paused webhooks deliver nothing until resumed.
    pub paused: bool,
    /// Every event at or below this offset was delivered (or passed by).
    pub cursor: u64,
    /// Failed attempts in a row at the event after `cursor`.
    pub failures: u32,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
}

/// One attempt to deliver one event to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook.
    pub webhook: String,
    /// The event.
    pub offset: u64,
    /// 1 for the first try of this event, then 2, 3, …
    pub attempt: u32,
    /// When it was tried.
    pub at: Millis,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
}
