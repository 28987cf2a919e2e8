//! Workflows through the real binary: conditions release and skip tasks,
//! cycles and bad conditions are refused with nothing stored, approvals wait
//! for a decision, parents' results reach a child's lease, cancel, graphs.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Api, Server, bounded};

const LIMIT: Duration = Duration::from_secs(30);

/// Leases every ready task of `names`, checking exactly those come back.
async fn lease(api: &Api, names: &[&str]) -> Vec<Value> {
    let reply = api.post("/v1/lease", &json!({"worker": "w", "max": 100})).await;
    let tasks = reply.body["tasks"].as_array().cloned().unwrap_or_default();
    let mut got: Vec<&str> = tasks.iter().filter_map(|t| t["key"].as_str()).collect();
    got.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{}", reply.body);
    tasks
}

async fn complete(api: &Api, task: &Value, outcome: Value) {
    let mut result = json!({"task": task["id"], "token": task["lease"]["token"]});
    if let (Some(r), Some(o)) = (result.as_object_mut(), outcome.as_object()) {
        r.extend(o.clone());
    }
    let reply = api.post("/v1/complete", &json!({"worker": "w", "results": [result]})).await;
    assert_eq!(reply.body["results"][0]["ok"], true, "{}", reply.body);
}

fn by_key<'a>(tasks: &'a [Value], key: &str) -> &'a Value {
    tasks.iter().find(|t| t["key"] == key).expect("a task with that key")
}

#[tokio::test]
async fn conditions_release_and_skip_tasks_and_the_workflow_ends() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let created = api
            .post(
                "/v1/workflows",
                &json!({"name": "etl", "tasks": [
                    {"key": "extract", "name": "extract", "input": {"source": "s3"}},
                    {"key": "transform", "name": "transform", "depends_on": [{"key": "extract"}]},
                    {"key": "load", "name": "load", "depends_on": [{"key": "transform", "on": "success"}]},
                    {"key": "alert", "name": "alert", "depends_on": [{"key": "transform", "on": "failure"}]},
                    {"key": "cleanup", "name": "cleanup", "depends_on": [{"key": "transform", "on": "completion"}]},
                    {"key": "big", "name": "big", "depends_on": [{"key": "extract", "on": {"expr": "result.rows > 100"}}]}
                ]}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let wf = created.body["id"].as_str().expect("an id").to_owned();
        assert_eq!(created.body["tasks"].as_object().map(|t| t.len()), Some(6));

        let extract = lease(&api, &["extract"]).await;
        complete(&api, &extract[0], json!({"outcome": "succeeded", "result": {"rows": 7}})).await;
        let transform = lease(&api, &["transform"]).await;
        assert_eq!(transform[0]["parents"]["extract"]["result"], json!({"rows": 7}), "parents reach the child");
        assert_eq!(transform[0]["parents"]["extract"]["status"], "succeeded");
        complete(&api, &transform[0], json!({"outcome": "failed", "error": {"kind": "exception", "message": "bad row"}, "retry": false})).await;
        let next = lease(&api, &["alert", "cleanup"]).await;
        for t in &next {
            complete(&api, t, json!({"outcome": "succeeded"})).await;
        }
        let done = api.get(&format!("/v1/workflows/{wf}?wait=5s")).await.body;
        assert_eq!(done["status"], "failed", "a failed task fails the workflow: {done}");
        let tasks = done["tasks"].as_array().expect("tasks").clone();
        assert_eq!(by_key(&tasks, "load")["status"], "skipped");
        assert_eq!(by_key(&tasks, "load")["error"]["kind"], "dependency");
        assert_eq!(by_key(&tasks, "big")["status"], "skipped", "rows 7 is not > 100");
        assert_eq!(done["counts"], json!({"failed": 1, "skipped": 2, "succeeded": 3}));
        let listed = api.get(&format!("/v1/tasks?workflow={wf}&status=skipped")).await.body;
        assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(2));
        let history = api.get(&format!("/v1/tasks/{}/history", by_key(&tasks, "load")["id"].as_str().unwrap_or(""))).await.body;
        let moves: Vec<(Value, Value)> = history.as_array().expect("a list").iter().map(|e| (e["from"].clone(), e["to"].clone())).collect();
        assert_eq!(moves, [(Value::Null, json!("pending")), (json!("pending"), json!("skipped"))]);
    })
    .await;
}

