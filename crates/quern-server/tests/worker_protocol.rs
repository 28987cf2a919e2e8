//! The worker's side against the real binary: lease order, delays, long
//! polls, heartbeats, completions and their fencing tokens, retries with
//! backoff, server-side timeouts, expired leases, cancel, manual retry and
//! paused queues.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, bounded, id_of, moves, parse_rfc3339_ms, rfc3339_from_now, token_of};

const LIMIT: Duration = Duration::from_secs(30);
const SOON: Duration = Duration::from_secs(10);

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn lease_order_is_priority_then_submit_order() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let mut ids = Vec::new();
        for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 10), ("e", 5), ("f", -3)] {
            let task = api.submit(json!({"name": name, "priority": priority})).await;
            assert_eq!(task["priority"], priority);
            ids.push(name);
        }
        let mut order = Vec::new();
        for _ in 0..ids.len() {
            let tasks = api.lease("w", 1, 0, 30_000).await;
            assert_eq!(tasks.len(), 1, "{tasks:?}");
            order.push(tasks[0]["name"].as_str().expect("name").to_owned());
        }
        assert_eq!(order, ["d", "b", "e", "a", "c", "f"]);
        assert!(api.lease("w", 10, 0, 30_000).await.is_empty());

        // Same order when one lease takes several.
        for (name, priority) in [("x", 1), ("y", 2), ("z", 1)] {
            api.submit(json!({"name": name, "priority": priority})).await;
        }
        let many = api.lease("w", 10, 0, 30_000).await;
        let names: Vec<_> = many.iter().map(|t| t["name"].as_str().unwrap_or("")).collect();
        assert_eq!(names, ["y", "x", "z"]);
        for task in &many {
            assert_eq!(task["status"], "running");
            assert_eq!(task["attempt"], 1);
            token_of(task);
        }
    })
    .await;
}

#[tokio::test]
async fn lease_takes_only_from_the_named_queues() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        api.submit(json!({"name": "x", "queue": "emails"})).await;
        assert!(api.lease("w", 10, 0, 30_000).await.is_empty(), "default queue is empty");
        let got = api.lease_from("w", &["other", "emails"], 10, 0, 30_000).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["queue"], "emails");
    })
    .await;
}

#[tokio::test]
async fn delayed_task_is_pending_then_queued_and_leasable() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let start = Instant::now();
        let task = api.submit(json!({"name": "later", "delay_ms": 300})).await;
        let id = id_of(&task);
        assert_eq!(task["status"], "pending", "{task}");
        let created = parse_rfc3339_ms(task["created_at"].as_str().expect("created_at"));
        let run_at = parse_rfc3339_ms(task["run_at"].as_str().expect("run_at"));
        assert!((run_at - created - 300).abs() <= 5, "run_at {run_at} vs created {created}");

        assert!(api.lease("w", 10, 0, 30_000).await.is_empty(), "a delayed task is not leasable");
        let queued = api.wait_status(&id, &["queued"], SOON).await;
        assert!(start.elapsed() >= Duration::from_millis(250), "queued after only {:?}", start.elapsed());
        assert_eq!(queued["attempt"], 0);
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), id);
        let history = api.history(&id).await;
        assert_eq!(moves(&history), pairs(&[("-", "pending"), ("pending", "queued"), ("queued", "running")]));

        // The same with an absolute run_at.
        let at = api.submit(json!({"name": "at", "run_at": rfc3339_from_now(400)})).await;
        assert_eq!(at["status"], "pending", "{at}");
        assert!(api.lease("w", 10, 0, 30_000).await.is_empty());
        api.wait_status(&id_of(&at), &["queued"], SOON).await;
        // And one in the past is queued at once.
        let past = api.submit(json!({"name": "past", "run_at": rfc3339_from_now(-60_000)})).await;
        assert_eq!(past["status"], "queued", "{past}");
    })
    .await;
}

#[tokio::test]
async fn parked_lease_wakes_when_a_delay_elapses() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "later", "delay_ms": 500})).await);
        let start = Instant::now();
        let tasks = api.lease("w", 1, 10_000, 30_000).await;
        let took = start.elapsed();
        assert_eq!(tasks.len(), 1, "the parked lease got the task once due");
        assert_eq!(id_of(&tasks[0]), id);
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
            "answered after {took:?} for a 500 ms delay"
        );
    })
    .await;
}

#[tokio::test]
async fn long_poll_lease_wakes_on_submit() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        // Nothing to do: the wait elapses with no tasks.
        let start = Instant::now();
        assert!(api.lease("w", 5, 300, 30_000).await.is_empty());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "empty lease with wait_ms 300 took {took:?}"
        );

        let parked = {
            let api = api.clone();
            tokio::spawn(async move {
                let tasks = api.lease("w", 5, 10_000, 30_000).await;
                (tasks, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!parked.is_finished(), "the lease did not park");
        let id = api.submit_named("wake.up").await;
        let submitted_at = Instant::now();
        let (tasks, answered_at) = parked.await.expect("parked lease");
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(id_of(&tasks[0]), id);
        let lag = answered_at.saturating_duration_since(submitted_at);
        assert!(lag < Duration::from_secs(1), "the parked lease answered {lag:?} after the submit");
    })
    .await;
}

