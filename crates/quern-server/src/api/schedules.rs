//! Schedule routes: create or replace, list, get, delete, enable, disable,
//! trigger, runs, and the declarative apply of a schedules file.

use super::body::{QueryPairs, RawBody};
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_core::ScheduleSpec;
use quern_core::Task;
use quern_core::schedule::format_in_zone;
use quern_engine::{ApplyReport, PutOutcome, ScheduleView};
use quern_wire::schedules::{MAX_RUNS, ScheduleView as View, Schedules};
use quern_wire::tasks::SubmittedTasks;
use serde_json::{Map, Value, json};

type Answer = Result<Response, ApiError>;

/// A schedule as the API shows it: its spec as stored, its state, and its
/// next fire time in UTC and in its own time zone.
fn render(v: &ScheduleView) -> View {
    let r = &v.record;
    let mut spec: Map<String, Value> = serde_json::from_str(&r.spec).unwrap_or_default();
    spec.remove("enabled");
    View {
        spec,
        enabled: r.enabled,
        next_fire_at: r.next_fire_at,
        next_fire_local: r.next_fire_at.map(|ms| format_in_zone(ms, v.schedule.zone)),
        last_fired_at: r.last_fired_at,
        last_task: r.last_task,
        created_at: r.created_at,
        updated_at: r.updated_at,
        outcome: None,
    }
}

/// A schedule body: malformed JSON is a 400; JSON that is not a schedule (a
/// wrong type, an unknown field) a 422, like every other bad schedule.
fn parse_spec(bytes: &[u8]) -> Result<ScheduleSpec, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(format!("the body is not valid JSON: {e}"))
            }
            Category::Data => ApiError::InvalidSchedule {
                message: e.to_string(),
                details: json!({"line": e.line(), "column": e.column()}),
            },
        }
    })
}

/// Creates or replaces a schedule; `outcome` says which (or `unchanged`).
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    request_body = ScheduleSpec,
    responses((status = 201, description = "Created", body = View), (status = 200, description = "Updated or unchanged", body = View)))]
pub(super) async fn put(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
    RawBody(bytes): RawBody,
) -> Answer {
    let spec = parse_spec(&bytes)?;
    let (view, outcome) = engine.put_schedule(&caller, &name, spec).await?;
    let (status, word) = match outcome {
        PutOutcome::Created => (StatusCode::CREATED, "created"),
        PutOutcome::Updated => (StatusCode::OK, "updated"),
        PutOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let body = View { outcome: Some(word.to_owned()), ..render(&view) };
    Ok((status, Json(body)).into_response())
}

/// Every schedule, by name.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses((status = 200, description = "Success", body = Schedules)))]
pub(super) async fn list(State(engine): State<AppState>, By(caller): By) -> Answer {
    let schedules = engine.schedules(&caller).await?.iter().map(render).collect();
    Ok(Json(Schedules { schedules }).into_response())
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Success", body = View)))]
pub(super) async fn get(State(engine): State<AppState>, By(caller): By, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.schedule(&caller, &name).await?)).into_response())
}

/// Deletes a schedule; answers it as it was (a schedule stored before a
/// rule was tightened: only its name).
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Success", body = View)))]
pub(super) async fn delete(State(engine): State<AppState>, By(caller): By, Path(name): Path<String>) -> Answer {
    Ok(match engine.delete_schedule(&caller, &name).await? {
        Some(view) => Json(render(&view)).into_response(),
        None => Json(json!({"name": name})).into_response(),
    })
}

/// Lets a schedule fire again.
#[utoipa::path(post, path = "/v1/schedules/{name}/enable", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Success", body = View)))]
pub(super) async fn enable(State(engine): State<AppState>, By(caller): By, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.set_schedule_enabled(&caller, &name, true).await?)).into_response())
}

/// Stops a schedule firing; it is kept.
#[utoipa::path(post, path = "/v1/schedules/{name}/disable", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Success", body = View)))]
pub(super) async fn disable(State(engine): State<AppState>, By(caller): By, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.set_schedule_enabled(&caller, &name, false).await?)).into_response())
}

/// Fires a schedule now, once, whatever its timing.
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "The schedule")),
    responses((status = 201, description = "Created", body = Task)))]
pub(super) async fn trigger(State(engine): State<AppState>, By(caller): By, Path(name): Path<String>) -> Answer {
    let task = engine.trigger_schedule(&caller, &name).await?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

/// The tasks a schedule made, newest first.
#[utoipa::path(get, path = "/v1/schedules/{name}/runs", tag = "schedules",
    params(("name" = String, Path, description = "The schedule"),
           ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Success", body = SubmittedTasks)))]
pub(super) async fn runs(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Answer {
    q.only(&["limit"])?;
    let limit = q.limit(MAX_RUNS)?;
    let tasks = engine.schedule_runs(&caller, &name, limit).await?;
    Ok(Json(SubmittedTasks { tasks }).into_response())
}

fn flag(q: &QueryPairs, key: &str) -> Result<bool, ApiError> {
    match q.get(key) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(ApiError::invalid_field(key, format!("must be true or false (got {other:?})"))),
    }
}

/// Applies a schedules file (YAML or JSON): creates and updates what it
/// names; with `prune`, deletes what it does not; with `dry_run`, only says.
#[utoipa::path(post, path = "/v1/schedules/apply", tag = "schedules",
    params(("dry_run" = Option<bool>, Query, description = "Change nothing; answer what would change"),
           ("prune" = Option<bool>, Query, description = "Delete stored schedules the file does not name")),
    request_body(content = String, content_type = "application/yaml", description = "The schedules file"),
    responses((status = 200, description = "Success", body = ApplyReport)))]
pub(super) async fn apply(
    State(engine): State<AppState>,
    By(caller): By,
    q: QueryPairs,
    RawBody(bytes): RawBody,
) -> Answer {
    q.only(&["dry_run", "prune"])?;
    let (dry_run, prune) = (flag(&q, "dry_run")?, flag(&q, "prune")?);
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("the body is not UTF-8 text"))?;
    let report = engine.apply_schedules(&caller, text, dry_run, prune).await?;
    Ok(Json(report).into_response())
}
