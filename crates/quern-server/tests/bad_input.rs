//! Invariant 5: bad input is rejected before anything is stored, with a 4xx
//! and a machine-readable code, and the server keeps serving.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Api, Reply, Server, bounded, id_of, token_of};

const LIMIT: Duration = Duration::from_secs(60);
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Asserts the error shape, status and code, and (when the field is named)
/// that `details.field` names `field`.
fn assert_error(what: &str, reply: &Reply, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    let error = &reply.body["error"];
    assert_eq!(error["code"], code, "{what}: {reply:?}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: message: {reply:?}");
    assert!(error.get("details").is_some(), "{what}: details: {reply:?}");
    if let (Some(field), Some(named)) = (field, error["details"]["field"].as_str()) {
        assert!(
            named == field || named.ends_with(&format!(".{field}")) || named.starts_with(&format!("{field}.")),
            "{what}: details.field is {named}, expected {field}: {reply:?}"
        );
    }
}

/// Like [`assert_error`] and also requires `details.field` to be present.
fn assert_field_error(what: &str, reply: &Reply, field: &str) {
    assert_error(what, reply, 400, "invalid_request", Some(field));
    assert!(
        reply.body["error"]["details"]["field"].is_string(),
        "{what}: details.field should name `{field}`: {reply:?}"
    );
}

/// The store is unchanged and the server still healthy.
async fn assert_nothing_stored(api: &Api, before: usize, what: &str) {
    assert_eq!(api.count_tasks().await, before, "{what}: the task count changed");
    assert_eq!(api.get("/healthz").await.status, 200, "{what}: /healthz after it");
}

#[tokio::test]
async fn bad_task_submissions_are_rejected_and_store_nothing() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        // One good task, so "nothing stored" is not the trivial empty store.
        api.submit_named("good").await;
        let before = api.count_tasks().await;

        for (what, body) in [
            ("truncated JSON", r#"{"name": "x","#),
            ("not JSON at all", "name=x"),
            ("empty body", ""),
            ("trailing garbage", r#"{"name": "x"} }"#),
        ] {
            let reply = api.post_raw("/v1/tasks", body).await;
            assert_error(what, &reply, 400, "malformed_json", None);
            assert_nothing_stored(&api, before, what).await;
        }

        let too_long = "n".repeat(201);
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("name is a number", json!({"name": 5}), Some("name")),
            ("priority is a string", json!({"name": "x", "priority": "high"}), Some("priority")),
            ("priority beyond i32", json!({"name": "x", "priority": 1_u64 << 40}), Some("priority")),
            ("missing name", json!({"input": {"a": 1}}), Some("name")),
            ("empty name", json!({"name": ""}), Some("name")),
            ("name with a space and a bang", json!({"name": "bad name!"}), Some("name")),
            ("name with a slash", json!({"name": "a/b"}), Some("name")),
            ("name of 201 characters", json!({"name": too_long}), Some("name")),
            ("unknown field", json!({"name": "x", "colour": "red"}), None),
            ("body is an array", json!([{"name": "x"}]), None),
            ("metadata value an object", json!({"name": "x", "metadata": {"k": {"a": 1}}}), Some("metadata.k")),
            ("metadata value null", json!({"name": "x", "metadata": {"k": null}}), Some("metadata.k")),
            ("queue is a number", json!({"name": "x", "queue": 7}), Some("queue")),
            ("negative timeout_ms", json!({"name": "x", "timeout_ms": -5}), Some("timeout_ms")),
            ("zero timeout_ms", json!({"name": "x", "timeout_ms": 0}), Some("timeout_ms")),
            ("timeout_ms of 31 days", json!({"name": "x", "timeout_ms": 31 * DAY_MS}), Some("timeout_ms")),
            ("absurd timeout_ms", json!({"name": "x", "timeout_ms": 1_000_000_000_000_000_u64}), Some("timeout_ms")),
            ("max_attempts 0", json!({"name": "x", "max_attempts": 0}), Some("max_attempts")),
            ("max_attempts 1001", json!({"name": "x", "max_attempts": 1001}), Some("max_attempts")),
            ("negative max_attempts", json!({"name": "x", "max_attempts": -1}), Some("max_attempts")),
            (
                "delay_ms and run_at together",
                json!({"name": "x", "delay_ms": 1000, "run_at": "2030-01-01T00:00:00Z"}),
                None,
            ),
            ("delay_ms over 366 days", json!({"name": "x", "delay_ms": 367 * DAY_MS}), Some("delay_ms")),
            ("negative delay_ms", json!({"name": "x", "delay_ms": -1}), Some("delay_ms")),
            ("run_at not a time", json!({"name": "x", "run_at": "tomorrow"}), Some("run_at")),
            (
                "retry max_ms below initial_ms",
                json!({"name": "x", "retry": {"backoff": "fixed", "initial_ms": 5000, "max_ms": 1000, "jitter": 0}}),
                Some("retry"),
            ),
            (
                "retry jitter above 1",
                json!({"name": "x", "retry": {"backoff": "fixed", "initial_ms": 100, "max_ms": 100, "jitter": 2}}),
                Some("retry"),
            ),
            (
                "unknown backoff",
                json!({"name": "x", "retry": {"backoff": "linear", "initial_ms": 100, "max_ms": 100, "jitter": 0}}),
                Some("retry"),
            ),
            (
                "retry delay over a week",
                json!({"name": "x", "retry": {"backoff": "fixed", "initial_ms": 8 * DAY_MS, "max_ms": 8 * DAY_MS, "jitter": 0}}),
                Some("retry"),
            ),
        ];
        for (what, body, field) in cases {
            let reply = api.post("/v1/tasks", &body).await;
            match field {
                Some(field) => assert_error(what, &reply, 400, "invalid_request", Some(field)),
                None => assert_error(what, &reply, 400, "invalid_request", None),
            }
            assert_nothing_stored(&api, before, what).await;
        }

        // Rule violations (as opposed to JSON type errors) always know their field.
        for (what, body, field) in [
            ("bad name characters", json!({"name": "bad name!"}), "name"),
            ("zero timeout_ms", json!({"name": "x", "timeout_ms": 0}), "timeout_ms"),
            ("max_attempts 0", json!({"name": "x", "max_attempts": 0}), "max_attempts"),
        ] {
            assert_field_error(what, &api.post("/v1/tasks", &body).await, field);
        }
        assert_nothing_stored(&api, before, "rule violations").await;
    })
    .await;
}

