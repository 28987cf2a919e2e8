//! JSON answers that hold many tasks, serialized into a buffer sized for
//! them up front. axum's `Json` starts at 128 bytes and doubles, which for
//! a 1,000-task answer (about half a megabyte) meant a dozen reallocations
//! and copies per request on the cores the store's writer shares.

use super::error::ApiError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Bytes set aside per task: a plain task's JSON, lease included, with room
/// to spare; a larger one grows the buffer as `Json` would.
const BYTES_PER_TASK: usize = 640;

/// `value` as a JSON answer with `status`, for an answer of about `tasks`
/// tasks.
pub(super) fn tasks_json<T: Serialize>(status: StatusCode, value: &T, tasks: usize) -> Result<Response, ApiError> {
    let mut buf = Vec::with_capacity(tasks.saturating_mul(BYTES_PER_TASK).max(128));
    serde_json::to_writer(&mut buf, value).map_err(|e| {
        tracing::error!(error = %e, "serializing an answer failed");
        ApiError::Internal
    })?;
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], buf).into_response())
}
