//! The HTTP API (v1): thin handlers that parse, call the engine, and render.
//! Routes are built by [`router`], so tests can drive them without a socket.

mod answer;
mod audit;
mod body;
mod error;
mod events;
mod openapi;
mod ops;
mod schedules;
mod tasks;
mod tokens;
mod webhooks;
mod workers;
mod workflows;

pub use error::ApiError;

use crate::conn::Peer;
use crate::metrics::HttpMetrics;
use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use openapi::ApiDoc;
use quern_engine::{Caller, Engine};
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The application state every handler sees.
pub type AppState = Arc<Engine>;

/// The caller of a request, named by its bearer token: the engine
/// authenticates it (401 when it cannot) and later admits each operation.
pub(crate) struct By(pub(crate) Caller);

impl FromRequestParts<AppState> for By {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, engine: &AppState) -> Result<Self, Self::Rejection> {
        let bearer =
            match parts.headers.get(AUTHORIZATION) {
                None => None,
                Some(value) => {
                    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
                    Some(token.ok_or_else(|| {
                        ApiError::Unauthorized("the Authorization header must be `Bearer qrn_…`".into())
                    })?)
                }
            };
        match engine.authenticate(bearer).await {
            Ok(caller) => {
                // Admitted before the body is read: a token without the
                // permission learns nothing from the request's parsing.
                let path = parts.extensions.get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default();
                let method = parts.method.as_str();
                let ops = route_operations().get(path).into_iter().flatten();
                if let Some((_, op)) = ops.into_iter().find(|(m, _)| *m == method) {
                    engine.admit(&caller, op)?;
                }
                if let Some(max) = caller.max_body_bytes() {
                    let limit = body::TokenBodyLimit(max);
                    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    if declared.is_some_and(|n| n > max) {
                        return Err(limit.refusal());
                    }
                    parts.extensions.insert(limit);
                }
                Ok(By(caller))
            }
            Err(e) => {
                let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.0.to_string()).unwrap_or_default();
                tracing::warn!(%peer, path = %parts.uri.path(), error = %e, "refused: no valid token");
                Err(e.into())
            }
        }
    }
}

/// Every route with its description: a route cannot be served without
/// being in `/openapi.json`.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(ops::health))
        .routes(routes!(ops::metrics))
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::submit_batch))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::retry))
        .routes(routes!(tasks::history))
        .routes(routes!(workflows::approve))
        .routes(routes!(workflows::submit))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::graph))
        .routes(routes!(workflows::cancel))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::apply))
        .routes(routes!(schedules::put, schedules::get, schedules::delete))
        .routes(routes!(schedules::enable))
        .routes(routes!(schedules::disable))
        .routes(routes!(schedules::trigger))
        .routes(routes!(schedules::runs))
        .routes(routes!(events::publish, events::read))
        .routes(routes!(events::stream))
        .routes(routes!(events::ack))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::put, webhooks::get, webhooks::delete))
        .routes(routes!(webhooks::resume))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(workers::lease))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::stops))
        .routes(routes!(workers::complete))
        .routes(routes!(workers::register))
        .routes(routes!(workers::list))
        .routes(routes!(workers::task_types))
        .routes(routes!(ops::queues))
        .routes(routes!(ops::pause))
        .routes(routes!(ops::resume))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(audit::list))
}

/// The API's description, OpenAPI 3.1, as `/openapi.json` serves it and
/// `docs/openapi.json` holds it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    openapi::finish(&mut doc);
    doc
}

/// The engine operation of each route, made once from the description.
fn route_operations() -> &'static std::collections::HashMap<String, Vec<(&'static str, &'static str)>> {
    static OPS: OnceLock<std::collections::HashMap<String, Vec<(&'static str, &'static str)>>> = OnceLock::new();
    OPS.get_or_init(|| openapi::engine_operations(&openapi()))
}

/// The description as pretty JSON text, made once.
fn openapi_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")))
}

/// This description of the API (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], openapi_text()).into_response()
}

/// The routes (`METHOD /path` as routed) that take no query parameters,
/// made once from the description.
fn routes_without_query() -> &'static std::collections::HashSet<String> {
    static PLAIN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    PLAIN.get_or_init(|| openapi::routes_without_query(&openapi()))
}

/// Answers 400 to a query string on a route that takes none (the routes
/// that take some check theirs by name): a misspelt parameter is never
/// silently ignored.
async fn refuse_unexpected_query(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        let path = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default();
        let key = format!("{} {path}", req.method());
        if routes_without_query().contains(&key) {
            let name = req.uri().query().and_then(|q| q.split('&').next()).unwrap_or_default();
            let name = name.split('=').next().unwrap_or_default().to_owned();
            return ApiError::invalid_field(&name, format!("unknown query parameter: {key} takes none"))
                .into_response();
        }
    }
    next.run(req).await
}

/// Every route of the API, with the body limit applied and every request
/// counted for `/metrics`.
pub fn router(engine: Arc<Engine>, max_body_bytes: usize) -> Router {
    let (router, doc) = routes().split_for_parts();
    let http = Arc::new(HttpMetrics::new(
        doc.paths.paths.iter().map(|(path, item)| (path.as_str(), openapi::operations(item).map(|(m, _)| m).collect())),
    ));
    let (not_found, not_allowed) = (http.clone(), http.clone());
    router
        .route_layer(middleware::from_fn(refuse_unexpected_query))
        .route_layer(crate::metrics::RecordLayer(http.clone()))
        .fallback(move || async move {
            not_found.unmatched(404);
            ApiError::NotFound("no such route".into())
        })
        .method_not_allowed_fallback(move || async move {
            not_allowed.unmatched(405);
            ApiError::MethodNotAllowed
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state((max_body_bytes, http), refuse_declared_oversize))
        .with_state(engine)
}

/// Answers 413 at once to a request whose `Content-Length` is over the
/// limit, rather than after reading that much (or waiting for a body that
/// never comes).
async fn refuse_declared_oversize(
    State((max, http)): State<(usize, Arc<HttpMetrics>)>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        http.unmatched(413);
        return ApiError::PayloadTooLarge(format!(
            "the request body is over the server's limit of {max} bytes (server.max_body_bytes)"
        ))
        .into_response();
    }
    next.run(req).await
}
