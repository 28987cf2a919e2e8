//! A task's life seen from the producer's side, against the real binary:
//! submit, read, wait, history, idempotency, batches, listing and pagination,
//! health endpoints.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{Server, bounded, id_of, moves, token_of};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn whole_lifecycle_submit_lease_heartbeat_complete() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let submitted = api
            .submit(json!({
                "name": "email.send",
                "input": {"to": "ada@example.com", "n": [1, 2, 3]},
                "metadata": {"tenant": "acme"},
            }))
            .await;
        let id = id_of(&submitted);
        assert_eq!(id.len(), 36, "id is a UUID string: {submitted}");
        assert_eq!(submitted["status"], "queued");
        assert_eq!(submitted["name"], "email.send");
        assert_eq!(submitted["queue"], "default");
        assert_eq!(submitted["priority"], 0);
        assert_eq!(submitted["attempt"], 0);
        assert_eq!(submitted["max_attempts"], 1);
        assert_eq!(submitted["input"], json!({"to": "ada@example.com", "n": [1, 2, 3]}));
        assert_eq!(submitted["metadata"], json!({"tenant": "acme"}));
        assert_eq!(submitted["result"], Value::Null);
        assert_eq!(submitted["error"], Value::Null);
        assert!(submitted["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{submitted}");

        let read = api.task(&id).await;
        assert_eq!(read["status"], "queued");
        assert_eq!(read["input"], submitted["input"]);

        let leased = api.lease_one("w1", 30_000).await;
        assert_eq!(id_of(&leased), id);
        assert_eq!(leased["status"], "running");
        assert_eq!(leased["attempt"], 1);
        assert_eq!(leased["input"], submitted["input"]);
        assert!(leased["lease"]["expires_at"].is_string(), "{leased}");
        let token = token_of(&leased);

        let running = api.task(&id).await;
        assert_eq!(running["status"], "running");
        assert_eq!(running["worker"], "w1");
        assert_eq!(running["attempt"], 1);
        assert!(running["started_at"].is_string(), "{running}");
        assert!(running.get("lease").is_none_or(Value::is_null), "GET shows no token: {running}");

        let beat = api.heartbeat("w1", &id, &token, Some(json!({"percent": 50, "message": "half"}))).await;
        assert_eq!(beat["ok"], true, "{beat}");
        assert_eq!(beat["cancel"], false, "{beat}");
        assert!(beat["expires_at"].is_string(), "{beat}");
        let with_progress = api.task(&id).await;
        assert_eq!(with_progress["progress"]["percent"].as_f64(), Some(50.0), "{with_progress}");
        assert_eq!(with_progress["progress"]["message"], "half", "{with_progress}");

        // A waiting reader is answered as soon as the task ends.
        let waiter = {
            let api = api.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let reply = api.get(&format!("/v1/tasks/{id}?wait=20s")).await;
                (reply, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "GET ?wait answered before the task ended");
        let done = api.succeed("w1", &id, &token, json!({"sent": true})).await;
        assert_eq!(done["ok"], true, "{done}");
        let completed_at = Instant::now();
        let (reply, answered_at) = waiter.await.expect("waiter task");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["status"], "succeeded", "{reply:?}");
        assert_eq!(reply.body["result"], json!({"sent": true}));
        assert!(
            answered_at.saturating_duration_since(completed_at) < Duration::from_secs(2),
            "GET ?wait answered {:?} after the completion",
            answered_at.saturating_duration_since(completed_at)
        );

        let finished = api.task(&id).await;
        assert_eq!(finished["status"], "succeeded");
        assert_eq!(finished["result"], json!({"sent": true}));
        assert!(finished["finished_at"].is_string(), "{finished}");
        assert_eq!(finished["attempt"], 1);

        // Waiting on a finished task answers at once.
        let start = Instant::now();
        let again = api.get(&format!("/v1/tasks/{id}?wait=20s")).await;
        assert_eq!(again.body["status"], "succeeded");
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());

        let history = api.history(&id).await;
        assert_eq!(
            moves(&history),
            [("-", "queued"), ("queued", "running"), ("running", "succeeded")]
                .map(|(a, b)| (a.to_owned(), b.to_owned())),
            "{history:?}"
        );
        assert_eq!(history[1]["attempt"], 1);
        assert_eq!(history[1]["worker"], "w1");
        assert_eq!(history[2]["worker"], "w1");
        assert_eq!(support::history_problem(&history), None);
        assert_eq!(support::history_time_problem(&history), None);
        assert_eq!(support::causality_problem(&finished), None, "{finished}");
        for entry in &history {
            assert!(entry["at"].is_string(), "{entry}");
            assert!(entry["actor"].is_string(), "{entry}");
        }
    })
    .await;
}