#[tokio::test]
async fn retries_with_fixed_backoff_then_success() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(
            &api.submit(json!({
                "name": "flaky",
                "max_attempts": 3,
                "retry": {"backoff": "fixed", "initial_ms": 300, "max_ms": 300, "jitter": 0.0},
            }))
            .await,
        );
        let mut current = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&current), id);
        assert_eq!(current["attempt"], 1);
        for attempt in 1..=2 {
            let failed = api.fail("w", &id, &token_of(&current), &format!("boom {attempt}"), true).await;
            assert_eq!(failed["ok"], true, "{failed}");
            let failed_at = Instant::now();
            let task = api.task(&id).await;
            assert_eq!(task["status"], "pending", "waiting out the backoff: {task}");
            assert_eq!(task["error"]["kind"], "exception", "{task}");
            assert_eq!(task["error"]["message"], format!("boom {attempt}"), "{task}");
            assert!(api.lease("w", 1, 0, 30_000).await.is_empty(), "leased during the backoff");
            let mut next = api.lease("w", 1, 10_000, 30_000).await;
            let waited = failed_at.elapsed();
            assert_eq!(next.len(), 1, "the task came back after its backoff");
            assert!(waited >= Duration::from_millis(250), "re-leased {waited:?} after the failure");
            assert!(waited < Duration::from_secs(3), "re-leased only {waited:?} after the failure");
            current = next.remove(0);
            assert_eq!(id_of(&current), id);
            assert_eq!(current["attempt"], attempt + 1);
        }
        let ok = api.succeed("w", &id, &token_of(&current), json!("third time")).await;
        assert_eq!(ok["ok"], true, "{ok}");
        let task = api.task(&id).await;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["attempt"], 3);
        assert_eq!(task["result"], "third time");

        let history = api.history(&id).await;
        assert_eq!(
            moves(&history),
            pairs(&[
                ("-", "queued"),
                ("queued", "running"),
                ("running", "pending"),
                ("pending", "queued"),
                ("queued", "running"),
                ("running", "pending"),
                ("pending", "queued"),
                ("queued", "running"),
                ("running", "succeeded"),
            ]),
            "{history:?}"
        );
        let started: Vec<&Value> = history.iter().filter(|e| e["to"] == "running").map(|e| &e["attempt"]).collect();
        assert_eq!(started, [&json!(1), &json!(2), &json!(3)]);
    })
    .await;
}

#[tokio::test]
async fn exponential_backoff_retries_then_fails_without_attempts_left() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(
            &api.submit(json!({
                "name": "doomed",
                "max_attempts": 2,
                "retry": {"backoff": "exponential", "initial_ms": 100, "max_ms": 1000, "jitter": 0.0},
            }))
            .await,
        );
        let first = api.lease_one("w", 30_000).await;
        assert_eq!(api.fail("w", &id, &token_of(&first), "once", true).await["ok"], true);
        let second = api.lease_one("w", 30_000).await;
        assert_eq!(second["attempt"], 2);
        assert_eq!(api.fail("w", &id, &token_of(&second), "twice", true).await["ok"], true);
        let task = api.task(&id).await;
        assert_eq!(task["status"], "failed", "no attempts left: {task}");
        assert_eq!(task["error"]["kind"], "exception");
        assert_eq!(task["error"]["message"], "twice");
        assert!(task["finished_at"].is_string());
        assert!(api.lease("w", 1, 300, 30_000).await.is_empty(), "a failed task is not leased");

        // retry: false ends it at once even with attempts left.
        let other = id_of(&api.submit(json!({"name": "fatal", "max_attempts": 5})).await);
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(api.fail("w", &other, &token_of(&leased), "fatal", false).await["ok"], true);
        assert_eq!(api.status_of(&other).await, "failed");
    })
    .await;
}

#[tokio::test]
async fn server_side_timeout_ends_timed_out_and_fences_the_worker() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "slow", "timeout_ms": 300})).await);
        let leased = api.lease_one("w", 60_000).await;
        let token = token_of(&leased);
        let leased_at = Instant::now();
        let task = api.wait_status(&id, &["timed_out"], SOON).await;
        assert!(leased_at.elapsed() >= Duration::from_millis(250), "timed out after {:?}", leased_at.elapsed());
        assert_eq!(task["error"]["kind"], "timeout", "{task}");
        assert!(task["finished_at"].is_string());

        let beat = api.heartbeat("w", &id, &token, None).await;
        assert_eq!(beat["ok"], false, "{beat}");
        assert_eq!(beat["cancel"], true, "{beat}");
        let late = api.succeed("w", &id, &token, json!("too late")).await;
        assert_eq!(late["ok"], false, "{late}");
        assert_eq!(late["error"]["code"], "stale_lease", "{late}");
        let task = api.task(&id).await;
        assert_eq!(task["status"], "timed_out");
        assert_eq!(task["result"], Value::Null);
        assert_eq!(moves(&api.history(&id).await).last().map(|m| m.1.clone()), Some("timed_out".to_owned()));

        // A manual retry gives it a new attempt and a fresh timeout.
        let retried = api.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await;
        assert_eq!(retried.status, 200, "{retried:?}");
        assert_eq!(retried.body["status"], "queued");
        let again = api.lease_one("w", 60_000).await;
        assert_eq!(again["attempt"], 2);
        let ok = api.succeed("w", &id, &token_of(&again), json!("quick")).await;
        assert_eq!(ok["ok"], true, "{ok}");
        assert_eq!(api.status_of(&id).await, "succeeded");
    })
    .await;
}

#[tokio::test]
async fn timeout_with_attempts_left_runs_again() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(
            &api.submit(json!({
                "name": "slow",
                "timeout_ms": 300,
                "max_attempts": 2,
                "retry": {"backoff": "fixed", "initial_ms": 100, "max_ms": 100, "jitter": 0.0},
            }))
            .await,
        );
        let first = api.lease_one("w", 60_000).await;
        let second = api.lease("w", 1, 10_000, 60_000).await;
        assert_eq!(second.len(), 1, "the timed-out task came back");
        assert_eq!(id_of(&second[0]), id);
        assert_eq!(second[0]["attempt"], 2);
        assert_eq!(second[0]["error"]["kind"], "timeout", "{}", second[0]);
        assert_ne!(token_of(&second[0]), token_of(&first));
        let stale = api.succeed("w", &id, &token_of(&first), json!(1)).await;
        assert_eq!(stale["ok"], false, "{stale}");
        let ok = api.succeed("w", &id, &token_of(&second[0]), json!(2)).await;
        assert_eq!(ok["ok"], true, "{ok}");
        let task = api.task(&id).await;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["result"], 2);
    })
    .await;
}

