//! The worker protocol's requests and answers: lease, heartbeat, complete
//! (`POST /v1/lease`, `/v1/heartbeat`, `/v1/complete` in `api.md`).
//!
//! Invariant: the server reads these very types, so a worker built on the
//! Rust client and one written against the contract by hand are
//! indistinguishable to the server.

use quern_core::time::{Millis, rfc3339};
use quern_core::{ErrorKind, Outcome, Progress, Task, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use uuid::Uuid;

/// The most tasks one lease may take.
pub const MAX_LEASE: u32 = 1_000;
/// The longest a lease request may park, in milliseconds.
pub const MAX_LEASE_WAIT_MS: u64 = 60_000;
/// The lease lengths allowed, in milliseconds.
pub const LEASE_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
/// The lease length when none is asked for, in milliseconds.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// The most items in one heartbeat or completion.
pub const MAX_ITEMS: usize = 10_000;

fn default_queues() -> Vec<String> {
    vec!["default".to_owned()]
}

fn one() -> u32 {
    1
}

fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}

/// A worker's request for tasks to run (`POST /v1/lease`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The worker's id, as it will appear on the tasks it runs.
    pub worker: String,
    /// The queues to take tasks from (`["default"]` when absent).
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    /// Only tasks with one of these names; `None` takes any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The most tasks to take (1 to 1000; 1 when absent).
    #[serde(default = "one")]
    pub max: u32,
    /// How long the server may hold the request when nothing is ready
    /// (0 to 60000 ms; 0 when absent).
    #[serde(default)]
    pub wait_ms: u64,
    /// How long each lease lasts unless a heartbeat extends it
    /// (1000 to 600000 ms; 30000 when absent).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

impl LeaseRequest {
    /// A request by `worker` for one task from `queues`, answered at once, with
    /// a 30-second lease.
    pub fn new(worker: impl Into<String>, queues: Vec<String>) -> Self {
        Self { worker: worker.into(), queues, names: None, max: 1, wait_ms: 0, lease_ms: 30_000 }
    }
}

/// The answer to a lease: the tasks now the worker's, each with its lease.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leased {
    /// The tasks leased, none when nothing was ready within the wait.
    pub tasks: Vec<Task>,
}

/// A worker's proof of life for the tasks it holds (`POST /v1/heartbeat`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The worker's id.
    pub worker: String,
    /// The leases to extend.
    pub leases: Vec<LeaseBeat>,
}

/// One lease in a heartbeat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Millis>,
}

/// The answer to a heartbeat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeats {
    /// One answer per lease, in the order asked.
    pub leases: Vec<HeartbeatAnswer>,
}

/// A worker's watch for the running tasks it should stop (`POST /v1/stops`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopsRequest {
    /// The worker's id, as its leases name it.
    pub worker: String,
    /// How long the server may hold the request while there is nothing to
    /// stop (0 to 60000 ms; 0 when absent).
    #[serde(default)]
    pub wait_ms: u64,
}

/// Why a running task should stop.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A client cancelled it (or its workflow): stop and complete it.
    Cancel,
    /// The server ended the attempt (its timeout passed, or its lease ran
    /// out): stop; the task is no longer the worker's to complete.
    Ended,
}

/// One running task to stop.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopNotice {
    /// The task.
    pub task: Uuid,
    /// Why.
    pub reason: StopReason,
}

/// The answer to a watch: the tasks to stop, none when the wait ran out.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stops {
    /// The tasks, in the order the server heard of them.
    pub stops: Vec<StopNotice>,
}

/// A worker's report of finished attempts (`POST /v1/complete`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The worker's id.
    pub worker: String,
    /// One outcome per finished task.
    pub results: Vec<Completion>,
}

/// The outcome of one attempt, flat on the wire: `outcome` says how it
/// ended, `result` goes with `succeeded`, `error` and `retry` with `failed`.
///
/// Flat rather than a tagged enum so that the server reads `result` as raw
/// JSON text, never building a tree of it (serde cannot read raw text
/// through a flattened enum).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// The task.
    pub task: Uuid,
    /// The lease's fencing token.
    pub token: String,
    /// How the attempt ended.
    pub outcome: OutcomeKind,
    /// What the handler returned (`succeeded`; `null` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub result: Option<Box<RawValue>>,
    /// What went wrong (`failed`; a generic `exception` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Whether another attempt may follow, attempts permitting (`failed`;
    /// `true` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// The task's last progress, when the worker reported some that no
    /// heartbeat carried yet: recorded before the outcome, so the task
    /// shows the progress it ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How an attempt ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The handler returned a result.
    Succeeded,
    /// The handler failed.
    Failed,
    /// The worker gives the task back unfinished (it is shutting down): the
    /// task is queued again at once and the attempt does not count.
    Released,
}

impl Completion {
    /// The attempt of `task` under lease `token` succeeded with `result`.
    pub fn succeeded(task: Uuid, token: impl Into<String>, result: &serde_json::Value) -> Self {
        let result = serde_json::value::to_raw_value(result).ok();
        Self {
            task,
            token: token.into(),
            outcome: OutcomeKind::Succeeded,
            result,
            error: None,
            retry: None,
            progress: None,
        }
    }

