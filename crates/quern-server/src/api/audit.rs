//! The audit log route (admins): who did what to what, newest first.

use super::body::QueryPairs;
use super::error::ApiError;
use super::{AppState, By};
use axum::Json;
use axum::extract::State;
use quern_wire::audit::{AuditList, MAX_AUDIT};

/// Audit entries, newest first, filtered by actor and action.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("actor" = Option<String>, Query, description = "Only this token's (or `anonymous`, `server`)"),
           ("action" = Option<String>, Query, description = "Only actions starting with this: `token.`, `queue.pause`"),
           ("before" = Option<u64>, Query, description = "`next_before` of the previous page"),
           ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Success", body = AuditList)))]
pub(super) async fn list(
    State(engine): State<AppState>,
    By(caller): By,
    q: QueryPairs,
) -> Result<Json<AuditList>, ApiError> {
    q.only(&["actor", "action", "before", "limit"])?;
    let before = match q.get("before") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::invalid_field("before", "must be a number"))?),
    };
    let limit = q.limit(MAX_AUDIT)?;
    let list = engine
        .audit_log(&caller, before, q.get("actor").map(str::to_owned), q.get("action").map(str::to_owned), limit)
        .await?;
    Ok(Json(list))
}
