//! Webhooks through the real binary, against a real HTTP receiver the test
//! runs: signed deliveries in order, retries on 500, a webhook paused after
//! its limit and resumed, and bad configurations refused.

#![allow(clippy::unwrap_used)]

mod support;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Api, Server, bounded, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the receiver got: its headers (lower-cased names) and body.
#[derive(Debug, Clone)]
struct Got {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A receiver on a free port answering with `statuses` in turn (then 200).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

async fn receiver(statuses: &[u16]) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let statuses = Arc::new(Mutex::new(statuses.iter().copied().collect::<VecDeque<u16>>()));
    let (g, s) = (got.clone(), statuses.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (g, s) = (g.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let headers: Vec<(String, String)> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())))
                    .collect();
                let len: usize =
                    headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let answered = s.lock().unwrap().pop_front().unwrap_or(200);
                g.lock().unwrap().push(Got { headers, body: buf[head_end..].to_vec(), answered });
                let reply = format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Receiver { url, got, statuses }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn put(api: &Api, name: &str, body: &Value) -> support::Reply {
    api.send(reqwest::Method::PUT, &format!("/v1/webhooks/{name}"), Some(body.to_string().as_bytes())).await
}

#[tokio::test]
async fn deliveries_are_signed_in_order_and_retried_on_500() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        let rx = receiver(&[500, 500]).await;
        let hook = json!({"url": rx.url, "filters": {"types": ["order.*"]}, "secret": "s3cret", "max_attempts": 5});
        let r = put(&api, "orders", &hook).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(
            (r.body["secret"].as_bool(), r.body["paused"].as_bool()),
            (Some(true), Some(false)),
            "the secret stays on the server"
        );
        for (kind, n) in [("order.created", 1), ("noise.other", 2), ("order.paid", 3)] {
            api.post("/v1/events", &json!({"type": kind, "source": "shop", "payload": {"n": n}})).await;
        }
        let ok = eventually("two deliveries", Duration::from_secs(20), async || {
            let ok: Vec<Got> = rx.got.lock().unwrap().iter().filter(|g| g.answered == 200).cloned().collect();
            (ok.len() >= 2).then_some(ok)
        })
        .await;
        let all = rx.got.lock().unwrap().clone();
        assert_eq!(all.len(), 4, "two failures, then each event once: {all:?}");
        let kinds: Vec<&str> = all.iter().map(|g| g.header("x-quern-event-type").unwrap()).collect();
        assert_eq!(
            kinds,
            vec!["order.created", "order.created", "order.created", "order.paid"],
            "in order, the failed one first"
        );
        for g in &all {
            assert_eq!(g.header("x-quern-signature"), Some(sign("s3cret", &g.body).as_str()), "verifiable signature");
        }
        let body: Value = serde_json::from_slice(&ok[1].body).unwrap();
        assert_eq!((body["type"].as_str(), body["payload"]["n"].as_u64()), (Some("order.paid"), Some(3)));
        assert_eq!(all[2].header("x-quern-delivery-attempt"), Some("3"));
        let log = api.get("/v1/webhooks/orders/deliveries").await.body;
        let attempts: Vec<(u64, bool)> = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["attempt"].as_u64().unwrap(), d["ok"].as_bool().unwrap()))
            .collect();
        assert_eq!(attempts, vec![(1, true), (3, true), (2, false), (1, false)], "newest first");
        let w = api.get("/v1/webhooks/orders").await.body;
        assert_eq!((w["cursor"].as_u64(), w["failures"].as_u64()), (Some(3), Some(0)));
    })
    .await;
}

#[tokio::test]
async fn a_new_webhook_starts_where_after_says_or_at_the_head() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        for n in 0..3 {
            api.post("/v1/events", &json!({"type": "old.event", "source": "s", "payload": {"n": n}})).await;
        }
        let replay = receiver(&[]).await;
        let fresh = receiver(&[]).await;
        assert_eq!(put(&api, "replay", &json!({"url": replay.url, "after": 1})).await.body["cursor"], 1);
        assert_eq!(put(&api, "fresh", &json!({"url": fresh.url})).await.body["cursor"], 3);
        api.post("/v1/events", &json!({"type": "new.event", "source": "s"})).await;
        let offsets = |rx: &Receiver| -> Vec<String> {
            rx.got.lock().unwrap().iter().filter_map(|g| g.header("x-quern-event-offset").map(str::to_owned)).collect()
        };
        eventually("both delivered", Duration::from_secs(20), async || {
            (offsets(&replay).len() == 3 && offsets(&fresh).len() == 1).then_some(())
        })
        .await;
        assert_eq!(offsets(&replay), vec!["2", "3", "4"]);
        assert_eq!(offsets(&fresh), vec!["4"], "a new webhook gets only what is published from now on");
    })
    .await;
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_paused_until_resumed() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        let rx = receiver(&[500; 50]).await;
        put(&api, "flaky", &json!({"url": rx.url, "max_attempts": 2})).await;
        api.post("/v1/events", &json!({"type": "a.b", "source": "s"})).await;
        let w = eventually("paused", Duration::from_secs(20), async || {
            let w = api.get("/v1/webhooks/flaky").await.body;
            (w["paused"] == true).then_some(w)
        })
        .await;
        assert_eq!(w["failures"].as_u64(), Some(2));
        assert!(w["last_error"].as_str().unwrap().contains("500"), "{w}");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(rx.got.lock().unwrap().len(), 2, "not retried forever");
        rx.statuses.lock().unwrap().clear();
        let r = api.post("/v1/webhooks/flaky/resume", &json!({})).await;
        assert_eq!((r.status, r.body["paused"].as_bool()), (200, Some(false)));
        eventually("delivered after resume", Duration::from_secs(20), async || {
            rx.got.lock().unwrap().iter().any(|g| g.answered == 200).then_some(())
        })
        .await;
        let list = api.get("/v1/webhooks").await.body;
        assert_eq!(list["webhooks"][0]["name"], "flaky");
        let gone = api.send(reqwest::Method::DELETE, "/v1/webhooks/flaky", None).await;
        assert_eq!(gone.status, 200);
        assert_eq!(api.get("/v1/webhooks/flaky").await.status, 404);
    })
    .await;
}

