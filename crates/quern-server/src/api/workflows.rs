//! Workflow routes: submit, get (with long-poll), graph, cancel; and the
//! approval of an `approval` task.

use super::body::{Body, QueryPairs, RawBody, TraceParent, parse, task_id};
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use quern_core::Task;
use quern_core::TaskSpec;
use quern_engine::types::{Approval, WorkflowQuery};
use quern_engine::workflow::{self, DependsOn, GraphFormat, WorkflowSpec, WorkflowTask};
use quern_wire::workflows::{
    ApproveRequest, MAX_WORKFLOW_PAGE, MAX_WORKFLOW_WAIT_MS, WorkflowCancelled, WorkflowRequest, WorkflowSubmitted,
    WorkflowView,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

fn workflow_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| ApiError::NotFound(format!("no workflow with id {raw:?}")))
}

/// Reads a workflow body: a graph (`tasks`), or one of the shorthands —
/// `chain` (each task after the previous one) or `group` (all at once) with
/// an optional `then` (one task after all of them: a chord).
fn parse_spec(bytes: &[u8]) -> Result<WorkflowSpec, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: String,
        #[serde(default)]
        tasks: Option<Vec<Map<String, Value>>>,
        #[serde(default)]
        chain: Option<Vec<Map<String, Value>>>,
        #[serde(default)]
        group: Option<Vec<Map<String, Value>>>,
        #[serde(default)]
        then: Option<Map<String, Value>>,
    }
    let raw: Raw = parse(bytes)?;
    let objects = match (raw.tasks, raw.chain, raw.group) {
        (Some(tasks), None, None) if raw.then.is_none() => tasks,
        (None, Some(chain), None) if raw.then.is_none() => {
            shorthand(chain, "step", |i, keys| if i == 0 { Vec::new() } else { vec![keys[i - 1].clone()] })?
        }
        (None, None, Some(group)) => {
            let n = group.len();
            let mut all = group;
            let has_then = raw.then.is_some();
            all.extend(raw.then);
            shorthand(all, "task", |i, keys| if has_then && i == n { keys[..n].to_vec() } else { Vec::new() })?
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `tasks` (a graph), `chain`, or `group` (with an optional `then`)",
            ));
        }
    };
    let mut tasks = Vec::with_capacity(objects.len());
    for (i, mut obj) in objects.into_iter().enumerate() {
        let at = |message: String| ApiError::InvalidRequest {
            message: format!("tasks[{i}]: {message}"),
            details: json!({"index": i}),
        };
        let key = match obj.remove("key") {
            Some(Value::String(k)) => k,
            Some(_) => return Err(at("key must be a string".into())),
            None => return Err(at("missing field `key`".into())),
        };
        let depends_on: Vec<DependsOn> = match obj.remove("depends_on") {
            Some(v) => serde_json::from_value(v).map_err(|e| at(format!("depends_on: {e}")))?,
            None => Vec::new(),
        };
        let spec: TaskSpec = serde_json::from_value(Value::Object(obj)).map_err(|e| at(e.to_string()))?;
        tasks.push(WorkflowTask { key, depends_on, spec });
    }
    Ok(WorkflowSpec { name: raw.name, tasks })
}

/// Gives shorthand tasks keys (their own, or `<prefix>-<n>`) and the edges
/// `parents(i, keys)` names, all on success. Shorthand tasks may not carry
/// their own `depends_on`.
fn shorthand(
    mut objects: Vec<Map<String, Value>>,
    prefix: &str,
    parents: impl Fn(usize, &[String]) -> Vec<String>,
) -> Result<Vec<Map<String, Value>>, ApiError> {
    let keys: Vec<String> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| o.get("key").and_then(Value::as_str).map_or_else(|| format!("{prefix}-{}", i + 1), str::to_owned))
        .collect();
    for (i, obj) in objects.iter_mut().enumerate() {
        if obj.contains_key("depends_on") {
            return Err(ApiError::InvalidRequest {
                message: format!("tasks[{i}]: a chain or group builds depends_on itself; use `tasks` for a graph"),
                details: json!({"index": i}),
            });
        }
        obj.insert("key".into(), Value::String(keys[i].clone()));
        let deps: Vec<Value> = parents(i, &keys).into_iter().map(|k| json!({"key": k})).collect();
        obj.insert("depends_on".into(), Value::Array(deps));
    }
    Ok(objects)
}

/// Submits a workflow: every task, or none.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = WorkflowRequest,
    responses((status = 201, description = "Created", body = WorkflowSubmitted)))]