#[tokio::test]
async fn cycles_and_bad_graphs_are_refused_and_store_nothing() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let cycle = api
            .post("/v1/workflows", &json!({"name": "loop", "tasks": [
                {"key": "a", "name": "x", "depends_on": [{"key": "c"}]},
                {"key": "b", "name": "x", "depends_on": [{"key": "a"}]},
                {"key": "c", "name": "x", "depends_on": [{"key": "b"}]}
            ]}))
            .await;
        assert_eq!((cycle.status, cycle.code()), (422, "invalid_workflow"), "{}", cycle.body);
        let message = cycle.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("a -> b -> c -> a"), "{message}");
        let cases = [
            (json!({"name": "w", "tasks": [{"key": "a", "name": "x", "depends_on": [{"key": "ghost"}]}]}), 422, "invalid_workflow"),
            (json!({"name": "w", "tasks": [{"key": "a", "name": "x"}, {"key": "a", "name": "y"}]}), 422, "invalid_workflow"),
            (json!({"name": "w", "tasks": [{"key": "a", "name": "x"}, {"key": "b", "name": "y", "depends_on": [{"key": "a", "on": {"expr": "result >"}}]}]}), 422, "invalid_workflow"),
            (json!({"name": "w", "tasks": [{"key": "a", "name": "x"}, {"key": "b", "name": "y", "depends_on": [{"key": "a", "on": "sometimes"}]}]}), 400, "invalid_request"),
            (json!({"name": "w", "tasks": [{"key": "a", "name": "bad name"}]}), 400, "invalid_request"),
            (json!({"name": "w", "tasks": [{"name": "x"}]}), 400, "invalid_request"),
            (json!({"name": "w", "tasks": []}), 422, "invalid_workflow"),
            (json!({"tasks": [{"key": "a", "name": "x"}]}), 400, "invalid_request"),
        ];
        for (body, status, code) in cases {
            let reply = api.post("/v1/workflows", &body).await;
            assert_eq!((reply.status, reply.code()), (status, code), "{body}: {}", reply.body);
        }
        let listed = api.get("/v1/tasks").await.body;
        assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(0), "nothing stored");
        let missing = api.get("/v1/workflows/01a209f5-c18d-7089-af73-b273174626f4").await;
        assert_eq!((missing.status, missing.code()), (404, "not_found"));
        assert_eq!(api.get("/healthz").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn approvals_wait_for_a_person() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let created = api
            .post(
                "/v1/workflows",
                &json!({"name": "deploy", "tasks": [
                    {"key": "build", "name": "build"},
                    {"key": "ok", "name": "approval", "depends_on": [{"key": "build"}]},
                    {"key": "ship", "name": "ship", "depends_on": [{"key": "ok"}]}
                ]}),
            )
            .await;
        let ids = created.body["tasks"].clone();
        let build = lease(&api, &["build"]).await;
        complete(&api, &build[0], json!({"outcome": "succeeded"})).await;
        lease(&api, &[]).await;
        let ok = ids["ok"].as_str().expect("id");
        for (what, body, field) in [
            ("a NUL in by", json!({"approved": true, "by": "a\u{0}"}), "by"),
            ("a 201-byte by", json!({"approved": true, "by": "b".repeat(201)}), "by"),
            ("a 4,097-byte comment", json!({"approved": true, "comment": "c".repeat(4_097)}), "comment"),
        ] {
            let r = api.post(&format!("/v1/tasks/{ok}/approve"), &body).await;
            assert_eq!(
                (r.status, r.code(), r.body["error"]["details"]["field"].as_str()),
                (400, "invalid_request", Some(field)),
                "{what}"
            );
        }
        let decided = api
            .post(&format!("/v1/tasks/{ok}/approve"), &json!({"approved": true, "by": "ana", "comment": "go"}))
            .await;
        assert_eq!(decided.body["status"], "succeeded", "{}", decided.body);
        assert_eq!(decided.body["result"], json!({"approved": true, "by": "ana", "comment": "go"}));
        let twice = api.post(&format!("/v1/tasks/{ok}/approve"), &json!({"approved": false})).await;
        assert_eq!((twice.status, twice.code()), (409, "invalid_transition"));
        let bad = api.post(&format!("/v1/tasks/{ok}/approve"), &json!({"approved": "yes"})).await;
        assert_eq!(bad.status, 400);
        lease(&api, &["ship"]).await;
    })
    .await;
}