#[tokio::test]
async fn get_wait_elapses_with_the_current_state() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("slow.thing").await;
        for wait in ["300", "300ms"] {
            let start = Instant::now();
            let reply = api.get(&format!("/v1/tasks/{id}?wait={wait}")).await;
            let took = start.elapsed();
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(reply.body["status"], "queued");
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_secs(3),
                "wait={wait} answered after {took:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_task() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let spec = json!({"name": "charge", "input": {"cents": 100}, "idempotency_key": "order-17"});
        let first = api.post("/v1/tasks", &spec).await;
        assert_eq!(first.status, 201, "{first:?}");
        assert_eq!(first.body["idempotency_key"], "order-17");

        let second = api.post("/v1/tasks", &spec).await;
        assert_eq!(second.status, 200, "same key and spec: {second:?}");
        assert_eq!(second.body["id"], first.body["id"]);

        let different = json!({"name": "charge", "input": {"cents": 999}, "idempotency_key": "order-17"});
        let conflict = api.post("/v1/tasks", &different).await;
        assert_eq!(conflict.status, 409, "{conflict:?}");
        assert_eq!(conflict.code(), "idempotency_conflict", "{conflict:?}");

        // The key still maps to the first task once it has run.
        let leased = api.lease_one("w", 30_000).await;
        api.succeed("w", &id_of(&leased), &token_of(&leased), json!(1)).await;
        let third = api.post("/v1/tasks", &spec).await;
        assert_eq!(third.status, 200, "{third:?}");
        assert_eq!(third.body["id"], first.body["id"]);
        assert_eq!(third.body["status"], "succeeded");

        assert_eq!(api.count_tasks().await, 1);
    })
    .await;
}

#[tokio::test]
async fn batch_submit_stores_all_in_order() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let reply = api
            .post(
                "/v1/tasks/batch",
                &json!({"tasks": [
                    {"name": "a"},
                    {"name": "b", "queue": "other", "priority": 3},
                    {"name": "c", "delay_ms": 60000},
                ]}),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        let tasks = reply.body["tasks"].as_array().expect("tasks");
        let names: Vec<_> = tasks.iter().map(|t| t["name"].as_str().unwrap_or("")).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(tasks[0]["status"], "queued");
        assert_eq!(tasks[1]["queue"], "other");
        assert_eq!(tasks[1]["priority"], 3);
        assert_eq!(tasks[2]["status"], "pending");
        let ids: HashSet<_> = tasks.iter().map(id_of).collect();
        assert_eq!(ids.len(), 3);
        for id in &ids {
            assert_eq!(api.get(&format!("/v1/tasks/{id}")).await.status, 200);
        }
        assert_eq!(api.count_tasks().await, 3);
    })
    .await;
}

#[tokio::test]
async fn content_type_is_not_required() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let reply = api.send(reqwest::Method::POST, "/v1/tasks", Some(br#"{"name":"plain"}"#)).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.body["name"], "plain");
        let reply = api.post_typed("/v1/tasks", br#"{"name":"texty"}"#, "text/plain").await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.body["name"], "texty");
    })
    .await;
}

