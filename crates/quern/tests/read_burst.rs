//! Memory and threads under a burst of connections: the process's, so the
//! real binary.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, bounded, eventually};

/// Opens `n` connections at once, makes `requests` GETs of `path` on each,
/// and answers them still open.
async fn burst(addr: &str, path: &str, n: usize, requests: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (addr, path) = (addr.to_owned(), path.to_owned());
        all.spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            for _ in 0..requests {
                conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("send");
                let mut got = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                // Read the head, then as many bytes as it says.
                let body_len = loop {
                    let n = conn.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "the server closed the connection");
                    got.extend_from_slice(&chunk[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .expect("a content-length");
                        break end + 4 + len;
                    }
                };
                while got.len() < body_len {
                    let n = conn.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "the server closed the connection");
                    got.extend_from_slice(&chunk[..n]);
                }
            }
            conn
        });
    }
    all.join_all().await
}

fn threads_of(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", server.pid())).map_or(0, Iterator::count)
}

#[tokio::test]
async fn memory_a_burst_of_connections_took_is_given_back() {
    let server = Server::start();
    let api = server.api();
    bounded(Duration::from_secs(120), async {
        let tasks: Vec<Value> =
            (0..500).map(|i| json!({"name": "t", "input": {"i": i, "pad": "p".repeat(200)}})).collect();
        assert_eq!(api.post("/v1/tasks/batch", &json!({"tasks": tasks})).await.status, 201);
        let addr = server.url.trim_start_matches("http://").to_owned();
        // Warm up, so that what is measured is the burst, not first use.
        drop(burst(&addr, "/v1/tasks?limit=100", 50, 2).await);
        let start = server.rss_bytes();
        let open = burst(&addr, "/v1/tasks?limit=100", 2_000, 3).await;
        let peak = server.rss_bytes();
        // Reads queue for a bounded set of store connections, each on a
        // thread of its own: not a thread (and a page cache) per client.
        let threads = threads_of(&server);
        assert!(threads <= 20, "{threads} threads with 2,000 clients reading");
        drop(open);
        let limit = start + (40 << 20);
        let after = eventually("memory given back", Duration::from_secs(60), async || {
            let rss = server.rss_bytes();
            (rss < limit).then_some(rss)
        })
        .await;
        eprintln!("RSS {} MB at start, {} MB with 2,000 clients, {} MB after", start >> 20, peak >> 20, after >> 20);
    })
    .await;
}
