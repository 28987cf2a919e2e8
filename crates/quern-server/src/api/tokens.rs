//! Token routes: make (the secret is answered once), list, revoke. Admins
//! only.

use super::body::Body;
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quern_wire::tokens::{CreateToken, TokenCreated, TokenView, Tokens};

/// Makes a token. The answer holds its secret, shown this once: only a hash
/// is kept.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, description = "Created; `token` is the secret", body = TokenCreated)))]
pub(super) async fn create(
    State(engine): State<AppState>,
    By(caller): By,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(engine.create_token(&caller, req).await?)))
}

/// Every token, revoked ones too; never a secret.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, description = "Success", body = Tokens)))]
pub(super) async fn list(State(engine): State<AppState>, By(caller): By) -> Result<Json<Tokens>, ApiError> {
    Ok(Json(Tokens { tokens: engine.tokens(&caller).await? }))
}

/// Revokes a token: every node refuses it within a second or two.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "The token")),
    responses((status = 200, description = "The token, revoked", body = TokenView)))]
pub(super) async fn revoke(
    State(engine): State<AppState>,
    By(caller): By,
    Path(name): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(engine.revoke_token(&caller, &name).await?))
}
