//! How a workflow edge is judged when its parent ends, the same in every
//! backend.
//!
//! Invariant: each edge is judged once, from its parent's end alone; a
//! parent that no longer exists (deleted by retention) satisfies nothing.

use quern_core::workflow::{Readiness, compile_expr, expr_holds, outcome_holds};
use quern_core::{Condition, Dependency, ParentOutcome, Status};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A parent's end, as its children's conditions see it.
pub(crate) struct ParentEnd {
    pub(crate) key: Option<String>,
    pub(crate) status: Status,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
}

impl ParentEnd {
    /// The outcome a leased child receives of this parent.
    pub(crate) fn outcome(self, task: Uuid) -> (String, ParentOutcome) {
        let key = self.key.unwrap_or_else(|| task.to_string());
        let outcome = ParentOutcome {
            task,
            status: self.status,
            result: self.result.and_then(|r| RawValue::from_string(r).ok()),
            error: self.error.and_then(|e| serde_json::from_str(&e).ok()),
        };
        (key, outcome)
    }
}

/// Whether `task` has an edge to one of `parents` (sorted): after a
/// submission's edges to already-ended parents were judged, the tasks whose
/// answer must be read again.
pub(crate) fn waits_on(task: &quern_core::Task, parents: &[Uuid]) -> bool {
    task.depends_on.iter().any(|d| parents.binary_search(&d.task).is_ok())
}

/// Judges the edge `dep` from its parent's end.
pub(crate) fn judge(dep: &Dependency, parent: Option<&ParentEnd>) -> Readiness {
    let Some(p) = parent else { return Readiness::Never };
    match &dep.on {
        Condition::Outcome(c) => outcome_holds(*c, p.status),
        Condition::Expr { expr } => match compile_expr(expr) {
            Ok(e) => {
                let value = |t: &Option<String>| {
                    t.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Null)
                };
                expr_holds(&e, p.status, &value(&p.result), &value(&p.error))
            }
            Err(_) => Readiness::Never,
        },
    }
}

/// Why a child is skipped: its edge to `parent` can no longer hold.
pub(crate) fn skip_message(dep: &Dependency, parent: Option<&ParentEnd>) -> String {
    match parent {
        Some(p) => format!(
            "dependency {} ended {}; its condition {} can no longer hold",
            p.key.clone().unwrap_or_else(|| dep.task.to_string()),
            p.status,
            serde_json::to_string(&dep.on).unwrap_or_default()
        ),
        None => format!("dependency {} no longer exists", dep.task),
    }
}
