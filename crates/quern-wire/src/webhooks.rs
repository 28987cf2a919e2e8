//! Webhooks: the events pushed to a URL, and the record of each delivery.

use quern_core::EventFilter;
use quern_core::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};

/// The most deliveries one answer lists.
pub const MAX_DELIVERIES: usize = 1_000;

/// A webhook as clients send it (`PUT /v1/webhooks/{name}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to POST: an `http://` URL.
    pub url: String,
    /// Which events: `types` (globs), `source`, `target`.
    #[serde(default)]
    pub filters: EventFilter,
    /// The key of the signature header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Failed tries of one event after which the webhook is paused.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Deliver events after this offset (a new webhook only) [default: only
    /// events published from now on].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

fn default_attempts() -> u32 {
    8
}

/// A webhook as the API shows it; the secret itself never leaves the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookView {
    /// Its name.
    pub name: String,
    /// The receiver.
    pub url: String,
    /// Which events.
    pub filters: EventFilter,
    /// Whether bodies are signed.
    pub secret: bool,
    /// Attempts per event before it pauses.
    pub max_attempts: u32,
    /// Paused after an event failed every attempt.
    pub paused: bool,
    /// The offset delivered up to.
    pub cursor: u64,
    /// Failed attempts of the current event.
    pub failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was first stored.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    /// When it was last changed.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
}

/// `GET /v1/webhooks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    /// Every webhook, by name.
    pub webhooks: Vec<WebhookView>,
}

/// One attempt to deliver one event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// The event's offset.
    pub offset: u64,
    /// Which attempt.
    pub attempt: u32,
    /// When.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// Delivered.
    pub ok: bool,
}

/// `GET /v1/webhooks/{name}/deliveries`: newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    /// The deliveries.
    pub deliveries: Vec<DeliveryView>,
}
