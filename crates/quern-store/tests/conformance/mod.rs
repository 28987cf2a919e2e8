//! The conformance suite: what "correct" means for a [`Store`]. Every
//! backend's test file invokes [`suite!`] with a factory that opens that
//! backend, which makes one named test per behaviour; a backend is done
//! when every behaviour here passes.
//!
//! Time is passed in (`now`) and never read, so every timer behaviour is
//! exercised without sleeping.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, unreachable_pub)]

use quern_core::auth::Role;
use quern_core::{Condition, Dependency, EventFilter, NewEvent, OutcomeCondition};
use quern_core::{ErrorKind, ExecutionDefaults, Millis, Outcome, Status, TaskError, TaskSpec};
use quern_store::{
    Approval, CompleteParams, Completion, EventPage, EventQuery, Fire, FireOutcome, GroupState, HeartbeatLease,
    HeartbeatParams, LeaseParams, ListQuery, NewWorkflow, ScheduleRecord, ScheduleWrite, Store, StoreError,
    TaskTypeRecord, TokenRecord, WorkerRecord, WorkflowQuery,
};
use quern_store::{AuditEntry, AuditQuery};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Opens a backend. `reopen` opens the same data again, as a restarted
/// server would (the previous handle is dropped first); `done` removes what
/// the behaviour left (a PostgreSQL schema) once it passed.
pub trait Factory: Sized {
    fn open(&mut self, now: Millis) -> Arc<dyn Store>;
    fn reopen(&mut self, now: Millis) -> Arc<dyn Store>;
    fn done(self) {}
}

pub const T0: Millis = 1_800_000_000_000;

pub fn spec(json: &str) -> quern_core::NewTask {
    let s: TaskSpec = serde_json::from_str(json).unwrap();
    s.validate(&ExecutionDefaults::default(), Uuid::now_v7(), T0).unwrap()
}

fn spec_at(json: &str, now: Millis) -> quern_core::NewTask {
    let s: TaskSpec = serde_json::from_str(json).unwrap();
    s.validate(&ExecutionDefaults::default(), Uuid::now_v7(), now).unwrap()
}

pub fn lease(max: usize, lease_ms: u64, now: Millis) -> LeaseParams {
    LeaseParams { worker: "w1".into(), queues: vec!["default".into()], names: None, max, lease_ms, now }
}

pub fn ok(result: &str) -> Outcome {
    Outcome::Succeeded { result: RawValue::from_string(result.to_owned()).unwrap() }
}

fn fail(retry: bool) -> Outcome {
    Outcome::Failed { error: TaskError::new(ErrorKind::Exception, "boom"), retry }
}

pub async fn complete(s: &dyn Store, id: Uuid, token: &str, outcome: Outcome, now: Millis) -> bool {
    let answers = s
        .complete(CompleteParams {
            worker: "w1".into(),
            results: vec![Completion { task: id, token: token.into(), outcome }],
            now,
        })
        .await
        .unwrap();
    answers[0].ok
}

pub fn token(t: &quern_core::Task) -> String {
    t.lease.as_ref().unwrap().token.clone()
}

pub async fn submit_one(s: &dyn Store, json: &str) -> Uuid {
    s.submit(vec![spec(json)]).await.unwrap()[0].task.id
}

/// Defines one test per behaviour, in a module per area (`tasks`, `leases`,
/// `workflows`, `schedules`, `events`, `groups`, `nodes`), each on a fresh
/// store from `$make` (an expression that gives a [`Factory`], evaluated in
/// each test), so that a failure names the behaviour that broke. Within one
/// behaviour time never goes backwards: a store stamps operations in commit
/// order, never earlier than an operation it already applied.
macro_rules! suite {
    ($make:expr) => {
        $crate::conformance::suite!(@area tasks, $make, [
            submit_and_get_round_trip, client_moves_name_who_made_them, delayed_tasks_wait_for_their_time, success_is_recorded_once_and_compactly,
                failures_retry_with_backoff_until_attempts_run_out, timeouts_end_attempts, cancel_covers_every_status,
                manual_retry_starts_a_new_attempt, idempotency_keys_dedupe_and_conflict, batches_are_all_or_nothing,
                list_filters_and_pages, purge_deletes_only_old_finished_tasks,
                a_success_after_a_failed_attempt_clears_the_error, queue_counts_follow_every_move,
                totals_count_committed_moves_and_their_durations, the_trace_context_is_kept_and_leased,
        ]);
        $crate::conformance::suite!(@area leases, $make, [
            lease_order_is_priority_then_time_then_id, stale_tokens_change_nothing, expired_leases_requeue_as_lost,
                heartbeats_extend_leases_and_record_progress, paused_queues_lease_nothing, lease_name_filter,
                restart_holds_running_tasks_for_their_lease, released_tasks_requeue_at_once_without_counting,
                leases_are_seen_at_once, a_restart_right_after_a_lease_keeps_it,
        ]);
        $crate::conformance::suite!(@area workflows, $make, [
            workflows_release_and_skip_along_conditions, approvals_wait_for_a_decision,
                cancelling_a_workflow_cancels_what_is_unfinished, a_workflow_reads_in_pages_with_its_counts,
                waiting_tasks_survive_a_restart, undecided_approvals_time_out,
                dependencies_on_tasks_submitted_earlier,
        ]);
        $crate::conformance::suite!(@area schedules, $make, [
            schedule_writes_are_versioned, a_slot_fires_once, overlapping_slots_can_be_skipped,
                schedules_survive_a_restart,
        ]);
        $crate::conformance::suite!(@area events, $make, [
            events_are_kept_in_order_and_filtered, task_moves_publish_their_events_in_order,
                purged_events_are_reported_not_skipped,
        ]);
        $crate::conformance::suite!(@area groups, $make, [
            group_state_is_replaced_by_version,
        ]);
        $crate::conformance::suite!(@area security, $make, [
            tokens_keep_their_names_for_ever_and_revoke_once, the_audit_log_appends_filters_pages_and_purges,
        ]);
        $crate::conformance::suite!(@area nodes, $make, [
            a_role_has_one_leader_until_its_term_runs_out, task_types_keep_their_latest_declaration,
                workers_keep_their_latest_record,
        ]);
    };
    (@area $area:ident, $make:expr, [$($name:ident),* $(,)?]) => {
        mod $area {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut factory = $make;
                    $crate::conformance::$name(&mut factory).await;
                    $crate::conformance::Factory::done(factory);
                }
            )*
        }
    };
}
pub(crate) use suite;

