//! A small HTTP client of the public API ([`Api`]), what its tests check
//! of tasks and histories, and bounded waiting ([`eventually`]): shared by
//! the in-process contract tests of `quern-server` and the tests of the
//! real binary in `quern` (which include this file).
//!
//! Nothing here sleeps blindly: waits poll a condition every 20 ms up to a
//! limit.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use quern_core::time::parse_rfc3339;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An HTTP answer: status code and body (JSON, or the raw text as a JSON
/// string when the body is not JSON, or null when it is empty).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    /// The `error.code` of an error body, or "" when there is none.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A small client of the public HTTP API.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) fn new(base: &str) -> Api {
        Api::build(base, None)
    }

    /// The same server, every request carrying `token` as a bearer token.
    pub(crate) fn with_token(&self, token: &str) -> Api {
        Api::build(&self.base, Some(token))
    }

    fn build(base: &str, token: Option<&str>) -> Api {
        quern_client::install_tls_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            // Above the longest long-poll the contract allows (60 s).
            .timeout(Duration::from_secs(75))
            .build()
            .expect("build the HTTP client");
        Api { http, base: base.trim_end_matches('/').to_owned() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send a request; transport errors are returned (the crash test needs
    /// them), not panicked on.
    pub(crate) async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        json_content_type: bool,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            if json_content_type {
                req = req.header("content-type", "application/json");
            }
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply { status, body })
    }

    pub(crate) async fn try_post(&self, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
        let bytes = serde_json::to_vec(body).expect("serialize a request body");
        self.try_send(reqwest::Method::POST, path, Some(bytes), true).await
    }

    pub(crate) async fn try_get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        self.try_send(reqwest::Method::GET, path, None, false).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.try_get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.try_post(path, body).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// GET `path`: the status and the length of the body in bytes.
    pub(crate) async fn get_len(&self, path: &str) -> (u16, usize) {
        let resp = self.http.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (status, bytes.len())
    }

    /// POST raw bytes with `content-type: application/json`.
    pub(crate) async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.try_send(reqwest::Method::POST, path, Some(body.into()), true)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST raw bytes with the given content type.
    pub(crate) async fn post_typed(&self, path: &str, body: &[u8], content_type: &str) -> Reply {
        let req = self.http.post(self.url(path)).header("content-type", content_type).body(body.to_vec());
        let resp = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// Any method, raw body, no content type.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Option<&[u8]>) -> Reply {
        self.try_send(method.clone(), path, body.map(<[u8]>::to_vec), false)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    // ---- tasks -------------------------------------------------------------

    /// Submit one task; asserts 201 and returns the task.
    pub(crate) async fn submit(&self, spec: Value) -> Value {
        let reply = self.post("/v1/tasks", &spec).await;
        assert_eq!(reply.status, 201, "submit {spec}: {reply:?}");
        reply.body
    }

    /// Submit a task named `name` with no other fields; returns its id.
    pub(crate) async fn submit_named(&self, name: &str) -> String {
        id_of(&self.submit(json!({ "name": name })).await)
    }

    /// GET the task; asserts 200.
    pub(crate) async fn task(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(reply.status, 200, "GET task {id}: {reply:?}");
        if let Some(problem) = task_problem(&reply.body) {
            panic!("GET task {id}: {problem}: {}", reply.body);
        }
        reply.body
    }

    /// The task's status (asserts 200).
    pub(crate) async fn status_of(&self, id: &str) -> String {
        self.task(id).await["status"].as_str().expect("status is a string").to_owned()
    }

    /// The task's history entries, oldest first (asserts 200).
    pub(crate) async fn history(&self, id: &str) -> Vec<Value> {
        let reply = self.get(&format!("/v1/tasks/{id}/history")).await;
        assert_eq!(reply.status, 200, "GET history {id}: {reply:?}");
        reply.body.as_array().expect("history is an array").clone()
    }

    /// Poll the task until its status is one of `want` (every 20 ms, at most
    /// `limit`); returns the task.
    pub(crate) async fn wait_status(&self, id: &str, want: &[&str], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let task = self.task(id).await;
            if want.contains(&task["status"].as_str().unwrap_or("")) {
                return task;
            }
            assert!(start.elapsed() < limit, "task {id} did not reach {want:?} within {limit:?}; last state: {task}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every task the listing `query` (e.g. `status=queued`) gives, following
    /// cursors, newest first.
    pub(crate) async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tasks?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&encode(c));
            }
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
            for task in reply.body["tasks"].as_array().expect("tasks array") {
                if let Some(problem) = task_problem(task) {
                    panic!("GET {path}: {problem}: {task}");
                }
                out.push(task.clone());
            }
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// How many tasks the server holds in all.
    pub(crate) async fn count_tasks(&self) -> usize {
        self.list_all("").await.len()
    }

    // ---- worker protocol ---------------------------------------------------

    /// Lease from the default queue; asserts 200 and returns the tasks.
    pub(crate) async fn lease(&self, worker: &str, max: u32, wait_ms: u64, lease_ms: u64) -> Vec<Value> {
        self.lease_from(worker, &["default"], max, wait_ms, lease_ms).await
    }

    /// Lease from `queues`; asserts 200 and returns the tasks.
    pub(crate) async fn lease_from(
        &self,
        worker: &str,
        queues: &[&str],
        max: u32,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Vec<Value> {
        let body = json!({
            "worker": worker, "queues": queues, "max": max,
            "wait_ms": wait_ms, "lease_ms": lease_ms,
        });
        let reply = self.post("/v1/lease", &body).await;
        assert_eq!(reply.status, 200, "lease {body}: {reply:?}");
        reply.body["tasks"].as_array().expect("lease answer has tasks").clone()
    }

    /// Lease exactly one task from the default queue (waiting up to 10 s).
    pub(crate) async fn lease_one(&self, worker: &str, lease_ms: u64) -> Value {
        let mut tasks = self.lease(worker, 1, 10_000, lease_ms).await;
        assert_eq!(tasks.len(), 1, "expected one leased task, got {tasks:?}");
        tasks.remove(0)
    }

    /// One heartbeat for one lease; returns its entry of the answer.
    pub(crate) async fn heartbeat(&self, worker: &str, task: &str, token: &str, progress: Option<Value>) -> Value {
        let mut lease = json!({ "task": task, "token": token });
        if let Some(p) = progress {
            lease["progress"] = p;
        }
        let body = json!({ "worker": worker, "leases": [lease] });
        let reply = self.post("/v1/heartbeat", &body).await;
        assert_eq!(reply.status, 200, "heartbeat {body}: {reply:?}");
        let leases = reply.body["leases"].as_array().expect("heartbeat answer has leases");
        assert_eq!(leases.len(), 1, "one entry per lease: {reply:?}");
        assert_eq!(leases[0]["task"], task, "entry names the task: {reply:?}");
        leases[0].clone()
    }

    /// Send one completion; returns its entry of the answer.
    pub(crate) async fn complete(&self, worker: &str, result: Value) -> Value {
        let task = result["task"].clone();
        let body = json!({ "worker": worker, "results": [result] });
        let reply = self.post("/v1/complete", &body).await;
        assert_eq!(reply.status, 200, "complete {body}: {reply:?}");
        let results = reply.body["results"].as_array().expect("complete answer has results");
        assert_eq!(results.len(), 1, "one entry per result: {reply:?}");
        assert_eq!(results[0]["task"], task, "entry names the task: {reply:?}");
        results[0].clone()
    }

    /// Complete `task` as succeeded with `result`.
    pub(crate) async fn succeed(&self, worker: &str, task: &str, token: &str, result: Value) -> Value {
        self.complete(worker, json!({ "task": task, "token": token, "outcome": "succeeded", "result": result })).await
    }

    /// Complete `task` as failed (kind `exception`).
    pub(crate) async fn fail(&self, worker: &str, task: &str, token: &str, message: &str, retry: bool) -> Value {
        self.complete(
            worker,
            json!({
                "task": task, "token": token, "outcome": "failed",
                "error": { "kind": "exception", "message": message }, "retry": retry,
            }),
        )
        .await
    }
}

/// The `id` of a task.
pub(crate) fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap_or_else(|| panic!("task without id: {task}")).to_owned()
}

/// The lease token of a leased task.
pub(crate) fn token_of(task: &Value) -> String {
    task["lease"]["token"].as_str().unwrap_or_else(|| panic!("leased task without lease.token: {task}")).to_owned()
}

/// The `(from, to)` pairs of a history, with `from` "-" for null.
pub(crate) fn moves(history: &[Value]) -> Vec<(String, String)> {
    history
        .iter()
        .map(|e| (e["from"].as_str().unwrap_or("-").to_owned(), e["to"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

/// Checks a history against the transition table: it starts with the
/// submission (`null` → queued|pending), each entry starts where the one
/// before ended, and every move is allowed (including a manual retry of a
/// failed, timed-out or cancelled task back to queued). Returns the problem.
pub(crate) fn history_problem(history: &[Value]) -> Option<String> {
    let allowed = |from: &str, to: &str| {
        matches!(
            (from, to),
            ("pending", "queued" | "cancelled" | "skipped")
                | ("queued", "running" | "cancelled" | "skipped")
                | ("running", "succeeded" | "failed" | "cancelled" | "timed_out" | "pending" | "queued")
                | ("failed" | "timed_out" | "cancelled", "queued")
        )
    };
    let moves = moves(history);
    let Some((first_from, first_to)) = moves.first() else {
        return Some("empty history".to_owned());
    };
    if first_from != "-" || !matches!(first_to.as_str(), "queued" | "pending") {
        return Some(format!("starts with {first_from} -> {first_to}"));
    }
    if history.iter().any(|e| e["at"].as_str().and_then(parse_rfc3339).is_none()) {
        return Some("an entry without a valid `at`".to_owned());
    }
    for pair in moves.windows(2) {
        let ((_, before), (from, to)) = (&pair[0], &pair[1]);
        if from != before {
            return Some(format!("{from} -> {to} follows a move to {before}"));
        }
        if !allowed(from, to) {
            return Some(format!("{from} -> {to} is not in the transition table"));
        }
    }
    None
}

/// Checks that the `at` times of a history never go backwards (oldest
/// first). Returns the problem.
pub(crate) fn history_time_problem(history: &[Value]) -> Option<String> {
    let times: Vec<Option<i64>> = history.iter().map(|e| e["at"].as_str().and_then(parse_rfc3339)).collect();
    if times.windows(2).any(|w| w[1] < w[0]) {
        let moves = moves(history);
        return Some(format!(
            "`at` goes backwards: {:?}",
            moves.iter().zip(history).map(|(m, e)| (m, e["at"].clone())).collect::<Vec<_>>()
        ));
    }
    None
}

/// Checks the fields of a task that follow from its status; returns the
/// problem.
pub(crate) fn task_problem(task: &Value) -> Option<String> {
    let status = task["status"].as_str().unwrap_or("");
    let terminal = matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out" | "skipped");
    let attempt = task["attempt"].as_u64();
    let max = task["max_attempts"].as_u64();
    if terminal != task["finished_at"].is_string() {
        return Some(format!("{status} with finished_at {}", task["finished_at"]));
    }
    if attempt.is_none() || max.is_none() || attempt > max {
        return Some(format!("attempt {attempt:?} of {max:?}"));
    }
    if status == "running" && (attempt == Some(0) || !task["started_at"].is_string() || !task["worker"].is_string()) {
        return Some("running without an attempt, started_at or worker".to_owned());
    }
    if status == "succeeded" && task["error"].is_object() && task["result"].is_null() {
        return Some("succeeded with an error and no result".to_owned());
    }
    for key in ["created_at", "updated_at", "run_at"] {
        if parse_rfc3339(task[key].as_str().unwrap_or("")).is_none() {
            return Some(format!("{key} is not an RFC 3339 time: {}", task[key]));
        }
    }
    None
}

/// Checks that a task's times are causal: it did not start before it was
/// created nor end before it started. Returns the problem.
pub(crate) fn causality_problem(task: &Value) -> Option<String> {
    let time = |key: &str| task[key].as_str().and_then(parse_rfc3339);
    let created = time("created_at");
    if let Some(started) = time("started_at")
        && Some(started) < created
    {
        return Some("started_at is before created_at".to_owned());
    }
    if let Some(finished) = time("finished_at")
        && (Some(finished) < created || Some(finished) < time("started_at"))
    {
        return Some("finished_at is before created_at or started_at".to_owned());
    }
    None
}

/// Percent-encode a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Poll `check` every 20 ms until it gives `Some`, for at most `limit`.
pub(crate) async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run a whole test body under a time limit, so that a hung server fails the
/// test instead of hanging the suite.
pub(crate) async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}

/// An RFC 3339 UTC time `offset_ms` from now (negative: in the past).
pub(crate) fn rfc3339_from_now(offset_ms: i64) -> String {
    let now = quern_core::Clock::now(&quern_core::SystemClock);
    quern_core::time::format_rfc3339(now + offset_ms)
}

/// Milliseconds since the epoch of an RFC 3339 time as the server writes it.
pub(crate) fn parse_rfc3339_ms(s: &str) -> i64 {
    parse_rfc3339(s).unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"))
}

#[test]
fn rfc3339_round_trips() {
    let s = rfc3339_from_now(0);
    let back = parse_rfc3339_ms(&s);
    assert_eq!(rfc3339_from_now(0).len(), s.len());
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("fits");
    assert!((now - back).abs() < 1000, "{s} -> {back} vs {now}");
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
}
