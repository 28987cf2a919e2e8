//! Workflows: their answers, and the approval of an `approval` task. A
//! workflow's body (`tasks`, `chain` or `group` with `then`) is read by the
//! server with its own parser, so that each error names the task at fault;
//! [`WorkflowRequest`] is the same shape for clients to write.

use indexmap::IndexMap;
use quern_core::time::{Millis, rfc3339};
use quern_core::workflow::default_condition;
use quern_core::{Condition, Task, TaskSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The longest `?wait=` on a workflow, in milliseconds.
pub const MAX_WORKFLOW_WAIT_MS: u64 = 300_000;
/// The most tasks one answer about a workflow holds (100 by default).
pub const MAX_WORKFLOW_PAGE: usize = 1_000;

/// `POST /v1/workflows`: a graph (`tasks`), or one of the shorthands:
/// `chain` (each task after the previous one) or `group` (all at once) with
/// an optional `then` (one task after all of them).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    /// The workflow's name.
    pub name: String,
    /// A graph: every task with its `key` and `depends_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<WorkflowTask>>,
    /// Tasks run one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<TaskSpec>>,
    /// Tasks run all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Vec<TaskSpec>>,
    /// With `group`: one task after all of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<TaskSpec>,
}

/// One task of a workflow graph.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowTask {
    /// Its name within the workflow.
    pub key: String,
    /// The tasks it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    /// The task itself.
    #[serde(flatten)]
    pub spec: TaskSpec,
}

/// One edge of a workflow task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOn {
    /// The parent's key.
    pub key: String,
    /// The condition on the parent: `success` (when left out), `failure`,
    /// `completion`, or a CEL expression.
    #[serde(default = "default_condition")]
    pub on: Condition,
}

impl DependsOn {
    /// Runs after `key` succeeded.
    pub fn on_success(key: impl Into<String>) -> Self {
        Self { key: key.into(), on: default_condition() }
    }
}

/// The answer to a workflow submission.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSubmitted {
    /// The workflow.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Each task's id, by key, in the order the request declared them.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::HashMap<String, Uuid>))]
    pub tasks: IndexMap<String, Uuid>,
}

/// `GET /v1/workflows/{id}`: a workflow's status, counts over every task,
/// and one page of its tasks.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowView {
    /// The workflow.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    /// `running` until every task ended, then `succeeded`, `failed` or
    /// `cancelled`.
    pub status: String,
    /// How many tasks it has.
    pub total: usize,
    /// How many tasks are in each status.
    pub counts: BTreeMap<String, usize>,
    /// The page of tasks, in submission order.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The answer to cancelling a workflow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCancelled {
    /// The workflow.
    pub id: Uuid,
    /// How many unfinished tasks were cancelled.
    pub cancelled: usize,
}

/// `POST /v1/tasks/{id}/approve`: the decision on an `approval` task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Approved (the task succeeds) or rejected (it fails).
    pub approved: bool,
    /// Who decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn a_typed_workflow_is_written_as_the_contract_reads_it() {
        let spec: TaskSpec = serde_json::from_value(json!({"name": "fetch", "input": {"url": "u"}})).unwrap();
        let tasks = vec![
            WorkflowTask { key: "a".into(), depends_on: Vec::new(), spec: spec.clone() },
            WorkflowTask { key: "b".into(), depends_on: vec![DependsOn::on_success("a")], spec },
        ];
        let request = WorkflowRequest { name: "w".into(), tasks: Some(tasks), ..WorkflowRequest::default() };
        let v = serde_json::to_value(&request).unwrap();
        assert_eq!(v["name"], "w");
        assert!(v.get("chain").is_none() && v.get("group").is_none());
        assert_eq!(v["tasks"][0]["key"], "a");
        assert!(v["tasks"][0].get("depends_on").is_none());
        assert_eq!(v["tasks"][1]["depends_on"], json!([{"key": "a", "on": "success"}]));
        assert_eq!(v["tasks"][1]["name"], "fetch");
        assert_eq!(v["tasks"][1]["input"], json!({"url": "u"}));
    }
}
