//! The contract in the repository against the door that serves it: the
//! served `/openapi.json` is the committed `docs/openapi.json`, every
//! operation it lists is routed, and the Rust client's typed requests and
//! answers (the wire types) round-trip through the server.

mod support;

use quern_client::{
    Client, CompleteRequest, Completion, DependsOn, LeaseRequest, RegisterRequest, TaskTypeDecl, WorkflowRequest,
    WorkflowTask,
};
use quern_core::{EventSpec, ScheduleSpec, Status, TaskSpec};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, bounded};

const LIMIT: Duration = Duration::from_secs(60);

fn spec(v: Value) -> TaskSpec {
    serde_json::from_value(v).expect("a task spec")
}

#[tokio::test]
async fn the_served_description_is_the_committed_one() {
    let server = Server::start();
    bounded(LIMIT, async {
        let served = server.api().get("/openapi.json").await;
        assert_eq!(served.status, 200);
        let committed: Value =
            serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("docs/openapi.json is JSON");
        assert_eq!(served.body, committed, "GET /openapi.json differs from docs/openapi.json");
        assert_eq!(served.body["openapi"], "3.1.0");
    })
    .await;
}

#[tokio::test]
async fn every_described_operation_is_routed() {
    let server = Server::start();
    let doc: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("JSON");
    let http = reqwest::Client::builder().no_proxy().build().expect("a client");
    bounded(LIMIT, async {
        let paths = doc["paths"].as_object().expect("paths");
        let mut operations = 0;
        for (path, item) in paths {
            let concrete = path.replace("{id}", "00000000-0000-7000-8000-000000000000").replace("{name}", "nope");
            for method in ["get", "put", "post", "delete"] {
                if item.get(method).is_none() || path == "/v1/events/stream" {
                    continue;
                }
                operations += 1;
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
                let answer = http
                    .request(method.clone(), format!("{}{concrete}", server.url))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .expect("an answer");
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                assert_ne!(status, 405, "{method} {path}: {body}");
                assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
            }
        }
        assert!(operations > 40, "{operations} operations");
    })
    .await;
}

#[tokio::test]
async fn the_typed_client_round_trips_through_the_server() {
    let server = Server::start();
    let client = Client::new(&server.url, None);
    bounded(LIMIT, async {
        // Workflows.
        let request = WorkflowRequest {
            name: "typed".into(),
            tasks: Some(vec![
                WorkflowTask { key: "a".into(), depends_on: Vec::new(), spec: spec(json!({"name": "wf.a"})) },
                WorkflowTask {
                    key: "b".into(),
                    depends_on: vec![DependsOn::on_success("a")],
                    spec: spec(json!({"name": "wf.b", "input": {"n": 1}})),
                },
            ]),
            ..WorkflowRequest::default()
        };
        let submitted = client.submit_workflow(&request).await.expect("submitted");
        assert_eq!(submitted.tasks.len(), 2);
        let view = client.workflow(submitted.id, None).await.expect("the workflow");
        assert_eq!((view.name.as_str(), view.status.as_str(), view.total), ("typed", "running", 2));
        assert_eq!(view.tasks.len(), 2);
        let chain = WorkflowRequest {
            name: "chained".into(),
            chain: Some(vec![spec(json!({"name": "c.one"})), spec(json!({"name": "c.two"}))]),
            ..WorkflowRequest::default()
        };
        assert_eq!(client.submit_workflow(&chain).await.expect("a chain").tasks.len(), 2);
        let cancelled = client.cancel_workflow(submitted.id).await.expect("cancelled");
        assert_eq!((cancelled.id, cancelled.cancelled), (submitted.id, 2));

        // Schedules.
        let schedule: ScheduleSpec =
            serde_json::from_value(json!({"every": "1h", "task": {"name": "tick"}})).expect("a schedule");
        let put = client.put_schedule("hourly", &schedule).await.expect("put");
        assert_eq!(put.outcome.as_deref(), Some("created"));
        assert!(put.enabled && put.next_fire_at.is_some());
        assert_eq!(client.schedules().await.expect("schedules").len(), 1);
        let off = client.set_schedule_enabled("hourly", false).await.expect("disabled");
        assert!(!off.enabled);
        let report = client.apply_schedules("schedules: []\n", true, true).await.expect("a dry run");
        assert!(report.dry_run);
        assert_eq!(report.deleted, vec!["hourly".to_owned()]);

        // Events.
        let event: EventSpec =
            serde_json::from_value(json!({"type": "t.one", "source": "test", "payload": {"k": 1}})).expect("spec");
        let published = client.publish_event(&event).await.expect("published");
        let more = client.publish_events(vec![event.clone(), event]).await.expect("a batch");
        assert_eq!(more.len(), 2);
        let page = client.events(Some("0"), &[("type", "t.*")], None).await.expect("a page");
        assert_eq!(page.events.first().map(|e| e.offset), Some(published.offset));
        assert_eq!(page.next_after, more[1].offset);
        let read = client.events(Some("0"), &[("group", "g"), ("member", "m")], None).await.expect("a group read");
        let offsets: Vec<u64> = read.events.iter().map(|e| e.offset).collect();
        let acked = client.ack_events("g", "m", &offsets).await.expect("acked");
        // The engine's own events (workflow.*, schedule.*) are in the log too.
        assert!(offsets.len() >= 3);
        assert_eq!((acked.acked, acked.cursor), (offsets.len(), offsets[offsets.len() - 1]));

        // The worker protocol and the registry.
        let decl = TaskTypeDecl {
            name: "typed.work".into(),
            description: Some("d".into()),
            input_schema: None,
            defaults: None,
        };
        let register = RegisterRequest { worker: "w1".into(), queues: vec!["default".into()], task_types: vec![decl] };
        client.register(&register).await.expect("registered");
        client.submit(&spec(json!({"name": "typed.work"}))).await.expect("submitted");
        let leased = client
            .lease(&LeaseRequest {
                max: 10,
                names: Some(vec!["typed.work".into()]),
                ..LeaseRequest::new("w1", vec!["default".into()])
            })
            .await
            .expect("leased");
        let task = leased.first().expect("a task");
        let token = task.lease.as_ref().map(|l| l.token.clone()).unwrap_or_default();
        let done = client
            .complete(&CompleteRequest {
                worker: "w1".into(),
                results: vec![Completion::succeeded(task.id, token.clone(), &json!({"ok": true}))],
            })
            .await
            .expect("completed");
        assert!(done[0].ok && done[0].error.is_none());
        let again = client
            .complete(&CompleteRequest { worker: "w1".into(), results: vec![Completion::released(task.id, token)] })
            .await
            .expect("answered");
        assert_eq!(again[0].error.as_ref().map(|e| e.code.as_ref()), Some("stale_lease"));
        assert_eq!(client.get(task.id, None).await.expect("the task").status, Status::Succeeded);
        let workers = client.workers().await.expect("workers");
        assert!(workers.iter().any(|w| w.id == "w1" && w.live));
        let types = client.task_types().await.expect("task types");
        assert!(types.iter().any(|t| t.name == "typed.work" && t.workers == 1));

        // Operations.
        let health = client.health().await.expect("health");
        assert_eq!((health.status.as_str(), health.store.backend.as_str()), ("ok", "sqlite"));
        assert!(client.queues().await.expect("queues").iter().any(|q| q.name == "default"));
    })
    .await;
}

