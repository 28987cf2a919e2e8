//! Event routes: publish (one or a batch), read with a long-poll, and the
//! same as a Server-Sent Events stream that resumes from `Last-Event-ID`.

use super::body::{Body, QueryPairs, RawBody, json_error};
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use quern_core::{Event, EventFilter, EventSpec};
use quern_engine::types::EventQuery;
use quern_engine::{Caller, GroupRead};
use quern_wire::events::{AckRequest, Acked, EventList, PublishAnswer, PublishRequest, Published};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

type Answer = Result<Response, ApiError>;

/// The most events one read answers.
const MAX_LIMIT: usize = 1_000;
/// The most events one publish takes.
const MAX_BATCH: usize = 10_000;
/// The longest `?wait=`.
const MAX_WAIT_MS: u64 = 60_000;
/// How long a stream's read parks before it looks again.
const STREAM_POLL: Duration = Duration::from_secs(15);
/// How long a group's event stays with its member unacknowledged, unless
/// the read says otherwise.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// The shortest visibility timeout.
const MIN_VISIBILITY: Duration = Duration::from_millis(100);
/// The longest visibility timeout: one hour.
const MAX_VISIBILITY_MS: u64 = 3_600_000;
/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Appends one event, or a batch all or none.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = PublishRequest,
    responses((status = 201, description = "The event, or `{events}` for a batch", body = PublishAnswer)))]
pub(super) async fn publish(State(engine): State<AppState>, By(caller): By, RawBody(bytes): RawBody) -> Answer {
    /// One event, or `{"events": [...]}`: read in one pass, so that a bad
    /// event gets serde's own message (an untagged enum would hide it).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        events: Option<Vec<EventSpec>>,
        #[serde(rename = "type")]
        kind: Option<String>,
        source: Option<String>,
        target: Option<String>,
        payload: Option<Box<serde_json::value::RawValue>>,
    }
    let body: Body = serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?;
    match body {
        Body { events: Some(events), kind: None, source: None, target: None, payload: None } => {
            if events.len() > MAX_BATCH {
                return Err(ApiError::invalid_field("events", format!("at most {MAX_BATCH} events per request")));
            }
            let events = engine.publish(&caller, events).await?;
            Ok((StatusCode::CREATED, Json(PublishAnswer::Many(Published { events }))).into_response())
        }
        Body { events: Some(_), .. } => Err(ApiError::invalid("give one event, or {\"events\": [...]}, not both")),
        Body { events: None, kind, source, target, payload } => {
            let kind = kind.ok_or_else(|| ApiError::invalid_field("type", "is required"))?;
            let source = source.ok_or_else(|| ApiError::invalid_field("source", "is required"))?;
            let spec = EventSpec { kind, source, target, payload };
            let mut events = engine.publish(&caller, vec![spec]).await.map_err(unindexed)?;
            let event = events.pop().ok_or(ApiError::Internal)?;
            Ok((StatusCode::CREATED, Json(PublishAnswer::One(event))).into_response())
        }
    }
}

/// A single event's error names its field, not a batch index.
fn unindexed(e: quern_engine::EngineError) -> ApiError {
    match e {
        quern_engine::EngineError::Invalid { error, .. } => ApiError::rule(&error),
        other => other.into(),
    }
}

/// The filter and the starting point of a read, from its query string.
fn query(q: &QueryPairs, last_event_id: Option<&str>) -> Result<EventQuery, ApiError> {
    let offset = |key: &str, v: &str| {
        v.parse::<u64>().map_err(|_| ApiError::invalid_field(key, format!("must be an offset (got {v:?})")))
    };
    let after = match (last_event_id, q.get("after")) {
        (Some(id), _) => Some(offset("Last-Event-ID", id)?),
        (None, Some("latest")) => None,
        (None, Some(v)) => Some(offset("after", v)?),
        (None, None) => None,
    };
    let limit = q.limit(MAX_LIMIT)?;
    let types =
        q.get("type").map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect());
    let filter = EventFilter {
        types: types.unwrap_or_default(),
        source: q.get("source").map(str::to_owned),
        target: q.get("target").map(str::to_owned),
    };
    Ok(EventQuery { after, filter, limit })
}

/// The query of a read, with `after=latest` made the log's current head.
async fn read_query(
    engine: &AppState,
    caller: &Caller,
    q: &QueryPairs,
    last_event_id: Option<&str>,
) -> Result<EventQuery, ApiError> {
    let mut query = query(q, last_event_id)?;
    if last_event_id.is_none() && q.get("after") == Some("latest") {
        query.after = Some(engine.event_head(caller).await?);
    }
    Ok(query)
}