#[tokio::test]
async fn list_filters_by_status_queue_name_and_metadata() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let a = id_of(&api.submit(json!({"name": "report", "metadata": {"env": "prod"}})).await);
        let b = id_of(&api.submit(json!({"name": "report", "queue": "slow", "metadata": {"env": "dev"}})).await);
        let c = id_of(&api.submit(json!({"name": "email", "metadata": {"env": "prod", "team": "x"}})).await);
        let d = id_of(&api.submit(json!({"name": "email", "queue": "slow"})).await);
        let e = id_of(&api.submit(json!({"name": "later", "delay_ms": 60000, "metadata": {"path": "a b/c&d"}})).await);
        // Lease `a` (the oldest in `default`) so that one task is running.
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), a);

        let ids = async |query: &str| -> Vec<String> { api.list_all(query).await.iter().map(id_of).collect() };
        // Newest first.
        assert_eq!(ids("").await, [e.as_str(), d.as_str(), c.as_str(), b.as_str(), a.as_str()]);
        assert_eq!(ids("status=running").await, [a.as_str()]);
        assert_eq!(ids("status=queued").await, [d.as_str(), c.as_str(), b.as_str()]);
        assert_eq!(ids("status=pending,running").await, [e.as_str(), a.as_str()]);
        assert_eq!(ids("queue=slow").await, [d.as_str(), b.as_str()]);
        assert_eq!(ids("name=report").await, [b.as_str(), a.as_str()]);
        assert_eq!(ids("metadata.env=prod").await, [c.as_str(), a.as_str()]);
        assert_eq!(ids("metadata.team=x").await, [c.as_str()]);
        assert_eq!(ids("metadata.env=prod&status=queued").await, [c.as_str()]);
        assert_eq!(ids("name=email&queue=default").await, [c.as_str()]);
        assert!(ids("name=nothing").await.is_empty());
        assert_eq!(ids(&format!("metadata.path={}", support::encode("a b/c&d"))).await, [e.as_str()]);

        let listed = api.list_all("status=running").await;
        assert_eq!(listed[0]["status"], "running");
        assert_eq!(listed[0]["worker"], "w");
    })
    .await;
}

#[tokio::test]
async fn pagination_never_repeats_or_skips() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let mut submitted = Vec::new();
        for i in 0..25 {
            submitted.push(id_of(&api.submit(json!({"name": "page", "input": i})).await));
        }
        let first = api.get("/v1/tasks?limit=10").await;
        assert_eq!(first.status, 200, "{first:?}");
        let mut pages = vec![first.body["tasks"].as_array().expect("tasks").clone()];
        let mut cursor = first.body["next_cursor"].as_str().expect("a next page").to_owned();

        // Newer tasks arriving between pages do not disturb the walk.
        for _ in 0..3 {
            api.submit_named("newcomer").await;
        }
        loop {
            let reply = api.get(&format!("/v1/tasks?limit=10&cursor={}", support::encode(&cursor))).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            pages.push(reply.body["tasks"].as_array().expect("tasks").clone());
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
            assert!(pages.len() < 10, "too many pages");
        }
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5], "page sizes");
        let walked: Vec<String> = pages.iter().flatten().map(id_of).collect();
        let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
        assert_eq!(walked, newest_first, "every task exactly once, newest first");

        // The default limit is 100 and an exact fit ends with a null cursor.
        let all = api.get("/v1/tasks").await;
        assert_eq!(all.body["tasks"].as_array().map(Vec::len), Some(28));
        assert_eq!(all.body["next_cursor"], Value::Null);
        let exact = api.get("/v1/tasks?limit=28").await;
        assert_eq!(exact.body["tasks"].as_array().map(Vec::len), Some(28));
        if let Some(c) = exact.body["next_cursor"].as_str() {
            let rest = api.get(&format!("/v1/tasks?limit=28&cursor={}", support::encode(c))).await;
            assert_eq!(rest.body["tasks"].as_array().map(Vec::len), Some(0), "{rest:?}");
        }
        let max = api.get("/v1/tasks?limit=1000").await;
        assert_eq!(max.status, 200, "{max:?}");
    })
    .await;
}

#[tokio::test]
async fn health_endpoints_answer() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        assert_eq!(api.get("/healthz").await.status, 200);
        assert_eq!(api.get("/readyz").await.status, 200);
        let health = api.get("/v1/health").await;
        assert_eq!(health.status, 200, "{health:?}");
        assert!(health.body["version"].as_str().is_some_and(|v| !v.is_empty()), "{health:?}");
    })
    .await;
}

/// Starts `GET /v1/tasks/{id}?wait=20s` in the background.
fn wait_in_background(api: &support::Api, id: &str) -> tokio::task::JoinHandle<(support::Reply, Instant)> {
    let api = api.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let reply = api.get(&format!("/v1/tasks/{id}?wait=20s")).await;
        (reply, Instant::now())
    })
}

