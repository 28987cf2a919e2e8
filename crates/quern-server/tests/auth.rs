//! Tokens, roles and scopes against the door: every described operation ×
//! every role, generated from the description's own table of permissions;
//! each way around the rules a hostile client tried, replayed; and a data
//! directory no other user can read.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Server, bounded, eventually};

const LIMIT: Duration = Duration::from_secs(90);
/// The admin secret the server is started with (its bootstrap file).
const ADMIN: &str = "qrn_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A server that requires tokens, with [`ADMIN`] as its first admin token.
fn secured() -> Server {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).expect("write the bootstrap file");
    let yaml = format!("auth:\n  required: true\n  bootstrap_token_file: {}\n", file.display());
    Server::start_in(dir, &yaml)
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &Server) -> Http {
        quern_client::install_tls_provider();
        let client = reqwest::Client::builder().no_proxy().build().expect("a client");
        Http { client, base: server.url.clone() }
    }

    /// Sends `method path` with `body` as `token`; answers the status, the
    /// `WWW-Authenticate` header and the JSON body (null for another body).
    async fn send(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, bool, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer = req.send().await.expect("an answer");
        let status = answer.status().as_u16();
        let challenge = answer.headers().get("www-authenticate").is_some_and(|v| v == "Bearer");
        if answer.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").contains("event-stream")) {
            return (status, challenge, Value::Null);
        }
        (status, challenge, answer.json().await.unwrap_or(Value::Null))
    }

    async fn make_token(&self, body: Value) -> String {
        let (status, _, answer) = self.send(Some(ADMIN), "POST", "/v1/tokens", Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        answer["token"].as_str().expect("a secret").to_owned()
    }
}