#[tokio::test]
async fn cancel_and_graphs() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let created = api
            .post(
                "/v1/workflows",
                &json!({"name": "g", "tasks": [
                    {"key": "a", "name": "a"},
                    {"key": "b", "name": "b", "depends_on": [{"key": "a", "on": "completion"}]}
                ]}),
            )
            .await;
        let wf = created.body["id"].as_str().expect("id").to_owned();
        let dot = api.send(reqwest::Method::GET, &format!("/v1/workflows/{wf}/graph?format=dot"), None).await;
        let text = dot.body.as_str().unwrap_or("").to_owned();
        assert!(text.starts_with("digraph") && text.contains("\"a\" -> \"b\" [label=\"completion\"]"), "{text}");
        let mermaid = api.send(reqwest::Method::GET, &format!("/v1/workflows/{wf}/graph?format=mermaid"), None).await;
        assert!(mermaid.body.as_str().unwrap_or("").contains("n0 -->|completion| n1"), "{}", mermaid.body);
        let json_graph = api.get(&format!("/v1/workflows/{wf}/graph")).await.body;
        assert_eq!(json_graph["edges"][0], json!({"from": "a", "to": "b", "on": "completion"}));
        let bad = api.get(&format!("/v1/workflows/{wf}/graph?format=png")).await;
        assert_eq!(bad.status, 400);
        let cancelled = api.post(&format!("/v1/workflows/{wf}/cancel"), &json!({})).await;
        assert_eq!(cancelled.body["cancelled"], 2, "{}", cancelled.body);
        let done = api.get(&format!("/v1/workflows/{wf}")).await.body;
        assert_eq!((done["status"].as_str(), done["counts"].clone()), (Some("cancelled"), json!({"cancelled": 2})));
    })
    .await;
}

/// Runs whatever is ready until nothing is left, completing every task with
/// `outcome_for(key)`; answers how many tasks ran.
async fn drain(api: &Api, outcome_for: impl Fn(&str) -> Value) -> usize {
    let mut ran = 0;
    loop {
        let reply = api.post("/v1/lease", &json!({"worker": "w", "max": 1000})).await;
        let tasks = reply.body["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.is_empty() {
            return ran;
        }
        let results: Vec<Value> = tasks
            .iter()
            .map(|t| {
                let mut r = json!({"task": t["id"], "token": t["lease"]["token"]});
                if let (Some(r), Some(o)) =
                    (r.as_object_mut(), outcome_for(t["key"].as_str().unwrap_or("")).as_object())
                {
                    r.extend(o.clone());
                }
                r
            })
            .collect();
        let done = api.post("/v1/complete", &json!({"worker": "w", "results": results})).await;
        assert!(done.body["results"].as_array().is_some_and(|a| a.iter().all(|r| r["ok"] == true)), "{}", done.body);
        ran += tasks.len();
    }
}

fn succeed(_: &str) -> Value {
    json!({"outcome": "succeeded", "result": null})
}