#[tokio::test]
async fn stale_token_is_rejected_after_the_lease_expired() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "lost.once", "max_attempts": 3})).await);
        let first = api.lease_one("w1", 1000).await;
        let old = token_of(&first);
        let start = Instant::now();
        // No heartbeat: the lease runs out and the task is queued again.
        let requeued = api.wait_status(&id, &["queued"], SOON).await;
        assert!(start.elapsed() >= Duration::from_millis(900), "expired after {:?}", start.elapsed());
        assert_eq!(requeued["error"]["kind"], "lost", "{requeued}");
        assert_eq!(requeued["attempt"], 1);

        let second = api.lease_one("w2", 30_000).await;
        assert_eq!(id_of(&second), id);
        assert_eq!(second["attempt"], 2);
        let new = token_of(&second);
        assert_ne!(old, new);

        let rejected = api.succeed("w1", &id, &old, json!("from the dead")).await;
        assert_eq!(rejected["ok"], false, "{rejected}");
        assert_eq!(rejected["error"]["code"], "stale_lease", "{rejected}");
        let beat = api.heartbeat("w1", &id, &old, None).await;
        assert_eq!(beat["ok"], false, "{beat}");
        let random = api.succeed("w1", &id, "not-a-real-token", json!(0)).await;
        assert_eq!(random["ok"], false, "{random}");
        assert_eq!(random["error"]["code"], "stale_lease", "{random}");
        let unchanged = api.task(&id).await;
        assert_eq!(unchanged["status"], "running");
        assert_eq!(unchanged["attempt"], 2);
        assert_eq!(unchanged["worker"], "w2");
        assert_eq!(unchanged["result"], Value::Null);

        let accepted = api.succeed("w2", &id, &new, json!("alive")).await;
        assert_eq!(accepted["ok"], true, "{accepted}");
        let done = api.task(&id).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["result"], "alive");
        // Once finished, the new token is spent too.
        let twice = api.succeed("w2", &id, &new, json!("again")).await;
        assert_eq!(twice["ok"], false, "{twice}");
        assert_eq!(api.task(&id).await["result"], "alive");
        let succeeded = moves(&api.history(&id).await).iter().filter(|m| m.1 == "succeeded").count();
        assert_eq!(succeeded, 1);
    })
    .await;
}

#[tokio::test]
async fn expired_lease_on_the_last_attempt_fails_as_lost() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("lost.for.good").await;
        let leased = api.lease_one("w", 1000).await;
        let task = api.wait_status(&id, &["failed"], SOON).await;
        assert_eq!(task["error"]["kind"], "lost", "{task}");
        let beat = api.heartbeat("w", &id, &token_of(&leased), None).await;
        assert_eq!(beat["ok"], false, "{beat}");
    })
    .await;
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("long.job").await;
        let leased = api.lease_one("w", 1000).await;
        let token = token_of(&leased);
        let mut last_expiry = 0;
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let beat = api.heartbeat("w", &id, &token, Some(json!({"percent": i * 10}))).await;
            assert_eq!(beat["ok"], true, "heartbeat {i}: {beat}");
            let expiry = parse_rfc3339_ms(beat["expires_at"].as_str().expect("expires_at"));
            assert!(expiry >= last_expiry, "the lease moves forward");
            last_expiry = expiry;
        }
        let task = api.task(&id).await;
        assert_eq!(task["status"], "running", "2.4 s of heartbeats kept a 1 s lease: {task}");
        assert_eq!(task["attempt"], 1);
        assert_eq!(task["progress"]["percent"].as_f64(), Some(70.0), "{task}");
        let ok = api.succeed("w", &id, &token, Value::Null).await;
        assert_eq!(ok["ok"], true, "{ok}");
    })
    .await;
}

#[tokio::test]
async fn cancel_queued_and_pending_then_manual_retry() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let queued = api.submit_named("never.runs").await;
        let reply = api.post(&format!("/v1/tasks/{queued}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["status"], "cancelled", "{reply:?}");
        assert!(api.lease("w", 10, 0, 30_000).await.is_empty(), "a cancelled task is not leased");
        let again = api.post(&format!("/v1/tasks/{queued}/cancel"), &json!({})).await;
        assert_eq!(again.status, 409, "{again:?}");
        assert_eq!(again.code(), "invalid_transition");

        let pending = id_of(&api.submit(json!({"name": "delayed", "delay_ms": 60000})).await);
        let reply = api.post(&format!("/v1/tasks/{pending}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["status"], "cancelled");

        // A manual retry brings the cancelled task back.
        let retried = api.post(&format!("/v1/tasks/{queued}/retry"), &json!({})).await;
        assert_eq!(retried.status, 200, "{retried:?}");
        assert_eq!(retried.body["status"], "queued");
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), queued);
        let history = api.history(&queued).await;
        assert_eq!(
            moves(&history),
            pairs(&[("-", "queued"), ("queued", "cancelled"), ("cancelled", "queued"), ("queued", "running")]),
            "{history:?}"
        );
        // Retry of a running task is refused.
        let refused = api.post(&format!("/v1/tasks/{queued}/retry"), &json!({})).await;
        assert_eq!(refused.status, 409, "{refused:?}");
        assert_eq!(refused.code(), "invalid_transition");
        api.succeed("w", &queued, &token_of(&leased), json!(null)).await;
        let refused = api.post(&format!("/v1/tasks/{queued}/retry"), &json!({})).await;
        assert_eq!(refused.status, 409, "retry of a succeeded task: {refused:?}");
        assert_eq!(refused.code(), "invalid_transition");
    })
    .await;
}

