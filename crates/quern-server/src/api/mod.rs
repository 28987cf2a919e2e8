//! The HTTP API (v1): thin handlers that parse, call the engine, and render.
//! Routes are built by [`router`], so tests can drive them without a socket.

mod answer;
mod body;
mod error;
mod events;
mod ops;
mod schedules;
mod tasks;
mod webhooks;
mod workers;
mod workflows;

pub use error::ApiError;

use crate::engine::Engine;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::sync::Arc;

/// The application state every handler sees.
pub type AppState = Arc<Engine>;

/// Every route of the API, with the body limit applied.
pub fn router(engine: Arc<Engine>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/v1/health", get(ops::health))
        .route("/v1/tasks", post(tasks::submit).get(tasks::list))
        .route("/v1/tasks/batch", post(tasks::submit_batch))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/retry", post(tasks::retry))
        .route("/v1/tasks/{id}/history", get(tasks::history))
        .route("/v1/tasks/{id}/approve", post(workflows::approve))
        .route("/v1/workflows", post(workflows::submit))
        .route("/v1/workflows/{id}", get(workflows::get))
        .route("/v1/workflows/{id}/graph", get(workflows::graph))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/schedules", get(schedules::list))
        .route("/v1/schedules/apply", post(schedules::apply))
        .route("/v1/schedules/{name}", put(schedules::put).get(schedules::get).delete(schedules::delete))
        .route("/v1/schedules/{name}/enable", post(schedules::enable))
        .route("/v1/schedules/{name}/disable", post(schedules::disable))
        .route("/v1/schedules/{name}/trigger", post(schedules::trigger))
        .route("/v1/schedules/{name}/runs", get(schedules::runs))
        .route("/v1/events", post(events::publish).get(events::read))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/events/ack", post(events::ack))
        .route("/v1/webhooks", get(webhooks::list))
        .route("/v1/webhooks/{name}", put(webhooks::put).get(webhooks::get).delete(webhooks::delete))
        .route("/v1/webhooks/{name}/resume", post(webhooks::resume))
        .route("/v1/webhooks/{name}/deliveries", get(webhooks::deliveries))
        .route("/v1/lease", post(workers::lease))
        .route("/v1/heartbeat", post(workers::heartbeat))
        .route("/v1/complete", post(workers::complete))
        .route("/v1/workers/register", post(workers::register))
        .route("/v1/workers", get(workers::list))
        .route("/v1/task-types", get(workers::task_types))
        .route("/v1/queues", get(ops::queues))
        .route("/v1/queues/{name}/pause", post(ops::pause))
        .route("/v1/queues/{name}/resume", post(ops::resume))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(max_body_bytes, refuse_declared_oversize))
        .with_state(engine)
}

/// Answers 413 at once to a request whose `Content-Length` is over the
/// limit, rather than after reading that much (or waiting for a body that
/// never comes).
async fn refuse_declared_oversize(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        return ApiError::PayloadTooLarge(format!(
            "the request body is over the server's limit of {max} bytes (server.max_body_bytes)"
        ))
        .into_response();
    }
    next.run(req).await
}
