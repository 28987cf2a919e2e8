//! Schedule routes: create or replace, list, get, delete, enable, disable,
//! trigger, runs, and the declarative apply of a schedules file.

use super::AppState;
use super::body::{QueryPairs, RawBody};
use super::error::ApiError;
use crate::engine::{PutOutcome, ScheduleView};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_core::ScheduleSpec;
use quern_core::schedule::format_in_zone;
use quern_core::time::format_rfc3339;
use serde_json::{Map, Value, json};

type Answer = Result<Response, ApiError>;

/// The most runs one answer lists.
const MAX_RUNS: usize = 1_000;

/// A schedule as the API shows it: its spec, its state, and its next fire
/// time in UTC and in its own time zone.
fn render(v: &ScheduleView) -> Value {
    let r = &v.record;
    let mut obj: Map<String, Value> = serde_json::from_str(&r.spec).unwrap_or_default();
    let at = |ms: Option<i64>| ms.map_or(Value::Null, |ms| json!(format_rfc3339(ms)));
    obj.insert("enabled".into(), json!(r.enabled));
    obj.insert("next_fire_at".into(), at(r.next_fire_at));
    obj.insert(
        "next_fire_local".into(),
        r.next_fire_at.map_or(Value::Null, |ms| json!(format_in_zone(ms, v.schedule.zone))),
    );
    obj.insert("last_fired_at".into(), at(r.last_fired_at));
    obj.insert("last_task".into(), json!(r.last_task));
    obj.insert("created_at".into(), json!(format_rfc3339(r.created_at)));
    obj.insert("updated_at".into(), json!(format_rfc3339(r.updated_at)));
    Value::Object(obj)
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

pub(super) async fn put(State(engine): State<AppState>, Path(name): Path<String>, RawBody(bytes): RawBody) -> Answer {
    let spec = parse_spec(&bytes)?;
    let (view, outcome) = engine.put_schedule(&name, spec).await?;
    let (status, word) = match outcome {
        PutOutcome::Created => (StatusCode::CREATED, "created"),
        PutOutcome::Updated => (StatusCode::OK, "updated"),
        PutOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let mut body = render(&view);
    body["outcome"] = json!(word);
    Ok((status, Json(body)).into_response())
}

pub(super) async fn list(State(engine): State<AppState>) -> Answer {
    let all: Vec<Value> = engine.schedules().await?.iter().map(render).collect();
    Ok(Json(json!({"schedules": all})).into_response())
}

pub(super) async fn get(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.schedule(&name).await?)).into_response())
}

pub(super) async fn delete(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    let body = match engine.delete_schedule(&name).await? {
        Some(view) => render(&view),
        // A schedule stored before a rule was tightened: only its name.
        None => json!({"name": name}),
    };
    Ok(Json(body).into_response())
}

pub(super) async fn enable(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.set_schedule_enabled(&name, true).await?)).into_response())
}

pub(super) async fn disable(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.set_schedule_enabled(&name, false).await?)).into_response())
}

pub(super) async fn trigger(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    let task = engine.trigger_schedule(&name).await?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

pub(super) async fn runs(State(engine): State<AppState>, Path(name): Path<String>, q: QueryPairs) -> Answer {
    q.only(&["limit"])?;
    let limit = q.limit(MAX_RUNS)?;
    let tasks = engine.schedule_runs(&name, limit).await?;
    Ok(Json(json!({"tasks": tasks})).into_response())
}

fn flag(q: &QueryPairs, key: &str) -> Result<bool, ApiError> {
    match q.get(key) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(ApiError::invalid_field(key, format!("must be true or false (got {other:?})"))),
    }
}

pub(super) async fn apply(State(engine): State<AppState>, q: QueryPairs, RawBody(bytes): RawBody) -> Answer {
    q.only(&["dry_run", "prune"])?;
    let (dry_run, prune) = (flag(&q, "dry_run")?, flag(&q, "prune")?);
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("the body is not UTF-8 text"))?;
    let report = engine.apply_schedules(text, dry_run, prune).await?;
    Ok(Json(json!({
        "dry_run": dry_run,
        "created": report.created,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
    }))
    .into_response())
}
