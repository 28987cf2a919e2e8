//! Webhook routes: create or replace, list, get, delete, resume, and the
//! log of delivery attempts.

use super::AppState;
use super::body::{QueryPairs, RawBody, parse};
use super::error::ApiError;
use crate::engine::WebhookSpec;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_core::time::format_rfc3339;
use quern_store::{Delivery, WebhookRecord};
use serde_json::{Value, json};

type Answer = Result<Response, ApiError>;

/// A webhook as the API shows it; the secret itself never leaves the server.
fn render(w: &WebhookRecord) -> Value {
    json!({
        "name": w.name, "url": w.url, "filters": w.filter, "secret": w.secret.is_some(),
        "max_attempts": w.max_attempts, "paused": w.paused, "cursor": w.cursor, "failures": w.failures,
        "last_error": w.last_error, "created_at": format_rfc3339(w.created_at), "updated_at": format_rfc3339(w.updated_at),
    })
}

fn render_delivery(d: &Delivery) -> Value {
    json!({
        "offset": d.offset, "attempt": d.attempt, "at": format_rfc3339(d.at), "status": d.status,
        "error": d.error, "duration_ms": d.duration_ms, "ok": d.error.is_none(),
    })
}

pub(super) async fn put(State(engine): State<AppState>, Path(name): Path<String>, RawBody(bytes): RawBody) -> Answer {
    let spec: WebhookSpec = parse(&bytes)?;
    let (w, created) = engine.put_webhook(&name, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(render(&w))).into_response())
}

pub(super) async fn list(State(engine): State<AppState>) -> Answer {
    let all: Vec<Value> = engine.webhooks().await?.iter().map(render).collect();
    Ok(Json(json!({"webhooks": all})).into_response())
}

pub(super) async fn get(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.webhook(&name).await?)).into_response())
}

pub(super) async fn delete(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.delete_webhook(&name).await?)).into_response())
}

pub(super) async fn resume(State(engine): State<AppState>, Path(name): Path<String>) -> Answer {
    Ok(Json(render(&engine.resume_webhook(&name).await?)).into_response())
}

pub(super) async fn deliveries(State(engine): State<AppState>, Path(name): Path<String>, q: QueryPairs) -> Answer {
    q.only(&["limit"])?;
    let limit = q.limit(1_000)?;
    let all: Vec<Value> = engine.deliveries(&name, limit).await?.iter().map(render_delivery).collect();
    Ok(Json(json!({"deliveries": all})).into_response())
}
