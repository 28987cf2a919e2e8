//! Operations routes: liveness, readiness, health, queues.

use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use quern_engine::Caller;
use quern_engine::types::QueueInfo;
use quern_wire::ops::{Alive, ErrorBody, Health, LiveWorkers, QueuePaused, QueueView, Ready, StoreHealth};
use serde_json::json;

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Success", body = Alive)))]
pub(super) async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok".into() })
}

/// Ready when the store answers and every background loop runs; the
/// answer shows each loop's state either way.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Success", body = Ready),
    (status = 503, description = "`not_ready`: the store cannot be reached or a loop is down", body = ErrorBody),
))]
pub(super) async fn readyz(State(engine): State<AppState>) -> Result<Json<Ready>, ApiError> {
    engine
        .ready(&Caller::Server)
        .await
        .map_err(|e| ApiError::NotReady(format!("store not reachable: {e}"), json!({})))?;
    let loops = json!(engine.loops().states());
    let down = engine.loops().down();
    if !down.is_empty() {
        return Err(ApiError::NotReady(
            format!("background loops down after a panic: {}", down.join(", ")),
            json!({"loops": loops}),
        ));
    }
    Ok(Json(Ready { status: "ready".into(), loops }))
}

fn queue_view(q: &QueueInfo) -> QueueView {
    let counts = q.counts.iter().map(|(s, n)| (s.as_str().to_owned(), *n)).collect();
    QueueView { name: q.name.clone(), counts, paused: q.paused }
}

/// The server, its store, its queues and its live workers.
#[utoipa::path(get, path = "/v1/health", tag = "ops", responses((status = 200, description = "Success", body = Health)))]
pub(super) async fn health(State(engine): State<AppState>, By(caller): By) -> Result<Json<Health>, ApiError> {
    let store_ok = engine.ready(&caller).await.is_ok();
    let queues = engine.queues(&caller).await?;
    Ok(Json(Health {
        status: if store_ok { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: engine.uptime_ms() / 1000,
        store: StoreHealth { backend: engine.backend().into(), ok: store_ok },
        queues: queues.iter().map(queue_view).collect(),
        workers: LiveWorkers { live: engine.live_workers().await },
        warnings: engine.warnings(),
    }))
}

/// The server's metrics, for Prometheus.
///
/// Tasks submitted, started and finished, queue depth, wait, run and
/// end-to-end times, retries, lease expiries, timeouts, live
/// workers, HTTP requests, the store, events, webhooks and schedules
/// (docs/observability.md lists them). The Prometheus text format, or
/// OpenMetrics when `Accept` asks for `application/openmetrics-text`.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses(
    (status = 200, description = "The metrics, in the Prometheus text format", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(
    State(engine): State<AppState>,
    By(caller): By,
    axum::Extension(http): axum::Extension<std::sync::Arc<crate::metrics::HttpMetrics>>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let observed = engine.observe(&caller).await?;
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::of_accept(accept);
    let text = crate::metrics::render(observed, Some(http), format);
    Ok(([(axum::http::header::CONTENT_TYPE, format.content_type())], text).into_response())
}

/// Every queue that holds tasks or is paused, with its tasks by status.
#[utoipa::path(get, path = "/v1/queues", tag = "ops", responses((status = 200, description = "Success", body = Vec<QueueView>)))]
pub(super) async fn queues(State(engine): State<AppState>, By(caller): By) -> Result<Json<Vec<QueueView>>, ApiError> {
    let queues = engine.queues(&caller).await?;
    Ok(Json(queues.iter().map(queue_view).collect()))
}

/// Stops leasing from a queue; submissions still queue up.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "ops",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, description = "Success", body = QueuePaused)))]
pub(super) async fn pause(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    engine.set_paused(&caller, &name, true).await?;
    Ok(Json(QueuePaused { name, paused: true }))
}

/// Leases from a paused queue again.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "ops",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, description = "Success", body = QueuePaused)))]
pub(super) async fn resume(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    engine.set_paused(&caller, &name, false).await?;
    Ok(Json(QueuePaused { name, paused: false }))
}