#[tokio::test]
async fn a_diamond_joins_and_a_skip_travels_three_levels() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let diamond = api
            .post(
                "/v1/workflows",
                &json!({"name": "diamond", "tasks": [
                    {"key": "top", "name": "t"},
                    {"key": "left", "name": "t", "depends_on": [{"key": "top"}]},
                    {"key": "right", "name": "t", "depends_on": [{"key": "top"}]},
                    {"key": "bottom", "name": "t", "depends_on": [{"key": "left"}, {"key": "right"}]}
                ]}),
            )
            .await;
        let wf = diamond.body["id"].as_str().expect("id").to_owned();
        let top = lease(&api, &["top"]).await;
        complete(&api, &top[0], json!({"outcome": "succeeded"})).await;
        let sides = lease(&api, &["left", "right"]).await;
        complete(&api, &sides[0], json!({"outcome": "succeeded"})).await;
        lease(&api, &[]).await;
        complete(&api, &sides[1], json!({"outcome": "succeeded"})).await;
        let bottom = lease(&api, &["bottom"]).await;
        assert_eq!(bottom[0]["parents"].as_object().map(|p| p.len()), Some(2));
        complete(&api, &bottom[0], json!({"outcome": "succeeded"})).await;
        assert_eq!(api.get(&format!("/v1/workflows/{wf}?wait=5s")).await.body["status"], "succeeded");

        let chain = api
            .post(
                "/v1/workflows",
                &json!({"name": "levels", "tasks": [
                    {"key": "root", "name": "t"},
                    {"key": "l1", "name": "t", "depends_on": [{"key": "root"}]},
                    {"key": "l2", "name": "t", "depends_on": [{"key": "l1"}]},
                    {"key": "l3", "name": "t", "depends_on": [{"key": "l2"}]},
                    {"key": "after", "name": "t", "depends_on": [{"key": "l3", "on": "completion"}]}
                ]}),
            )
            .await;
        let wf = chain.body["id"].as_str().expect("id").to_owned();
        let root = lease(&api, &["root"]).await;
        complete(
            &api,
            &root[0],
            json!({"outcome": "failed", "error": {"kind": "exception", "message": "no"}, "retry": false}),
        )
        .await;
        // l1, l2 and l3 are skipped in one go; `after` runs on their completion.
        let after = lease(&api, &["after"]).await;
        assert_eq!(after[0]["parents"]["l3"]["status"], "skipped");
        complete(&api, &after[0], json!({"outcome": "succeeded"})).await;
        let done = api.get(&format!("/v1/workflows/{wf}?wait=5s")).await.body;
        assert_eq!(done["counts"], json!({"failed": 1, "skipped": 3, "succeeded": 1}), "{done}");
        let l3 = by_key(done["tasks"].as_array().expect("tasks"), "l3");
        assert!(l3["error"]["message"].as_str().unwrap_or("").contains("l2 ended skipped"), "{l3}");
    })
    .await;
}