pub(super) async fn submit(
    State(engine): State<AppState>,
    By(caller): By,
    trace: TraceParent,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let mut spec = parse_spec(&bytes)?;
    spec.tasks.iter_mut().for_each(|t| trace.apply(&mut t.spec));
    let name = spec.name.clone();
    let (id, tasks) = engine.submit_workflow(&caller, spec).await?;
    Ok((StatusCode::CREATED, Json(WorkflowSubmitted { id, name, tasks })).into_response())
}

/// A workflow's status and counts over every task, and one page of its
/// tasks in submission order; with `wait`, held until every task ended or
/// the wait elapses.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "The workflow"),
           ("wait" = Option<String>, Query, description = "Hold up to this long (`30s`, or ms; at most 5 minutes) until every task ended"),
           ("limit" = Option<usize>, Query, description = "Tasks per page, 1 to 1000, default 100"),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Success", body = WorkflowView)))]
pub(super) async fn get(
    State(engine): State<AppState>,
    By(caller): By,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["wait", "limit", "cursor"])?;
    let id = workflow_id(&id)?;
    let wait = q.duration("wait", MAX_WORKFLOW_WAIT_MS)?;
    let limit = q.limit(MAX_WORKFLOW_PAGE)?;
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            uuid::Uuid::try_parse(c)
                .map_err(|_| ApiError::invalid_field("cursor", "not a cursor this workflow gave"))?,
        ),
    };
    let page = engine.workflow_page(&caller, WorkflowQuery { id, after, limit }, wait).await?;

    let answer = WorkflowView {
        id: page.id,
        status: quern_core::workflow::overall_status(page.counts.keys().copied()).to_owned(),
        total: page.counts.values().sum(),
        counts: page.counts.iter().map(|(s, n)| (s.as_str().to_owned(), *n)).collect(),
        name: page.name,
        created_at: page.created_at,
        next_cursor: page.next_after.map(|t| t.to_string()),
        tasks: page.tasks,
    };
    Ok(Json(answer).into_response())
}

/// The workflow's graph with each task's status: JSON (nodes and edges),
/// Graphviz dot or Mermaid.
#[utoipa::path(get, path = "/v1/workflows/{id}/graph", tag = "workflows",
    params(("id" = Uuid, Path, description = "The workflow"),
           ("format" = Option<String>, Query, description = "`json` (default), `dot` or `mermaid`")),
    responses((status = 200, description = "The graph", content(
        (Object = "application/json"), (String = "text/vnd.graphviz"), (String = "text/plain")))))]
pub(super) async fn graph(
    State(engine): State<AppState>,
    By(caller): By,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    q.only(&["format"])?;
    let id = workflow_id(&id)?;
    let format = match q.get("format") {
        None => GraphFormat::Json,
        Some(f) => serde_json::from_value(json!(f))
            .map_err(|_| ApiError::invalid_field("format", "must be json, dot or mermaid"))?,
    };
    let wf = engine.workflow(&caller, id).await?;
    Ok(match format {
        GraphFormat::Json => Json(workflow::graph_json(&wf.tasks)).into_response(),
        GraphFormat::Dot => {
            ([(header::CONTENT_TYPE, "text/vnd.graphviz")], workflow::graph_dot(&wf.name, &wf.tasks)).into_response()
        }
        GraphFormat::Mermaid => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], workflow::graph_mermaid(&wf.tasks)).into_response()
        }
    })
}

/// Cancels every unfinished task of a workflow.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = Uuid, Path, description = "The workflow")),
    responses((status = 200, description = "Success", body = WorkflowCancelled)))]
pub(super) async fn cancel(
    State(engine): State<AppState>,
    By(caller): By,
    Path(id): Path<String>,
) -> Result<Json<WorkflowCancelled>, ApiError> {
    let id = workflow_id(&id)?;
    let cancelled = engine.cancel_workflow(&caller, id).await?;
    Ok(Json(WorkflowCancelled { id, cancelled }))
}

/// Decides an `approval` task: approved, it succeeds; rejected, it fails.
#[utoipa::path(post, path = "/v1/tasks/{id}/approve", tag = "workflows",
    params(("id" = Uuid, Path, description = "The approval task")),
    request_body = ApproveRequest,
    responses((status = 200, description = "Success", body = Task)))]
pub(super) async fn approve(
    State(engine): State<AppState>,
    By(caller): By,
    Path(id): Path<String>,
    Body(req): Body<ApproveRequest>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let task =
        engine.approve(&caller, id, Approval { approved: req.approved, by: req.by, comment: req.comment }).await?;
    Ok(Json(task).into_response())
}