#[tokio::test]
async fn batch_with_one_bad_item_stores_nothing() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let before = api.count_tasks().await;
        let reply = api
            .post(
                "/v1/tasks/batch",
                &json!({"tasks": [{"name": "ok1"}, {"name": "ok2"}, {"name": "no good"}, {"name": "ok3"}]}),
            )
            .await;
        assert_error("batch item 2", &reply, 400, "invalid_request", None);
        assert_eq!(reply.body["error"]["details"]["index"], 2, "{reply:?}");
        assert_nothing_stored(&api, before, "bad batch").await;

        let reply =
            api.post("/v1/tasks/batch", &json!({"tasks": [{"name": "ok1"}, {"name": "ok2", "max_attempts": 0}]})).await;
        assert_error("batch item 1", &reply, 400, "invalid_request", None);
        assert_eq!(reply.body["error"]["details"]["index"], 1, "{reply:?}");
        assert_nothing_stored(&api, before, "bad batch").await;

        let reply = api.post("/v1/tasks/batch", &json!({"tasks": "nope"})).await;
        assert_error("tasks not a list", &reply, 400, "invalid_request", None);
        let reply = api.post_raw("/v1/tasks/batch", "[").await;
        assert_error("malformed batch", &reply, 400, "malformed_json", None);
        assert_nothing_stored(&api, before, "bad batch").await;
    })
    .await;
}

