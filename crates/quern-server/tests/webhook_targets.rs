//! Webhooks cannot reach inside: an internal address in any spelling is
//! refused when the webhook is stored and again when it would be delivered,
//! credentials in the URL are refused, and redirects are not followed.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, bounded, eventually};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn internal_targets_in_any_spelling_are_refused() {
    let server = Server::start();
    let api = server.api();
    bounded(LIMIT, async {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://2130706433:9/hook",
            "http://0x7f.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://[::1]:9/hook",
            "http://[::ffff:127.0.0.1]:9/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/hook",
            "http://0.0.0.0:9/hook",
        ] {
            let reply = api
                .send(reqwest::Method::PUT, "/v1/webhooks/in", Some(json!({"url": url}).to_string().as_bytes()))
                .await;
            assert_eq!((reply.status, reply.code()), (422, "invalid_webhook"), "{url}: {reply:?}");
            assert_eq!(reply.body["error"]["details"]["field"], "url", "{url}");
        }
        let creds = json!({"url": "http://user:pw@example.com/hook"}).to_string();
        let reply = api.send(reqwest::Method::PUT, "/v1/webhooks/in", Some(creds.as_bytes())).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid_webhook"), "{reply:?}");
        assert_eq!(api.get("/v1/webhooks").await.body["webhooks"], json!([]), "nothing was stored");
    })
    .await;
}

#[tokio::test]
async fn an_allowed_internal_receiver_gets_no_redirect_followed() {
    let server = Server::start_with_config("webhooks:\n  allow_private: true\n");
    let api = server.api();
    // A receiver that answers every request with a redirect elsewhere.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 65_536];
            let _ = conn.read(&mut buf).await;
            let answer =
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n";
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    bounded(LIMIT, async {
        let hook = json!({"url": format!("http://{addr}/hook"), "max_attempts": 1}).to_string();
        let reply = api.send(reqwest::Method::PUT, "/v1/webhooks/redir", Some(hook.as_bytes())).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        api.post("/v1/events", &json!({"type": "x.y", "source": "t"})).await;
        let delivery: Value = eventually("a delivery attempt", Duration::from_secs(20), async || {
            let all = api.get("/v1/webhooks/redir/deliveries").await.body;
            all["deliveries"].as_array().and_then(|d| d.first().cloned())
        })
        .await;
        assert_eq!((delivery["status"].as_u64(), delivery["ok"].as_bool()), (Some(307), Some(false)), "{delivery}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the redirect was not followed");
    })
    .await;
}