#[tokio::test]
async fn chain_group_and_chord_shorthands() {
    bounded(LIMIT, async {
        let server = Server::start();
        let api = server.api();
        let chain = api
            .post("/v1/workflows", &json!({"name": "c", "chain": [{"name": "a"}, {"name": "b", "key": "second"}, {"name": "c"}]}))
            .await;
        assert_eq!(chain.status, 201, "{}", chain.body);
        let mut keys: Vec<&str> = chain.body["tasks"].as_object().expect("tasks").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["second", "step-1", "step-3"]);
        // The answer lists the tasks in the order declared, as its text shows.
        let steps: Vec<Value> = (0..12).map(|i| json!({"name": "n", "input": i})).collect();
        let text = reqwest::Client::new()
            .post(format!("{}/v1/workflows", server.url))
            .json(&json!({"name": "twelve", "chain": steps}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("a workflow")
            .text()
            .await
            .expect("its answer");
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap_or(usize::MAX);
        assert!((1..12).all(|i| at(&format!("step-{i}")) < at(&format!("step-{}", i + 1))), "{text}");
        let graph = api.get(&format!("/v1/workflows/{}/graph", chain.body["id"].as_str().unwrap_or(""))).await.body;
        assert_eq!(
            graph["edges"],
            json!([{"from": "step-1", "to": "second", "on": "success"}, {"from": "second", "to": "step-3", "on": "success"}])
        );
        let chord = api
            .post("/v1/workflows", &json!({"name": "g", "group": [{"name": "x"}, {"name": "x"}, {"name": "x"}], "then": {"name": "sum"}}))
            .await;
        assert_eq!(chord.status, 201, "{}", chord.body);
        let graph = api.get(&format!("/v1/workflows/{}/graph", chord.body["id"].as_str().unwrap_or(""))).await.body;
        assert_eq!(graph["edges"].as_array().map(Vec::len), Some(3));
        assert!(graph["edges"].as_array().is_some_and(|e| e.iter().all(|e| e["to"] == "task-4")));
        let both = api.post("/v1/workflows", &json!({"name": "x", "chain": [{"name": "a"}], "group": [{"name": "b"}]})).await;
        assert_eq!((both.status, both.code()), (400, "invalid_request"));
        let own_deps = api.post("/v1/workflows", &json!({"name": "x", "chain": [{"name": "a", "depends_on": []}]})).await;
        assert_eq!((own_deps.status, own_deps.code()), (400, "invalid_request"));
    })
    .await;
}

#[tokio::test]
async fn ten_thousand_step_chains_and_fan_outs_complete() {
    bounded(Duration::from_secs(120), async {
        let server = Server::start();
        let api = server.api();
        let steps: Vec<Value> = (0..10_000).map(|_| json!({"name": "n"})).collect();
        let chain = api.post("/v1/workflows", &json!({"name": "long", "chain": steps})).await;
        assert_eq!(chain.status, 201, "{}", chain.body);
        let fan: Vec<Value> = (0..10_000).map(|_| json!({"name": "n"})).collect();
        let wide = api.post("/v1/workflows", &json!({"name": "wide", "group": fan, "then": {"name": "n"}})).await;
        assert_eq!(wide.status, 201, "{}", wide.body);
        let ran = drain(&api, succeed).await;
        for created in [chain, wide] {
            let id = created.body["id"].as_str().unwrap_or("");
            let done = api.get(&format!("/v1/workflows/{id}")).await.body;
            let open: Vec<&Value> =
                done["tasks"].as_array().into_iter().flatten().filter(|t| t["status"] != "succeeded").collect();
            assert_eq!(done["status"], "succeeded", "ran {ran}; {} {:?}", done["counts"], open);
        }
        assert_eq!(ran, 20_001);
    })
    .await;
}

#[tokio::test]
async fn a_crash_mid_workflow_loses_nothing_and_runs_no_step_twice() {
    bounded(Duration::from_secs(60), async {
        let mut server = Server::start();
        // Two attempts each: the step running at the crash loses its lease
        // and runs again.
        let steps: Vec<Value> = (0..40).map(|_| json!({"name": "n", "max_attempts": 2})).collect();
        let created = server.api().post("/v1/workflows", &json!({"name": "crashy", "chain": steps})).await;
        let wf = created.body["id"].as_str().expect("id").to_owned();
        // Run 15 steps, one at a time.
        let api = server.api();
        for _ in 0..15 {
            let reply = api.post("/v1/lease", &json!({"worker": "w", "max": 10})).await;
            let tasks = reply.body["tasks"].as_array().cloned().unwrap_or_default();
            assert_eq!(tasks.len(), 1);
            complete(&api, &tasks[0], json!({"outcome": "succeeded"})).await;
        }
        // Lease step 16 and crash while it runs.
        let running = api.post("/v1/lease", &json!({"worker": "w", "max": 10, "lease_ms": 1000})).await;
        assert_eq!(running.body["tasks"].as_array().map(Vec::len), Some(1));
        server.kill9();
        server.restart();
        let api = server.api();
        let ran = support::eventually("the rest of the chain", Duration::from_secs(30), async || {
            drain(&api, succeed).await;
            let done = api.get(&format!("/v1/workflows/{wf}")).await.body;
            (done["status"] != "running").then_some(done)
        })
        .await;
        assert_eq!(ran["status"], "succeeded", "{}", ran["counts"]);
        for t in ran["tasks"].as_array().expect("tasks") {
            let h = api.get(&format!("/v1/tasks/{}/history", t["id"].as_str().unwrap_or(""))).await.body;
            let successes = h.as_array().map_or(0, |e| e.iter().filter(|e| e["to"] == "succeeded").count());
            assert_eq!(successes, 1, "{}", t["key"]);
        }
    })
    .await;
}

#[tokio::test]
async fn a_huge_workflow_answers_in_pages_and_memory_stays_bounded() {
    bounded(Duration::from_secs(240), async {
        let server = Server::start();
        let api = server.api();
        let steps = 50_000;
        let chain: Vec<Value> = (0..steps).map(|_| json!({"name": "s"})).collect();
        let created = api.post("/v1/workflows", &json!({"name": "long", "chain": chain})).await;
        assert_eq!(created.status, 201, "{:?}", created.status);
        let id = created.body["id"].as_str().expect("an id").to_owned();
        let first = api.get(&format!("/v1/workflows/{id}")).await;
        assert_eq!(first.status, 200);
        let wf = &first.body;
        assert_eq!((wf["total"].as_u64(), wf["status"].as_str()), (Some(steps), Some("running")));
        assert_eq!((wf["counts"]["queued"].as_u64(), wf["counts"]["pending"].as_u64()), (Some(1), Some(steps - 1)));
        assert_eq!(wf["tasks"].as_array().map(Vec::len), Some(100), "a page by default");
        assert_eq!(wf["tasks"][0]["key"], "step-1");
        // The pages follow each other in submission order.
        let cursor = wf["next_cursor"].as_str().expect("a next page");
        let next = api.get(&format!("/v1/workflows/{id}?limit=1000&cursor={cursor}")).await;
        assert_eq!(next.body["tasks"].as_array().map(Vec::len), Some(1000));
        assert_eq!(next.body["tasks"][0]["key"], "step-101");
        for bad in ["limit=0", "limit=1001", "cursor=nope", "page=2"] {
            let r = api.get(&format!("/v1/workflows/{id}?{bad}")).await;
            assert_eq!((r.status, r.code()), (400, "invalid_request"), "{bad}: {r:?}");
        }
        let before = server.rss_bytes();
        let mut gets = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (api, path) = (server.api(), format!("/v1/workflows/{id}"));
            gets.spawn(async move { api.get_len(&path).await });
        }
        let answers = gets.join_all().await;
        let after = server.rss_bytes();
        for (status, len) in answers {
            assert_eq!(status, 200);
            assert!(len < 200_000, "a {len}-byte answer");
        }
        // Sixteen whole answers of this workflow took 1.2 GB and more.
        let grown = after.saturating_sub(before);
        assert!(grown < 100 << 20, "RSS grew by {} MB", grown >> 20);
    })
    .await;
}

