//! The audit trail: every change an operator may have to explain (tokens,
//! queues, schedules, webhooks, cancels, retries, approvals) is appended
//! with its actor, and read back by admins.
//!
//! Invariant: an entry is written only after its change succeeded, names
//! the caller the change was admitted for, and is never rewritten.

use crate::caller::Caller;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use quern_store::{AuditEntry, AuditQuery, StoreError};
use quern_wire::audit::{AuditList, AuditView, MAX_AUDIT};
use serde_json::Value;

impl Engine {
    /// Appends who did `action` to `target`; a store that cannot take it is
    /// logged, not answered (the change itself is done).
    pub(super) async fn record(&self, caller: &Caller, action: &str, target: &str, detail: Option<Value>) {
        let entry = AuditEntry {
            at: self.now(),
            actor: caller.actor(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.map(|d| d.to_string()),
        };
        tracing::info!(actor = %entry.actor, action, target, "audit");
        if let Err(e) = self.store.audit(entry).await {
            tracing::error!(error = %e, action, target, "the audit entry was not written");
        }
    }

    /// Audit entries, newest first: before `before`, of `actor`, of actions
    /// starting with `action`.
    pub async fn audit_log(
        &self,
        caller: &Caller,
        before: Option<u64>,
        actor: Option<String>,
        action: Option<String>,
        limit: usize,
    ) -> Result<AuditList> {
        self.admit(caller, "audit")?;
        if !(1..=MAX_AUDIT).contains(&limit) {
            return Err(EngineError::Field { field: "limit", message: format!("must be 1 to {MAX_AUDIT}") });
        }
        let records = self.store.audit_log(AuditQuery { before, actor, action, limit }).await?;
        let next_before = (records.len() == limit).then(|| records.last().map(|r| r.seq)).flatten();
        let entries = records
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at: r.entry.at,
                actor: r.entry.actor,
                action: r.entry.action,
                target: r.entry.target,
                detail: r.entry.detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect();
        Ok(AuditList { entries, next_before })
    }

    /// Deletes audit entries past `retention.audit_ttl`.
    pub(super) async fn purge_audit(&self) -> std::result::Result<u64, StoreError> {
        let before = self.now().saturating_sub(i64::try_from(self.audit_ttl_ms).unwrap_or(i64::MAX));
        self.store.purge_audit(before).await
    }
}