#[tokio::test]
async fn unknown_ids_routes_and_methods() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let unknown = "0190f1a2-7b3c-7def-8123-456789abcdef";
        for path in [
            format!("/v1/tasks/{unknown}"),
            format!("/v1/tasks/{unknown}/history"),
            "/v1/tasks/not-a-uuid".to_owned(),
            "/v1/tasks/not-a-uuid/history".to_owned(),
            "/v1/no-such-route".to_owned(),
        ] {
            assert_error(&path, &api.get(&path).await, 404, "not_found", None);
        }
        for path in [
            format!("/v1/tasks/{unknown}/cancel"),
            format!("/v1/tasks/{unknown}/retry"),
            "/v1/tasks/12345/cancel".to_owned(),
        ] {
            assert_error(&path, &api.post(&path, &json!({})).await, 404, "not_found", None);
        }
        let reply = api.send(reqwest::Method::DELETE, "/v1/tasks", None).await;
        assert_error("DELETE /v1/tasks", &reply, 405, "method_not_allowed", None);
        let reply = api.send(reqwest::Method::PUT, "/v1/lease", Some(b"{}")).await;
        assert_error("PUT /v1/lease", &reply, 405, "method_not_allowed", None);
        assert_nothing_stored(&api, 0, "unknown ids").await;
    })
    .await;
}

#[tokio::test]
async fn bad_list_and_wait_queries() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("x").await;
        for path in [
            "/v1/tasks?limit=1001".to_owned(),
            "/v1/tasks?limit=abc".to_owned(),
            "/v1/tasks?limit=-1".to_owned(),
            "/v1/tasks?status=bogus".to_owned(),
            "/v1/tasks?cursor=not-a-cursor".to_owned(),
            "/v1/tasks?colour=red".to_owned(),
            format!("/v1/tasks/{id}?wait=banana"),
        ] {
            assert_error(&path, &api.get(&path).await, 400, "invalid_request", None);
        }
        assert_nothing_stored(&api, 1, "bad queries").await;
    })
    .await;
}

#[tokio::test]
async fn conflicting_transitions_are_409() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("x").await;
        let leased = api.lease_one("w", 30_000).await;
        api.succeed("w", &id, &token_of(&leased), json!(1)).await;
        let reply = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_error("cancel of a succeeded task", &reply, 409, "invalid_transition", None);
        let reply = api.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await;
        assert_error("retry of a succeeded task", &reply, 409, "invalid_transition", None);
        let task = api.task(&id).await;
        assert_eq!(task["status"], "succeeded", "a rejected request changes nothing");
        assert_eq!(task["result"], 1);
        assert_eq!(api.history(&id).await.len(), 3, "history unchanged");
        assert_nothing_stored(&api, 1, "409s").await;
    })
    .await;
}

