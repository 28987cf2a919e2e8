//! Request bodies and query strings, read so that every malformed one gets
//! our error shape: not JSON → `malformed_json`, JSON of the wrong shape →
//! `invalid_request`, too large → `payload_too_large`. The content type is
//! not checked: `curl -d` works as it is.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;

/// A JSON body.
pub(super) struct Body<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse(&bytes).map(Body)
    }
}

/// A body's bytes, within the size limit, for handlers that parse it
/// themselves.
pub(super) struct RawBody(pub(super) Bytes);

/// The largest body the request's token may send, set by the caller's
/// extractor (which runs first) when the token has such a limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenBodyLimit(pub(super) u64);

impl TokenBodyLimit {
    /// The answer to a body over the token's limit.
    pub(super) fn refusal(self) -> ApiError {
        ApiError::PayloadTooLarge(format!("the request body is over this token's limit of {} bytes", self.0))
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<TokenBodyLimit>().copied();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is over the server's limit (server.max_body_bytes)".into())
            } else {
                ApiError::invalid(e.body_text())
            }
        })?;
        match limit {
            Some(limit) if bytes.len() as u64 > limit.0 => Err(limit.refusal()),
            _ => Ok(RawBody(bytes)),
        }
    }
}

/// Parses JSON, telling malformed text from a wrong shape.
pub(super) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// Our error for a serde_json failure.
pub(super) fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::MalformedJson(format!("the body is not valid JSON: {e}"))
        }
        Category::Data => ApiError::InvalidRequest {
            message: e.to_string(),
            details: json!({"line": e.line(), "column": e.column()}),
        },
    }
}

/// The W3C `traceparent` header of a submit, which the tasks it submits
/// continue unless they name their own (checked with them).
pub(super) struct TraceParent(pub(super) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("traceparent") {
            None => Ok(TraceParent(None)),
            Some(v) => v
                .to_str()
                .map(|v| TraceParent(Some(v.trim().to_owned())))
                .map_err(|_| ApiError::invalid_field("traceparent", "the traceparent header must be ASCII")),
        }
    }
}

impl TraceParent {
    /// Gives `spec` the header's trace context unless it has its own.
    pub(super) fn apply(&self, spec: &mut quern_core::TaskSpec) {
        if spec.traceparent.is_none() {
            spec.traceparent.clone_from(&self.0);
        }
    }
}

/// A query string as ordered pairs; the handlers decide what each means.
pub(super) struct QueryPairs(pub(super) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_pairs(q).map(QueryPairs)
    }
}

fn serde_urlencoded_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{q}").parse().map_err(|_| ApiError::invalid("malformed query string"))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))
}

impl QueryPairs {
    /// Fails on any parameter not in `allowed` (a `prefix.` entry allows
    /// every key with that prefix).
    pub(super) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (k, _) in &self.0 {
            let ok =
                allowed.iter().any(|a| if a.ends_with('.') { k.starts_with(a) && k.len() > a.len() } else { k == a });
            if !ok {
                return Err(ApiError::invalid_field(
                    k,
                    format!("unknown query parameter (expected one of {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The last value of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A page size: `limit`, 1 to `max`, 100 when absent.
    pub(super) fn limit(&self, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(100.min(max)),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::invalid_field("limit", format!("must be 1 to {max}"))),
        }
    }

    /// A duration parameter (`30s`, `5 minutes`, or milliseconds), at most
    /// `max_ms`.
    pub(super) fn duration(&self, key: &str, max_ms: u64) -> Result<Option<std::time::Duration>, ApiError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let ms = quern_core::time::parse_duration_ms(v)
            .ok_or_else(|| ApiError::invalid_field(key, format!("not a duration: {v:?} (try 30s or 1500)")))?;
        if ms > max_ms {
            return Err(ApiError::invalid_field(key, format!("must be at most {max_ms} ms")));
        }
        Ok(Some(std::time::Duration::from_millis(ms)))
    }
}

/// A task id from a path: anything that is not a UUID names no task.
pub(super) fn task_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| ApiError::NotFound(format!("no task with id {raw:?}")))
}
