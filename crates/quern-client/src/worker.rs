//! The worker protocol's requests and answers: lease, heartbeat, complete
//! (`POST /v1/lease`, `/v1/heartbeat`, `/v1/complete` in `api.md`).
//!
//! Invariant: these types serialize to exactly the JSON the contract names, so
//! a worker built on this client and one written against the contract by hand
//! are indistinguishable to the server.

use quern_core::time::{Millis, rfc3339};
use quern_core::{Progress, TaskError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A worker's request for tasks to run (`POST /v1/lease`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The worker's id, as it will appear on the tasks it runs.
    pub worker: String,
    /// The queues to take tasks from.
    pub queues: Vec<String>,
    /// Only tasks with one of these names; `None` takes any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The most tasks to take (1 to 1000).
    pub max: u32,
    /// How long the server may hold the request when nothing is ready
    /// (0 to 60000 ms).
    pub wait_ms: u64,
    /// How long each lease lasts unless a heartbeat extends it
    /// (1000 to 600000 ms).
    pub lease_ms: u64,
}

impl LeaseRequest {
    /// A request by `worker` for one task from `queues`, answered at once, with
    /// a 30-second lease.
    pub fn new(worker: impl Into<String>, queues: Vec<String>) -> Self {
        Self { worker: worker.into(), queues, names: None, max: 1, wait_ms: 0, lease_ms: 30_000 }
    }
}

/// A worker's proof of life for the tasks it holds (`POST /v1/heartbeat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The worker's id.
    pub worker: String,
    /// The leases to extend.
    pub leases: Vec<LeaseBeat>,
}

/// One lease in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseBeat {
    /// The task.
    pub task: Uuid,
    /// The lease's fencing token, as the lease answer gave it.
    pub token: String,
    /// The task's progress, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// The server's answer for one lease in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The task.
    pub task: Uuid,
    /// The lease was still the worker's and is extended. `false` means the
    /// worker lost the task (stale token, lease expired) and must stop.
    pub ok: bool,
    /// A client asked to cancel the task: the worker should stop it.
    #[serde(default)]
    pub cancel: bool,
    /// When the extended lease runs out.
    #[serde(default, with = "rfc3339::option")]
    pub expires_at: Option<Millis>,
}

/// A worker's report of finished attempts (`POST /v1/complete`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The worker's id.
    pub worker: String,
    /// One outcome per finished task.
    pub results: Vec<Completion>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The task.
    pub task: Uuid,
    /// The lease's fencing token.
    pub token: String,
    /// How the attempt ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Completion {
    /// The attempt of `task` under lease `token` succeeded with `result`.
    pub fn succeeded(task: Uuid, token: impl Into<String>, result: serde_json::Value) -> Self {
        Self { task, token: token.into(), outcome: Outcome::Succeeded { result } }
    }

    /// The attempt of `task` under lease `token` failed with `error`; `retry`
    /// says whether another attempt may follow (if any are left).
    pub fn failed(task: Uuid, token: impl Into<String>, error: TaskError, retry: bool) -> Self {
        Self { task, token: token.into(), outcome: Outcome::Failed { error, retry } }
    }
}

/// How an attempt ended, tagged on the wire by `"outcome"`.
///
/// The result is a [`serde_json::Value`] rather than raw JSON text because
/// this enum is flattened into [`Completion`], and serde cannot read raw JSON
/// through a flattened field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned `result`.
    Succeeded {
        /// The handler's result.
        #[serde(default)]
        result: serde_json::Value,
    },
    /// The handler failed.
    Failed {
        /// What went wrong.
        error: TaskError,
        /// Whether another attempt may follow (if any are left).
        #[serde(default)]
        retry: bool,
    },
    /// The worker gives the task back unfinished (it is shutting down): the
    /// task is queued again at once and the attempt does not count.
    Released,
}

/// The server's answer for one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteAnswer {
    /// The task.
    pub task: Uuid,
    /// The outcome was recorded. `false` means the token was stale: another
    /// attempt owns the task now, and this outcome was dropped.
    pub ok: bool,
    /// Why the outcome was not recorded, as the server describes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// A task type a worker serves, as it registers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeDecl {
    /// The task name.
    pub name: String,
    /// What it does, for people browsing `GET /v1/task-types`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema that inputs must match; the server refuses (422) a
    /// submission whose input does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

/// A worker's registration (`POST /v1/workers/register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The worker's id.
    pub worker: String,
    /// The queues it takes tasks from.
    pub queues: Vec<String>,
    /// The task types it serves.
    pub task_types: Vec<TaskTypeDecl>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use quern_core::ErrorKind;
    use serde_json::json;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    #[test]
    fn lease_request_matches_the_contract() {
        let mut req = LeaseRequest::new("w1", vec!["default".into()]);
        assert_eq!(
            serde_json::to_value(&req).ok(),
            Some(json!({"worker": "w1", "queues": ["default"], "max": 1, "wait_ms": 0, "lease_ms": 30000}))
        );
        req.names = Some(vec!["email.send".into()]);
        let v = serde_json::to_value(&req).expect("serializes");
        assert_eq!(v["names"], json!(["email.send"]));
    }

    #[test]
    fn heartbeats_match_the_contract() {
        let req = HeartbeatRequest {
            worker: "w1".into(),
            leases: vec![
                LeaseBeat { task: id(), token: "t".into(), progress: None },
                LeaseBeat {
                    task: id(),
                    token: "t".into(),
                    progress: Some(Progress { percent: 50.0, message: Some("half".into()) }),
                },
            ],
        };
        let v = serde_json::to_value(&req).expect("serializes");
        assert_eq!(v["leases"][0], json!({"task": id().to_string(), "token": "t"}));
        assert_eq!(v["leases"][1]["progress"], json!({"percent": 50.0, "message": "half"}));

        let answer: Vec<HeartbeatAnswer> = serde_json::from_value(json!([
            {"task": id(), "ok": true, "cancel": false, "expires_at": "2026-01-01T00:00:30Z"},
            {"task": id(), "ok": false, "cancel": false, "expires_at": null},
        ]))
        .expect("parses");
        assert_eq!(answer.len(), 2);
        assert_eq!(answer[0].expires_at, Some(1_767_225_630_000));
        assert!(!answer[1].ok && answer[1].expires_at.is_none());
    }

    #[test]
    fn completions_are_tagged_by_outcome() {
        let ok = Completion::succeeded(id(), "t", json!({"sent": 3}));
        let v = serde_json::to_value(&ok).expect("serializes");
        assert_eq!(v, json!({"task": id().to_string(), "token": "t", "outcome": "succeeded", "result": {"sent": 3}}));
        let failed = Completion::failed(id(), "t", TaskError::new(ErrorKind::Exception, "boom"), true);
        let v = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(
            v,
            json!({"task": id().to_string(), "token": "t", "outcome": "failed",
                   "error": {"kind": "exception", "message": "boom"}, "retry": true})
        );
        let back: Option<Completion> = serde_json::from_value(v).ok();
        assert_eq!(back, Some(failed));
    }

    #[test]
    fn complete_answers_read_with_or_without_error() {
        let answers: Vec<CompleteAnswer> = serde_json::from_value(json!([
            {"task": id(), "ok": true},
            {"task": id(), "ok": false, "error": {"code": "stale_token", "message": "lease lost"}},
        ]))
        .expect("parses");
        assert_eq!(answers.len(), 2);
        assert!(answers[0].ok && answers[0].error.is_none());
        assert_eq!(answers[1].error.as_ref().map(|e| e["code"].clone()), Some(json!("stale_token")));
    }
}