#[tokio::test]
async fn bad_worker_requests_lease_nothing() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("waiting").await;
        let lease = |patch: Value| {
            let mut body = json!({"worker": "w", "queues": ["default"], "max": 1, "wait_ms": 0, "lease_ms": 30000});
            for (k, v) in patch.as_object().expect("patch object") {
                if v.is_null() {
                    body.as_object_mut().expect("object").remove(k);
                } else {
                    body[k] = v.clone();
                }
            }
            body
        };
        for (what, body, field) in [
            ("max 0", lease(json!({"max": 0})), "max"),
            ("max 1001", lease(json!({"max": 1001})), "max"),
            ("max a billion", lease(json!({"max": 1_000_000_000})), "max"),
            ("max negative", lease(json!({"max": -1})), "max"),
            ("wait_ms over a minute", lease(json!({"wait_ms": 60_001})), "wait_ms"),
            ("lease_ms under a second", lease(json!({"lease_ms": 999})), "lease_ms"),
            ("lease_ms over ten minutes", lease(json!({"lease_ms": 600_001})), "lease_ms"),
            ("worker missing", lease(json!({"worker": null})), "worker"),
            ("queues not a list", lease(json!({"queues": "default"})), "queues"),
            ("unknown field", lease(json!({"greedy": true})), "greedy"),
        ] {
            let reply = api.post("/v1/lease", &body).await;
            assert_error(what, &reply, 400, "invalid_request", Some(field));
        }
        let reply = api.post_raw("/v1/lease", "{\"worker\":").await;
        assert_error("malformed lease", &reply, 400, "malformed_json", None);
        assert_eq!(api.status_of(&id).await, "queued", "no bad lease leased the task");
        assert_eq!(api.task(&id).await["attempt"], 0);

        // Bad heartbeats and completions change nothing either.
        let leased = api.lease_one("w", 30_000).await;
        let token = token_of(&leased);
        for (what, path, body) in [
            ("heartbeat without leases", "/v1/heartbeat", json!({"worker": "w"})),
            (
                "heartbeat progress not an object",
                "/v1/heartbeat",
                json!({"worker": "w", "leases": [{"task": id, "token": token, "progress": "half"}]}),
            ),
            (
                "unknown outcome",
                "/v1/complete",
                json!({"worker": "w", "results": [{"task": id, "token": token, "outcome": "maybe"}]}),
            ),
            (
                "task id not a uuid",
                "/v1/complete",
                json!({"worker": "w", "results": [{"task": 5, "token": token, "outcome": "succeeded"}]}),
            ),
            ("results not a list", "/v1/complete", json!({"worker": "w", "results": {"task": id}})),
        ] {
            let reply = api.post(path, &body).await;
            assert_error(what, &reply, 400, "invalid_request", None);
        }
        let task = api.task(&id).await;
        assert_eq!(task["status"], "running");
        assert_eq!(task["progress"], Value::Null);
        assert_eq!(api.succeed("w", &id, &token, json!("fine")).await["ok"], true);
        assert_eq!(api.get("/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn body_over_the_configured_limit_is_413() {
    let server = Server::start_with_config("server:\n  max_body_bytes: 1024\n");
    let api = server.api();
    bounded(LIMIT, async {
        let big = json!({"name": "big", "input": "x".repeat(2048)});
        let reply = api.post("/v1/tasks", &big).await;
        assert_error("2 KiB body over a 1 KiB limit", &reply, 413, "payload_too_large", None);
        let api = server.api();
        let reply = api.post("/v1/tasks/batch", &json!({"tasks": [big]})).await;
        assert_error("2 KiB batch", &reply, 413, "payload_too_large", None);
        let api = server.api();
        assert_nothing_stored(&api, 0, "413").await;
        // Under the limit is fine.
        let small = api.submit(json!({"name": "small", "input": "x".repeat(500)})).await;
        assert_eq!(api.task(&id_of(&small)).await["input"].as_str().map(str::len), Some(500));
    })
    .await;
}

#[tokio::test]
async fn body_over_the_default_limit_is_413() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let huge = json!({"name": "huge", "input": "y".repeat(2 * 1024 * 1024)});
        let reply = api.post("/v1/tasks", &huge).await;
        assert_error("2 MiB body", &reply, 413, "payload_too_large", None);
        // A fresh client: see `a_413_leaves_the_connection_usable_or_says_close`.
        let api = server.api();
        assert_nothing_stored(&api, 0, "413").await;
        // Just under 1 MiB in all is accepted.
        let fits = api.submit(json!({"name": "fits", "input": "z".repeat(1000 * 1000)})).await;
        assert_eq!(fits["status"], "queued");
    })
    .await;
}