#[tokio::test]
async fn manual_retry_of_a_failed_task_starts_a_new_attempt() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("fails").await;
        let refused = api.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await;
        assert_eq!(refused.status, 409, "retry of a queued task: {refused:?}");
        assert_eq!(refused.code(), "invalid_transition");
        let leased = api.lease_one("w", 30_000).await;
        api.fail("w", &id, &token_of(&leased), "bad", true).await;
        assert_eq!(api.status_of(&id).await, "failed");
        let retried = api.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await;
        assert_eq!(retried.status, 200, "{retried:?}");
        assert_eq!(retried.body["status"], "queued");
        let again = api.lease_one("w", 30_000).await;
        assert_eq!(again["attempt"], 2, "{again}");
        assert_ne!(token_of(&again), token_of(&leased));
        let stale = api.succeed("w", &id, &token_of(&leased), json!(1)).await;
        assert_eq!(stale["ok"], false, "{stale}");
        assert_eq!(api.succeed("w", &id, &token_of(&again), json!(2)).await["ok"], true);
        assert_eq!(api.status_of(&id).await, "succeeded");
        let history = moves(&api.history(&id).await);
        assert!(history.contains(&("failed".to_owned(), "queued".to_owned())), "{history:?}");
    })
    .await;
}

#[tokio::test]
async fn cancel_of_a_running_task_reaches_the_worker() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("stoppable").await;
        let leased = api.lease_one("w", 30_000).await;
        let token = token_of(&leased);
        let reply = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["status"], "running", "{reply:?}");
        assert_eq!(reply.body["cancel_requested"], true, "{reply:?}");
        let task = api.task(&id).await;
        assert_eq!(task["status"], "running");
        assert_eq!(task["cancel_requested"], true);

        let beat = api.heartbeat("w", &id, &token, None).await;
        assert_eq!(beat["ok"], true, "the lease itself is still good: {beat}");
        assert_eq!(beat["cancel"], true, "{beat}");
        // The worker stops and says so; the task ends cancelled.
        api.fail("w", &id, &token, "stopped on request", false).await;
        let task = api.task(&id).await;
        assert_eq!(task["status"], "cancelled", "{task}");
        assert_eq!(moves(&api.history(&id).await).last().map(|m| m.1.clone()), Some("cancelled".to_owned()));

        // Heartbeats go on saying so.
        let other_beat = api.heartbeat("w", &id, &token, None).await;
        assert_eq!(other_beat["ok"], false, "the task has ended: {other_beat}");

        // Even a worker that finishes anyway ends a cancel-requested task cancelled.
        let other = api.submit_named("stoppable").await;
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(api.post(&format!("/v1/tasks/{other}/cancel"), &json!({})).await.status, 200);
        api.succeed("w", &other, &token_of(&leased), json!("done anyway")).await;
        assert_eq!(api.status_of(&other).await, "cancelled");
    })
    .await;
}

#[tokio::test]
async fn paused_queue_leases_nothing_until_resumed() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "mail", "queue": "emails"})).await);
        let paused = api.post("/v1/queues/emails/pause", &json!({})).await;
        assert_eq!(paused.status, 200, "{paused:?}");
        assert_eq!(paused.body, json!({"name": "emails", "paused": true}));
        assert!(api.lease_from("w", &["emails"], 10, 200, 30_000).await.is_empty());

        let queues = api.get("/v1/queues").await;
        assert_eq!(queues.status, 200, "{queues:?}");
        let emails = queues
            .body
            .as_array()
            .expect("queues")
            .iter()
            .find(|q| q["name"] == "emails")
            .cloned()
            .expect("the emails queue is listed");
        assert_eq!(emails["paused"], true);
        assert_eq!(emails["counts"]["queued"], 1, "{emails}");

        // Submits to a paused queue are still accepted.
        api.submit(json!({"name": "mail", "queue": "emails"})).await;

        let resumed = api.post("/v1/queues/emails/resume", &json!({})).await;
        assert_eq!(resumed.status, 200, "{resumed:?}");
        assert_eq!(resumed.body, json!({"name": "emails", "paused": false}));
        let tasks = api.lease_from("w", &["emails"], 10, 0, 30_000).await;
        assert_eq!(tasks.len(), 2);
        assert_eq!(id_of(&tasks[0]), id);
        let queues = api.get("/v1/queues").await;
        let emails =
            queues.body.as_array().expect("queues").iter().find(|q| q["name"] == "emails").cloned().expect("listed");
        assert_eq!(emails["paused"], false);
        assert_eq!(emails["counts"]["running"], 2, "{emails}");
    })
    .await;
}

#[tokio::test]
async fn equal_priorities_go_by_run_at_before_submit_order() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let first = id_of(&api.submit(json!({"name": "submitted.first"})).await);
        let delayed = id_of(&api.submit(json!({"name": "delayed", "delay_ms": 300})).await);
        let plain = id_of(&api.submit(json!({"name": "plain"})).await);
        api.wait_status(&delayed, &["queued"], SOON).await;
        let mut order = Vec::new();
        for _ in 0..3 {
            let tasks = api.lease("w", 1, 0, 30_000).await;
            assert_eq!(tasks.len(), 1);
            order.push(id_of(&tasks[0]));
        }
        // `delayed` was submitted before `plain` but became due after it.
        assert_eq!(order, [first, plain, delayed]);
    })
    .await;
}