    /// The attempt of `task` under lease `token` failed with `error`; `retry`
    /// says whether another attempt may follow (if any are left).
    pub fn failed(task: Uuid, token: impl Into<String>, error: TaskError, retry: bool) -> Self {
        Self {
            task,
            token: token.into(),
            outcome: OutcomeKind::Failed,
            result: None,
            error: Some(error),
            retry: Some(retry),
            progress: None,
        }
    }

    /// The worker gives `task` back unfinished.
    pub fn released(task: Uuid, token: impl Into<String>) -> Self {
        Self {
            task,
            token: token.into(),
            outcome: OutcomeKind::Released,
            result: None,
            error: None,
            retry: None,
            progress: None,
        }
    }

    /// The same, carrying the task's last progress.
    #[must_use]
    pub fn with_progress(mut self, progress: Option<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The outcome, with the contract's defaults filled in.
    pub fn into_outcome(self) -> (Uuid, String, Outcome) {
        let outcome = match self.outcome {
            OutcomeKind::Succeeded => {
                Outcome::Succeeded { result: self.result.unwrap_or_else(|| RawValue::NULL.to_owned()) }
            }
            OutcomeKind::Failed => Outcome::Failed {
                error: self
                    .error
                    .unwrap_or_else(|| TaskError::new(ErrorKind::Exception, "the worker reported a failure")),
                retry: self.retry.unwrap_or(true),
            },
            OutcomeKind::Released => Outcome::Released,
        };
        (self.task, self.token, outcome)
    }
}

impl PartialEq for Completion {
    fn eq(&self, other: &Self) -> bool {
        let raw = |r: &Option<Box<RawValue>>| r.as_ref().map(|r| r.get().to_owned());
        (self.task, &self.token, self.outcome, raw(&self.result), &self.error, self.retry, &self.progress)
            == (other.task, &other.token, other.outcome, raw(&other.result), &other.error, other.retry, &other.progress)
    }
}

/// The server's answer for one completion.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteAnswer {
    /// The task.
    pub task: Uuid,
    /// The outcome was recorded. `false` means the token was stale: another
    /// attempt owns the task now, and this outcome was dropped.
    pub ok: bool,
    /// Why the outcome was not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Refusal>,
}

/// The answer to a completion.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    /// One answer per outcome, in the order given.
    pub results: Vec<CompleteAnswer>,
}

/// Why one outcome of a completion was not recorded.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// A stable code: `stale_lease`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: Cow<'static, str>,
    /// What it means.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// The token is not the task's current lease.
    pub const STALE_LEASE: Refusal = Refusal {
        code: Cow::Borrowed("stale_lease"),
        message: Cow::Borrowed(
            "this token is not the task's current lease (it expired, was re-leased, or the task ended)",
        ),
    };
}

/// A task type a worker serves, as it registers it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// What a task of this type gets when its submission leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TaskDefaults>,
}

/// A task type's defaults: each applies to a submission (a single task, a
/// batch, a workflow's task or a schedule's run) that leaves the field out;
/// what the submission gives wins, and the server's own defaults fill the
/// rest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefaults {
    /// The longest one attempt may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How many attempts a task may have in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// When a failed attempt is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<quern_core::RetryPolicy>,
}

/// A worker's registration (`POST /v1/workers/register`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The worker's id.
    pub worker: String,
    /// The queues it takes tasks from (`["default"]` when absent).
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    /// The task types it serves.
    #[serde(default)]
    pub task_types: Vec<TaskTypeDecl>,
}

/// The answer to a registration.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The worker's id.
    pub worker: String,
    /// Always `true`.
    pub registered: bool,
}

/// A worker as `GET /v1/workers` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Its id.
    pub id: String,
    /// The queues it takes from.
    pub queues: Vec<String>,
    /// The task types it declared.
    pub task_types: Vec<String>,
    /// The names (or `prefix.*` patterns) it leases; absent when it takes
    /// every name on its queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<Vec<String>>,
    /// Tasks it holds now, as of its last call.
    pub in_flight: u64,
    /// When it was last heard from.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: Millis,
    /// Heard from within the last minute.
    pub live: bool,
}

/// The answer to `GET /v1/workers`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workers {
    /// Workers heard from within the last hour, by any node.
    pub workers: Vec<WorkerView>,
}

/// A task type as `GET /v1/task-types` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeView {
    /// The task name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// The schema inputs must match.
    pub input_schema: Option<serde_json::Value>,
    /// What a task of the type gets when its submission leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TaskDefaults>,
    /// Live workers that serve it.
    pub workers: usize,
    /// When a worker serving it was last heard from.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_seen: Option<Millis>,
}

/// The answer to `GET /v1/task-types`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypes {
    /// The task types workers declared.
    pub task_types: Vec<TaskTypeView>,
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let ok = Completion::succeeded(id(), "t", &json!({"sent": 3}));
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
        assert_eq!(answers[1].error.as_ref().map(|e| e.code.as_ref()), Some("stale_token"));
    }
}