#[tokio::test]
async fn limits_are_inclusive() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let week = 7 * DAY_MS;
        for (what, spec) in [
            ("name of 200 characters", json!({"name": "n".repeat(200)})),
            ("name of one character", json!({"name": "n"})),
            ("every allowed name character", json!({"name": "AZaz09_.:-"})),
            ("timeout_ms 1", json!({"name": "x", "timeout_ms": 1})),
            ("timeout_ms 30 days", json!({"name": "x", "timeout_ms": 30 * DAY_MS})),
            ("max_attempts 1000", json!({"name": "x", "max_attempts": 1000})),
            ("delay_ms 366 days", json!({"name": "x", "delay_ms": 366 * DAY_MS})),
            ("delay_ms 0", json!({"name": "x", "delay_ms": 0})),
            (
                "retry of a week, full jitter",
                json!({"name": "x", "retry": {"backoff": "exponential", "initial_ms": week, "max_ms": week, "jitter": 1.0}}),
            ),
            ("negative priority", json!({"name": "x", "priority": -1000})),
            ("input of any JSON", json!({"name": "x", "input": [1, "two", {"three": null}]})),
            ("explicit nulls", json!({"name": "x", "timeout_ms": null, "idempotency_key": null})),
        ] {
            let reply = api.post("/v1/tasks", &spec).await;
            assert_eq!(reply.status, 201, "{what}: {reply:?}");
        }
        let zero = api.list_all("name=x").await;
        assert!(zero.iter().any(|t| t["status"] == "queued" && t["input"] == json!([1, "two", {"three": null}])));

        // Lease bounds: max 1..=1000, wait_ms up to 60000, lease_ms 1000..=600000.
        for (max, wait_ms, lease_ms) in [(1, 60_000, 1000), (1000, 0, 600_000)] {
            let body = json!({"worker": "w", "queues": ["default"], "max": max, "wait_ms": wait_ms, "lease_ms": lease_ms});
            let reply = api.post("/v1/lease", &body).await;
            assert_eq!(reply.status, 200, "{body}: {reply:?}");
            assert!(!reply.body["tasks"].as_array().expect("tasks").is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_and_mistyped_fields_anywhere_are_rejected() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("x").await;
        let before = api.count_tasks().await;
        for (what, path, body) in [
            (
                "unknown field inside retry",
                "/v1/tasks",
                json!({"name": "x", "retry": {"backoff": "fixed", "initial_ms": 100, "max_ms": 100, "jitter": 0, "extra": 1}}),
            ),
            ("unknown field in a batch", "/v1/tasks/batch", json!({"tasks": [{"name": "x"}], "atomic": true})),
            ("unknown field in a heartbeat", "/v1/heartbeat", json!({"worker": "w", "leases": [], "x": 1})),
            ("unknown field in a completion", "/v1/complete", json!({"worker": "w", "results": [], "x": 1})),
            (
                "unknown field in a completion result",
                "/v1/complete",
                json!({"worker": "w", "results": [{"task": id, "token": "t", "outcome": "succeeded", "x": 1}]}),
            ),
        ] {
            let reply = api.post(path, &body).await;
            assert_error(what, &reply, 400, "invalid_request", None);
        }
        let reply = api.post("/v1/tasks/batch", &json!({"tasks": [{"name": "ok"}, {"name": 5}]})).await;
        assert_error("mistyped batch item", &reply, 400, "invalid_request", Some("name"));
        assert_eq!(reply.body["error"]["details"]["index"], 1, "{reply:?}");
        assert_nothing_stored(&api, before, "unknown fields").await;
        assert_eq!(api.status_of(&id).await, "queued");
    })
    .await;
}

/// Sends `body` to `POST /v1/tasks` on a raw keep-alive connection and reads
/// the answer; then, unless the answer said `Connection: close`, asks
/// `GET /healthz` on the same connection. Returns the first status, whether
/// it said close, and the second status (None when not asked).
fn raw_keep_alive_exchange(addr: &str, body: &[u8]) -> (u16, bool, Option<u16>) {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn read_response(stream: &mut TcpStream) -> (u16, Vec<(String, String)>) {
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 4096];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = stream.read(&mut chunk).expect("read the response head");
            assert!(n > 0, "the connection closed before a response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
            .collect();
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            let n = stream.read(&mut chunk).expect("read the response body");
            assert!(n > 0, "the connection closed inside a response body");
            buf.extend_from_slice(&chunk[..n]);
        }
        (status, headers)
    }

    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the socket");
    writer.set_write_timeout(Some(Duration::from_secs(10))).expect("write timeout");
    let mut request = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let sending = std::thread::spawn(move || writer.write_all(&request).map(|()| writer));
    let (status, headers) = read_response(&mut stream);
    let says_close = headers.iter().any(|(k, v)| k == "connection" && v.contains("close"));
    let sent = sending.join().expect("writer thread");
    if says_close {
        return (status, true, None);
    }
    let mut writer = sent.unwrap_or_else(|e| {
        panic!("the server stopped reading the body without saying `Connection: close` ({e}); headers {headers:?}")
    });
    if let Err(e) = writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") {
        panic!("the server closed a keep-alive connection after a {status} without `Connection: close`: {e}");
    }
    let mut probe = [0_u8; 1];
    let closed = stream.peek(&mut probe).map(|n| n == 0).unwrap_or(true);
    assert!(!closed, "the server closed a keep-alive connection after a {status} without `Connection: close`");
    let (second, _) = read_response(&mut stream);
    (status, false, Some(second))
}