#[tokio::test]
async fn lease_honours_max_and_the_names_filter() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        for i in 0..5 {
            api.submit(json!({"name": "resize", "input": i})).await;
        }
        let wanted = id_of(&api.submit(json!({"name": "thumbnail"})).await);
        let body = json!({"worker": "w", "queues": ["default"], "names": ["thumbnail"], "max": 10, "wait_ms": 0, "lease_ms": 30000});
        let reply = api.post("/v1/lease", &body).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let tasks = reply.body["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.iter().map(id_of).collect::<Vec<_>>(), [wanted], "names filter");
        let three = api.lease("w", 3, 0, 30_000).await;
        assert_eq!(three.len(), 3, "max 3 of 5");
        let inputs: Vec<&Value> = three.iter().map(|t| &t["input"]).collect();
        assert_eq!(inputs, [&json!(0), &json!(1), &json!(2)]);
        assert_eq!(api.lease("w", 1000, 0, 30_000).await.len(), 2, "max 1000 takes the rest");
    })
    .await;
}

#[tokio::test]
async fn lease_expiry_moves_with_lease_ms_and_heartbeats() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("x").await;
        let now =
            || i64::try_from(std::time::SystemTime::UNIX_EPOCH.elapsed().expect("clock").as_millis()).expect("ms");
        let before = now();
        let leased = api.lease_one("w", 45_000).await;
        let expires = parse_rfc3339_ms(leased["lease"]["expires_at"].as_str().expect("expires_at"));
        assert!(
            (before + 44_000..=now() + 46_000).contains(&expires),
            "lease of 45 s expires {} ms from now",
            expires - before
        );
        let beat = api.heartbeat("w", &id, &token_of(&leased), None).await;
        let extended = parse_rfc3339_ms(beat["expires_at"].as_str().expect("expires_at"));
        assert!(
            (before + 44_000..=now() + 46_000).contains(&extended),
            "a heartbeat extends by the lease's own lease_ms: {} ms from now",
            extended - before
        );
    })
    .await;
}

#[tokio::test]
async fn one_completion_request_judges_each_result_alone() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let a = api.submit_named("a").await;
        let b = api.submit_named("b").await;
        let c = api.submit_named("c").await;
        let tasks = api.lease("w", 3, 0, 30_000).await;
        assert_eq!(tasks.len(), 3);
        let token = |id: &str| token_of(tasks.iter().find(|t| id_of(t) == id).expect("leased"));

        let beat = api
            .post(
                "/v1/heartbeat",
                &json!({"worker": "w", "leases": [
                    {"task": a, "token": token(&a), "progress": {"percent": 10, "message": "a"}},
                    {"task": b, "token": "bogus"},
                    {"task": c, "token": token(&c)},
                ]}),
            )
            .await;
        assert_eq!(beat.status, 200, "{beat:?}");
        let oks: Vec<&Value> = beat.body["leases"].as_array().expect("leases").iter().map(|l| &l["ok"]).collect();
        assert_eq!(oks, [&json!(true), &json!(false), &json!(true)], "{beat:?}");

        let reply = api
            .post(
                "/v1/complete",
                &json!({"worker": "w", "results": [
                    {"task": a, "token": token(&a), "outcome": "succeeded", "result": "A"},
                    {"task": b, "token": "bogus", "outcome": "succeeded", "result": "B"},
                    {"task": c, "token": token(&c), "outcome": "failed", "error": {"kind": "exception", "message": "C"}, "retry": false},
                ]}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let results = reply.body["results"].as_array().expect("results");
        let tasks_named: Vec<&Value> = results.iter().map(|r| &r["task"]).collect();
        assert_eq!(tasks_named, [&json!(a), &json!(b), &json!(c)], "in request order");
        assert_eq!(results[0]["ok"], true);
        assert_eq!(results[1]["ok"], false);
        assert_eq!(results[1]["error"]["code"], "stale_lease", "{reply:?}");
        assert_eq!(results[2]["ok"], true);
        assert_eq!(api.status_of(&a).await, "succeeded");
        assert_eq!(api.status_of(&b).await, "running");
        assert_eq!(api.status_of(&c).await, "failed");
    })
    .await;
}

#[tokio::test]
async fn concurrent_leases_never_hand_out_a_task_twice() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let tasks: Vec<Value> = (0..300).map(|i| json!({"name": "shared", "input": i})).collect();
        for chunk in tasks.chunks(100) {
            let reply = api.post("/v1/tasks/batch", &json!({ "tasks": chunk })).await;
            assert_eq!(reply.status, 201, "{reply:?}");
        }
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..8 {
            let api = api.clone();
            workers.spawn(async move {
                let mut got = Vec::new();
                loop {
                    let tasks = api.lease(&format!("w{w}"), 7, 200, 60_000).await;
                    if tasks.is_empty() {
                        return got;
                    }
                    got.extend(tasks.iter().map(id_of));
                }
            });
        }
        let mut all = Vec::new();
        while let Some(got) = workers.join_next().await {
            all.extend(got.expect("worker"));
        }
        let unique: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(all.len(), 300, "leased {} tasks ({} distinct) of 300", all.len(), unique.len());
        assert_eq!(unique.len(), 300);
    })
    .await;
}

