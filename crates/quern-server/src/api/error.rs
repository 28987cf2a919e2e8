//! The API's errors and the one place that maps each to an HTTP status and
//! a stable `code`.
//!
//! Invariant: every non-2xx answer has the body
//! `{"error": {"code", "message", "details"}}`, and internals (SQL, paths)
//! never reach a client: backend failures are logged and answered as
//! `internal`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quern_engine::{Code, EngineError, Failure};
use serde_json::{Value, json};

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON.
    MalformedJson(String),
    /// The request does not fit the contract.
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// Structured details (field, index, line).
        details: Value,
    },
    /// The input does not match its task type's schema.
    InvalidInput {
        /// What does not match.
        message: String,
        /// Which task type, and where in a batch.
        details: Value,
    },
    /// A workflow whose graph cannot run (a cycle, an unknown parent, a bad
    /// condition).
    InvalidWorkflow {
        /// What is wrong.
        message: String,
        /// Where.
        details: Value,
    },
    /// A schedule that cannot run (a bad cron, an unknown time zone, an
    /// interval of zero), or a schedules file with such an entry.
    InvalidSchedule {
        /// What is wrong, naming the field (and the entry, in a file).
        message: String,
        /// The field and the entry.
        details: Value,
    },
    /// The events after the asked offset were deleted by retention.
    OffsetExpired {
        /// What is gone.
        message: String,
        /// The earliest offset kept.
        details: Value,
    },
    /// JSON nested deeper than the limit (input, a result, error details,
    /// an event payload, a schema).
    TooDeep {
        /// Which field, how deep at most.
        message: String,
        /// The field (and the index in a batch).
        details: Value,
    },
    /// Another request changed the same thing meanwhile, again and again.
    Conflict(String),
    /// The body is over the configured limit.
    PayloadTooLarge(String),
    /// No such task or route.
    NotFound(String),
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The task's status does not allow it.
    InvalidTransition(String),
    /// An idempotency key was reused with another spec.
    IdempotencyConflict {
        /// What is wrong.
        message: String,
        /// Which task holds the key.
        details: Value,
    },
    /// No valid token.
    Unauthorized(String),
    /// The token does not allow it.
    Forbidden(String),
    /// Over the token's request rate.
    RateLimited {
        /// Which limit, and when to come back.
        message: String,
        /// `retry_after_ms`.
        details: Value,
    },
    /// A webhook target that may not be reached.
    InvalidWebhook {
        /// Why.
        message: String,
        /// The field.
        details: Value,
    },
    /// A name only the engine writes.
    Reserved {
        /// What is reserved.
        message: String,
        /// The field.
        details: Value,
    },
    /// The server is stopping.
    ShuttingDown,
    /// The store cannot be reached, or a background loop is down.
    NotReady(String, Value),
    /// Something broke on our side.
    Internal,
}