#[tokio::test]
async fn a_413_leaves_the_connection_usable_or_says_close() {
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let body = serde_json::to_vec(&json!({"name": "huge", "input": "y".repeat(2 * 1024 * 1024)})).expect("json");
    let (status, says_close, second) =
        tokio::task::spawn_blocking(move || raw_keep_alive_exchange(&addr, &body)).await.expect("exchange");
    assert_eq!(status, 413);
    if !says_close {
        assert_eq!(second, Some(200), "a second request on the kept-alive connection");
    }
}

/// `[[[…1…]]]`, `n` arrays deep.
fn nested(n: usize) -> String {
    format!("{}1{}", "[".repeat(n), "]".repeat(n))
}

#[tokio::test]
async fn json_nested_deeper_than_64_is_refused_everywhere() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let id = api.submit_named("deep").await;
        for (what, path, body, field) in [
            ("input 5,000 deep", "/v1/tasks", format!(r#"{{"name":"t","input":{}}}"#, nested(5_000)), "input"),
            ("input 65 deep", "/v1/tasks", format!(r#"{{"name":"t","input":{}}}"#, nested(65)), "input"),
            (
                "a deep input in a batch",
                "/v1/tasks/batch",
                format!(r#"{{"tasks":[{{"name":"ok"}},{{"name":"t","input":{}}}]}}"#, nested(65)),
                "input",
            ),
            (
                "a deep input in a workflow",
                "/v1/workflows",
                format!(r#"{{"name":"w","chain":[{{"name":"t","input":{}}}]}}"#, nested(65)),
                "input",
            ),
            (
                "an event payload",
                "/v1/events",
                format!(r#"{{"type":"a.b","source":"s","payload":{}}}"#, nested(65)),
                "payload",
            ),
        ] {
            let reply = api.post_raw(path, body).await;
            assert_error(what, &reply, 422, "json_too_deep", Some(field));
        }
        assert_nothing_stored(&api, 1, "deep input").await;
        let events = api.get("/v1/events?after=0&type=a.*").await;
        assert_eq!(events.body["events"].as_array().map(Vec::len), Some(0), "{events:?}");
        // 64 levels are fine.
        let fits = api.post_raw("/v1/tasks", format!(r#"{{"name":"fits","input":{}}}"#, nested(64))).await;
        assert_eq!(fits.status, 201, "{fits:?}");

        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), id);
        let token = token_of(&leased);
        let result = format!(
            r#"{{"worker":"w","results":[{{"task":"{id}","token":"{token}","outcome":"succeeded","result":{}}}]}}"#,
            nested(65)
        );
        assert_error(
            "a deep result",
            &api.post_raw("/v1/complete", result).await,
            422,
            "json_too_deep",
            Some("result"),
        );
        let details = format!(
            r#"{{"worker":"w","results":[{{"task":"{id}","token":"{token}","outcome":"failed",
                "error":{{"kind":"exception","message":"m","details":{}}}}}]}}"#,
            nested(65)
        );
        let reply = api.post_raw("/v1/complete", details).await;
        assert_error("deep error details", &reply, 422, "json_too_deep", Some("details"));
        assert_eq!(api.status_of(&id).await, "running", "no deep result was taken");
        let list = api.get("/v1/tasks?limit=10").await;
        assert_eq!(list.status, 200);
    })
    .await;
}