#[tokio::test]
async fn a_cancel_requested_task_whose_worker_died_ends_cancelled() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "orphan", "max_attempts": 3})).await);
        api.lease_one("w", 1000).await;
        assert_eq!(api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await.status, 200);
        // No heartbeat, no completion: the lease runs out. The cancel was
        // asked for, so the task must not run again.
        let task = api.wait_status(&id, &["cancelled", "queued", "failed"], SOON).await;
        assert_eq!(task["status"], "cancelled", "{task}");
        assert!(api.lease("w", 1, 0, 30_000).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn parked_leases_respect_queues_and_pauses() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        // A submit to another queue does not end the wait early.
        let parked = {
            let api = api.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let tasks = api.lease_from("w", &["a"], 5, 1000, 30_000).await;
                (tasks, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        api.submit(json!({"name": "x", "queue": "b"})).await;
        let (tasks, took) = parked.await.expect("parked lease");
        assert!(tasks.is_empty(), "{tasks:?}");
        assert!(took >= Duration::from_millis(900), "returned after {took:?} of a 1000 ms wait");

        // A submit to a paused queue does not reach a parked worker.
        assert_eq!(api.post("/v1/queues/p/pause", &json!({})).await.status, 200);
        let parked = {
            let api = api.clone();
            tokio::spawn(async move { api.lease_from("w", &["p"], 5, 1000, 30_000).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = id_of(&api.submit(json!({"name": "x", "queue": "p"})).await);
        assert!(parked.await.expect("parked lease").is_empty(), "a paused queue leased a task");
        assert_eq!(api.status_of(&id).await, "queued");
    })
    .await;
}

#[tokio::test]
async fn parked_leases_wake_on_requeues() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        // A lease that expires puts the task back: a parked worker gets it.
        let id = id_of(&api.submit(json!({"name": "x", "max_attempts": 3})).await);
        api.lease_one("dies", 1000).await;
        let start = Instant::now();
        let tasks = api.lease("w", 1, 10_000, 30_000).await;
        let took = start.elapsed();
        assert_eq!(tasks.iter().map(id_of).collect::<Vec<_>>(), std::slice::from_ref(&id));
        assert!(took < Duration::from_secs(4), "the expired task reached the parked worker after {took:?}");

        // A manual retry wakes a parked worker at once.
        api.fail("w", &id, &token_of(&tasks[0]), "no", false).await;
        assert_eq!(api.status_of(&id).await, "failed");
        let parked = {
            let api = api.clone();
            tokio::spawn(async move { (api.lease("w", 1, 10_000, 30_000).await, Instant::now()) })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!parked.is_finished());
        assert_eq!(api.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await.status, 200);
        let retried = Instant::now();
        let (tasks, at) = parked.await.expect("parked lease");
        assert_eq!(tasks.iter().map(id_of).collect::<Vec<_>>(), std::slice::from_ref(&id));
        assert!(at.saturating_duration_since(retried) < Duration::from_secs(1), "woke late");

        // Resuming a queue wakes a parked worker too.
        api.fail("w", &id, &token_of(&tasks[0]), "no", false).await;
        let other = id_of(&api.submit(json!({"name": "y", "queue": "held"})).await);
        assert_eq!(api.post("/v1/queues/held/pause", &json!({})).await.status, 200);
        let parked = {
            let api = api.clone();
            tokio::spawn(async move { (api.lease_from("w", &["held"], 1, 10_000, 30_000).await, Instant::now()) })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!parked.is_finished());
        assert_eq!(api.post("/v1/queues/held/resume", &json!({})).await.status, 200);
        let resumed = Instant::now();
        let (tasks, at) = parked.await.expect("parked lease");
        assert_eq!(tasks.iter().map(id_of).collect::<Vec<_>>(), [other]);
        assert!(at.saturating_duration_since(resumed) < Duration::from_secs(1), "woke late after resume");
    })
    .await;
}

#[tokio::test]
async fn cancel_racing_completion_ends_once() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let batch: Vec<Value> = (0..30).map(|i| json!({"name": "race", "input": i})).collect();
        assert_eq!(api.post("/v1/tasks/batch", &json!({ "tasks": batch })).await.status, 201);
        let tasks = api.lease("w", 30, 0, 30_000).await;
        assert_eq!(tasks.len(), 30);
        let mut set = tokio::task::JoinSet::new();
        for (i, task) in tasks.iter().enumerate() {
            let (id, token) = (id_of(task), token_of(task));
            let (a, b) = (api.clone(), api.clone());
            let (id2, token2) = (id.clone(), token.clone());
            set.spawn(async move { a.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await.status });
            set.spawn(async move {
                if i % 2 == 0 {
                    b.succeed("w", &id2, &token2, json!(i)).await;
                } else {
                    b.fail("w", &id2, &token2, "racing", true).await;
                }
                200
            });
        }
        while let Some(status) = set.join_next().await {
            let status = status.expect("racer");
            assert!(status == 200 || status == 409, "cancel answered {status}");
        }
        for task in &tasks {
            let id = id_of(task);
            let now = api.task(&id).await;
            let status = now["status"].as_str().unwrap_or("");
            assert!(matches!(status, "succeeded" | "failed" | "cancelled"), "{now}");
            assert_eq!(support::task_problem(&now), None, "{now}");
            let history = api.history(&id).await;
            assert_eq!(support::history_problem(&history), None, "{history:?}");
            let terminal = moves(&history)
                .iter()
                .filter(|(_, to)| matches!(to.as_str(), "succeeded" | "failed" | "cancelled"))
                .count();
            assert_eq!(terminal, 1, "one ending: {history:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn completions_racing_lease_expiry_are_all_or_nothing() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let batch: Vec<Value> = (0..21).map(|i| json!({"name": "edge", "input": i, "max_attempts": 2})).collect();
        assert_eq!(api.post("/v1/tasks/batch", &json!({ "tasks": batch })).await.status, 201);
        let tasks = api.lease("w", 21, 0, 1000).await;
        let leased_at = Instant::now();
        assert_eq!(tasks.len(), 21);
        // Complete one every 10 ms from 900 ms to 1100 ms after the lease.
        let mut answers = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let at = Duration::from_millis(900 + 10 * u64::try_from(i).expect("small"));
            tokio::time::sleep(at.saturating_sub(leased_at.elapsed())).await;
            let answer = api.succeed("w", &id_of(task), &token_of(task), json!(i)).await;
            answers.push((id_of(task), answer["ok"] == true));
        }
        // The rejected ones go back to the queue as lost; once they have,
        // the accepted ones must still be succeeded.
        for (id, ok) in &answers {
            if !ok {
                let task = api.wait_status(id, &["queued"], SOON).await;
                assert_eq!(task["error"]["kind"], "lost", "{task}");
                assert_eq!(task["result"], Value::Null);
            }
        }
        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(leased_at.elapsed())).await;
        for (id, ok) in &answers {
            let task = api.task(id).await;
            let history = api.history(id).await;
            assert_eq!(support::history_problem(&history), None, "{history:?}");
            if *ok {
                assert_eq!(task["status"], "succeeded", "an acknowledged completion was undone: {history:?}");
                assert_eq!(moves(&history).iter().filter(|m| m.1 == "queued").count(), 1, "{history:?}");
            } else {
                assert_eq!(task["status"], "queued", "a rejected completion: {task}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timestamps_stay_causal_under_concurrent_submits_and_leases() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let submitters: Vec<_> = (0..4)
            .map(|s| {
                let api = api.clone();
                tokio::spawn(async move {
                    for i in 0..150 {
                        api.submit(json!({"name": "causal", "input": s * 1000 + i})).await;
                    }
                })
            })
            .collect();
        let mut leasers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let api = api.clone();
            leasers.spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let tasks = api.lease(&format!("w{w}"), 5, 300, 60_000).await;
                    if tasks.is_empty() {
                        return seen;
                    }
                    seen.extend(tasks);
                }
            });
        }
        for s in submitters {
            s.await.expect("submitter");
        }
        let mut leased = Vec::new();
        while let Some(seen) = leasers.join_next().await {
            leased.extend(seen.expect("leaser"));
        }
        let mut backwards = Vec::new();
        for task in &leased {
            let created = parse_rfc3339_ms(task["created_at"].as_str().expect("created_at"));
            let started = parse_rfc3339_ms(task["started_at"].as_str().expect("started_at"));
            if started < created {
                backwards.push((id_of(task), started - created));
            }
        }
        let mut histories = Vec::new();
        for task in leased.iter().take(100) {
            histories.push(api.history(&id_of(task)).await);
        }
        for history in &histories {
            assert_eq!(support::history_problem(history), None, "{history:?}");
        }
        let unordered: Vec<String> = histories.iter().filter_map(|h| support::history_time_problem(h)).collect();
        assert!(
            backwards.is_empty(),
            "{} of {} leased tasks started before they were created (ms): {:?}",
            backwards.len(),
            leased.len(),
            &backwards[..backwards.len().min(5)]
        );
        assert!(unordered.is_empty(), "histories not oldest first: {:?}", unordered.first());
    })
    .await;
}

