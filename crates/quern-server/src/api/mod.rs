//! The HTTP API (v1): thin handlers that parse, call the engine, and render.
//! Routes are built by [`router`], so tests can drive them without a socket.

mod body;
mod error;
mod ops;
mod tasks;
mod workers;
mod workflows;

pub use error::ApiError;

use crate::engine::Engine;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
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
        .with_state(engine)
}
