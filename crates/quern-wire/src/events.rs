//! The event log: publish, read, acknowledge.

use quern_core::{Event, EventSpec};
use serde::{Deserialize, Serialize};

/// `POST /v1/events` with several events: all are appended, or none.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// The events, in order.
    pub events: Vec<EventSpec>,
}

/// The answer to publishing several events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The events as stored, each with its offset.
    pub events: Vec<Event>,
}

/// `GET /v1/events`: a page of the log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventList {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Pass as `after` to read on.
    pub next_after: u64,
}

/// `POST /v1/events/ack`: a consumer group member is done with offsets.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The consumer group.
    pub group: String,
    /// Who acknowledges, for the log: any member may acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The offsets it handled.
    pub offsets: Vec<u64>,
}

/// The answer to an acknowledgement.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    /// How many offsets were newly acknowledged.
    pub acked: usize,
    /// The group's cursor: every offset up to it is acknowledged.
    pub cursor: u64,
}

/// `POST /v1/events`: one event, or `{"events": [...]}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PublishRequest {
    /// Several events, all or none.
    Many(EventBatch),
    /// One event.
    One(EventSpec),
}

/// The answer to a publish: the event, or `{"events": [...]}` for a batch.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PublishAnswer {
    /// The events of a batch.
    Many(Published),
    /// The one event.
    One(Event),
}