/// CPU the server uses over `window` while nothing is asked of it.
async fn idle_cpu(server: &Server, window: Duration) -> Duration {
    let before = server.cpu_time();
    tokio::time::sleep(window).await;
    server.cpu_time() - before
}

#[tokio::test]
async fn a_paused_webhook_leaves_the_server_idle() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        // A port nobody listens on: every delivery fails at once.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        put(&api, "dead", &json!({"url": url, "max_attempts": 1})).await;
        api.post("/v1/events", &json!({"type": "a.b", "source": "s"})).await;
        eventually("paused", Duration::from_secs(20), async || {
            (api.get("/v1/webhooks/dead").await.body["paused"] == true).then_some(())
        })
        .await;
        let window = Duration::from_secs(3);
        // An idle server wakes a few times a second at most; a deliverer
        // spinning on a lapsed backoff used a tenth of a core and more.
        let limit = Duration::from_millis(150);
        let paused = idle_cpu(&server, window).await;
        assert!(paused < limit, "{paused:?} of CPU in {window:?} with a paused webhook");
        let gone = api.send(reqwest::Method::DELETE, "/v1/webhooks/dead", None).await;
        assert_eq!(gone.status, 200);
        let deleted = idle_cpu(&server, window).await;
        assert!(deleted < limit, "{deleted:?} of CPU in {window:?} after the webhook was deleted");
    })
    .await;
}

#[tokio::test]
async fn bad_webhooks_are_refused() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        for (body, field) in [
            (json!({"url": "ftp://example.com/hook"}), "url"),
            (json!({"url": "not a url"}), "url"),
            (json!({"url": "http://127.0.0.1:9/x", "max_attempts": 0}), "max_attempts"),
            (json!({"url": format!("http://127.0.0.1:9/{}", "x".repeat(2_048))}), "url"),
            (json!({"url": "http://127.0.0.1:9/x", "secret": "s\u{0}"}), "secret"),
            (json!({"url": "http://127.0.0.1:9/x", "secret": "s".repeat(1_025)}), "secret"),
        ] {
            let r = put(&api, "w", &body).await;
            assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}: {r:?}");
            assert_eq!(r.body["error"]["details"]["field"], field);
        }
        for body in [json!({"url": "http://127.0.0.1:9/x", "filters": {"typo": 1}}), json!({"uri": "http://x"})] {
            assert_eq!(put(&api, "w", &body).await.status, 400, "{body}");
        }
        let r = put(&api, "bad%20name", &json!({"url": "http://127.0.0.1:9/x"})).await;
        assert_eq!(r.status, 400);
        assert_eq!(api.get("/v1/webhooks/nope").await.code(), "not_found");
        assert_eq!(api.get("/v1/webhooks/nope/deliveries").await.status, 404);
        put(&api, "real", &json!({"url": "http://127.0.0.1:9/x"})).await;
        assert_eq!(api.get("/v1/webhooks/real/deliveries?limit=0").await.status, 400);
        api.send(reqwest::Method::DELETE, "/v1/webhooks/real", None).await;
        assert_eq!(api.get("/v1/webhooks").await.body["webhooks"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn an_https_webhook_speaks_tls() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with(&["--webhooks-allow-private"]);
        let api = server.api();
        // A plain-HTTP receiver behind an https:// URL: the TLS handshake
        // fails, and the attempt says so.
        let rx = receiver(&[]).await;
        let url = rx.url.replace("http://", "https://");
        let r = put(&api, "tls", &json!({"url": url, "max_attempts": 1})).await;
        assert_eq!(r.status, 201, "{r:?}");
        api.post("/v1/events", &json!({"type": "a.b", "source": "s"})).await;
        let w = eventually("the failed attempt", Duration::from_secs(20), async || {
            let w = api.get("/v1/webhooks/tls").await.body;
            (w["paused"] == true).then_some(w)
        })
        .await;
        assert!(w["last_error"].as_str().unwrap().starts_with("no answer"), "{w}");
        assert!(rx.got.lock().unwrap().is_empty(), "nothing readable reached the plain receiver");
    })
    .await;
}
