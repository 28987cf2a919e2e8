//! The worker protocol: lease (long-poll), heartbeat, complete.

use super::AppState;
use super::answer::tasks_json;
use super::body::Body;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use quern_core::{ErrorKind, Outcome, Progress, TaskError};
use quern_store::{CompleteParams, Completion, HeartbeatLease, HeartbeatParams, LeaseParams};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// The most tasks one lease may take.
const MAX_LEASE: u32 = 1_000;
/// The longest a lease request may park.
const MAX_WAIT_MS: u64 = 60_000;
/// Lease lengths allowed.
const LEASE_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
/// The lease length when none is asked for.
const DEFAULT_LEASE_MS: u64 = 30_000;
/// The most items in one heartbeat or completion.
const MAX_ITEMS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LeaseRequest {
    worker: String,
    #[serde(default)]
    queues: Option<Vec<String>>,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    max: Option<u32>,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    lease_ms: Option<u64>,
}

/// The answer to a lease, serialized straight from the structs.
#[derive(serde::Serialize)]
struct Leased {
    tasks: Vec<quern_core::Task>,
}

pub(super) async fn lease(State(engine): State<AppState>, Body(req): Body<LeaseRequest>) -> Result<Response, ApiError> {
    let max = req.max.unwrap_or(1);
    if !(1..=MAX_LEASE).contains(&max) {
        return Err(ApiError::invalid_field("max", format!("must be 1 to {MAX_LEASE}")));
    }
    let wait_ms = req.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid_field("wait_ms", format!("must be at most {MAX_WAIT_MS}")));
    }
    let lease_ms = req.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
    if !LEASE_MS.contains(&lease_ms) {
        return Err(ApiError::invalid_field("lease_ms", format!("must be {} to {}", LEASE_MS.start(), LEASE_MS.end())));
    }
    let queues = req.queues.unwrap_or_else(|| vec!["default".to_owned()]);
    if queues.is_empty() {
        return Err(ApiError::invalid_field("queues", "must name at least one queue"));
    }
    let params = LeaseParams { worker: req.worker, queues, names: req.names, max: max as usize, lease_ms, now: 0 };
    let tasks = engine.lease(params, Duration::from_millis(wait_ms)).await?;
    let n = tasks.len();
    tasks_json(StatusCode::OK, &Leased { tasks }, n)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeartbeatRequest {
    worker: String,
    leases: Vec<HeartbeatItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatItem {
    task: Uuid,
    token: String,
    #[serde(default)]
    progress: Option<Progress>,
}

pub(super) async fn heartbeat(
    State(engine): State<AppState>,
    Body(req): Body<HeartbeatRequest>,
) -> Result<Json<Heartbeats>, ApiError> {
    if req.leases.len() > MAX_ITEMS {
        return Err(ApiError::invalid_field("leases", format!("at most {MAX_ITEMS} per heartbeat")));
    }
    let leases =
        req.leases.into_iter().map(|l| HeartbeatLease { task: l.task, token: l.token, progress: l.progress }).collect();
    let answers = engine.heartbeat(HeartbeatParams { worker: req.worker, leases, now: 0 }).await?;
    let leases = answers
        .into_iter()
        .map(|a| HeartbeatAnswer {
            task: a.task,
            ok: a.ok,
            cancel: a.cancel,
            expires_at: a.expires_at.map(quern_core::time::format_rfc3339),
        })
        .collect();
    Ok(Json(Heartbeats { leases }))
}

/// The answer to a heartbeat, serialized straight from the structs.
#[derive(Serialize)]
pub(super) struct Heartbeats {
    leases: Vec<HeartbeatAnswer>,
}

#[derive(Serialize)]
struct HeartbeatAnswer {
    task: Uuid,
    ok: bool,
    cancel: bool,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteRequest {
    worker: String,
    results: Vec<CompleteItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OutcomeKind {
    Succeeded,
    Failed,
    Released,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteItem {
    task: Uuid,
    token: String,
    outcome: OutcomeKind,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<TaskError>,
    #[serde(default)]
    retry: Option<bool>,
}

pub(super) async fn complete(
    State(engine): State<AppState>,
    Body(req): Body<CompleteRequest>,
) -> Result<Json<Completed>, ApiError> {
    if req.results.len() > MAX_ITEMS {
        return Err(ApiError::invalid_field("results", format!("at most {MAX_ITEMS} per completion")));
    }
    let mut results = Vec::with_capacity(req.results.len());
    for item in req.results {
        let outcome = match item.outcome {
            OutcomeKind::Succeeded => {
                Outcome::Succeeded { result: item.result.unwrap_or_else(|| RawValue::NULL.to_owned()) }
            }
            OutcomeKind::Failed => Outcome::Failed {
                error: item
                    .error
                    .unwrap_or_else(|| TaskError::new(ErrorKind::Exception, "the worker reported a failure")),
                retry: item.retry.unwrap_or(true),
            },
            OutcomeKind::Released => Outcome::Released,
        };
        results.push(Completion { task: item.task, token: item.token, outcome });
    }
    let answers = engine.complete(CompleteParams { worker: req.worker, results, now: 0 }).await?;
    let results = answers
        .into_iter()
        .map(|a| CompletionAnswer { task: a.task, ok: a.ok, error: (!a.ok).then_some(STALE_LEASE) })
        .collect();
    Ok(Json(Completed { results }))
}

/// The answer to a completion, serialized straight from the structs (a
/// `json!` value per result cost several allocations each).
#[derive(Serialize)]
pub(super) struct Completed {
    results: Vec<CompletionAnswer>,
}

#[derive(Serialize)]
struct CompletionAnswer {
    task: Uuid,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Refusal>,
}

/// Why a result was not taken.
#[derive(Serialize)]
struct Refusal {
    code: &'static str,
    message: &'static str,
}

const STALE_LEASE: Refusal = Refusal {
    code: "stale_lease",
    message: "this token is not the task's current lease (it expired, was re-leased, or the task ended)",
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterRequest {
    worker: String,
    #[serde(default)]
    queues: Option<Vec<String>>,
    #[serde(default)]
    task_types: Vec<crate::registry::TaskTypeDecl>,
}

pub(super) async fn register(
    State(engine): State<AppState>,
    Body(req): Body<RegisterRequest>,
) -> Result<Json<Value>, ApiError> {
    let queues = req.queues.unwrap_or_else(|| vec!["default".to_owned()]);
    engine.register(&req.worker, queues, req.task_types).await?;
    Ok(Json(json!({"worker": req.worker, "registered": true})))
}

pub(super) async fn list(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "workers": engine.workers().await? })))
}

pub(super) async fn task_types(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "task_types": engine.task_types().await? })))
}
