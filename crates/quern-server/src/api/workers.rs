//! The worker protocol: register, lease (long-poll), heartbeat, stops
//! (long-poll), complete;
//! and the registry's views. The requests and answers are the wire types
//! the Rust client uses too; the engine holds their limits.

use super::answer::tasks_json;
use super::body::Body;
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use quern_wire::{
    CompleteRequest, Completed, HeartbeatRequest, Heartbeats, LeaseRequest, Leased, RegisterRequest, Registered, Stops,
    StopsRequest, TaskTypes, Workers,
};

/// Leases ready tasks for a worker, parking up to `wait_ms` while there are
/// none. Each task carries its lease: heartbeats and completions present
/// its token.
#[utoipa::path(post, path = "/v1/lease", tag = "workers", request_body = LeaseRequest,
    responses((status = 200, description = "Success", body = Leased)))]
pub(super) async fn lease(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<LeaseRequest>,
) -> Result<Response, ApiError> {
    let leased = engine.lease(&caller, req).await?;
    let n = leased.tasks.len();
    tasks_json(StatusCode::OK, &leased, n)
}

/// Extends a worker's leases and records progress; `cancel: true` tells the
/// worker to stop that task, `ok: false` that it lost it.
#[utoipa::path(post, path = "/v1/heartbeat", tag = "workers", request_body = HeartbeatRequest,
    responses((status = 200, description = "Success", body = Heartbeats)))]
pub(super) async fn heartbeat(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<HeartbeatRequest>,
) -> Result<Json<Heartbeats>, ApiError> {
    Ok(Json(engine.heartbeat(&caller, req).await?))
}

/// Answers the running tasks the worker should stop — cancelled, or ended
/// by the server — as soon as there are any, parking up to `wait_ms`.
#[utoipa::path(post, path = "/v1/stops", tag = "workers", request_body = StopsRequest,
    responses((status = 200, description = "Success", body = Stops)))]
pub(super) async fn stops(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<StopsRequest>,
) -> Result<Json<Stops>, ApiError> {
    Ok(Json(engine.stops(&caller, req).await?))
}

/// Records finished attempts. An outcome under a stale token answers
/// `ok: false` with `stale_lease` and changes nothing.
#[utoipa::path(post, path = "/v1/complete", tag = "workers", request_body = CompleteRequest,
    responses((status = 200, description = "Success", body = Completed)))]
pub(super) async fn complete(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<CompleteRequest>,
) -> Result<Json<Completed>, ApiError> {
    Ok(Json(engine.complete(&caller, req).await?))
}

/// Records a worker and the task types it serves; a type's input schema is
/// enforced on every submission from then on.
#[utoipa::path(post, path = "/v1/workers/register", tag = "workers", request_body = RegisterRequest,
    responses((status = 200, description = "Success", body = Registered)))]
pub(super) async fn register(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<RegisterRequest>,
) -> Result<Json<Registered>, ApiError> {
    Ok(Json(engine.register(&caller, req).await?))
}

/// Workers heard from within the last hour, by any node.
#[utoipa::path(get, path = "/v1/workers", tag = "workers", responses((status = 200, description = "Success", body = Workers)))]
pub(super) async fn list(State(engine): State<AppState>, By(caller): By) -> Result<Json<Workers>, ApiError> {
    Ok(Json(Workers { workers: engine.workers(&caller).await? }))
}

/// The task types workers declared, with their live workers.
#[utoipa::path(get, path = "/v1/task-types", tag = "workers", responses((status = 200, description = "Success", body = TaskTypes)))]
pub(super) async fn task_types(State(engine): State<AppState>, By(caller): By) -> Result<Json<TaskTypes>, ApiError> {
    Ok(Json(TaskTypes { task_types: engine.task_types(&caller).await? }))
}
