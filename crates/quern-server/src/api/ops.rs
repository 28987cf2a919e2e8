//! Operations routes: liveness, readiness, health, queues.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and every background loop runs; the
/// answer shows each loop's state either way.
pub(super) async fn readyz(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    engine.ready().await.map_err(|e| ApiError::NotReady(format!("store not reachable: {e}"), json!({})))?;
    let loops = json!(engine.loops().states());
    let down = engine.loops().down();
    if !down.is_empty() {
        return Err(ApiError::NotReady(
            format!("background loops down after a panic: {}", down.join(", ")),
            json!({"loops": loops}),
        ));
    }
    Ok(Json(json!({"status": "ready", "loops": loops})))
}

fn queue_json(q: &quern_store::QueueInfo) -> Value {
    let counts: Map<String, Value> = q.counts.iter().map(|(s, n)| (s.as_str().to_owned(), json!(n))).collect();
    json!({"name": q.name, "counts": counts, "paused": q.paused})
}

pub(super) async fn health(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store_ok = engine.ready().await.is_ok();
    let queues = engine.queues().await?;
    Ok(Json(json!({
        "status": if store_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": engine.uptime_ms() / 1000,
        "store": {"backend": engine.backend(), "ok": store_ok},
        "queues": queues.iter().map(queue_json).collect::<Vec<_>>(),
        "workers": {"live": engine.live_workers().await},
    })))
}

pub(super) async fn queues(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queues = engine.queues().await?;
    Ok(Json(Value::Array(queues.iter().map(queue_json).collect())))
}

pub(super) async fn pause(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    engine.set_paused(&name, true).await?;
    Ok(Json(json!({"name": name, "paused": true})))
}

pub(super) async fn resume(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    engine.set_paused(&name, false).await?;
    Ok(Json(json!({"name": name, "paused": false})))
}