/// Whether a role holds a permission, as docs/security.md's matrix says.
fn grants(role: &str, permission: &str) -> bool {
    match role {
        "admin" => true,
        "producer" => matches!(permission, "read" | "submit"),
        "worker" => matches!(permission, "read" | "work"),
        "viewer" => permission == "read",
        other => panic!("no role {other}"),
    }
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let server = secured();
    let http = Http::new(&server);
    let doc: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("JSON");
    bounded(LIMIT, async {
        let mut tokens = BTreeMap::new();
        for role in ["viewer", "producer", "worker", "admin"] {
            tokens.insert(role, http.make_token(json!({"name": format!("t-{role}"), "role": role})).await);
        }
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let concrete = path.replace("{id}", "00000000-0000-7000-8000-000000000000").replace("{name}", "nope");
            for method in ["get", "put", "post", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let id = op["operationId"].as_str().unwrap_or_default();
                let scopes = &op["security"];
                let body = (method == "post" || method == "put").then(|| json!({}));
                let verb = method.to_uppercase();
                let Some(permission) = scopes[0]["bearer"][0].as_str() else {
                    assert_eq!(scopes, &json!([]), "{id}: public or with one permission");
                    let (status, _, answer) = http.send(None, &verb, &concrete, body.clone()).await;
                    assert!(status < 400, "{id} is public: {status} {answer}");
                    continue;
                };
                let (status, challenge, answer) = http.send(None, &verb, &concrete, body.clone()).await;
                assert_eq!((status, challenge), (401, true), "{id} without a token: {answer}");
                assert_eq!(answer["error"]["code"], "unauthorized", "{id}");
                let (status, _, _) = http.send(Some("qrn_made_up"), &verb, &concrete, body.clone()).await;
                assert_eq!(status, 401, "{id} with a made-up token");
                for (role, token) in &tokens {
                    let (status, _, answer) = http.send(Some(token), &verb, &concrete, body.clone()).await;
                    if grants(role, permission) {
                        assert!(status != 401 && status != 403, "{id} as {role} ({permission}): {status} {answer}");
                    } else {
                        assert_eq!(status, 403, "{id} as {role} needs {permission}: {answer}");
                        assert_eq!(answer["error"]["code"], "forbidden", "{id} as {role}");
                        let message = answer["error"]["message"].as_str().unwrap_or_default();
                        assert!(message.contains(permission), "{id} as {role}: {message}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 150, "{checked} route × role cases");
    })
    .await;
}

#[tokio::test]
async fn a_token_confined_to_queues_sees_and_touches_nothing_else() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let billing = http.make_token(json!({"name": "billing", "role": "producer", "queues": ["billing.*"]})).await;
        let b = Some(billing.as_str());
        let (status, _, hr) =
            http.send(Some(ADMIN), "POST", "/v1/tasks", Some(json!({"name": "pay", "queue": "hr"}))).await;
        assert_eq!(status, 201);
        let hr_id = hr["id"].as_str().expect("an id").to_owned();

        let (status, _, answer) = http.send(b, "POST", "/v1/tasks", Some(json!({"name": "x", "queue": "hr"}))).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden")), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("billing.*"), "{answer}");
        let batch = json!({"tasks": [{"name": "x", "queue": "billing.eu"}, {"name": "y", "queue": "hr"}]});
        assert_eq!(http.send(b, "POST", "/v1/tasks/batch", Some(batch)).await.0, 403, "a batch is all or none");
        let (status, _, own) =
            http.send(b, "POST", "/v1/tasks", Some(json!({"name": "invoice", "queue": "billing.eu"}))).await;
        assert_eq!(status, 201, "{own}");

        for (method, path) in [
            ("GET", format!("/v1/tasks/{hr_id}")),
            ("GET", format!("/v1/tasks/{hr_id}/history")),
            ("POST", format!("/v1/tasks/{hr_id}/cancel")),
            ("POST", format!("/v1/tasks/{hr_id}/retry")),
        ] {
            let (status, _, answer) = http.send(b, method, &path, None).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{method} {path}");
        }
        assert_eq!(http.send(Some(ADMIN), "GET", &format!("/v1/tasks/{hr_id}"), None).await.2["status"], "queued");
        // A task outside the scope cannot be waited on either: to this token
        // it does not exist.
        let after = json!({"name": "follow", "queue": "billing.eu", "depends_on": [{"task": hr_id}]});
        let (status, _, answer) = http.send(b, "POST", "/v1/tasks", Some(after)).await;
        assert_eq!(
            (status, answer["error"]["details"]["field"].as_str()),
            (400, Some("depends_on[0].task")),
            "{answer}"
        );
        assert!(!answer.to_string().contains("\"hr\""), "nothing about the hidden task: {answer}");

        assert_eq!(http.send(b, "GET", "/v1/tasks", None).await.0, 403, "a listing names a queue of the scope");
        assert_eq!(http.send(b, "GET", "/v1/tasks?queue=hr", None).await.0, 403);
        let (status, _, page) = http.send(b, "GET", "/v1/tasks?queue=billing.eu", None).await;
        assert_eq!((status, page["tasks"].as_array().map(Vec::len)), (200, Some(1)));
        let (_, _, queues) = http.send(b, "GET", "/v1/queues", None).await;
        let names: Vec<&str> = queues.as_array().into_iter().flatten().filter_map(|q| q["name"].as_str()).collect();
        assert_eq!(names, ["billing.eu"]);

        let (_, _, events) = http.send(b, "GET", "/v1/events?after=0", None).await;
        let queues: Vec<&str> =
            events["events"].as_array().into_iter().flatten().filter_map(|e| e["payload"]["queue"].as_str()).collect();
        assert_eq!(queues, ["billing.eu"], "only the scope's task events: {events}");
        assert_eq!(http.send(b, "GET", "/v1/events?after=0&group=g", None).await.0, 403);

        let worker = http.make_token(json!({"name": "w-billing", "role": "worker", "queues": ["billing.*"]})).await;
        let lease = json!({"worker": "w", "queues": ["hr"], "max": 10});
        assert_eq!(http.send(Some(&worker), "POST", "/v1/lease", Some(lease)).await.0, 403);
        let lease = json!({"worker": "w", "queues": ["billing.eu"], "max": 10});
        let (status, _, leased) = http.send(Some(&worker), "POST", "/v1/lease", Some(lease)).await;
        assert_eq!((status, leased["tasks"].as_array().map(Vec::len)), (200, Some(1)));
    })
    .await;
}

#[tokio::test]
async fn the_engines_own_names_and_the_shell_task_are_guarded() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let producer = http.make_token(json!({"name": "p", "role": "producer"})).await;
        let p = Some(producer.as_str());
        for (what, event, field) in [
            ("a task event", json!({"type": "task.succeeded", "source": "me"}), "type"),
            ("a workflow event", json!({"type": "workflow.failed", "source": "me"}), "type"),
            ("the engine as source", json!({"type": "payment.done", "source": "quern"}), "source"),
        ] {
            let (status, _, answer) = http.send(p, "POST", "/v1/events", Some(event)).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("reserved_name")), "{what}: {answer}");
            assert_eq!(answer["error"]["details"]["field"], field, "{what}");
        }
        let batch = json!({"events": [{"type": "ok", "source": "me"}, {"type": "schedule.fired", "source": "me"}]});
        assert_eq!(http.send(p, "POST", "/v1/events", Some(batch)).await.0, 422);
        let squat = json!({"name": "report", "idempotency_key": "schedule:daily@2026-12-08T00:00:00Z"});
        let (status, _, answer) = http.send(p, "POST", "/v1/tasks", Some(squat)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("reserved_name")), "{answer}");

        let shell = json!({"name": "shell", "input": {"command": ["cat", "/etc/shadow"]}});
        let (status, _, answer) = http.send(p, "POST", "/v1/tasks", Some(shell.clone())).await;
        assert_eq!(status, 403, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("shell"), "{answer}");
        let trusted = http.make_token(json!({"name": "ops", "role": "producer", "shell": true})).await;
        assert_eq!(http.send(Some(&trusted), "POST", "/v1/tasks", Some(shell)).await.0, 201);

        let viewer = http.make_token(json!({"name": "v", "role": "viewer"})).await;
        let id = http.send(p, "POST", "/v1/tasks", Some(json!({"name": "a"}))).await.2["id"].clone();
        let approve = json!({"approved": true});
        let path = format!("/v1/tasks/{}/approve", id.as_str().unwrap_or(""));
        assert_eq!(http.send(Some(&viewer), "POST", &path, Some(approve.clone())).await.0, 403);
        let approver = http.make_token(json!({"name": "boss", "role": "viewer", "approve": true})).await;
        let (status, _, answer) = http.send(Some(&approver), "POST", &path, Some(approve)).await;
        assert_eq!(status, 409, "allowed, and refused only because the task is no approval: {answer}");
    })
    .await;
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_and_no_secret_reaches_disk() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let secret = http.make_token(json!({"name": "short", "role": "viewer"})).await;
        assert_eq!(http.send(Some(&secret), "GET", "/v1/queues", None).await.0, 200);
        let (status, _, revoked) = http.send(Some(ADMIN), "DELETE", "/v1/tokens/short", None).await;
        assert_eq!(status, 200);
        assert!(revoked["revoked_at"].is_string(), "{revoked}");
        assert_eq!(http.send(Some(&secret), "GET", "/v1/queues", None).await.0, 401);
        let (status, _, again) =
            http.send(Some(ADMIN), "POST", "/v1/tokens", Some(json!({"name": "short", "role": "viewer"}))).await;
        assert_eq!((status, again["error"]["code"].as_str()), (409, Some("conflict")), "names are for ever");

        let brief = http.make_token(json!({"name": "brief", "role": "viewer", "expires_in_ms": 300})).await;
        eventually("the token expires", Duration::from_secs(10), async || {
            (http.send(Some(&brief), "GET", "/v1/queues", None).await.0 == 401).then_some(())
        })
        .await;

        let (_, _, listed) = http.send(Some(ADMIN), "GET", "/v1/tokens", None).await;
        assert!(!listed.to_string().contains("qrn_"), "a listing shows no secret: {listed}");
        let names: Vec<&str> =
            listed["tokens"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["bootstrap", "brief", "short"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&server.data_dir()), 0o700, "the data directory is the server user's alone");
        for entry in std::fs::read_dir(server.data_dir()).expect("the data directory") {
            let path = entry.expect("an entry").path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        for secret in [ADMIN, secret.as_str(), brief.as_str()] {
            for entry in std::fs::read_dir(server.data_dir()).expect("the data directory") {
                let path = entry.expect("an entry").path();
                let bytes = std::fs::read(&path).unwrap_or_default();
                let hex = &secret[4..];
                assert!(!bytes.windows(hex.len()).any(|w| w == hex.as_bytes()), "{} holds a secret", path.display());
            }
        }
    })
    .await;
}