/// Reads the log (or a consumer group's share of it), parking up to `wait`
/// when nothing is new.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(
        ("after" = Option<String>, Query, description = "Read after this offset, or `latest`"),
        ("type" = Option<String>, Query, description = "Comma-separated type globs"),
        ("source" = Option<String>, Query, description = "Only from this source"),
        ("target" = Option<String>, Query, description = "Only to this target"),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"),
        ("wait" = Option<String>, Query, description = "Park up to this long (`30s`, or ms), at most 60 s"),
        ("group" = Option<String>, Query, description = "Read as a member of this consumer group"),
        ("member" = Option<String>, Query, description = "The member, with `group`"),
        ("visibility" = Option<String>, Query, description = "With `group`: how long an event stays the member's unacknowledged"),
    ),
    responses((status = 200, description = "Success", body = EventList)))]
pub(super) async fn read(State(engine): State<AppState>, By(caller): By, q: QueryPairs) -> Answer {
    q.only(&["after", "type", "source", "target", "limit", "wait", "group", "member", "visibility"])?;
    let query = read_query(&engine, &caller, &q, None).await?;
    let wait = q.duration("wait", MAX_WAIT_MS)?;
    let page = match q.get("group") {
        None => {
            if q.get("member").is_some() || q.get("visibility").is_some() {
                return Err(ApiError::invalid_field("member", "member and visibility go with group"));
            }
            engine.read_events(&caller, query, wait).await?
        }
        Some(group) => {
            quern_core::spec::check_queue_name(group).map_err(|e| ApiError::invalid_field("group", e.message))?;
            let member = q.get("member").unwrap_or("anonymous").to_owned();
            let visibility = q.duration("visibility", MAX_VISIBILITY_MS)?.unwrap_or(DEFAULT_VISIBILITY);
            if visibility < MIN_VISIBILITY {
                return Err(ApiError::invalid_field("visibility", "must be at least 100 ms"));
            }
            let read = GroupRead { group: group.to_owned(), member, visibility };
            engine.read_group(&caller, query, &read, wait).await?
        }
    };
    Ok(Json(EventList { events: page.events, next_after: page.next_after }).into_response())
}

/// Acknowledges offsets of a consumer group.
#[utoipa::path(post, path = "/v1/events/ack", tag = "events", request_body = AckRequest,
    responses((status = 200, description = "Success", body = Acked)))]
pub(super) async fn ack(State(engine): State<AppState>, By(caller): By, Body(body): Body<AckRequest>) -> Answer {
    quern_core::spec::check_queue_name(&body.group).map_err(|e| ApiError::invalid_field("group", e.message))?;
    if body.offsets.len() > MAX_BATCH {
        return Err(ApiError::invalid_field("offsets", format!("at most {MAX_BATCH} per request")));
    }
    let (acked, cursor) = engine.ack_events(&caller, &body.group, &body.offsets).await?;
    tracing::debug!(group = %body.group, member = body.member.as_deref().unwrap_or("-"), acked, cursor, "events acknowledged");
    Ok(Json(Acked { acked, cursor }).into_response())
}

/// Where a stream stands: its next read and the events read but not sent.
struct Cursor {
    engine: AppState,
    caller: Caller,
    query: EventQuery,
    buffer: VecDeque<Event>,
    done: bool,
}

fn sse_event(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.offset.to_string())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unrenderable"))
}

/// The log as Server-Sent Events, resuming after `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(
        ("after" = Option<String>, Query, description = "Read after this offset, or `latest`"),
        ("type" = Option<String>, Query, description = "Comma-separated type globs"),
        ("source" = Option<String>, Query, description = "Only from this source"),
        ("target" = Option<String>, Query, description = "Only to this target"),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this offset"),
    ),
    responses((status = 200, description = "One SSE `event` per event; `id` is its offset", content_type = "text/event-stream", body = String)))]
pub(super) async fn stream(
    State(engine): State<AppState>,
    By(caller): By,
    headers: HeaderMap,
    q: QueryPairs,
) -> Answer {
    q.only(&["after", "type", "source", "target", "limit"])?;
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let query = read_query(&engine, &caller, &q, last).await?;
    // Refuse a purged offset now, as an error answer, not mid-stream.
    engine.read_events(&caller, EventQuery { limit: 1, ..query.clone() }, None).await?;
    let cursor = Cursor { engine, caller, query, buffer: VecDeque::new(), done: false };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffer.pop_front() {
                return Some((Ok::<_, Infallible>(sse_event(&e)), c));
            }
            if c.done || c.engine.shutting_down() {
                return None;
            }
            match c.engine.read_events(&c.caller, c.query.clone(), Some(STREAM_POLL)).await {
                Ok(page) => {
                    c.query.after = Some(page.next_after);
                    c.buffer.extend(page.events);
                }
                Err(e) => {
                    c.done = true;
                    let message = ApiError::from(e).into_response();
                    let text = format!("the stream ended: status {}", message.status());
                    return Some((Ok(SseEvent::default().event("error").data(text)), c));
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response())
}