/// A submit's `traceparent` header is the trace context of the tasks it
/// submits, unless a task names its own; the worker's lease carries it; a
/// malformed one is refused and stores nothing.
#[tokio::test]
async fn the_traceparent_header_or_field_is_kept_and_handed_to_the_worker() {
    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const FIELD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let server = Server::start();
    let api = server.api();
    let http = reqwest::Client::builder().no_proxy().build().expect("a client");
    let post = |path: &str, body: Value, tp: &str| {
        http.post(format!("{}{path}", server.url)).header("traceparent", tp).json(&body).send()
    };
    let one = post("/v1/tasks", json!({"name": "traced", "queue": "tp"}), HEADER).await.expect("an answer");
    assert_eq!(one.status(), 201);
    let one: Value = one.json().await.expect("a task");
    assert_eq!(one["traceparent"], HEADER, "{one}");
    let batch =
        json!({"tasks": [{"name": "traced", "queue": "tp"}, {"name": "traced", "queue": "tp", "traceparent": FIELD}]});
    let batch: Value = post("/v1/tasks/batch", batch, HEADER).await.expect("an answer").json().await.expect("tasks");
    assert_eq!(batch["tasks"][0]["traceparent"], HEADER, "{batch}");
    assert_eq!(batch["tasks"][1]["traceparent"], FIELD, "the task's own wins: {batch}");
    let plain = api.submit(json!({"name": "plain", "queue": "tp"})).await;
    assert!(plain.get("traceparent").is_none(), "{plain}");

    let leased = api.lease_from("w-tp", &["tp"], 10, 1_000, 60_000).await;
    let carried: Vec<&Value> = leased.iter().map(|t| &t["traceparent"]).collect();
    assert_eq!(carried.iter().filter(|t| **t == HEADER).count(), 2, "{leased:?}");
    assert_eq!(carried.iter().filter(|t| **t == FIELD).count(), 1, "{leased:?}");

    let before = api.count_tasks().await;
    let bad = post("/v1/tasks", json!({"name": "traced", "queue": "tp"}), "00-nope").await.expect("an answer");
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.expect("an error");
    assert_eq!(bad["error"]["details"]["field"], "traceparent", "{bad}");
    assert_eq!(api.count_tasks().await, before, "a refused submit stores nothing");
}