#[tokio::test]
async fn beyond_loopback_a_server_without_tokens_does_not_start_unless_told() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = quern_server::Config::default();
    config.storage.data = dir.path().join("data");
    let refused = quern_server::serve(config, listener, async {}).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--auth required") && message.contains("--insecure"), "{message}");
    assert!(!dir.path().join("data").exists(), "nothing was opened");
}

#[tokio::test]
async fn every_admin_action_leaves_one_audit_entry_naming_its_actor() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let ops = http.make_token(json!({"name": "ops", "role": "admin"})).await;
        let o = Some(ops.as_str());
        let producer = http.make_token(json!({"name": "p", "role": "producer"})).await;
        let id = http.send(Some(&producer), "POST", "/v1/tasks", Some(json!({"name": "a"}))).await.2["id"].clone();
        let id = id.as_str().expect("an id").to_owned();
        assert_eq!(http.send(o, "POST", "/v1/queues/default/pause", None).await.0, 200);
        assert_eq!(http.send(o, "POST", "/v1/queues/default/resume", None).await.0, 200);
        assert_eq!(http.send(Some(&producer), "POST", &format!("/v1/tasks/{id}/cancel"), None).await.0, 200);
        assert_eq!(http.send(Some(&producer), "POST", &format!("/v1/tasks/{id}/retry"), None).await.0, 200);
        let (_, _, history) = http.send(o, "GET", &format!("/v1/tasks/{id}/history"), None).await;
        let by: Vec<Option<&str>> = history.as_array().into_iter().flatten().map(|e| e["by"].as_str()).collect();
        assert_eq!(by, [None, Some("p"), Some("p")], "the task's history names the token: {history}");
        let schedule = json!({"every": "1h", "task": {"name": "tick"}});
        assert_eq!(http.send(o, "PUT", "/v1/schedules/hourly", Some(schedule)).await.0, 201);
        assert_eq!(http.send(o, "POST", "/v1/schedules/hourly/disable", None).await.0, 200);
        assert_eq!(http.send(o, "DELETE", "/v1/schedules/hourly", None).await.0, 200);
        assert_eq!(http.send(o, "DELETE", "/v1/tokens/p", None).await.0, 200);
        assert_eq!(http.send(o, "GET", "/v1/tasks?queue=default", None).await.0, 200, "reads leave no entry");

        let (status, _, log) = http.send(o, "GET", "/v1/audit?limit=100", None).await;
        assert_eq!(status, 200, "{log}");
        let entries: Vec<(String, String, String)> = log["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (field("actor"), field("action"), field("target"))
            })
            .rev()
            .collect();
        let want: Vec<(String, String, String)> = [
            ("bootstrap", "token.create", "ops"),
            ("bootstrap", "token.create", "p"),
            ("ops", "queue.pause", "default"),
            ("ops", "queue.resume", "default"),
            ("p", "task.cancel", id.as_str()),
            ("p", "task.retry", id.as_str()),
            ("ops", "schedule.put", "hourly"),
            ("ops", "schedule.disable", "hourly"),
            ("ops", "schedule.delete", "hourly"),
            ("ops", "token.revoke", "p"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .collect();
        assert_eq!(entries, want);
        let (_, _, only) = http.send(o, "GET", "/v1/audit?actor=p&action=task.", None).await;
        assert_eq!(only["entries"].as_array().map(Vec::len), Some(2), "{only}");
        let (_, _, page) = http.send(o, "GET", "/v1/audit?limit=3", None).await;
        let before = page["next_before"].as_u64().expect("a next page");
        let (_, _, next) = http.send(o, "GET", &format!("/v1/audit?limit=3&before={before}"), None).await;
        assert_eq!(next["entries"][0]["action"], "schedule.put", "{next}");
    })
    .await;
}