pub async fn submit_and_get_round_trip(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(
        &*s,
        r#"{"name":"email.send","input":{"to":"a@b.c"},"priority":3,"metadata":{"team":"x"},"timeout_ms":5000}"#,
    )
    .await;
    let t = s.get(id).await.unwrap();
    assert_eq!(t.name, "email.send");
    assert_eq!(t.input.get(), r#"{"to":"a@b.c"}"#);
    assert_eq!((t.status, t.priority, t.attempt, t.timeout_ms), (Status::Queued, 3, 0, Some(5000)));
    assert_eq!(t.metadata.get("team").and_then(|v| v.as_str()), Some("x"));
    assert_eq!(t.created_at, T0);
    assert!(matches!(s.get(Uuid::now_v7()).await, Err(StoreError::NotFound(_))));
}

pub async fn lease_order_is_priority_then_time_then_id(f: &mut impl Factory) {
    let s = f.open(T0);
    let low = submit_one(&*s, r#"{"name":"a","priority":0}"#).await;
    let high = submit_one(&*s, r#"{"name":"b","priority":10}"#).await;
    let low2 = submit_one(&*s, r#"{"name":"a","priority":0}"#).await;
    let mid = submit_one(&*s, r#"{"name":"c","priority":5}"#).await;
    let got: Vec<Uuid> = s.lease(lease(10, 30_000, T0)).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(got, [high, mid, low, low2]);
    assert!(s.lease(lease(10, 30_000, T0)).await.unwrap().is_empty());
}

pub async fn delayed_tasks_wait_for_their_time(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a","delay_ms":1000}"#).await;
    assert_eq!(s.get(id).await.unwrap().status, Status::Pending);
    assert!(s.lease(lease(1, 30_000, T0)).await.unwrap().is_empty());
    let tick = s.tick(T0 + 999).await.unwrap();
    assert_eq!((tick.promoted, tick.next_due), (0, Some(T0 + 1000)));
    assert_eq!(s.tick(T0 + 1000).await.unwrap().promoted, 1);
    let leased = s.lease(lease(1, 30_000, T0 + 1000)).await.unwrap();
    assert_eq!(leased[0].id, id);
    let h = s.history(id).await.unwrap();
    let moves: Vec<_> = h.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        moves,
        [(None, Status::Pending), (Some(Status::Pending), Status::Queued), (Some(Status::Queued), Status::Running)]
    );
}

pub async fn success_is_recorded_once_and_compactly(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 30_000, T0 + 5)).await.unwrap()[0];
    assert_eq!((t.status, t.attempt, t.worker.as_deref()), (Status::Running, 1, Some("w1")));
    assert!(complete(&*s, id, &token(t), ok(r#"{"n":1}"#), T0 + 10).await);
    let done = s.get(id).await.unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.result.as_ref().map(|r| r.get()), Some(r#"{"n":1}"#));
    assert_eq!((done.started_at, done.finished_at), (Some(T0 + 5), Some(T0 + 10)));
    // A second completion with the same token is stale: terminal never changes.
    assert!(!complete(&*s, id, &token(t), fail(false), T0 + 11).await);
    assert_eq!(s.get(id).await.unwrap().status, Status::Succeeded);
    let h = s.history(id).await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!((h[2].from, h[2].to, h[2].at), (Some(Status::Running), Status::Succeeded, T0 + 10));
}

pub async fn stale_tokens_change_nothing(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(!complete(&*s, id, "1.not-the-token", ok("1"), T0 + 1).await);
    assert!(!complete(&*s, Uuid::now_v7(), &token(t), ok("1"), T0 + 1).await);
    let hb = s
        .heartbeat(HeartbeatParams {
            worker: "w1".into(),
            leases: vec![HeartbeatLease { task: id, token: "bad".into(), progress: None }],
            now: T0 + 1,
        })
        .await
        .unwrap();
    assert!(!hb[0].ok && hb[0].cancel);
    assert_eq!(s.get(id).await.unwrap().status, Status::Running);
    assert!(complete(&*s, id, &token(t), ok("1"), T0 + 2).await);
}

pub async fn failures_retry_with_backoff_until_attempts_run_out(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(
        &*s,
        r#"{"name":"a","max_attempts":3,"retry":{"backoff":"exponential","initial_ms":100,"max_ms":1000}}"#,
    )
    .await;
    let t1 = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t1), fail(true), T0 + 10).await);
    let after1 = s.get(id).await.unwrap();
    assert_eq!((after1.status, after1.run_at), (Status::Pending, T0 + 110));
    assert_eq!(after1.error.as_ref().map(|e| e.kind), Some(ErrorKind::Exception));
    s.tick(T0 + 109).await.unwrap();
    assert!(s.lease(lease(1, 30_000, T0 + 109)).await.unwrap().is_empty());
    s.tick(T0 + 110).await.unwrap();
    let t2 = &s.lease(lease(1, 30_000, T0 + 110)).await.unwrap()[0];
    assert_eq!(t2.attempt, 2);
    assert!(!complete(&*s, id, &token(t1), ok("1"), T0 + 111).await, "attempt 1's token is stale");
    assert!(complete(&*s, id, &token(t2), fail(true), T0 + 120).await);
    assert_eq!(s.get(id).await.unwrap().run_at, T0 + 320, "second backoff doubles");
    s.tick(T0 + 320).await.unwrap();
    let t3 = &s.lease(lease(1, 30_000, T0 + 320)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t3), fail(true), T0 + 330).await);
    let end = s.get(id).await.unwrap();
    assert_eq!((end.status, end.attempt), (Status::Failed, 3));
    let h = s.history(id).await.unwrap();
    let to: Vec<Status> = h.iter().map(|e| e.to).collect();
    use Status::*;
    assert_eq!(to, [Queued, Running, Pending, Queued, Running, Pending, Queued, Running, Failed]);
    // A failure that must not retry ends the task at once.
    let once = submit_one(&*s, r#"{"name":"a","max_attempts":5}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, once, &token(t), fail(false), T0 + 1).await);
    assert_eq!(s.get(once).await.unwrap().status, Failed);
}

/// A task's W3C trace context is stored with it, read back, and handed to
/// the worker that leases it (across a restart too).
pub async fn the_trace_context_is_kept_and_leased(f: &mut impl Factory) {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let s = f.open(T0);
    let traced = submit_one(&*s, &format!(r#"{{"name":"a","traceparent":"{TP}"}}"#)).await;
    let plain = submit_one(&*s, r#"{"name":"a"}"#).await;
    assert_eq!(s.get(traced).await.unwrap().traceparent.as_deref(), Some(TP));
    assert_eq!(s.get(plain).await.unwrap().traceparent, None);
    drop(s);
    let s = f.reopen(T0);
    let leased = s.lease(lease(2, 1_000, T0)).await.unwrap();
    let of = |id: Uuid| leased.iter().find(|t| t.id == id).unwrap().traceparent.clone();
    assert_eq!(of(traced).as_deref(), Some(TP));
    assert_eq!(of(plain), None);
}

/// What the metrics read: every move counted by queue and name, the
/// durations each start and end closes, and the attempts the server ended.
pub async fn totals_count_committed_moves_and_their_durations(f: &mut impl Factory) {
    use quern_store::tally::SUBMITTED;
    let s = f.open(T0);
    let ok_id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let lost_id = submit_one(&*s, r#"{"name":"a","max_attempts":2}"#).await;
    let slow_id = submit_one(&*s, r#"{"name":"b","timeout_ms":500}"#).await;
    s.submit(vec![spec(r#"{"name":"a","delay_ms":60000}"#)]).await.unwrap();
    let leased = s.lease(lease(3, 1_000, T0 + 40)).await.unwrap();
    assert_eq!(leased.len(), 3);
    let of = |id: Uuid| leased.iter().find(|t| t.id == id).unwrap();
    assert!(complete(&*s, ok_id, &token(of(ok_id)), ok("1"), T0 + 140).await);
    assert_eq!(s.tick(T0 + 540).await.unwrap().timed_out, 1);
    assert_eq!(s.tick(T0 + 1_040).await.unwrap().expired, 1);
    let totals = s.signals().totals();
    let q = &totals.queues["default"];
    assert_eq!(q.moves["a"][SUBMITTED], 3, "the delayed one is submitted too");
    assert_eq!(q.moves["a"][1], 2, "started");
    assert_eq!(q.moves["a"][3], 1, "succeeded");
    assert_eq!(q.moves["a"][2], 1, "the lost attempt retries: {q:?}");
    assert_eq!(q.moves["b"][6], 1, "timed out");
    assert_eq!((q.lease_expired, q.timed_out), (1, 1));
    assert_eq!((q.wait.count, q.wait.sum_ms), (3, 120));
    assert_eq!(q.run.count, 3, "the success, the timeout, the lost attempt");
    assert_eq!(q.run.sum_ms, 100 + 500 + 1_000);
    assert_eq!((q.latency.count, q.latency.sum_ms), (2, 140 + 540), "the tasks that ended");
    assert_eq!(s.get(lost_id).await.unwrap().status, Status::Queued);
    assert_eq!(s.get(slow_id).await.unwrap().status, Status::TimedOut);
}

pub async fn expired_leases_requeue_as_lost(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a","max_attempts":2}"#).await;
    let t1 = &s.lease(lease(1, 1_000, T0)).await.unwrap()[0];
    assert_eq!(s.tick(T0 + 999).await.unwrap().expired, 0);
    assert_eq!(s.tick(T0 + 1_000).await.unwrap().expired, 1);
    let back = s.get(id).await.unwrap();
    assert_eq!(back.status, Status::Queued);
    assert_eq!(back.error.as_ref().map(|e| e.kind), Some(ErrorKind::Lost));
    let t2 = &s.lease(lease(1, 1_000, T0 + 1_001)).await.unwrap()[0];
    assert_eq!(t2.attempt, 2);
    assert!(!complete(&*s, id, &token(t1), ok("1"), T0 + 1_002).await, "the dead worker's token is fenced");
    s.tick(T0 + 2_001).await.unwrap();
    let end = s.get(id).await.unwrap();
    assert_eq!((end.status, end.error.map(|e| e.kind)), (Status::Failed, Some(ErrorKind::Lost)));
}

pub async fn heartbeats_extend_leases_and_record_progress(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 1_000, T0)).await.unwrap()[0];
    let hb = s
        .heartbeat(HeartbeatParams {
            worker: "w1".into(),
            leases: vec![HeartbeatLease {
                task: id,
                token: token(t),
                progress: Some(quern_core::Progress { percent: 40.0, message: Some("reading".into()) }),
            }],
            now: T0 + 800,
        })
        .await
        .unwrap();
    assert_eq!((hb[0].ok, hb[0].cancel, hb[0].expires_at), (true, false, Some(T0 + 1_800)));
    assert_eq!(s.tick(T0 + 1_000).await.unwrap().expired, 0);
    let running = s.get(id).await.unwrap();
    assert_eq!(running.progress.map(|p| p.percent), Some(40.0));
    assert_eq!(s.tick(T0 + 1_800).await.unwrap().expired, 1);
}

pub async fn timeouts_end_attempts(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a","timeout_ms":500}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert_eq!(s.tick(T0 + 499).await.unwrap().timed_out, 0);
    assert_eq!(s.tick(T0 + 500).await.unwrap().timed_out, 1);
    let end = s.get(id).await.unwrap();
    assert_eq!((end.status, end.error.map(|e| e.kind)), (Status::TimedOut, Some(ErrorKind::Timeout)));
    assert!(!complete(&*s, id, &token(t), ok("1"), T0 + 501).await);
    // With attempts left, a timeout retries.
    let again =
        submit_one(&*s, r#"{"name":"a","timeout_ms":500,"max_attempts":2,"retry":{"initial_ms":0,"max_ms":0}}"#).await;
    s.lease(lease(1, 30_000, T0 + 600)).await.unwrap();
    s.tick(T0 + 1_100).await.unwrap();
    assert_eq!(s.get(again).await.unwrap().status, Status::Queued);
    // A worker that enforced the timeout first reports it: the same end as
    // the server's own timer, not `failed`.
    let raced = submit_one(&*s, r#"{"name":"raced","timeout_ms":500}"#).await;
    let t = s.lease(LeaseParams { names: Some(vec!["raced".into()]), ..lease(1, 30_000, T0 + 2_000) }).await.unwrap();
    let timeout = Outcome::Failed { error: TaskError::new(ErrorKind::Timeout, "worker: ran past 500 ms"), retry: true };
    assert!(complete(&*s, raced, &token(&t[0]), timeout, T0 + 2_499).await);
    let end = s.get(raced).await.unwrap();
    assert_eq!((end.status, end.error.map(|e| e.kind)), (Status::TimedOut, Some(ErrorKind::Timeout)));
}

pub async fn cancel_covers_every_status(f: &mut impl Factory) {
    let s = f.open(T0);
    let pending = submit_one(&*s, r#"{"name":"a","delay_ms":60000}"#).await;
    let queued = submit_one(&*s, r#"{"name":"b"}"#).await;
    assert_eq!(s.cancel(pending, T0 + 1, None).await.unwrap().status, Status::Cancelled);
    assert_eq!(s.cancel(queued, T0 + 1, None).await.unwrap().status, Status::Cancelled);
    s.tick(T0 + 60_000).await.unwrap();
    assert!(s.lease(lease(10, 30_000, T0 + 60_000)).await.unwrap().is_empty(), "cancelled tasks never run");
    let running = submit_one(&*s, r#"{"name":"c","max_attempts":3}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    let asked = s.cancel(running, T0 + 2, None).await.unwrap();
    assert_eq!((asked.status, asked.cancel_requested), (Status::Running, true));
    let hb = s
        .heartbeat(HeartbeatParams {
            worker: "w1".into(),
            leases: vec![HeartbeatLease { task: running, token: token(t), progress: None }],
            now: T0 + 3,
        })
        .await
        .unwrap();
    assert!(hb[0].ok && hb[0].cancel);
    assert!(complete(&*s, running, &token(t), fail(true), T0 + 4).await);
    assert_eq!(s.get(running).await.unwrap().status, Status::Cancelled, "no retry after a cancel");
    assert!(matches!(s.cancel(running, T0 + 5, None).await, Err(StoreError::InvalidTransition { .. })));
    assert!(matches!(s.cancel(Uuid::now_v7(), T0 + 5, None).await, Err(StoreError::NotFound(_))));
    let h = s.history(queued).await.unwrap();
    assert_eq!(h.last().map(|e| (e.from, e.to)), Some((Some(Status::Queued), Status::Cancelled)));
}

pub async fn manual_retry_starts_a_new_attempt(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t), fail(true), T0 + 1).await);
    assert_eq!(s.get(id).await.unwrap().status, Status::Failed);
    let back = s.retry(id, T0 + 2, None).await.unwrap();
    assert_eq!((back.status, back.finished_at), (Status::Queued, None));
    let t2 = &s.lease(lease(1, 30_000, T0 + 3)).await.unwrap()[0];
    assert_eq!(t2.attempt, 2);
    assert!(complete(&*s, id, &token(t2), ok("2"), T0 + 4).await);
    assert!(matches!(s.retry(id, T0 + 5, None).await, Err(StoreError::InvalidTransition { .. })));
    let to: Vec<Status> = s.history(id).await.unwrap().iter().map(|e| e.to).collect();
    use Status::*;
    assert_eq!(to, [Queued, Running, Failed, Queued, Running, Succeeded]);
}

pub async fn idempotency_keys_dedupe_and_conflict(f: &mut impl Factory) {
    let s = f.open(T0);
    let first = s.submit(vec![spec(r#"{"name":"a","input":{"x":1},"idempotency_key":"k1"}"#)]).await.unwrap();
    let again = s.submit(vec![spec(r#"{"input":{"x":1},"name":"a","idempotency_key":"k1"}"#)]).await.unwrap();
    assert!(first[0].created && !again[0].created);
    assert_eq!(first[0].task.id, again[0].task.id);
    let clash = s.submit(vec![spec(r#"{"name":"a","input":{"x":2},"idempotency_key":"k1"}"#)]).await;
    assert!(matches!(clash, Err(StoreError::IdempotencyConflict { index: 0, .. })));
    let page = s.list(ListQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.tasks.len(), 1);
}

pub async fn batches_are_all_or_nothing(f: &mut impl Factory) {
    let s = f.open(T0);
    s.submit(vec![spec(r#"{"name":"a","idempotency_key":"held"}"#)]).await.unwrap();
    let batch =
        vec![spec(r#"{"name":"b"}"#), spec(r#"{"name":"c"}"#), spec(r#"{"name":"other","idempotency_key":"held"}"#)];
    assert!(matches!(s.submit(batch).await, Err(StoreError::IdempotencyConflict { index: 2, .. })));
    let page = s.list(ListQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.tasks.len(), 1, "nothing of the refused batch was stored");
    let ok = s.submit((0..100).map(|i| spec(&format!(r#"{{"name":"n{i}"}}"#))).collect()).await.unwrap();
    assert_eq!(ok.len(), 100);
    assert_eq!(s.lease(lease(1000, 30_000, T0)).await.unwrap().len(), 101);
}

pub async fn list_filters_and_pages(f: &mut impl Factory) {
    let s = f.open(T0);
    let mut ids = Vec::new();
    for i in 0..25 {
        let q = if i % 2 == 0 { "even" } else { "odd" };
        let json = format!(
            r#"{{"name":"job{}","queue":"{q}","metadata":{{"i":"{i}","k":"v","n":{i},"even":{}}}}}"#,
            i % 3,
            i % 2 == 0
        );
        ids.push(submit_one(&*s, &json).await);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.list(ListQuery { limit: 10, cursor: cursor.clone(), ..Default::default() }).await.unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every task once");
    let even = s.list(ListQuery { limit: 100, queue: Some("even".into()), ..Default::default() }).await.unwrap();
    assert_eq!(even.tasks.len(), 13);
    let job0 = s.list(ListQuery { limit: 100, name: Some("job0".into()), ..Default::default() }).await.unwrap();
    assert_eq!(job0.tasks.len(), 9);
    let mut meta = ListQuery { limit: 100, ..Default::default() };
    meta.metadata.insert("i".into(), "7".into());
    meta.metadata.insert("k".into(), "v".into());
    assert_eq!(s.list(meta).await.unwrap().tasks.len(), 1);
    // Typed: a number matches the number (7 and 7.0 alike), not the text "7".
    let typed = |pairs: &[(&str, serde_json::Value)]| ListQuery {
        limit: 100,
        metadata: pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        ..Default::default()
    };
    let count = |q: ListQuery| {
        let s = &s;
        async move { s.list(q).await.unwrap().tasks.len() }
    };
    assert_eq!(count(typed(&[("n", serde_json::json!(7))])).await, 1, "a number");
    assert_eq!(count(typed(&[("n", serde_json::json!(7.0))])).await, 1, "the same number as a float");
    assert_eq!(count(typed(&[("n", serde_json::json!("7"))])).await, 0, "text is not a number");
    assert_eq!(count(typed(&[("i", serde_json::json!(7))])).await, 0, "a number is not text");
    assert_eq!(count(typed(&[("even", serde_json::json!(true))])).await, 13, "a boolean");
    assert_eq!(count(typed(&[("even", serde_json::json!(false)), ("n", serde_json::json!(7))])).await, 1);
    s.lease(LeaseParams { queues: vec!["odd".into()], ..lease(5, 30_000, T0) }).await.unwrap();
    let running =
        s.list(ListQuery { limit: 100, statuses: vec![Status::Running], ..Default::default() }).await.unwrap();
    assert_eq!(running.tasks.len(), 5);
    let bad = s.list(ListQuery { limit: 10, cursor: Some("nope".into()), ..Default::default() }).await;
    assert!(matches!(bad, Err(StoreError::InvalidCursor)));
}

pub async fn paused_queues_lease_nothing(f: &mut impl Factory) {
    let s = f.open(T0);
    submit_one(&*s, r#"{"name":"a"}"#).await;
    s.set_paused("default", true).await.unwrap();
    assert!(s.lease(lease(1, 30_000, T0)).await.unwrap().is_empty());
    let q = s.queues().await.unwrap();
    assert!(q.iter().any(|q| q.name == "default" && q.paused && q.counts.get(&Status::Queued) == Some(&1)));
    s.set_paused("default", false).await.unwrap();
    assert_eq!(s.lease(lease(1, 30_000, T0)).await.unwrap().len(), 1);
}

pub async fn lease_name_filter(f: &mut impl Factory) {
    let s = f.open(T0);
    submit_one(&*s, r#"{"name":"a","priority":9}"#).await;
    let b = submit_one(&*s, r#"{"name":"b"}"#).await;
    let got = s.lease(LeaseParams { names: Some(vec!["b".into()]), ..lease(5, 30_000, T0) }).await.unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), [b]);

    // A name ending in `*` asks for every name it begins; `_` is no wildcard.
    let send = submit_one(&*s, r#"{"name":"email.send"}"#).await;
    submit_one(&*s, r#"{"name":"sms.send"}"#).await;
    let job = submit_one(&*s, r#"{"name":"jobs_app:run"}"#).await;
    submit_one(&*s, r#"{"name":"jobsXapp:run"}"#).await;
    let names = Some(vec!["email.*".into(), "jobs_app:*".into(), "none".into()]);
    let mut got: Vec<Uuid> =
        s.lease(LeaseParams { names, ..lease(10, 30_000, T0) }).await.unwrap().iter().map(|t| t.id).collect();
    got.sort();
    let mut want = vec![send, job];
    want.sort();
    assert_eq!(got, want);
}

pub async fn purge_deletes_only_old_finished_tasks(f: &mut impl Factory) {
    let s = f.open(T0);
    let done = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, done, &token(t), ok("1"), T0 + 10).await);
    let waiting = submit_one(&*s, r#"{"name":"b"}"#).await;
    assert_eq!(s.purge(T0 + 10, 100).await.unwrap(), 0, "finished at the cutoff is kept");
    // Ids are made from the wall clock; purge bounds by id time, so pass a
    // cutoff past both the clock and the finish.
    let later = quern_core::Clock::now(&quern_core::SystemClock).max(T0) + 60_000;
    let fresh = s.submit(vec![spec_at(r#"{"name":"c"}"#, later)]).await.unwrap()[0].task.id;
    assert_eq!(s.purge(later, 100).await.unwrap(), 1);
    assert!(matches!(s.get(done).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.history(done).await, Err(StoreError::NotFound(_))));
    assert!(s.get(waiting).await.is_ok() && s.get(fresh).await.is_ok());
}

pub async fn restart_holds_running_tasks_for_their_lease(f: &mut impl Factory) {
    let s = f.open(T0);
    let a = submit_one(&*s, r#"{"name":"a","max_attempts":2}"#).await;
    let b = submit_one(&*s, r#"{"name":"b","max_attempts":2}"#).await;
    let queued = submit_one(&*s, r#"{"name":"c"}"#).await;
    let leased =
        s.lease(LeaseParams { names: Some(vec!["a".into(), "b".into()]), ..lease(2, 2_000, T0) }).await.unwrap();
    drop(s);
    let s = f.reopen(T0 + 10_000);
    // The queued task is ready at once; the running ones are held back.
    let got = s.lease(lease(10, 30_000, T0 + 10_000)).await.unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), [queued]);
    let ta = leased.iter().find(|t| t.id == a).unwrap();
    assert!(complete(&*s, a, &token(ta), ok("1"), T0 + 10_500).await, "a pre-restart token still completes");
    assert_eq!(s.tick(T0 + 11_999).await.unwrap().expired, 0);
    assert_eq!(s.tick(T0 + 12_000).await.unwrap().expired, 1);
    assert_eq!(s.get(b).await.unwrap().status, Status::Queued);
    assert_eq!(s.get(a).await.unwrap().status, Status::Succeeded);
}

pub async fn released_tasks_requeue_at_once_without_counting(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a"}"#).await;
    let t = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t), Outcome::Released, T0 + 1).await);
    let back = s.get(id).await.unwrap();
    assert_eq!((back.status, back.attempt), (Status::Queued, 0));
    let again = &s.lease(lease(1, 30_000, T0 + 2)).await.unwrap()[0];
    assert_eq!(again.attempt, 1, "the released attempt did not use up the only attempt");
    assert!(!complete(&*s, id, &token(t), ok("1"), T0 + 3).await, "the released token is stale");
    assert!(complete(&*s, id, &token(again), ok("1"), T0 + 3).await);
    let to: Vec<Status> = s.history(id).await.unwrap().iter().map(|e| e.to).collect();
    use Status::*;
    assert_eq!(to, [Queued, Running, Queued, Running, Succeeded]);
}

/// A lease is what every read shows at once (the row, a list by status, the
/// history), and its attempt, worker and start stay on the task after its
/// end.
pub async fn leases_are_seen_at_once(f: &mut impl Factory) {
    let s = f.open(T0);
    let a = submit_one(&*s, r#"{"name":"a"}"#).await;
    let b = submit_one(&*s, r#"{"name":"b"}"#).await;
    let leased = s.lease(lease(2, 30_000, T0 + 5)).await.unwrap();
    let got = s.get(a).await.unwrap();
    assert_eq!(
        (got.status, got.attempt, got.worker.as_deref(), got.started_at),
        (Status::Running, 1, Some("w1"), Some(T0 + 5))
    );
    let running =
        s.list(ListQuery { statuses: vec![Status::Running], limit: 10, ..ListQuery::default() }).await.unwrap();
    assert_eq!(running.tasks.len(), 2, "both leases are listed as running");
    let moves: Vec<Status> = s.history(b).await.unwrap().iter().map(|e| e.to).collect();
    assert_eq!(moves, [Status::Queued, Status::Running]);
    let tb = leased.iter().find(|t| t.id == b).unwrap();
    assert!(complete(&*s, b, &token(tb), ok("2"), T0 + 6).await);
    let done = s.get(b).await.unwrap();
    assert_eq!(
        (done.status, done.attempt, done.worker.as_deref(), done.started_at, done.finished_at),
        (Status::Succeeded, 1, Some("w1"), Some(T0 + 5), Some(T0 + 6))
    );
}

/// A restart right after a lease keeps it (held back as running, its token
/// still good), while tasks leased alongside it that were given back or
/// finished in that same millisecond stay as they ended.
pub async fn a_restart_right_after_a_lease_keeps_it(f: &mut impl Factory) {
    let s = f.open(T0);
    let a = submit_one(&*s, r#"{"name":"a"}"#).await;
    let b = submit_one(&*s, r#"{"name":"b"}"#).await;
    let c = submit_one(&*s, r#"{"name":"c"}"#).await;
    let leased = s.lease(lease(3, 2_000, T0)).await.unwrap();
    let token_of = |id: Uuid| token(leased.iter().find(|t| t.id == id).unwrap());
    assert!(complete(&*s, b, &token_of(b), Outcome::Released, T0).await);
    assert!(complete(&*s, c, &token_of(c), ok("3"), T0).await);
    drop(s);
    let s = f.reopen(T0 + 10_000);
    let again = s.lease(lease(10, 30_000, T0 + 10_000)).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), [b], "only the given-back task is leasable");
    assert_eq!(again[0].attempt, 1, "the given-back attempt did not count");
    let held = s.get(a).await.unwrap();
    assert_eq!((held.status, held.attempt, held.started_at), (Status::Running, 1, Some(T0)));
    assert_eq!(s.get(c).await.unwrap().status, Status::Succeeded);
    assert!(complete(&*s, a, &token_of(a), ok("1"), T0 + 10_001).await, "a pre-restart token still completes");
    let moves: Vec<Status> = s.history(a).await.unwrap().iter().map(|e| e.to).collect();
    assert_eq!(moves, [Status::Queued, Status::Running, Status::Succeeded]);
}

/// A workflow node in a test: key, task name, parents with conditions.
type WorkflowNode<'a> = (&'a str, &'a str, &'a [(&'a str, Condition)]);

/// Builds a workflow from `(key, name, [(parent key, condition)])`, as the
/// engine would, and submits it.
async fn submit_workflow(s: &dyn Store, nodes: &[WorkflowNode<'_>]) -> (Uuid, std::collections::HashMap<String, Uuid>) {
    let wf = Uuid::now_v7();
    let ids: std::collections::HashMap<String, Uuid> =
        nodes.iter().map(|(k, _, _)| ((*k).to_owned(), Uuid::now_v7())).collect();
    let tasks = nodes
        .iter()
        .map(|(key, name, deps)| {
            let mut spec = TaskSpec::named(*name);
            if *name == "approval" && key.ends_with("-1s") {
                spec.timeout_ms = Some(1_000);
            }
            let mut t = spec.validate(&ExecutionDefaults::default(), ids[*key], T0).unwrap();
            t.workflow = Some(wf);
            t.key = Some((*key).to_owned());
            t.depends_on = deps.iter().map(|(p, on)| Dependency { task: ids[*p], on: on.clone() }).collect();
            if !t.depends_on.is_empty() {
                t.status = Status::Pending;
            }
            t
        })
        .collect();
    s.submit_workflow(NewWorkflow { id: wf, name: "wf".into(), created_at: T0 }, tasks).await.unwrap();
    (wf, ids)
}

fn on(c: OutcomeCondition) -> Condition {
    Condition::Outcome(c)
}

async fn run_one(s: &dyn Store, name: &str, outcome: Outcome, now: Millis) -> quern_core::Task {
    let got = s.lease(LeaseParams { names: Some(vec![name.into()]), ..lease(1, 30_000, now) }).await.unwrap();
    assert_eq!(got.len(), 1, "{name} is ready");
    let t = got[0].clone();
    assert!(complete(s, t.id, &token(&t), outcome, now + 1).await);
    t
}

pub async fn workflows_release_and_skip_along_conditions(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    let (_, ids) = submit_workflow(
        &*s,
        &[
            ("fetch", "fetch", &[]),
            ("clean", "clean", &[("fetch", on(Success))]),
            ("report", "report", &[("clean", on(Success))]),
            ("alert", "alert", &[("clean", on(Failure))]),
            ("always", "always", &[("clean", on(Completion))]),
            ("big", "big", &[("fetch", Condition::Expr { expr: "result.rows > 10".into() })]),
            ("small", "small", &[("fetch", Condition::Expr { expr: "result.rows <= 10".into() })]),
        ],
    )
    .await;
    assert_eq!(s.get(ids["clean"]).await.unwrap().status, Status::Pending);
    let first = s.lease(lease(10, 30_000, T0)).await.unwrap();
    assert_eq!(first.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["fetch"], "only the root is ready");
    assert!(complete(&*s, first[0].id, &token(&first[0]), ok(r#"{"rows": 20}"#), T0 + 10).await);
    let status = |k: &str| {
        let s = s.clone();
        let id = ids[k];
        async move { s.get(id).await.unwrap() }
    };
    assert_eq!(status("clean").await.status, Status::Queued);
    assert_eq!(status("big").await.status, Status::Queued);
    let small = status("small").await;
    assert_eq!((small.status, small.error.map(|e| e.kind)), (Status::Skipped, Some(ErrorKind::Dependency)));
    run_one(&*s, "clean", fail(false), T0 + 20).await;
    let report = status("report").await;
    assert_eq!(report.status, Status::Skipped);
    assert!(report.error.is_some_and(|e| e.message.contains("clean ended failed")));
    assert_eq!(status("alert").await.status, Status::Queued);
    assert_eq!(status("always").await.status, Status::Queued);
}

pub async fn approvals_wait_for_a_decision(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    let (_, ids) = submit_workflow(
        &*s,
        &[
            ("build", "build", &[]),
            ("ok", "approval", &[("build", on(Success))]),
            ("ship", "ship", &[("ok", on(Success))]),
            ("undo", "undo", &[("ok", on(Failure))]),
        ],
    )
    .await;
    let early = s.approve(ids["ok"], Approval { approved: true, by: None, comment: None }, T0).await;
    assert!(matches!(early, Err(StoreError::InvalidTransition { .. })), "not before its dependencies");
    run_one(&*s, "build", ok("1"), T0 + 10).await;
    assert_eq!(s.get(ids["ok"]).await.unwrap().status, Status::Queued);
    assert!(s.lease(lease(10, 30_000, T0 + 20)).await.unwrap().is_empty(), "workers never get approvals");
    let decided = s
        .approve(
            ids["ok"],
            Approval { approved: false, by: Some("ana".into()), comment: Some("not today".into()) },
            T0 + 30,
        )
        .await
        .unwrap();
    assert_eq!(decided.status, Status::Failed);
    assert_eq!(
        decided.error.map(|e| (e.kind, e.message)),
        Some((ErrorKind::Rejected, "rejected by ana: not today".into()))
    );
    assert_eq!(s.get(ids["ship"]).await.unwrap().status, Status::Skipped);
    assert_eq!(s.get(ids["undo"]).await.unwrap().status, Status::Queued);
    let again = s.approve(ids["ok"], Approval { approved: true, by: None, comment: None }, T0 + 40).await;
    assert!(matches!(again, Err(StoreError::InvalidTransition { .. })), "decided once");
    let not_approval = s.approve(ids["undo"], Approval { approved: true, by: None, comment: None }, T0 + 40).await;
    assert!(matches!(not_approval, Err(StoreError::InvalidTransition { .. })));
}

pub async fn cancelling_a_workflow_cancels_what_is_unfinished(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    let (wf, ids) = submit_workflow(
        &*s,
        &[("a", "a", &[]), ("b", "b", &[("a", on(Success))]), ("c", "c", &[("b", on(Completion))]), ("d", "d", &[])],
    )
    .await;
    run_one(&*s, "d", ok("1"), T0 + 1).await;
    let running = s.lease(LeaseParams { names: Some(vec!["a".into()]), ..lease(1, 30_000, T0 + 2) }).await.unwrap();
    assert_eq!(s.cancel_workflow(wf, T0 + 3, None).await.unwrap(), 3);
    assert!(s.get(ids["a"]).await.unwrap().cancel_requested);
    for k in ["b", "c"] {
        assert_eq!(s.get(ids[k]).await.unwrap().status, Status::Cancelled, "{k}");
    }
    assert_eq!(s.get(ids["d"]).await.unwrap().status, Status::Succeeded, "finished tasks keep their end");
    assert!(complete(&*s, ids["a"], &token(&running[0]), ok("1"), T0 + 4).await);
    assert_eq!(s.get(ids["a"]).await.unwrap().status, Status::Cancelled);
    let record = s.workflow(wf).await.unwrap();
    assert_eq!(record.tasks.len(), 4);
    assert!(matches!(s.workflow(Uuid::now_v7()).await, Err(StoreError::WorkflowNotFound(_))));
    assert!(matches!(s.cancel_workflow(Uuid::now_v7(), T0, None).await, Err(StoreError::WorkflowNotFound(_))));
}

pub async fn a_workflow_reads_in_pages_with_its_counts(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    let (wf, ids) = submit_workflow(
        &*s,
        &[("a", "a", &[]), ("b", "b", &[("a", on(Success))]), ("c", "c", &[("b", on(Success))]), ("d", "d", &[])],
    )
    .await;
    run_one(&*s, "a", ok("1"), T0 + 1).await;
    let page = |after, limit| s.workflow_page(WorkflowQuery { id: wf, after, limit });
    let first = page(None, 2).await.unwrap();
    assert_eq!(first.name, "wf");
    let want: std::collections::BTreeMap<Status, usize> =
        [(Status::Succeeded, 1), (Status::Queued, 2), (Status::Pending, 1)].into_iter().collect();
    assert_eq!(first.counts, want);
    assert_eq!(first.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [ids["a"], ids["b"]]);
    assert_eq!(first.next_after, Some(ids["b"]));
    assert_eq!(first.first_open, Some(ids["b"]));
    let second = page(first.next_after, 2).await.unwrap();
    assert_eq!(second.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [ids["c"], ids["d"]]);
    assert_eq!(second.next_after, None);
    let all = page(None, 10).await.unwrap();
    assert_eq!((all.tasks.len(), all.next_after), (4, None));
    assert!(matches!(
        s.workflow_page(WorkflowQuery { id: Uuid::now_v7(), after: None, limit: 10 }).await,
        Err(StoreError::WorkflowNotFound(_))
    ));
}

pub async fn waiting_tasks_survive_a_restart(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    // The store has already run at a later time than the workflow was
    // stamped with: its tasks are restamped, and the waiting ones still wait.
    s.tick(T0 + 50).await.unwrap();
    let (_, ids) =
        submit_workflow(&*s, &[("a", "a", &[]), ("b", "b", &[("a", on(Success))]), ("c", "c", &[("b", on(Success))])])
            .await;
    let running = s.lease(lease(1, 30_000, T0)).await.unwrap();
    drop(s);
    let s = f.reopen(T0 + 100);
    assert!(complete(&*s, ids["a"], &token(&running[0]), ok(r#"{"n":7}"#), T0 + 200).await);
    let b = &s.lease(lease(10, 30_000, T0 + 300)).await.unwrap();
    assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), [ids["b"]]);
    let parents = b[0].parents.as_ref().expect("a leased child sees its parents");
    assert_eq!(parents["a"].status, Status::Succeeded);
    assert_eq!(parents["a"].result.as_ref().map(|r| r.get()), Some(r#"{"n":7}"#));
    assert!(complete(&*s, ids["b"], &token(&b[0]), fail(false), T0 + 400).await);
    let c = s.get(ids["c"]).await.unwrap();
    assert_eq!((c.status, c.error.map(|e| e.kind)), (Status::Skipped, Some(ErrorKind::Dependency)));
    let h: Vec<_> = s.history(ids["c"]).await.unwrap().iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(h, [(None, Status::Pending), (Some(Status::Pending), Status::Skipped)]);
}

pub async fn dependencies_on_tasks_submitted_earlier(f: &mut impl Factory) {
    let s = f.open(T0);
    let parent = submit_one(&*s, r#"{"name":"extract"}"#).await;
    let after = |name: &str, on: &str| format!(r#"{{"name":"{name}","depends_on":[{{"task":"{parent}"{on}}}]}}"#);
    // Waiting for a parent that has not ended: pending until it does.
    let load = submit_one(&*s, &after("load", "")).await;
    let cleanup = submit_one(&*s, &after("cleanup", r#","on":"failure""#)).await;
    assert_eq!(s.get(load).await.unwrap().status, Status::Pending);
    let got = s.lease(LeaseParams { names: Some(vec!["extract".into()]), ..lease(1, 30_000, T0) }).await.unwrap();
    assert!(complete(&*s, parent, &token(&got[0]), ok(r#"{"rows":3}"#), T0 + 1).await);
    assert_eq!(s.get(load).await.unwrap().status, Status::Queued, "released when the parent succeeded");
    let skipped = s.get(cleanup).await.unwrap();
    assert_eq!((skipped.status, skipped.error.map(|e| e.kind)), (Status::Skipped, Some(ErrorKind::Dependency)));
    // On a parent that has already ended: judged at once, in the answer too.
    let late = s.submit(vec![spec(&after("report", ""))]).await.unwrap().remove(0).task;
    assert_eq!(late.status, Status::Queued, "a finished parent resolves at once");
    let never = s.submit(vec![spec(&after("alert", r#","on":"failure""#))]).await.unwrap().remove(0).task;
    assert_eq!(never.status, Status::Skipped, "a condition that can no longer hold skips at once");
    let expr = s.submit(vec![spec(&after("big", r#","on":{"expr":"result.rows > 2"}"#))]).await.unwrap();
    assert_eq!(expr[0].task.status, Status::Queued, "an expression reads the parent's result");
    // A parent that does not exist satisfies nothing.
    let orphan = spec(&format!(r#"{{"name":"orphan","depends_on":[{{"task":"{}"}}]}}"#, Uuid::now_v7()));
    assert_eq!(s.submit(vec![orphan]).await.unwrap()[0].task.status, Status::Skipped);
    // The leased child sees its parent's outcome, keyed by the parent's id.
    let leased = s.lease(LeaseParams { names: Some(vec!["report".into()]), ..lease(1, 30_000, T0 + 2) }).await.unwrap();
    let parents = leased[0].parents.as_ref().expect("its parents");
    assert_eq!(parents[&parent.to_string()].status, Status::Succeeded);
    // Waiting children survive a restart.
    let second = submit_one(&*s, r#"{"name":"second"}"#).await;
    let waiting = submit_one(&*s, &format!(r#"{{"name":"third","depends_on":[{{"task":"{second}"}}]}}"#)).await;
    drop(s);
    let s = f.reopen(T0 + 10);
    let got = s.lease(LeaseParams { names: Some(vec!["second".into()]), ..lease(1, 30_000, T0 + 10) }).await.unwrap();
    assert!(complete(&*s, second, &token(&got[0]), ok("null"), T0 + 11).await);
    assert_eq!(s.get(waiting).await.unwrap().status, Status::Queued);
}

pub async fn undecided_approvals_time_out(f: &mut impl Factory) {
    use OutcomeCondition::*;
    let s = f.open(T0);
    let (_, ids) = submit_workflow(
        &*s,
        &[
            ("build", "build", &[]),
            ("ok-1s", "approval", &[("build", on(Success))]),
            ("ship", "ship", &[("ok-1s", on(Success))]),
            ("escalate", "escalate", &[("ok-1s", on(Failure))]),
        ],
    )
    .await;
    run_one(&*s, "build", ok("1"), T0 + 10).await;
    // The clock of its decision starts when it became queued (T0 + 11).
    assert_eq!(s.tick(T0 + 1_010).await.unwrap().timed_out, 0);
    assert_eq!(s.tick(T0 + 1_011).await.unwrap().timed_out, 1);
    let ok = s.get(ids["ok-1s"]).await.unwrap();
    assert_eq!((ok.status, ok.error.map(|e| e.kind)), (Status::TimedOut, Some(ErrorKind::Timeout)));
    assert_eq!(s.get(ids["ship"]).await.unwrap().status, Status::Skipped);
    assert_eq!(s.get(ids["escalate"]).await.unwrap().status, Status::Queued, "a timeout counts as a failure");
    let late = s.approve(ids["ok-1s"], Approval { approved: true, by: None, comment: None }, T0 + 1_100).await;
    assert!(matches!(late, Err(StoreError::InvalidTransition { .. })));
}

fn schedule_record(name: &str, next: Option<Millis>, version: i64) -> ScheduleRecord {
    ScheduleRecord {
        name: name.into(),
        spec: format!(r#"{{"name":"{name}"}}"#),
        timing: "every 1s".into(),
        enabled: true,
        anchor: T0,
        next_fire_at: next,
        last_fired_at: None,
        last_task: None,
        version,
        created_at: T0,
        updated_at: T0,
    }
}

fn slot_task(name: &str, slot: Millis) -> quern_core::NewTask {
    let mut t = spec(r#"{"name": "tick"}"#);
    t.idempotency_key = Some(format!("{}{slot:015}", quern_core::schedule::run_key_prefix(name)));
    t
}

fn slot(name: &str, consumed: Millis, next: Millis, skip_if_running: bool) -> Fire {
    Fire { name: name.into(), advance: Some((consumed, Some(next))), skip_if_running, task: slot_task(name, consumed) }
}

pub async fn schedule_writes_are_versioned(f: &mut impl Factory) {
    let s = f.open(T0);
    let put = |expected| ScheduleWrite::Put { record: schedule_record("a", Some(T0 + 1_000), 0), expected };
    s.write_schedules(vec![put(None)]).await.unwrap();
    assert_eq!(s.schedules(Some("a".into())).await.unwrap()[0].version, 1);
    // A second create, or a replace of a version that is gone, changes nothing.
    assert!(matches!(s.write_schedules(vec![put(None)]).await, Err(StoreError::ScheduleConflict(n)) if n == "a"));
    let both = vec![ScheduleWrite::Put { record: schedule_record("b", None, 0), expected: None }, put(Some(7))];
    assert!(matches!(s.write_schedules(both).await, Err(StoreError::ScheduleConflict(_))));
    assert_eq!(s.schedules(None).await.unwrap().len(), 1, "all or nothing");
    s.write_schedules(vec![put(Some(1))]).await.unwrap();
    assert_eq!(s.schedules(None).await.unwrap()[0].version, 2);
    assert!(matches!(s.schedules(Some("zzz".into())).await, Err(StoreError::ScheduleNotFound(_))));
    s.write_schedules(vec![ScheduleWrite::Delete { name: "a".into(), expected: 2 }]).await.unwrap();
    assert!(s.schedules(None).await.unwrap().is_empty());
}

pub async fn a_slot_fires_once(f: &mut impl Factory) {
    let s = f.open(T0);
    let next = T0 + 1_000;
    s.write_schedules(vec![ScheduleWrite::Put { record: schedule_record("a", Some(next), 0), expected: None }])
        .await
        .unwrap();
    let due = s.due_schedules(T0, 100).await.unwrap();
    assert!(due.due.is_empty());
    assert_eq!(due.next_due, Some(next));
    assert_eq!(s.due_schedules(next, 100).await.unwrap().due.len(), 1);
    // Two nodes plan the same slot; one transaction wins, the other is stale.
    let out =
        s.fire_schedules(vec![slot("a", next, next + 1_000, false), slot("a", next, next + 1_000, false)], next).await;
    let out = out.unwrap();
    assert!(matches!(out[0], FireOutcome::Fired(_)));
    assert!(matches!(out[1], FireOutcome::Stale));
    let record = &s.schedules(Some("a".into())).await.unwrap()[0];
    assert_eq!((record.next_fire_at, record.last_fired_at), (Some(next + 1_000), Some(next)));
    let runs = s.schedule_runs("a".into(), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(Some(runs[0].id), record.last_task);
    // A slot whose task exists already (the key) does not fire again.
    let mut again = slot("a", next + 1_000, next + 2_000, false);
    again.task = slot_task("a", next);
    assert!(matches!(s.fire_schedules(vec![again], next + 1_000).await.unwrap()[0], FireOutcome::Duplicate));
    assert_eq!(s.schedule_runs("a".into(), 10).await.unwrap().len(), 1);
    // Runs of another schedule whose name starts alike are not its runs.
    s.write_schedules(vec![ScheduleWrite::Put { record: schedule_record("ab", Some(next), 0), expected: None }])
        .await
        .unwrap();
    s.fire_schedules(vec![slot("ab", next, next + 1_000, false)], next + 1_000).await.unwrap();
    assert_eq!(s.schedule_runs("a".into(), 10).await.unwrap().len(), 1);
    // A manual trigger creates a task and leaves the next slot alone.
    let mut manual = slot("a", 0, 0, false);
    manual.advance = None;
    manual.task = slot_task("a", next + 1_500);
    assert!(matches!(s.fire_schedules(vec![manual], next + 1_500).await.unwrap()[0], FireOutcome::Fired(_)));
    assert_eq!(s.schedules(Some("a".into())).await.unwrap()[0].next_fire_at, Some(next + 2_000));
    let runs = s.schedule_runs("a".into(), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[0].created_at >= runs[1].created_at, "newest first");
}

pub async fn overlapping_slots_can_be_skipped(f: &mut impl Factory) {
    let s = f.open(T0);
    s.write_schedules(vec![ScheduleWrite::Put { record: schedule_record("a", Some(T0), 0), expected: None }])
        .await
        .unwrap();
    assert!(matches!(
        s.fire_schedules(vec![slot("a", T0, T0 + 1_000, true)], T0).await.unwrap()[0],
        FireOutcome::Fired(_)
    ));
    // The run is still queued: the next slot passes without a task.
    let out = s.fire_schedules(vec![slot("a", T0 + 1_000, T0 + 2_000, true)], T0 + 1_000).await.unwrap();
    assert!(matches!(out[0], FireOutcome::Skipped));
    assert_eq!(s.schedules(Some("a".into())).await.unwrap()[0].next_fire_at, Some(T0 + 2_000));
    let run = s.lease(lease(1, 30_000, T0 + 1_500)).await.unwrap().remove(0);
    assert!(complete(&*s, run.id, &token(&run), ok("1"), T0 + 1_600).await);
    let out = s.fire_schedules(vec![slot("a", T0 + 2_000, T0 + 3_000, true)], T0 + 2_000).await.unwrap();
    assert!(matches!(out[0], FireOutcome::Fired(_)), "the previous run ended");
    // A disabled schedule fires nothing.
    let mut off = s.schedules(Some("a".into())).await.unwrap().remove(0);
    let version = off.version;
    off.enabled = false;
    s.write_schedules(vec![ScheduleWrite::Put { record: off, expected: Some(version) }]).await.unwrap();
    assert!(s.due_schedules(T0 + 5_000, 10).await.unwrap().due.is_empty());
    let out = s.fire_schedules(vec![slot("a", T0 + 3_000, T0 + 4_000, false)], T0 + 3_000).await.unwrap();
    assert!(matches!(out[0], FireOutcome::Stale));
}

pub async fn schedules_survive_a_restart(f: &mut impl Factory) {
    let s = f.open(T0);
    s.write_schedules(vec![ScheduleWrite::Put { record: schedule_record("a", Some(T0), 0), expected: None }])
        .await
        .unwrap();
    s.fire_schedules(vec![slot("a", T0, T0 + 1_000, false)], T0).await.unwrap();
    drop(s);
    let s = f.reopen(T0 + 10);
    let record = &s.schedules(Some("a".into())).await.unwrap()[0];
    assert_eq!((record.next_fire_at, record.version), (Some(T0 + 1_000), 2));
    assert_eq!(s.schedule_runs("a".into(), 10).await.unwrap().len(), 1);
}

fn event(kind: &str, source: &str, target: Option<&str>) -> NewEvent {
    NewEvent { kind: kind.into(), source: source.into(), target: target.map(Into::into), payload: r#"{"n":1}"#.into() }
}

async fn read(s: &dyn Store, after: Option<u64>, filter: EventFilter) -> EventPage {
    s.read_events(EventQuery { after, filter, limit: 1_000 }).await.unwrap()
}

fn kinds(page: &EventPage) -> Vec<&str> {
    page.events.iter().map(|e| e.kind.as_str()).collect()
}

pub async fn events_are_kept_in_order_and_filtered(f: &mut impl Factory) {
    let s = f.open(T0);
    let first = s.publish(vec![event("email.processed", "email-agent", None)], T0).await.unwrap();
    assert_eq!(first[0].offset, 1);
    let more = s
        .publish(
            vec![
                event("email.failed", "email-agent", Some("support-bot")),
                event("alert.raised", "aiops", Some("pager")),
            ],
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(more.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![2, 3]);
    let all = read(&*s, Some(0), EventFilter::default()).await;
    assert_eq!(kinds(&all), vec!["email.processed", "email.failed", "alert.raised"]);
    assert_eq!((all.next_after, all.head), (3, 3));
    assert_eq!(all.events[0].payload.get(), r#"{"n":1}"#);
    let emails = read(&*s, Some(0), EventFilter { types: vec!["email.*".into()], ..EventFilter::default() }).await;
    assert_eq!(kinds(&emails), vec!["email.processed", "email.failed"]);
    let bot = read(&*s, Some(0), EventFilter { target: Some("support-bot".into()), ..EventFilter::default() }).await;
    assert_eq!(kinds(&bot), vec!["email.processed", "email.failed"], "broadcasts and its own, not the pager's");
    let aiops = read(&*s, Some(1), EventFilter { source: Some("aiops".into()), ..EventFilter::default() }).await;
    assert_eq!(kinds(&aiops), vec!["alert.raised"]);
    let none = read(&*s, Some(0), EventFilter { types: vec!["nothing.*".into()], ..EventFilter::default() }).await;
    assert!(none.events.is_empty());
    assert_eq!(none.next_after, 3, "a filter that matched nothing still moves the reader on");
    let page = s.read_events(EventQuery { after: Some(0), filter: EventFilter::default(), limit: 2 }).await.unwrap();
    assert_eq!((page.events.len(), page.next_after), (2, 2));
    drop(s);
    let s = f.reopen(T0 + 10);
    let next = s.publish(vec![event("after.restart", "x", None)], T0 + 10).await.unwrap();
    assert_eq!(next[0].offset, 4, "offsets go on after a restart, without a gap");
    assert_eq!(read(&*s, Some(0), EventFilter::default()).await.events.len(), 4);
}

pub async fn task_moves_publish_their_events_in_order(f: &mut impl Factory) {
    let s = f.open(T0);
    let id =
        submit_one(&*s, r#"{"name": "job", "max_attempts": 2, "retry": {"backoff": "fixed", "initial_ms": 10}}"#).await;
    let t = s.lease(lease(1, 30_000, T0 + 1)).await.unwrap().remove(0);
    assert!(complete(&*s, id, &token(&t), fail(true), T0 + 2).await);
    s.tick(T0 + 20).await.unwrap();
    let t = s.lease(lease(1, 30_000, T0 + 21)).await.unwrap().remove(0);
    assert!(complete(&*s, id, &token(&t), ok("1"), T0 + 22).await);
    let filter = EventFilter { types: vec!["task.*".into()], ..EventFilter::default() };
    let page = read(&*s, Some(0), filter).await;
    assert_eq!(
        kinds(&page),
        vec!["task.queued", "task.started", "task.retrying", "task.queued", "task.started", "task.succeeded"]
    );
    for e in &page.events {
        let p: serde_json::Value = serde_json::from_str(e.payload.get()).unwrap();
        assert_eq!(p["task"], id.to_string());
        assert_eq!((p["name"].as_str(), e.source.as_str()), (Some("job"), "quern"));
    }
    let last: serde_json::Value = serde_json::from_str(page.events[5].payload.get()).unwrap();
    assert_eq!((last["status"].as_str(), last["attempt"].as_u64()), (Some("succeeded"), Some(2)));
    // A workflow publishes its own end once its last task ends.
    let (wf, ids) =
        submit_workflow(&*s, &[("a", "wa", &[]), ("b", "wb", &[("a", on(OutcomeCondition::Success))])]).await;
    run_one(&*s, "wa", ok("1"), T0 + 30).await;
    assert!(
        kinds(&read(&*s, Some(page.next_after), EventFilter::default()).await)
            .iter()
            .all(|k| !k.starts_with("workflow."))
    );
    run_one(&*s, "wb", fail(false), T0 + 40).await;
    let wf_events =
        read(&*s, Some(0), EventFilter { types: vec!["workflow.*".into()], ..EventFilter::default() }).await;
    assert_eq!(kinds(&wf_events), vec!["workflow.failed"]);
    let p: serde_json::Value = serde_json::from_str(wf_events.events[0].payload.get()).unwrap();
    assert_eq!(p["workflow"], wf.to_string());
    assert_eq!(p["counts"], serde_json::json!({"succeeded": 1, "failed": 1}));
    assert!(ids.contains_key("b"));
}

pub async fn purged_events_are_reported_not_skipped(f: &mut impl Factory) {
    let s = f.open(T0);
    for i in 0..5 {
        s.publish(vec![event("tick", "x", None)], T0 + i).await.unwrap();
    }
    // Keep the newest 2 (whole segments: one per publish here).
    assert_eq!(s.purge_events(T0 - 1, 2).await.unwrap(), 3);
    assert!(matches!(
        s.read_events(EventQuery { after: Some(0), filter: EventFilter::default(), limit: 10 }).await,
        Err(StoreError::OffsetExpired { after: 0, earliest: 4 })
    ));
    let kept = read(&*s, Some(3), EventFilter::default()).await;
    assert_eq!(kept.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(read(&*s, None, EventFilter::default()).await.events.len(), 2, "no offset: from the earliest kept");
    assert_eq!(s.purge_events(T0 + 100, 1_000).await.unwrap(), 1, "by age; the newest segment stays");
    let empty = read(&*s, Some(5), EventFilter::default()).await;
    assert_eq!((empty.events.len(), empty.head), (0, 5));
    assert_eq!(s.publish(vec![event("tick", "x", None)], T0 + 200).await.unwrap()[0].offset, 6);
}

pub async fn a_role_has_one_leader_until_its_term_runs_out(f: &mut impl Factory) {
    let s = f.open(T0);
    let lead = |node: &str, now: Millis| s.lead("webhooks".into(), node.into(), now, 1_000);
    assert!(lead("a", T0).await.unwrap());
    assert!(!lead("b", T0 + 500).await.unwrap(), "a holds it");
    assert!(lead("a", T0 + 900).await.unwrap(), "the holder renews");
    assert!(!lead("b", T0 + 1_800).await.unwrap(), "renewed until T0 + 1900");
    assert!(lead("b", T0 + 1_901).await.unwrap(), "a stopped renewing");
    assert!(!lead("a", T0 + 1_950).await.unwrap());
    assert!(s.lead("other".into(), "a".into(), T0 + 1_950, 1_000).await.unwrap(), "roles are apart");
}

pub async fn a_success_after_a_failed_attempt_clears_the_error(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"a","max_attempts":2,"retry":{"initial_ms":0,"max_ms":0}}"#).await;
    let t1 = &s.lease(lease(1, 30_000, T0)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t1), fail(true), T0 + 1).await);
    assert_eq!(s.get(id).await.unwrap().error.map(|e| e.kind), Some(ErrorKind::Exception));
    let t2 = &s.lease(lease(1, 30_000, T0 + 2)).await.unwrap()[0];
    assert!(complete(&*s, id, &token(t2), ok(r#"{"n":2}"#), T0 + 3).await);
    let done = s.get(id).await.unwrap();
    assert_eq!((done.status, done.error.is_none()), (Status::Succeeded, true), "a success carries no error");
    assert_eq!(done.result.map(|r| r.get().to_owned()).as_deref(), Some(r#"{"n":2}"#));
}

pub async fn task_types_keep_their_latest_declaration(f: &mut impl Factory) {
    let s = f.open(T0);
    let t = |name: &str, schema: Option<&str>, at: Millis| TaskTypeRecord {
        name: name.into(),
        description: Some(format!("{name} at {at}")),
        input_schema: schema.map(str::to_owned),
        defaults: schema.map(|_| format!(r#"{{"max_attempts":{}}}"#, at - T0 + 1)),
        declared_at: at,
    };
    s.put_task_types(vec![t("email", Some(r#"{"type":"object"}"#), T0), t("free", None, T0)]).await.unwrap();
    s.put_task_types(vec![t("email", Some(r#"{"type":"string"}"#), T0 + 10)]).await.unwrap();
    s.put_task_types(vec![t("email", None, T0 + 5)]).await.unwrap();
    let got = s.task_types().await.unwrap();
    assert_eq!(got, [t("email", Some(r#"{"type":"string"}"#), T0 + 10), t("free", None, T0)], "the latest wins");
    drop(s);
    assert_eq!(f.reopen(T0 + 20).task_types().await.unwrap().len(), 2, "they survive a restart");
}

pub async fn client_moves_name_who_made_them(f: &mut impl Factory) {
    let s = f.open(T0);
    let id = submit_one(&*s, r#"{"name":"named"}"#).await;
    s.cancel(id, T0 + 1, Some("ops".into())).await.unwrap();
    s.retry(id, T0 + 2, None).await.unwrap();
    let history = s.history(id).await.unwrap();
    let by: Vec<Option<&str>> = history.iter().map(|e| e.by.as_deref()).collect();
    assert_eq!(by, [None, Some("ops"), None], "{history:?}");
    drop(s);
    let again = f.reopen(T0 + 3).history(id).await.unwrap();
    assert_eq!(again[1].by.as_deref(), Some("ops"), "it survives a restart");
}

pub async fn tokens_keep_their_names_for_ever_and_revoke_once(f: &mut impl Factory) {
    let s = f.open(T0);
    let t = |name: &str, hash: &str| TokenRecord {
        name: name.into(),
        hash: hash.into(),
        role: Role::Producer,
        queues: vec!["billing.*".into()],
        approve: true,
        shell: false,
        created_at: T0,
        expires_at: Some(T0 + 1_000),
        revoked_at: None,
        rate_per_s: Some(50),
        max_body_bytes: Some(4_096),
    };
    s.create_token(t("a", "h1")).await.unwrap();
    assert_eq!(s.create_token(t("a", "h2")).await, Err(StoreError::TokenExists("a".into())));
    assert_eq!(s.tokens().await.unwrap(), [t("a", "h1")]);
    let revoked = s.revoke_token("a".into(), T0 + 5).await.unwrap();
    assert_eq!(revoked.map(|r| r.revoked_at), Some(Some(T0 + 5)));
    let again = s.revoke_token("a".into(), T0 + 9).await.unwrap();
    assert_eq!(again.map(|r| r.revoked_at), Some(Some(T0 + 5)), "the first revocation stands");
    assert_eq!(s.revoke_token("none".into(), T0).await.unwrap(), None);
    assert!(s.create_token(t("a", "h3")).await.is_err(), "a revoked token keeps its name");
    drop(s);
    let kept = f.reopen(T0 + 20).tokens().await.unwrap();
    assert_eq!(kept, [TokenRecord { revoked_at: Some(T0 + 5), ..t("a", "h1") }], "they survive a restart");
}

pub async fn the_audit_log_appends_filters_pages_and_purges(f: &mut impl Factory) {
    let s = f.open(T0);
    let e = |at: Millis, actor: &str, action: &str| AuditEntry {
        at,
        actor: actor.into(),
        action: action.into(),
        target: "t".into(),
        detail: Some(r#"{"k":1}"#.into()),
    };
    for (i, (actor, action)) in
        [("root", "token.create"), ("ops", "queue.pause"), ("root", "token.revoke"), ("ops", "task_x.y")]
            .into_iter()
            .enumerate()
    {
        s.audit(e(T0 + i as Millis, actor, action)).await.unwrap();
    }
    let all = s.audit_log(AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(actions, ["task_x.y", "token.revoke", "queue.pause", "token.create"], "newest first");
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    let tokens = s.audit_log(AuditQuery { action: Some("token.".into()), limit: 10, ..AuditQuery::default() });
    assert_eq!(tokens.await.unwrap().len(), 2);
    let literal = s.audit_log(AuditQuery { action: Some("task_".into()), limit: 10, ..AuditQuery::default() });
    assert_eq!(literal.await.unwrap().len(), 1, "`_` is matched as itself");
    let ops = s.audit_log(AuditQuery { actor: Some("ops".into()), limit: 1, ..AuditQuery::default() }).await.unwrap();
    assert_eq!(ops.len(), 1);
    let next = AuditQuery { actor: Some("ops".into()), before: Some(ops[0].seq), limit: 10, action: None };
    assert_eq!(s.audit_log(next).await.unwrap()[0].entry.action, "queue.pause", "the next page");
    assert_eq!(s.purge_audit(T0 + 2).await.unwrap(), 2);
    assert_eq!(s.audit_log(AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap().len(), 2);
}

pub async fn workers_keep_their_latest_record(f: &mut impl Factory) {
    let s = f.open(T0);
    let w = |id: &str, in_flight: u64, at: Millis| WorkerRecord {
        id: id.into(),
        queues: vec!["default".into()],
        task_types: vec![format!("{id}.job")],
        leases: (id == "a").then(|| vec![format!("{id}.*")]),
        in_flight,
        last_seen: at,
    };
    s.put_workers(vec![w("a", 1, T0), w("b", 2, T0 + 1)]).await.unwrap();
    s.put_workers(vec![w("a", 5, T0 + 10)]).await.unwrap();
    s.put_workers(vec![w("a", 9, T0 + 5)]).await.unwrap();
    let mut got = s.workers(T0).await.unwrap();
    got.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(got, [w("a", 5, T0 + 10), w("b", 2, T0 + 1)], "the latest record wins");
    let recent = s.workers(T0 + 2).await.unwrap();
    assert_eq!(recent, [w("a", 5, T0 + 10)], "only those heard from since");
}

pub async fn group_state_is_replaced_by_version(f: &mut impl Factory) {
    let s = f.open(T0);
    assert_eq!(s.group_state("g".into()).await.unwrap(), None, "no state before the first read");
    let mut state = GroupState { read_upto: 10, ..GroupState::default() };
    state.inflight.insert(8, ("m1".into(), T0 + 30_000));
    assert!(s.put_group_state("g".into(), None, state.clone(), T0).await.unwrap());
    assert!(!s.put_group_state("g".into(), None, GroupState::default(), T0).await.unwrap(), "it exists now");
    let (v, got) = s.group_state("g".into()).await.unwrap().unwrap();
    assert_eq!(got, state);
    assert_eq!(s.group_cursor("g".into()).await.unwrap(), Some(7), "the cursor stops below what is out");
    state.inflight.clear();
    assert!(s.put_group_state("g".into(), Some(v), state.clone(), T0 + 1).await.unwrap());
    assert!(!s.put_group_state("g".into(), Some(v), state.clone(), T0 + 2).await.unwrap(), "a stale version");
    assert_eq!(s.group_cursor("g".into()).await.unwrap(), Some(10), "acked: the cursor moves up");
    assert_eq!(s.group_state("other".into()).await.unwrap(), None, "groups are apart");
}

/// The counts of `queues()`, and those of every task listed, by queue and
/// status: they must agree.
async fn counts_both_ways(s: &dyn Store) -> (BTreeMap<(String, Status), u64>, BTreeMap<(String, Status), u64>) {
    let mut told = BTreeMap::new();
    for q in s.queues().await.unwrap() {
        for (status, n) in q.counts {
            if n > 0 {
                told.insert((q.name.clone(), status), n);
            }
        }
    }
    let mut counted = BTreeMap::new();
    for t in s.list(ListQuery { limit: 1000, ..Default::default() }).await.unwrap().tasks {
        *counted.entry((t.queue, t.status)).or_insert(0) += 1;
    }
    (told, counted)
}

pub async fn queue_counts_follow_every_move(f: &mut impl Factory) {
    let s = f.open(T0);
    for _ in 0..6 {
        submit_one(&*s, r#"{"name":"a","max_attempts":2}"#).await;
    }
    submit_one(&*s, r#"{"name":"b","queue":"other"}"#).await;
    submit_one(&*s, r#"{"name":"late","delay_ms":60000}"#).await;
    let cancelled = submit_one(&*s, r#"{"name":"c","queue":"other"}"#).await;
    s.cancel(cancelled, T0 + 1, None).await.unwrap();
    let leased = s.lease(lease(4, 30_000, T0 + 2)).await.unwrap();
    assert_eq!(leased.len(), 4);
    assert!(complete(&*s, leased[0].id, &token(&leased[0]), ok("1"), T0 + 3).await);
    assert!(complete(&*s, leased[1].id, &token(&leased[1]), fail(false), T0 + 3).await);
    assert!(complete(&*s, leased[2].id, &token(&leased[2]), fail(true), T0 + 3).await, "goes back for a retry");
    let (told, counted) = counts_both_ways(&*s).await;
    assert_eq!(told, counted, "after submits, a cancel, a lease and three ends");
    assert_eq!(told.get(&("default".to_owned(), Status::Running)), Some(&1));
    s.tick(T0 + 120_000).await.unwrap();
    s.purge(T0 + 100, 100).await.unwrap();
    let (told, counted) = counts_both_ways(&*s).await;
    assert_eq!(told, counted, "after timers and a purge");
    drop(s);
    let (told, counted) = counts_both_ways(&*f.reopen(T0 + 120_001)).await;
    assert_eq!(told, counted, "after a restart");
}
