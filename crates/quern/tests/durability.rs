//! The `strict` durability setting: the server starts with it, serves the
//! whole round trip and keeps what it acknowledged across `kill -9`.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{Server, bounded, id_of, token_of};

const STRICT: &str = "storage:\n  durability: strict\n";

#[tokio::test]
async fn strict_durability_round_trip() {
    let server = Server::start_with_config(STRICT);
    let api = server.api();
    bounded(Duration::from_secs(30), async {
        let id = id_of(&api.submit(json!({"name": "strict.job", "input": {"x": 1}})).await);
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), id);
        let beat = api.heartbeat("w", &id, &token_of(&leased), Some(json!({"percent": 10}))).await;
        assert_eq!(beat["ok"], true, "{beat}");
        assert_eq!(api.succeed("w", &id, &token_of(&leased), json!({"y": 2})).await["ok"], true);
        let task = api.task(&id).await;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["result"], json!({"y": 2}));
    })
    .await;
}

#[tokio::test]
async fn strict_durability_survives_kill9() {
    let mut server = Server::start_with_config(STRICT);
    bounded(Duration::from_secs(30), async {
        let api = server.api();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(id_of(&api.submit(json!({"name": "strict.keep", "input": i})).await));
        }
        let batch = api.post("/v1/tasks/batch", &json!({"tasks": [{"name": "b1"}, {"name": "b2"}]})).await;
        assert_eq!(batch.status, 201, "{batch:?}");
        ids.extend(batch.body["tasks"].as_array().expect("tasks").iter().map(id_of));
        let leased = api.lease_one("w", 30_000).await;
        let first = id_of(&leased);
        assert_eq!(api.succeed("w", &first, &token_of(&leased), json!("kept")).await["ok"], true);

        server.kill9();
        server.restart();
        let api = server.api();
        for id in &ids {
            let task = api.task(id).await;
            let want = if *id == first { "succeeded" } else { "queued" };
            assert_eq!(task["status"], want, "{task}");
        }
        assert_eq!(api.task(&first).await["result"], "kept");
        assert_eq!(api.count_tasks().await, ids.len());
    })
    .await;
}