#[tokio::test]
async fn a_task_can_wait_for_tasks_submitted_earlier() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        let parent = api.submit(json!({"name": "extract"})).await;
        let parent_id = parent["id"].as_str().unwrap_or_default().to_owned();
        let after = |name: &str, on: Value| json!({"name": name, "depends_on": [{"task": parent_id, "on": on}]});
        let load = api.submit(json!({"name": "load", "depends_on": [{"task": parent_id}]})).await;
        assert_eq!((&load["status"], &load["depends_on"][0]["on"]), (&json!("pending"), &json!("success")), "{load}");
        let cleanup = api.submit(after("cleanup", json!("failure"))).await;

        let leased = api.post("/v1/lease", &json!({"worker": "w", "queues": ["default"], "names": ["extract"]})).await;
        let task = &leased.body["tasks"][0];
        complete(&api, task, json!({"outcome": "succeeded", "result": {"rows": 3}})).await;
        let id = |t: &Value| t["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(api.status_of(&id(&load)).await, "queued", "released when its parent succeeded");
        assert_eq!(api.status_of(&id(&cleanup)).await, "skipped", "its condition can no longer hold");

        // A parent that already ended resolves at once, in the answer.
        assert_eq!(api.submit(after("report", json!("completion"))).await["status"], "queued");
        assert_eq!(api.submit(after("alert", json!("failure"))).await["status"], "skipped");
        let expr = api.submit(after("big", json!({"expr": "result.rows > 2"}))).await;
        assert_eq!(expr["status"], "queued", "{expr}");
        let leased = api.post("/v1/lease", &json!({"worker": "w", "queues": ["default"], "names": ["load"]})).await;
        assert_eq!(leased.body["tasks"][0]["parents"][&parent_id]["result"]["rows"], 3, "{}", leased.body);

        // A parent that does not exist, a bad condition: refused, nothing stored.
        let before = api.count_tasks().await;
        let ghost = "01a250f2-05f1-709c-9f28-f929e25d4d12";
        for (body, field) in [
            (json!({"name": "x", "depends_on": [{"task": ghost}]}), "depends_on[0].task"),
            (after("x", json!({"expr": "status =="})), "depends_on[0].on.expr"),
            (json!({"name": "x", "depends_on": [{"task": parent_id}, {"task": parent_id}]}), "depends_on[1].task"),
        ] {
            let reply = api.post("/v1/tasks", &body).await;
            assert_eq!(
                (reply.status, reply.body["error"]["details"]["field"].as_str()),
                (400, Some(field)),
                "{reply:?}"
            );
        }
        let batch = api
            .post(
                "/v1/tasks/batch",
                &json!({"tasks": [{"name": "ok"}, {"name": "x", "depends_on": [{"task": ghost}]}]}),
            )
            .await;
        assert_eq!((batch.status, &batch.body["error"]["details"]["index"]), (400, &json!(1)), "{batch:?}");
        assert_eq!(api.count_tasks().await, before, "nothing stored");
    })
    .await;
}
