//! Graceful shutdown: on SIGTERM the server releases parked long polls, exits
//! cleanly and keeps everything it acknowledged.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{Server, bounded, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_long_polls_and_exits_cleanly() {
    let mut server = Server::start();
    bounded(Duration::from_secs(40), async {
        let api = server.api();
        let id = id_of(&api.submit(json!({"name": "survivor"})).await);
        let parked = {
            let api = api.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let body = json!({"worker": "w", "queues": ["idle"], "max": 1, "wait_ms": 30000, "lease_ms": 30000});
                (api.try_post("/v1/lease", &body).await, start.elapsed())
            })
        };
        let waiting = {
            let api = api.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                (api.try_get(&format!("/v1/tasks/{id}?wait=30s")).await, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!parked.is_finished() && !waiting.is_finished(), "the long polls did not park");

        server.terminate();
        let status = tokio::task::block_in_place(|| server.wait_for_exit(Duration::from_secs(15)));
        let status = status.expect("the server did not exit within 15 s of SIGTERM");
        assert!(status.success(), "exit status after SIGTERM: {status:?}");

        // The parked requests were answered (empty, current state or 503),
        // not cut off at the end of their 30 s.
        let (lease, took) = parked.await.expect("parked lease");
        assert!(took < Duration::from_secs(15), "the parked lease was held {took:?}");
        if let Ok(reply) = lease {
            assert!(
                (reply.status == 200 && reply.body["tasks"] == json!([]))
                    || (reply.status == 503 && reply.code() == "shutting_down"),
                "{reply:?}"
            );
        }
        let (get, took) = waiting.await.expect("waiting GET");
        assert!(took < Duration::from_secs(15), "the waiting GET was held {took:?}");
        if let Ok(reply) = get {
            assert!(
                (reply.status == 200 && reply.body["status"] == "queued")
                    || (reply.status == 503 && reply.code() == "shutting_down"),
                "{reply:?}"
            );
        }

        server.restart();
        assert_eq!(server.api().status_of(&id).await, "queued");
    })
    .await;
}