#[tokio::test]
async fn a_token_over_its_rate_or_body_limit_is_told_so() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let slow = http.make_token(json!({"name": "slow", "role": "viewer", "rate_per_s": 2})).await;
        let mut statuses = Vec::new();
        let mut refusal = None;
        for _ in 0..10 {
            let answer = http.client.get(format!("{}/v1/queues", http.base)).bearer_auth(&slow).send().await;
            let answer = answer.expect("an answer");
            statuses.push(answer.status().as_u16());
            if answer.status() == 429 && refusal.is_none() {
                let retry_after =
                    answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                refusal = Some((retry_after, body));
            }
        }
        assert_eq!(&statuses[..2], [200, 200], "the first two of a second go through: {statuses:?}");
        let (retry_after, body) = refusal.expect("a refusal within ten quick requests");
        assert_eq!(retry_after, Some(1), "Retry-After in whole seconds");
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert!(body["error"]["details"]["retry_after_ms"].as_u64().is_some_and(|ms| ms <= 500), "{body}");
        eventually("the bucket refills", Duration::from_secs(5), async || {
            (http.send(Some(&slow), "GET", "/v1/queues", None).await.0 == 200).then_some(())
        })
        .await;
        let other = http.make_token(json!({"name": "other", "role": "viewer"})).await;
        assert_eq!(http.send(Some(&other), "GET", "/v1/queues", None).await.0, 200, "other tokens are not slowed");

        let small = http.make_token(json!({"name": "small", "role": "producer", "max_body_bytes": 1024})).await;
        let big = json!({"name": "big", "input": {"pad": "x".repeat(2_000)}});
        let (status, _, answer) = http.send(Some(&small), "POST", "/v1/tasks", Some(big.clone())).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("payload_too_large")), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("token"), "{answer}");
        assert_eq!(http.send(Some(&small), "POST", "/v1/tasks", Some(json!({"name": "ok"}))).await.0, 201);
        assert_eq!(
            http.send(Some(ADMIN), "POST", "/v1/tasks", Some(big)).await.0,
            201,
            "the server's own limit is higher"
        );
        let (_, _, listed) = http.send(Some(ADMIN), "GET", "/v1/tokens", None).await;
        let slow_view = listed["tokens"].as_array().into_iter().flatten().find(|t| t["name"] == "slow").cloned();
        assert_eq!(slow_view.map(|t| t["rate_per_s"].clone()), Some(json!(2)));
    })
    .await;
}