#[tokio::test]
async fn a_watching_worker_hears_of_a_cancel_and_a_server_side_timeout_at_once() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let watch = |api: &support::Api| {
            let api = api.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let reply = api.post("/v1/stops", &json!({"worker": "w", "wait_ms": 30_000})).await;
                (reply, asked.elapsed())
            })
        };
        // Nothing to stop: the watch parks until its wait runs out.
        let idle = api.post("/v1/stops", &json!({"worker": "w", "wait_ms": 50})).await;
        assert_eq!((idle.status, idle.body.clone()), (200, json!({"stops": []})), "{idle:?}");

        let id = id_of(&api.submit(json!({"name": "long"})).await);
        api.lease_one("w", 60_000).await;
        let parked = watch(&api);
        let cancelled = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(cancelled.status, 200, "{cancelled:?}");
        let (reply, took) = parked.await.expect("the watch");
        assert_eq!(reply.body, json!({"stops": [{"task": id, "reason": "cancel"}]}), "{reply:?}");
        assert!(took < SOON, "answered at the cancel, not at the end of the wait: {took:?}");

        // A cancel made while no watch is parked waits for the next one.
        let second = id_of(&api.submit(json!({"name": "long"})).await);
        api.lease_one("w", 60_000).await;
        assert_eq!(api.post(&format!("/v1/tasks/{second}/cancel"), &json!({})).await.status, 200);
        let reply = api.post("/v1/stops", &json!({"worker": "w", "wait_ms": 30_000})).await;
        assert_eq!(reply.body["stops"][0]["task"], json!(second), "{reply:?}");

        // The server's own timeout of a running attempt.
        let slow = id_of(&api.submit(json!({"name": "slow", "timeout_ms": 300})).await);
        api.lease_one("w", 60_000).await;
        let (reply, _) = watch(&api).await.expect("the watch");
        assert_eq!(reply.body, json!({"stops": [{"task": slow, "reason": "ended"}]}), "{reply:?}");

        // Another worker's watch hears nothing of w's tasks.
        let other = api.post("/v1/stops", &json!({"worker": "other", "wait_ms": 50})).await;
        assert_eq!(other.body, json!({"stops": []}));

        // A worker cancelled before its first watch (it leased while opening
        // it) hears of it on that watch, not at its next heartbeat.
        let early = id_of(&api.submit(json!({"name": "long"})).await);
        api.lease_one("fresh", 60_000).await;
        assert_eq!(api.post(&format!("/v1/tasks/{early}/cancel"), &json!({})).await.status, 200);
        let reply = api.post("/v1/stops", &json!({"worker": "fresh", "wait_ms": 30_000})).await;
        assert_eq!(reply.body, json!({"stops": [{"task": early, "reason": "cancel"}]}), "{reply:?}");
        let bad = api.post("/v1/stops", &json!({"worker": "w", "wait_ms": 60_001})).await;
        assert_eq!((bad.status, bad.body["error"]["details"]["field"].as_str()), (400, Some("wait_ms")), "{bad:?}");
        let bad = api.post("/v1/stops", &json!({"wait_ms": 10})).await;
        assert_eq!(bad.status, 400, "{bad:?}");
    })
    .await;
}

