//! Webhook routes: create or replace, list, get, delete, resume, and the
//! log of delivery attempts.

use super::body::{QueryPairs, RawBody, parse};
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quern_engine::types::{Delivery, WebhookRecord};
use quern_wire::webhooks::{Deliveries, DeliveryView, MAX_DELIVERIES, WebhookSpec, WebhookView, Webhooks};

type Answer = Result<Response, ApiError>;

/// A webhook as the API shows it; the secret itself never leaves the server.
fn view(w: WebhookRecord) -> WebhookView {
    WebhookView {
        secret: w.secret.is_some(),
        name: w.name,
        url: w.url,
        filters: w.filter,
        max_attempts: w.max_attempts,
        paused: w.paused,
        cursor: w.cursor,
        failures: w.failures,
        last_error: w.last_error,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

fn delivery(d: Delivery) -> DeliveryView {
    DeliveryView {
        ok: d.error.is_none(),
        offset: d.offset,
        attempt: d.attempt,
        at: d.at,
        status: d.status,
        error: d.error,
        duration_ms: d.duration_ms,
    }
}

/// Creates or replaces a webhook.
#[utoipa::path(put, path = "/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook")),
    request_body = WebhookSpec,
    responses((status = 201, description = "Created", body = WebhookView), (status = 200, description = "Replaced", body = WebhookView)))]
pub(super) async fn put(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
    RawBody(bytes): RawBody,
) -> Answer {
    let spec: WebhookSpec = parse(&bytes)?;
    let (w, created) = engine.put_webhook(&caller, &name, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(w))).into_response())
}

/// Every webhook.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, description = "Success", body = Webhooks)))]
pub(super) async fn list(State(engine): State<AppState>, By(caller): By) -> Result<Json<Webhooks>, ApiError> {
    Ok(Json(Webhooks { webhooks: engine.webhooks(&caller).await?.into_iter().map(view).collect() }))
}

/// One webhook.
#[utoipa::path(get, path = "/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook")),
    responses((status = 200, description = "Success", body = WebhookView)))]
pub(super) async fn get(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(engine.webhook(&caller, &name).await?)))
}

/// Deletes a webhook; answers it as it was.
#[utoipa::path(delete, path = "/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook")),
    responses((status = 200, description = "Success", body = WebhookView)))]
pub(super) async fn delete(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(engine.delete_webhook(&caller, &name).await?)))
}

/// Resumes a paused webhook at the event it stopped on.
#[utoipa::path(post, path = "/v1/webhooks/{name}/resume", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook")),
    responses((status = 200, description = "Success", body = WebhookView)))]
pub(super) async fn resume(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(engine.resume_webhook(&caller, &name).await?)))
}

/// The latest delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{name}/deliveries", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook"),
           ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Success", body = Deliveries)))]
pub(super) async fn deliveries(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Json<Deliveries>, ApiError> {
    q.only(&["limit"])?;
    let limit = q.limit(MAX_DELIVERIES)?;
    let all = engine.deliveries(&caller, &name, limit).await?;
    Ok(Json(Deliveries { deliveries: all.into_iter().map(delivery).collect() }))
}