#[tokio::test]
async fn free_text_fields_have_limits_and_no_nul() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        for (what, spec, field) in [
            ("NUL in a metadata value", json!({"name": "t", "metadata": {"k": "a\u{0}b"}}), "metadata"),
            ("NUL in a metadata key", json!({"name": "t", "metadata": {"k\u{0}": "v"}}), "metadata"),
            ("NUL in an idempotency key", json!({"name": "t", "idempotency_key": "k\u{0}"}), "idempotency_key"),
        ] {
            assert_field_error(what, &api.post("/v1/tasks", &spec).await, field);
        }
        assert_nothing_stored(&api, 0, "NUL").await;
        let id = api.submit_named("t").await;
        for (what, queues, field) in [
            ("a path for a queue", json!(["../x"]), "queues[0]"),
            ("an empty queue name", json!(["default", ""]), "queues[1]"),
            ("NUL in a queue name", json!(["a\u{0}"]), "queues[0]"),
            ("a queue name too long", json!(["q".repeat(101)]), "queues[0]"),
        ] {
            let body = json!({"worker": "w", "queues": queues, "max": 1});
            assert_field_error(what, &api.post("/v1/lease", &body).await, field);
        }
        let body = json!({"worker": "w", "names": ["a b"], "max": 1});
        assert_field_error("a task name with a space", &api.post("/v1/lease", &body).await, "names[0]");
        let body = json!({"worker": "w\u{0}", "max": 1});
        assert_field_error("NUL in a worker name", &api.post("/v1/lease", &body).await, "worker");
        assert_eq!(api.status_of(&id).await, "queued", "no bad lease leased it");

        let leased = api.lease_one("w", 30_000).await;
        let token = token_of(&leased);
        let progress = |message: String| {
            json!({"worker": "w", "leases": [{"task": id, "token": token, "progress": {"percent": 5, "message": message}}]})
        };
        let reply = api.post("/v1/heartbeat", &progress("m".repeat(900 * 1024))).await;
        assert_field_error("a 900 KB progress message", &reply, "message");
        let reply = api.post("/v1/heartbeat", &progress("a\u{0}b".into())).await;
        assert_field_error("NUL in a progress message", &reply, "message");
        assert_eq!(api.task(&id).await["progress"], Value::Null, "no bad progress was stored");
        let reply = api.post("/v1/heartbeat", &progress("m".repeat(1024))).await;
        assert_eq!(reply.body["leases"][0]["ok"], true, "1,024 bytes fit: {reply:?}");
        let failed = json!({"worker": "w", "results": [{"task": id, "token": token, "outcome": "failed",
                            "error": {"kind": "exception", "message": "e".repeat(65_537)}}]});
        assert_field_error("a 64 KiB error message", &api.post("/v1/complete", &failed).await, "message");
        assert_eq!(api.status_of(&id).await, "running");
    })
    .await;
}

/// Sends `request` on a fresh connection and reads the answer until the
/// server closes it (or 5 s pass): the status and the body as JSON.
fn raw_exchange(addr: &str, request: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    // The server may answer and close before taking all of a long request.
    let _ = conn.write_all(request);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_our_error_body() {
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let long_query = format!("GET /v1/tasks?name={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let long_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(500_000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("a 100 KB query", long_query.into_bytes(), 414, "uri_too_long"),
        (
            "Content-Length: -1",
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        ("a path with byte 0xff", b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "malformed_request"),
        ("500 KB of headers", long_header.into_bytes(), 431, "headers_too_large"),
        (
            "Content-Length: 2000000000 and no body",
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n\r\n{".to_vec(),
            413,
            "payload_too_large",
        ),
    ];
    for (what, request, status, code) in cases {
        let addr = addr.clone();
        let (got, body) = tokio::task::spawn_blocking(move || raw_exchange(&addr, &request)).await.expect("exchange");
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    assert_eq!(server.api().get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_query_parameter_no_route_takes_is_refused_on_every_route() {
    let server = Server::start();
    let api = server.api();
    let doc: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("JSON");
    bounded(LIMIT, async {
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let concrete = path.replace("{id}", "00000000-0000-7000-8000-000000000000").replace("{name}", "nope");
            for method in ["get", "put", "post", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let takes: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
                let body = (method == "post" || method == "put").then_some(&b"{}"[..]);
                let reply = api.send(verb, &format!("{concrete}?colour=red"), body).await;
                let what = format!("{} {path}?colour=red (takes {takes:?})", method.to_uppercase());
                assert_error(&what, &reply, 400, "invalid_request", Some("colour"));
                checked += 1;
            }
        }
        assert!(checked > 45, "{checked} routes");
        assert_nothing_stored(&api, 0, "unknown query parameters").await;
    })
    .await;
}