#[tokio::test]
async fn a_completion_keeps_the_progress_no_heartbeat_carried() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = id_of(&api.submit(json!({"name": "report"})).await);
        let leased = api.lease_one("w", 60_000).await;
        let token = token_of(&leased);
        api.heartbeat("w", &id, &token, Some(json!({"percent": 75.0, "message": "three quarters"}))).await;
        let last = json!({"worker": "w", "results": [{"task": id, "token": token, "outcome": "succeeded",
            "result": 1, "progress": {"percent": 100.0, "message": "done"}}]});
        let answer = api.post("/v1/complete", &last).await;
        assert_eq!(answer.body["results"][0]["ok"], true, "{answer:?}");
        let task = api.task(&id).await;
        assert_eq!((task["status"].as_str(), task["progress"]["percent"].as_f64()), (Some("succeeded"), Some(100.0)));
        assert_eq!(task["progress"]["message"], "done");

        let id = id_of(&api.submit(json!({"name": "report"})).await);
        let token = token_of(&api.lease_one("w", 60_000).await);
        let bad = json!({"worker": "w", "results": [{"task": id, "token": token, "outcome": "succeeded",
            "progress": {"percent": 101.0}}]});
        let answer = api.post("/v1/complete", &bad).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(api.status_of(&id).await, "running", "a refused completion changes nothing");
    })
    .await;
}

#[tokio::test]
async fn a_task_types_defaults_fill_what_a_submission_leaves_out() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let defaults =
            json!({"timeout_ms": 60_000, "max_attempts": 4, "retry": {"backoff": "fixed", "initial_ms": 1000}});
        let register = json!({"worker": "w1", "queues": ["default"],
            "task_types": [{"name": "report.build", "defaults": defaults}]});
        assert_eq!(api.post("/v1/workers/register", &register).await.status, 200);

        let plain = api.submit(json!({"name": "report.build"})).await;
        assert_eq!(
            (&plain["timeout_ms"], &plain["max_attempts"], &plain["retry"]["backoff"], &plain["retry"]["initial_ms"]),
            (&json!(60_000), &json!(4), &json!("fixed"), &json!(1000)),
            "{plain}"
        );
        let own = api.submit(json!({"name": "report.build", "max_attempts": 2})).await;
        assert_eq!((&own["max_attempts"], &own["timeout_ms"]), (&json!(2), &json!(60_000)), "the submission wins");
        let other = api.submit(json!({"name": "other"})).await;
        assert_eq!(
            (&other["max_attempts"], &other["timeout_ms"]),
            (&json!(1), &Value::Null),
            "other types keep theirs"
        );

        let wf =
            api.post("/v1/workflows", &json!({"name": "w", "tasks": [{"key": "a", "name": "report.build"}]})).await;
        assert_eq!(wf.status, 201, "{wf:?}");
        let in_wf = api.list_all("name=report.build").await;
        assert!(in_wf.iter().all(|t| t["timeout_ms"] == 60_000), "a workflow's task too: {in_wf:?}");
        let schedule = json!({"every": "1 hour", "task": {"name": "report.build"}});
        assert_eq!(
            api.send(reqwest::Method::PUT, "/v1/schedules/s", Some(schedule.to_string().as_bytes())).await.status,
            201
        );
        let run = api.post("/v1/schedules/s/trigger", &json!({})).await;
        assert_eq!((run.status, &run.body["max_attempts"]), (201, &json!(4)), "{run:?}");

        let types = api.get("/v1/task-types").await.body;
        let declared =
            types["task_types"].as_array().and_then(|t| t.iter().find(|t| t["name"] == "report.build")).cloned();
        let listed = declared.map(|t| t["defaults"].clone()).unwrap_or_default();
        assert_eq!(
            (&listed["max_attempts"], &listed["timeout_ms"], &listed["retry"]["backoff"]),
            (&defaults["max_attempts"], &defaults["timeout_ms"], &defaults["retry"]["backoff"]),
            "listed with the type: {listed}"
        );

        // Defaults obey the rules the fields obey.
        for (bad, named) in [
            (json!({"max_attempts": 0}), "task_types[0].defaults.max_attempts"),
            (json!({"timeout_ms": 0}), "task_types[0].defaults.timeout_ms"),
            (json!({"colour": "red"}), "unknown field `colour`"),
        ] {
            let body = json!({"worker": "w2", "queues": ["default"], "task_types": [{"name": "x", "defaults": bad}]});
            let reply = api.post("/v1/workers/register", &body).await;
            assert_eq!(reply.status, 400, "{reply:?}");
            let said = format!("{} {}", reply.body["error"]["details"]["field"], reply.body["error"]["message"]);
            assert!(said.contains(named), "{reply:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn metadata_values_are_typed_and_filters_compare_by_type() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let task = api.submit(json!({"name": "m", "metadata": {"n": 5, "ok": true, "s": "5", "team": "x"}})).await;
        assert_eq!(task["metadata"], json!({"n": 5, "ok": true, "s": "5", "team": "x"}), "kept as given");
        api.submit(json!({"name": "m", "metadata": {"n": 6, "ok": false}})).await;
        for (query, n) in [
            ("metadata.n=5", 1),
            ("metadata.n=5.0", 1),
            ("metadata.s=5", 0),
            ("metadata.s=%225%22", 1),
            ("metadata.n=%225%22", 0),
            ("metadata.ok=true", 1),
            ("metadata.ok=false", 1),
            ("metadata.team=x&metadata.n=5", 1),
        ] {
            assert_eq!(api.list_all(&format!("name=m&{query}")).await.len(), n, "{query}");
        }
        for bad in [json!(null), json!([1]), json!({"a": 1})] {
            let reply = api.post("/v1/tasks", &json!({"name": "m", "metadata": {"k": bad}})).await;
            assert_eq!(
                (reply.status, reply.body["error"]["details"]["field"].as_str()),
                (400, Some("metadata.k")),
                "{reply:?}"
            );
        }
    })
    .await;
}
