//! Task routes: submit, batch submit, get (with long-poll), list, cancel,
//! retry, history.

use super::answer::tasks_json;
use super::body::{Body, QueryPairs, RawBody, TraceParent, parse, task_id};
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_core::HistoryEntry;
use quern_core::Task;
use quern_core::{Status, TaskSpec};
use quern_engine::types::ListQuery;
use quern_wire::tasks::{MAX_LIST, MAX_TASK_WAIT_MS, SubmittedTasks, TaskBatch, TaskList};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

type Answer = Result<Response, ApiError>;

/// Submits a task. With an `idempotency_key` already used by the same
/// spec, answers the task it made (200) instead of a new one (201).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = TaskSpec, responses(
    (status = 201, description = "Created", body = Task),
    (status = 200, description = "An idempotent repeat: the task the key made", body = Task),
))]
pub(super) async fn submit(
    State(engine): State<AppState>,
    By(caller): By,
    trace: TraceParent,
    Body(mut spec): Body<TaskSpec>,
) -> Answer {
    trace.apply(&mut spec);
    let s = engine.submit(&caller, spec).await?;
    let status = if s.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(s.task)).into_response())
}

/// The same batch, each task kept as text: read only when the typed parse
/// failed, to name the task at fault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    tasks: Vec<Box<RawValue>>,
}

/// Parses a batch in one pass; on failure, finds which task is at fault.
fn parse_batch(bytes: &[u8]) -> Result<Vec<TaskSpec>, ApiError> {
    let first = match parse::<TaskBatch>(bytes) {
        Ok(batch) => return Ok(batch.tasks),
        Err(e) => e,
    };
    let raw = parse::<RawBatch>(bytes)?;
    for (i, item) in raw.tasks.iter().enumerate() {
        if let Err(e) = parse::<TaskSpec>(item.get().as_bytes()) {
            return Err(match e {
                ApiError::InvalidRequest { message, .. } => {
                    ApiError::InvalidRequest { message: format!("tasks[{i}]: {message}"), details: json!({"index": i}) }
                }
                other => other,
            });
        }
    }
    Err(first)
}

/// Submits tasks, all or none.
#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", request_body = TaskBatch,
    responses((status = 201, description = "Created", body = SubmittedTasks)))]
pub(super) async fn submit_batch(
    State(engine): State<AppState>,
    By(caller): By,
    trace: TraceParent,
    RawBody(bytes): RawBody,
) -> Answer {
    let mut specs = parse_batch(&bytes)?;
    specs.iter_mut().for_each(|s| trace.apply(s));
    let submitted = engine.submit_batch(&caller, specs).await?;
    let tasks: Vec<_> = submitted.into_iter().map(|s| s.task).collect();
    let n = tasks.len();
    tasks_json(StatusCode::CREATED, &SubmittedTasks { tasks }, n)
}

/// A task; with `wait`, held until it ends or the wait elapses.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task"),
           ("wait" = Option<String>, Query, description = "Hold up to this long (`30s`, or ms; at most 5 minutes) until the task ends")),
    responses((status = 200, description = "Success", body = Task)))]
pub(super) async fn get(
    State(engine): State<AppState>,
    By(caller): By,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Answer {
    q.only(&["wait"])?;
    let id = task_id(&id)?;
    let wait = q.duration("wait", MAX_TASK_WAIT_MS)?;
    let task = engine.get(&caller, id, wait).await?;
    Ok(Json(task).into_response())
}

/// A page of tasks, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(("status" = Option<String>, Query, description = "Comma-separated statuses"),
           ("queue" = Option<String>, Query, description = "Only this queue"),
           ("name" = Option<String>, Query, description = "Only this task name"),
           ("workflow" = Option<Uuid>, Query, description = "Only this workflow's tasks"),
           ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
           ("metadata.{key}" = Option<String>, Query, description = "Only tasks whose metadata `key` has this value, compared by type: `5` is the number, `true`/`false` the boolean, `\"5\"` (quoted) the string, anything else the text")),
    responses((status = 200, description = "Success", body = TaskList)))]
pub(super) async fn list(State(engine): State<AppState>, By(caller): By, q: QueryPairs) -> Answer {
    q.only(&["status", "queue", "name", "workflow", "limit", "cursor", "metadata."])?;
    let mut query = ListQuery { limit: q.limit(MAX_LIST)?, ..ListQuery::default() };
    for (k, v) in &q.0 {
        match k.as_str() {
            "status" => {
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    query
                        .statuses
                        .push(s.parse::<Status>().map_err(|e| ApiError::invalid_field("status", e.to_string()))?);
                }
            }
            "queue" => query.queue = Some(v.clone()),
            "name" => query.name = Some(v.clone()),
            "workflow" => {
                query.workflow = Some(
                    uuid::Uuid::try_parse(v).map_err(|_| ApiError::invalid_field("workflow", "not a workflow id"))?,
                );
            }
            "limit" => {}
            "cursor" => query.cursor = Some(v.clone()),
            meta => {
                let key = meta.trim_start_matches("metadata.");
                query.metadata.insert(key.to_owned(), quern_core::spec::metadata_value(v));
            }
        }
    }
    let page = engine.list(&caller, query).await?;
    let n = page.tasks.len();
    tasks_json(StatusCode::OK, &TaskList { tasks: page.tasks, next_cursor: page.next_cursor }, n)
}

/// Cancels a task: a queued one at once, a running one at its next heartbeat.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task")),
    responses((status = 200, description = "Success", body = Task)))]
pub(super) async fn cancel(State(engine): State<AppState>, By(caller): By, Path(id): Path<String>) -> Answer {
    let task = engine.cancel(&caller, task_id(&id)?).await?;
    Ok(Json(task).into_response())
}

/// Gives a failed or cancelled task a new attempt.
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task")),
    responses((status = 200, description = "Success", body = Task)))]
pub(super) async fn retry(State(engine): State<AppState>, By(caller): By, Path(id): Path<String>) -> Answer {
    let task = engine.retry(&caller, task_id(&id)?).await?;
    Ok(Json(task).into_response())
}

/// Every transition of a task, oldest first.
#[utoipa::path(get, path = "/v1/tasks/{id}/history", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task")),
    responses((status = 200, description = "Success", body = Vec<HistoryEntry>)))]
pub(super) async fn history(State(engine): State<AppState>, By(caller): By, Path(id): Path<String>) -> Answer {
    let history = engine.history(&caller, task_id(&id)?).await?;
    Ok(Json(history).into_response())
}