impl ApiError {
    /// An `invalid_request` without details.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest { message: message.into(), details: json!({}) }
    }

    /// An `invalid_request` naming a field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest { message: format!("{field}: {}", message.into()), details: json!({"field": field}) }
    }

    /// The answer to a broken rule: `invalid_request`, or `json_too_deep`.
    pub fn rule(error: &quern_core::ValidationError) -> Self {
        Failure::rule(error).into()
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::InvalidInput { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::InvalidWorkflow { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow"),
            ApiError::InvalidSchedule { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schedule"),
            ApiError::TooDeep { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "json_too_deep"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::OffsetExpired { .. } => (StatusCode::GONE, "offset_expired"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::InvalidTransition(_) => (StatusCode::CONFLICT, "invalid_transition"),
            ApiError::IdempotencyConflict { .. } => (StatusCode::CONFLICT, "idempotency_conflict"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Reserved { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "reserved_name"),
            ApiError::InvalidWebhook { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::NotReady(..) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn message_and_details(self) -> (String, Value) {
        match self {
            ApiError::MalformedJson(m) => (m, json!({})),
            ApiError::InvalidRequest { message, details }
            | ApiError::IdempotencyConflict { message, details }
            | ApiError::InvalidInput { message, details }
            | ApiError::InvalidWorkflow { message, details }
            | ApiError::InvalidSchedule { message, details }
            | ApiError::TooDeep { message, details }
            | ApiError::Reserved { message, details }
            | ApiError::InvalidWebhook { message, details }
            | ApiError::RateLimited { message, details }
            | ApiError::OffsetExpired { message, details } => (message, details),
            ApiError::PayloadTooLarge(m)
            | ApiError::NotFound(m)
            | ApiError::InvalidTransition(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::Conflict(m) => (m, json!({})),
            ApiError::NotReady(m, details) => (m, details),
            ApiError::MethodNotAllowed => ("this route does not take that method".into(), json!({})),
            ApiError::ShuttingDown => ("the server is shutting down; try another or retry later".into(), json!({})),
            ApiError::Internal => ("internal error; the server log has the cause".into(), json!({})),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // The rest of an oversize body is never read, so the connection
        // cannot carry another request: say so, and keep-alive clients
        // open a new one instead of failing on a closed socket.
        let close = matches!(self, ApiError::PayloadTooLarge(_));
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let retry_after = match &self {
            ApiError::RateLimited { details, .. } => {
                details["retry_after_ms"].as_u64().map(|ms| ms.div_ceil(1_000).max(1))
            }
            _ => None,
        };
        let (message, details) = self.message_and_details();
        let mut response =
            (status, Json(json!({"error": {"code": code, "message": message, "details": details}}))).into_response();
        if close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Failure::from(e).into()
    }
}

/// The engine's codes, each to the variant that answers it (and so to its
/// status): the engine says what failed, the door only says it in HTTP.
impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        let Failure { code, message, details } = f;
        match code {
            Code::InvalidRequest => ApiError::InvalidRequest { message, details },
            Code::InvalidInput => ApiError::InvalidInput { message, details },
            Code::InvalidWorkflow => ApiError::InvalidWorkflow { message, details },
            Code::InvalidSchedule => ApiError::InvalidSchedule { message, details },
            Code::JsonTooDeep => ApiError::TooDeep { message, details },
            Code::Conflict => ApiError::Conflict(message),
            Code::OffsetExpired => ApiError::OffsetExpired { message, details },
            Code::NotFound => ApiError::NotFound(message),
            Code::InvalidTransition => ApiError::InvalidTransition(message),
            Code::IdempotencyConflict => ApiError::IdempotencyConflict { message, details },
            Code::ShuttingDown => ApiError::ShuttingDown,
            Code::Unauthorized => ApiError::Unauthorized(message),
            Code::Forbidden => ApiError::Forbidden(message),
            Code::RateLimited => ApiError::RateLimited { message, details },
            Code::ReservedName => ApiError::Reserved { message, details },
            Code::InvalidWebhook => ApiError::InvalidWebhook { message, details },
            Code::Internal => ApiError::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// One error of each kind.
    fn one_of_each() -> Vec<ApiError> {
        // A new kind fails to compile here until it is added below too.
        let _ = |e: &ApiError| match e {
            ApiError::MalformedJson(_)
            | ApiError::InvalidRequest { .. }
            | ApiError::InvalidInput { .. }
            | ApiError::InvalidWorkflow { .. }
            | ApiError::InvalidSchedule { .. }
            | ApiError::OffsetExpired { .. }
            | ApiError::TooDeep { .. }
            | ApiError::Conflict(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed
            | ApiError::InvalidTransition(_)
            | ApiError::IdempotencyConflict { .. }
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden(_)
            | ApiError::RateLimited { .. }
            | ApiError::Reserved { .. }
            | ApiError::InvalidWebhook { .. }
            | ApiError::ShuttingDown
            | ApiError::NotReady(..)
            | ApiError::Internal => (),
        };
        let (m, d) = (String::new, || json!({}));
        vec![
            ApiError::MalformedJson(m()),
            ApiError::InvalidRequest { message: m(), details: d() },
            ApiError::InvalidInput { message: m(), details: d() },
            ApiError::InvalidWorkflow { message: m(), details: d() },
            ApiError::InvalidSchedule { message: m(), details: d() },
            ApiError::OffsetExpired { message: m(), details: d() },
            ApiError::TooDeep { message: m(), details: d() },
            ApiError::Conflict(m()),
            ApiError::PayloadTooLarge(m()),
            ApiError::NotFound(m()),
            ApiError::MethodNotAllowed,
            ApiError::InvalidTransition(m()),
            ApiError::IdempotencyConflict { message: m(), details: d() },
            ApiError::Unauthorized(m()),
            ApiError::Forbidden(m()),
            ApiError::RateLimited { message: m(), details: d() },
            ApiError::Reserved { message: m(), details: d() },
            ApiError::InvalidWebhook { message: m(), details: d() },
            ApiError::ShuttingDown,
            ApiError::NotReady(m(), d()),
            ApiError::Internal,
        ]
    }

    #[test]
    fn docs_errors_md_lists_exactly_the_codes_the_server_answers() {
        let mut answered: BTreeSet<(u16, String)> =
            one_of_each().iter().map(|e| (e.status_and_code().0.as_u16(), e.status_and_code().1.to_owned())).collect();
        answered.extend(crate::conn::HYPER_ANSWERS.iter().map(|(s, code, _)| (*s, (*code).to_owned())));
        let doc = include_str!("../../../../docs/errors.md");
        let listed: BTreeSet<(u16, String)> = doc
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let status = cells.next()?.parse().ok()?;
                let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((status, code.to_owned()))
            })
            .collect();
        assert_eq!(listed, answered, "docs/errors.md's table against the codes the server answers");
        assert!(doc.contains("\"stale_lease\""), "the refusal inside a 200 answer to /v1/complete");
    }

    #[test]
    fn a_contended_request_is_a_conflict_to_try_again() {
        let e: ApiError = EngineError::Contended("consumer group g: try again".into()).into();
        assert_eq!(e.status_and_code(), (StatusCode::CONFLICT, "conflict"));
    }

    #[test]
    fn every_engine_code_is_answered_with_that_code() {
        for code in Code::ALL {
            let e: ApiError = Failure::new(code, "m").into();
            assert_eq!(e.status_and_code().1, code.as_str());
        }
    }
}
