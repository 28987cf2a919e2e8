//! The audit log as the API shows it.

use quern_core::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};

/// The most entries one answer lists.
pub const MAX_AUDIT: usize = 1_000;

/// One entry: who did what to what, and when.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditView {
    /// Its place in the log: larger is later.
    pub seq: u64,
    /// When.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// Who: a token's name, `anonymous` (no token) or `server`.
    pub actor: String,
    /// What: `token.create`, `token.revoke`, `queue.pause`, `queue.resume`,
    /// `schedule.put|delete|enable|disable|trigger`, `schedules.apply`,
    /// `webhook.put|delete|resume`, `task.cancel|retry|approve`,
    /// `workflow.cancel`.
    pub action: String,
    /// To what: a name, or a task's or workflow's id.
    pub target: String,
    /// More: a token's role, an approval's decision, what an apply changed.
    pub detail: Option<serde_json::Value>,
}

/// `GET /v1/audit`: newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<AuditView>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<u64>,
}