#[tokio::test]
async fn get_wait_wakes_on_every_kind_of_ending() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        // Cancelled by a client.
        let id = api.submit_named("to.cancel").await;
        let waiter = wait_in_background(&api, &id);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        assert_eq!(api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await.status, 200);
        let ended = Instant::now();
        let (reply, at) = waiter.await.expect("waiter");
        assert_eq!(reply.body["status"], "cancelled", "{reply:?}");
        assert!(at.saturating_duration_since(ended) < Duration::from_secs(1), "woke late");

        // Failed by its worker.
        let id = api.submit_named("to.fail").await;
        let leased = api.lease_one("w", 30_000).await;
        let waiter = wait_in_background(&api, &id);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        api.fail("w", &id, &token_of(&leased), "nope", false).await;
        let ended = Instant::now();
        let (reply, at) = waiter.await.expect("waiter");
        assert_eq!(reply.body["status"], "failed", "{reply:?}");
        assert!(at.saturating_duration_since(ended) < Duration::from_secs(1), "woke late");

        // Timed out by the server: answered soon after the 500 ms timeout.
        let id = id_of(&api.submit(json!({"name": "to.time.out", "timeout_ms": 500})).await);
        api.lease_one("w", 30_000).await;
        let start = Instant::now();
        let waiter = wait_in_background(&api, &id);
        let (reply, at) = waiter.await.expect("waiter");
        assert_eq!(reply.body["status"], "timed_out", "{reply:?}");
        assert!(at.duration_since(start) < Duration::from_secs(3), "answered after {:?}", at.duration_since(start));

        // A retry in between is not an ending: the waiter holds on.
        let id = id_of(
            &api.submit(json!({
                "name": "to.retry", "max_attempts": 2,
                "retry": {"backoff": "fixed", "initial_ms": 100, "max_ms": 100, "jitter": 0.0},
            }))
            .await,
        );
        let leased = api.lease_one("w", 30_000).await;
        let waiter = wait_in_background(&api, &id);
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.fail("w", &id, &token_of(&leased), "once", true).await;
        let again = api.lease_one("w", 30_000).await;
        assert!(!waiter.is_finished(), "GET ?wait answered on a retry");
        api.succeed("w", &id, &token_of(&again), json!("second")).await;
        let (reply, _) = waiter.await.expect("waiter");
        assert_eq!(reply.body["status"], "succeeded", "{reply:?}");
        assert_eq!(reply.body["attempt"], 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_submits_with_one_idempotency_key_make_one_task() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        for round in 0..5 {
            let key = format!("race-{round}");
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..12 {
                let api = api.clone();
                let spec = json!({"name": "once", "input": round, "idempotency_key": key});
                set.spawn(async move { api.post("/v1/tasks", &spec).await });
            }
            let mut created = 0;
            let mut ids = HashSet::new();
            while let Some(reply) = set.join_next().await {
                let reply = reply.expect("submitter");
                match reply.status {
                    201 => created += 1,
                    200 => {}
                    _ => panic!("round {round}: {reply:?}"),
                }
                ids.insert(id_of(&reply.body));
            }
            assert_eq!(created, 1, "round {round}: exactly one submit creates the task");
            assert_eq!(ids.len(), 1, "round {round}: every answer names the same task: {ids:?}");
        }
        assert_eq!(api.count_tasks().await, 5);
    })
    .await;
}

#[tokio::test]
async fn one_server_owns_a_data_directory() {
    let first = Server::start();
    let data = first.data_dir().to_str().expect("UTF-8 path").to_owned();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["server", "--listen", "127.0.0.1:0", "--data", &data])
        .output()
        .expect("run a second server");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "the second server does not start: {stderr}");
    assert!(String::from_utf8_lossy(&second.stdout).is_empty(), "it never said it listens");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "names the holder's pid: {stderr}");
    assert!(stderr.contains(&format!("serving {}", first.url)), "and its address: {stderr}");

    // An offline command on the directory is refused the same way.
    let offline = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["token", "create", "ops", "--role", "admin", "--data", &data])
        .output()
        .expect("run the offline command");
    assert!(!offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stderr).contains("in use by another quern process"));

    // The first goes on serving.
    bounded(LIMIT, async {
        let api = first.api();
        let id = id_of(&api.submit(json!({"name": "still.mine"})).await);
        assert_eq!(api.get(&format!("/v1/tasks/{id}")).await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn a_killed_server_leaves_its_data_directory_free() {
    let mut server = Server::start();
    server.kill9();
    server.restart();
    bounded(LIMIT, async {
        assert_eq!(server.api().get("/v1/health").await.status, 200);
    })
    .await;
}

#[test]
fn a_store_that_cannot_be_opened_fails_the_start_before_listening() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["server", "--listen", "127.0.0.1:0", "--database", "postgres://nobody@127.0.0.1:1/none"])
        .output()
        .expect("run the server");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "no `listening on` line");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the store"));
}
