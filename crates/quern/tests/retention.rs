//! Retention: finished tasks older than `retention.ttl` are swept away with
//! their history; unfinished ones stay whatever their age.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{Server, bounded, eventually, id_of, token_of};

const CONFIG: &str = "retention:\n  ttl: \"1s\"\n  sweep_interval: \"200ms\"\n";

#[tokio::test]
async fn finished_tasks_are_swept_after_the_ttl() {
    let server = Server::start_with_config(CONFIG);
    let api = server.api();
    bounded(Duration::from_secs(30), async {
        let done = api.submit_named("short.lived").await;
        let cancelled = api.submit_named("cancelled").await;
        let queued = id_of(&api.submit(json!({"name": "waiting", "queue": "idle"})).await);
        let pending = id_of(&api.submit(json!({"name": "later", "delay_ms": 60_000})).await);
        let running = api.submit_named("busy").await;

        let leased = api.lease("w", 1, 0, 60_000).await;
        assert_eq!(id_of(&leased[0]), done);
        assert_eq!(api.succeed("w", &done, &token_of(&leased[0]), json!(1)).await["ok"], true);
        assert_eq!(api.post(&format!("/v1/tasks/{cancelled}/cancel"), &json!({})).await.status, 200);
        let busy = api.lease("w", 1, 0, 60_000).await;
        assert_eq!(id_of(&busy[0]), running);
        // Still there right after finishing.
        assert_eq!(api.get(&format!("/v1/tasks/{done}")).await.status, 200);

        for id in [&done, &cancelled] {
            eventually(&format!("task {id} to be swept"), Duration::from_secs(10), async || {
                (api.get(&format!("/v1/tasks/{id}")).await.status == 404).then_some(())
            })
            .await;
            let history = api.get(&format!("/v1/tasks/{id}/history")).await;
            assert_eq!(history.status, 404, "the history goes with the task: {history:?}");
        }
        // Wait a few more sweeps: unfinished tasks stay.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for (id, status) in [(&queued, "queued"), (&pending, "pending"), (&running, "running")] {
            assert_eq!(api.status_of(id).await, status);
        }
        let listed: Vec<String> = api.list_all("").await.iter().map(id_of).collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(!listed.contains(&done) && !listed.contains(&cancelled));
    })
    .await;
}
