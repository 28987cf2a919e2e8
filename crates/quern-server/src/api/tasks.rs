//! Task routes: submit, batch submit, get (with long-poll), list, cancel,
//! retry, history.

use super::AppState;
use super::answer::tasks_json;
use super::body::{Body, QueryPairs, RawBody, parse, task_id};
use super::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_core::Task;
use quern_core::{Status, TaskSpec};
use quern_store::ListQuery;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

/// A list of tasks, serialized straight from the structs.
#[derive(Serialize)]
struct Tasks {
    tasks: Vec<Task>,
    /// Present (maybe null) in listings, absent in batch answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<Option<String>>,
}

/// The longest `?wait=` on a task.
const MAX_WAIT_MS: u64 = 300_000;
/// The most tasks a list page or a batch may hold.
const MAX_LIMIT: usize = 1_000;
/// The most tasks in one batch submit.
const MAX_BATCH: usize = 10_000;

type Answer = Result<Response, ApiError>;

pub(super) async fn submit(State(engine): State<AppState>, Body(spec): Body<TaskSpec>) -> Answer {
    let s = engine.submit(spec).await?;
    let status = if s.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(s.task)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    tasks: Vec<TaskSpec>,
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
    let first = match parse::<Batch>(bytes) {
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

pub(super) async fn submit_batch(State(engine): State<AppState>, RawBody(bytes): RawBody) -> Answer {
    let specs = parse_batch(&bytes)?;
    if specs.len() > MAX_BATCH {
        return Err(ApiError::invalid_field("tasks", format!("at most {MAX_BATCH} tasks per batch")));
    }
    let submitted = engine.submit_batch(specs).await?;
    let tasks: Vec<_> = submitted.into_iter().map(|s| s.task).collect();
    let n = tasks.len();
    tasks_json(StatusCode::CREATED, &Tasks { tasks, next_cursor: None }, n)
}

pub(super) async fn get(State(engine): State<AppState>, Path(id): Path<String>, q: QueryPairs) -> Answer {
    q.only(&["wait"])?;
    let id = task_id(&id)?;
    let wait = q.duration("wait", MAX_WAIT_MS)?;
    let task = engine.get(id, wait).await?;
    Ok(Json(task).into_response())
}

pub(super) async fn list(State(engine): State<AppState>, q: QueryPairs) -> Answer {
    q.only(&["status", "queue", "name", "workflow", "limit", "cursor", "metadata."])?;
    let mut query = ListQuery { limit: q.limit(MAX_LIMIT)?, ..ListQuery::default() };
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
                query.metadata.insert(key.to_owned(), v.clone());
            }
        }
    }
    let page = engine.list(query).await?;
    let n = page.tasks.len();
    tasks_json(StatusCode::OK, &Tasks { tasks: page.tasks, next_cursor: Some(page.next_cursor) }, n)
}

pub(super) async fn cancel(State(engine): State<AppState>, Path(id): Path<String>) -> Answer {
    let task = engine.cancel(task_id(&id)?).await?;
    Ok(Json(task).into_response())
}

pub(super) async fn retry(State(engine): State<AppState>, Path(id): Path<String>) -> Answer {
    let task = engine.retry(task_id(&id)?).await?;
    Ok(Json(task).into_response())
}

pub(super) async fn history(State(engine): State<AppState>, Path(id): Path<String>) -> Answer {
    let history = engine.history(task_id(&id)?).await?;
    Ok(Json(history).into_response())
}