#[tokio::test]
async fn an_event_aimed_at_one_target_is_read_by_that_token_alone() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let producer = http.make_token(json!({"name": "publisher", "role": "producer"})).await;
        let alice = http.make_token(json!({"name": "alice-bot", "role": "viewer"})).await;
        let bob = http.make_token(json!({"name": "bob-bot", "role": "viewer"})).await;
        let events = json!({"events": [
            {"type": "note.private", "source": "app", "target": "alice-bot", "payload": {"secret": 1}},
            {"type": "note.all", "source": "app"},
        ]});
        let (status, _, answer) = http.send(Some(&producer), "POST", "/v1/events", Some(events)).await;
        assert_eq!(status, 201, "{answer}");
        let types = |page: &Value| -> Vec<String> {
            page["events"].as_array().into_iter().flatten().filter_map(|e| e["type"].as_str()).map(Into::into).collect()
        };
        let read = |token: String, path: &'static str| {
            let http = &http;
            async move { http.send(Some(&token), "GET", path, None).await }
        };
        let (_, _, page) = read(alice.clone(), "/v1/events?after=0&type=note.*").await;
        assert_eq!(types(&page), ["note.private", "note.all"]);
        let (_, _, page) = read(bob.clone(), "/v1/events?after=0&type=note.*").await;
        assert_eq!(types(&page), ["note.all"], "another subscriber's event stays hidden");
        let (_, _, page) = read(producer.clone(), "/v1/events?after=0&type=note.*").await;
        assert_eq!(types(&page), ["note.all"], "publishing to a target is not reading it");
        let (status, _, answer) = read(bob.clone(), "/v1/events?after=0&target=alice-bot").await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden")), "{answer}");
        let (status, _, _) = read(bob.clone(), "/v1/events/stream?after=0&target=alice-bot").await;
        assert_eq!(status, 403, "the stream is held to the same rule");
        let (_, _, page) = read(bob, "/v1/events?after=0&type=note.*&group=bots&member=b").await;
        assert_eq!(types(&page), ["note.all"], "nor does a consumer group hand it out");
        let (_, _, page) = read(ADMIN.to_owned(), "/v1/events?after=0&type=note.*").await;
        assert_eq!(types(&page), ["note.private", "note.all"], "admins read everything");
    })
    .await;
}

