//! The Rust worker runtime (quern-worker) against the real server: progress
//! while running, cancellation reaching a handler, graceful hand-back at
//! shutdown, panics as failures, task-type registration and schemas.

mod support;

use quern_client::Client;
use quern_worker::{TaskContext, TaskFailure, TaskType, Worker};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, bounded, eventually};
use tokio::sync::{oneshot, watch};

const LIMIT: Duration = Duration::from_secs(30);

/// Starts `worker` in the background; the sender stops it, the handle ends
/// when it has stopped.
fn spawn(worker: Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("the worker runs");
    });
    (stop, handle)
}

async fn submit(server: &Server, body: Value) -> String {
    let reply = server.api().post("/v1/tasks", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_while_a_handler_runs() {
    bounded(LIMIT, async {
        let server = Server::start();
        let (release, released) = watch::channel(false);
        let worker = Worker::builder(Client::new(&server.url, None))
            .id("rust-1")
            .handler(TaskType::new("slow"), move |ctx: TaskContext| {
                let mut released = released.clone();
                async move {
                    ctx.progress(42.0, "halfway");
                    let _ = released.wait_for(|r| *r).await;
                    Ok(json!({"done": true}))
                }
            })
            .build();
        let (stop, handle) = spawn(worker);
        let id = submit(&server, json!({"name": "slow"})).await;
        let api = server.api();
        eventually("progress 42 while running", LIMIT, async || {
            let t = api.get(&format!("/v1/tasks/{id}")).await.body;
            (t["status"] == "running" && t["progress"]["percent"] == 42.0 && t["progress"]["message"] == "halfway")
                .then_some(())
        })
        .await;
        let workers = api.get("/v1/workers").await.body;
        assert_eq!(workers["workers"][0]["id"], "rust-1", "{workers}");
        assert_eq!(workers["workers"][0]["in_flight"], 1, "{workers}");
        release.send(true).expect("the handler listens");
        let done = api.get(&format!("/v1/tasks/{id}?wait=10s")).await.body;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"], json!({"done": true}));
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_handler() {
    bounded(LIMIT, async {
        let server = Server::start();
        let worker = Worker::builder(Client::new(&server.url, None))
            .lease_ms(1_500)
            .handler(TaskType::new("waits"), |ctx: TaskContext| async move {
                ctx.progress(1.0, "waiting for a cancel");
                ctx.cancelled().await;
                Err(TaskFailure::retryable("stopped on request"))
            })
            .build();
        let (stop, handle) = spawn(worker);
        let id = submit(&server, json!({"name": "waits", "max_attempts": 3})).await;
        let api = server.api();
        eventually("running", LIMIT, async || {
            (api.get(&format!("/v1/tasks/{id}")).await.body["status"] == "running").then_some(())
        })
        .await;
        let asked = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(asked.body["cancel_requested"], true, "{}", asked.body);
        let done = api.get(&format!("/v1/tasks/{id}?wait=10s")).await.body;
        assert_eq!(done["status"], "cancelled", "{done}");
        assert_eq!(done["attempt"], 1, "no retry after a cancel");
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_tasks_back_at_once() {
    bounded(LIMIT, async {
        let server = Server::start();
        let (started_tx, mut started) = watch::channel(0u32);
        let worker = Worker::builder(Client::new(&server.url, None))
            .grace(Duration::from_millis(300))
            .handler(TaskType::new("stubborn"), move |_ctx: TaskContext| {
                started_tx.send_modify(|n| *n += 1);
                async move {
                    // Ignores cancellation: only the hand-back can free it.
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                }
            })
            .build();
        let (stop, handle) = spawn(worker);
        let id = submit(&server, json!({"name": "stubborn"})).await;
        started.wait_for(|n| *n == 1).await.expect("the handler starts");
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
        let api = server.api();
        let task = api.get(&format!("/v1/tasks/{id}")).await.body;
        assert_eq!(task["status"], "queued", "back in the queue at once, not after the lease: {task}");
        assert_eq!(task["attempt"], 0, "a released attempt does not count: {task}");
        let history = api.get(&format!("/v1/tasks/{id}/history")).await.body;
        let notes: Vec<&str> = history.as_array().expect("a list").iter().filter_map(|e| e["note"].as_str()).collect();
        assert!(notes.iter().any(|n| n.contains("released")), "{history}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_task_and_the_worker_goes_on() {
    bounded(LIMIT, async {
        let server = Server::start();
        let worker = Worker::builder(Client::new(&server.url, None))
            .handler(TaskType::new("explodes"), |_ctx: TaskContext| async move {
                if true {
                    panic!("kaboom");
                }
                Ok(Value::Null)
            })
            .handler(TaskType::new("fine"), |_ctx: TaskContext| async move { Ok(json!("ok")) })
            .build();
        let (stop, handle) = spawn(worker);
        let api = server.api();
        let bad = submit(&server, json!({"name": "explodes"})).await;
        let failed = api.get(&format!("/v1/tasks/{bad}?wait=10s")).await.body;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert!(failed["error"]["message"].as_str().unwrap_or("").contains("kaboom"), "{failed}");
        let good = submit(&server, json!({"name": "fine"})).await;
        assert_eq!(api.get(&format!("/v1/tasks/{good}?wait=10s")).await.body["status"], "succeeded");
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_types_are_registered_and_their_schemas_checked() {
    bounded(LIMIT, async {
        let server = Server::start();
        let schema = json!({"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}});
        let worker = Worker::builder(Client::new(&server.url, None))
            .id("mailer")
            .handler(
                TaskType::new("email.send").description("sends one email").input_schema(schema.clone()),
                |ctx: TaskContext| async move {
                    #[derive(serde::Deserialize)]
                    struct Mail {
                        to: String,
                    }
                    let mail: Mail = ctx.input()?;
                    Ok(json!({"sent_to": mail.to}))
                },
            )
            .build();
        let (stop, handle) = spawn(worker);
        let api = server.api();
        let types = eventually("the task type registered", LIMIT, async || {
            let body = api.get("/v1/task-types").await.body;
            (body["task_types"].as_array().is_some_and(|a| !a.is_empty())).then_some(body)
        })
        .await;
        let t = &types["task_types"][0];
        assert_eq!((t["name"].as_str(), t["description"].as_str(), t["workers"].as_u64()), (Some("email.send"), Some("sends one email"), Some(1)), "{types}");
        assert_eq!(t["input_schema"], schema);
        let bad = api.post("/v1/tasks", &json!({"name": "email.send", "input": {"to": 5}})).await;
        assert_eq!((bad.status, bad.code()), (422, "invalid_input"), "{}", bad.body);
        assert!(bad.body["error"]["message"].as_str().unwrap_or("").contains("/to"), "{}", bad.body);
        let batch = api.post("/v1/tasks/batch", &json!({"tasks": [{"name": "email.send", "input": {"to": "a@b"}}, {"name": "email.send", "input": {}}]})).await;
        assert_eq!((batch.status, batch.body["error"]["details"]["index"].as_u64()), (422, Some(1)), "{}", batch.body);
        let listed = api.get("/v1/tasks").await.body;
        assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(0), "refused submissions store nothing");
        let ok = submit(&server, json!({"name": "email.send", "input": {"to": "a@b"}})).await;
        let done = api.get(&format!("/v1/tasks/{ok}?wait=10s")).await.body;
        assert_eq!(done["result"], json!({"sent_to": "a@b"}), "{done}");
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
    })
    .await;
}

/// A server on a fixed port (so a worker's URL survives its restart).
fn server_on(port: u16, data: &std::path::Path) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("the server starts");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_finished_while_the_server_is_down_is_delivered_after_its_restart() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let url = format!("http://127.0.0.1:{port}");
        let mut first = server_on(port, dir.path());
        let (release, released) = watch::channel(false);
        let worker = Worker::builder(Client::new(&url, None))
            .lease_ms(5_000)
            .handler(TaskType::new("outlives"), move |_ctx: TaskContext| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(json!("made it"))
                }
            })
            .build();
        let (stop, handle) = spawn(worker);
        let api = support::Api::new(&url);
        let id = api.post("/v1/tasks", &json!({"name": "outlives"})).await.body["id"].as_str().expect("id").to_owned();
        eventually("running", LIMIT, async || {
            (api.get(&format!("/v1/tasks/{id}")).await.body["status"] == "running").then_some(())
        })
        .await;
        first.kill().expect("kill -9 the server");
        first.wait().expect("reap it");
        // The handler finishes while nobody listens: its completion waits.
        release.send(true).expect("the handler listens");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut second = server_on(port, dir.path());
        let done = eventually("the completion to land after the restart", LIMIT, async || {
            let t = api.try_get(&format!("/v1/tasks/{id}?wait=2s")).await.ok()?.body;
            (t["status"] == "succeeded").then_some(t)
        })
        .await;
        assert_eq!((done["result"].as_str(), done["attempt"].as_u64()), (Some("made it"), Some(1)), "{done}");
        stop.send(()).expect("the worker runs");
        handle.await.expect("the worker stops");
        second.kill().expect("stop the server");
        let _ = second.wait();
    })
    .await;
}