#[tokio::test]
async fn a_live_workers_task_type_cannot_be_swapped_by_another() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let worker = http.make_token(json!({"name": "w", "role": "worker"})).await;
        let w = Some(worker.as_str());
        let schema = |t: &str| json!({"type": "object", "properties": {"to": {"type": t}}, "required": ["to"]});
        let first = json!({"worker": "mailer", "task_types": [{"name": "email", "input_schema": schema("string")}]});
        assert_eq!(http.send(w, "POST", "/v1/workers/register", Some(first)).await.0, 200);
        let swap = json!({"worker": "intruder", "task_types": [{"name": "email", "input_schema": schema("number")}]});
        let (status, _, answer) = http.send(w, "POST", "/v1/workers/register", Some(swap)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("mailer"), "{answer}");
        let good = json!({"name": "email", "input": {"to": "a@b.c"}});
        assert_eq!(http.send(Some(ADMIN), "POST", "/v1/tasks", Some(good)).await.0, 201, "submits go on");

        let confined = http.make_token(json!({"name": "wb", "role": "worker", "queues": ["billing.*"]})).await;
        let outside = json!({"worker": "wb", "queues": ["hr"], "task_types": []});
        assert_eq!(http.send(Some(&confined), "POST", "/v1/workers/register", Some(outside)).await.0, 403);
    })
    .await;
}

#[tokio::test]
async fn bad_token_and_audit_requests_are_refused_and_change_nothing() {
    let server = secured();
    let http = Http::new(&server);
    bounded(LIMIT, async {
        let a = Some(ADMIN);
        for (what, body, field) in [
            ("an unknown role", json!({"name": "x", "role": "root"}), None),
            ("a name with a space", json!({"name": "a b", "role": "viewer"}), Some("name")),
            ("a queue glob with a slash", json!({"name": "x", "role": "viewer", "queues": ["a/b"]}), Some("queues")),
            ("an expiry of zero", json!({"name": "x", "role": "viewer", "expires_in_ms": 0}), Some("expires_in_ms")),
            ("a rate of zero", json!({"name": "x", "role": "viewer", "rate_per_s": 0}), Some("rate_per_s")),
            (
                "a body limit under 1024",
                json!({"name": "x", "role": "viewer", "max_body_bytes": 100}),
                Some("max_body_bytes"),
            ),
            ("an unknown field", json!({"name": "x", "role": "viewer", "colour": "red"}), None),
        ] {
            let (status, _, answer) = http.send(a, "POST", "/v1/tokens", Some(body)).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "{what}: {answer}");
            if let Some(field) = field {
                assert_eq!(answer["error"]["details"]["field"], field, "{what}: {answer}");
            }
        }
        let (status, _, answer) = http.send(a, "DELETE", "/v1/tokens/nope", None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");
        for query in ["limit=0", "limit=1001", "before=soon", "colour=red"] {
            let (status, _, answer) = http.send(a, "GET", &format!("/v1/audit?{query}"), None).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "{query}: {answer}");
        }
        let (_, _, listed) = http.send(a, "GET", "/v1/tokens", None).await;
        assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(1), "only the bootstrap token: {listed}");
        let (_, _, log) = http.send(a, "GET", "/v1/audit", None).await;
        assert_eq!(log["entries"], json!([]), "refused requests leave no audit entry");
    })
    .await;
}
