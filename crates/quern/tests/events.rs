//! The event bus through the real binary: nothing published while no one
//! listens is missed, filters, long-poll wake-up, SSE resume with
//! `Last-Event-ID`, `kill -9` between publish and read, the engine's own task
//! and workflow events in order, retention, bad input, and the CLI.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Api, Server, bounded, eventually};

fn ev(kind: &str, source: &str, n: usize) -> Value {
    json!({"type": kind, "source": source, "payload": {"n": n}})
}

/// Every event after `after` passing `query` (`&type=…`), page by page.
async fn read_all(api: &Api, after: u64, query: &str) -> Vec<Value> {
    let (mut out, mut after) = (Vec::new(), after);
    loop {
        let r = api.get(&format!("/v1/events?after={after}&limit=1000{query}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        let events = r.body["events"].as_array().unwrap().clone();
        let next = r.body["next_after"].as_u64().unwrap();
        if events.is_empty() && next == after {
            return out;
        }
        out.extend(events);
        after = next;
    }
}

fn offsets(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["offset"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn events_published_while_no_one_listens_are_all_read_later_and_filters_select() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let one = api.post("/v1/events", &ev("email.processed", "email-agent", 0)).await;
        assert_eq!(one.status, 201, "{one:?}");
        assert_eq!((one.body["offset"].as_u64(), one.body["target"].is_null()), (Some(1), true));
        let batch: Vec<Value> =
            (1..1500).map(|n| ev(if n % 3 == 0 { "email.failed" } else { "alert.raised" }, "aiops", n)).collect();
        let r = api.post("/v1/events", &json!({"events": batch})).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.body["events"].as_array().unwrap().len(), 1499);
        let targeted = json!({"type": "email.reply", "source": "email-agent", "target": "support-bot", "payload": {}});
        api.post("/v1/events", &targeted).await;
        api.post(
            "/v1/events",
            &json!({"type": "email.reply", "source": "email-agent", "target": "pager", "payload": {}}),
        )
        .await;
        let all = read_all(&api, 0, "").await;
        assert_eq!(offsets(&all), (1..=1502).collect::<Vec<u64>>(), "every event, in order, once");
        assert_eq!(all[5]["payload"], json!({"n": 5}));
        let emails = read_all(&api, 0, "&type=email.*").await;
        assert_eq!(emails.len(), 1 + 499 + 2);
        assert!(emails.iter().all(|e| e["type"].as_str().unwrap().starts_with("email.")));
        let two = read_all(&api, 0, "&type=email.processed,email.reply").await;
        assert_eq!(two.len(), 3);
        let aiops = read_all(&api, 0, "&source=aiops").await;
        assert_eq!(aiops.len(), 1499);
        let bot = read_all(&api, 1500, "&target=support-bot").await;
        assert_eq!(offsets(&bot), vec![1501], "its own, not the pager's");
        let latest = api.get("/v1/events?after=latest").await;
        assert_eq!(
            (latest.body["events"].as_array().unwrap().len(), latest.body["next_after"].as_u64()),
            (0, Some(1502))
        );
    })
    .await;
}

#[tokio::test]
async fn a_parked_read_wakes_at_once_on_publish() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        api.post("/v1/events", &ev("a.b", "s", 1)).await;
        let reader = api.clone();
        let parked = tokio::spawn(async move {
            let start = Instant::now();
            let r = reader.get("/v1/events?after=1&wait=20s").await;
            (r, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = api.post("/v1/events", &ev("other.kind", "s", 2)).await;
        assert_eq!(other.status, 201);
        let (r, waited) = parked.await.unwrap();
        assert_eq!(offsets(r.body["events"].as_array().unwrap()), vec![2]);
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
        // A read whose filter matches nothing waits out its time and says how far it looked.
        let start = Instant::now();
        let r = api.get("/v1/events?after=0&type=nothing.*&wait=300ms").await;
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_eq!((r.body["events"].as_array().unwrap().len(), r.body["next_after"].as_u64()), (0, Some(2)));
    })
    .await;
}

/// Reads SSE frames from a streaming answer until `n` events came.
async fn sse_events(resp: &mut reqwest::Response, n: usize, buf: &mut String) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
        if out.len() >= n {
            break;
        }
        let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

#[tokio::test]
async fn sse_resumes_after_a_dropped_connection_from_last_event_id() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let batch: Vec<Value> = (0..10).map(|n| ev("job.done", "worker", n)).collect();
        api.post("/v1/events", &json!({"events": batch})).await;
        quern_client::install_tls_provider();
        let http = reqwest::Client::new();
        let mut resp = http.get(format!("{}/v1/events/stream?after=0&type=job.*", server.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut buf = String::new();
        let first = sse_events(&mut resp, 4, &mut buf).await;
        assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(first[0].1["type"], "job.done");
        drop(resp);
        let more: Vec<Value> = (10..15).map(|n| ev("job.done", "worker", n)).collect();
        api.post("/v1/events", &json!({"events": more})).await;
        api.post("/v1/events", &ev("noise", "worker", 99)).await;
        let mut resp = http
            .get(format!("{}/v1/events/stream?type=job.*", server.url))
            .header("Last-Event-ID", "4")
            .send()
            .await
            .unwrap();
        let mut buf = String::new();
        let rest = sse_events(&mut resp, 11, &mut buf).await;
        assert_eq!(rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (5..=15).collect::<Vec<u64>>());
        // Live: an event published now arrives on the open stream.
        api.post("/v1/events", &ev("job.done", "worker", 100)).await;
        let live = sse_events(&mut resp, 1, &mut buf).await;
        assert_eq!(live[0].0, 17, "16 was the filtered-out noise");
    })
    .await;
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9() {
    bounded(Duration::from_secs(60), async {
        let mut server = Server::start();
        let api = server.api();
        let mut acked = Vec::new();
        for n in 0..300 {
            let r = api.post("/v1/events", &ev("durable.event", "s", n)).await;
            assert_eq!(r.status, 201);
            acked.push(r.body["offset"].as_u64().unwrap());
        }
        server.kill9();
        server.restart();
        let api = server.api();
        let all = read_all(&api, 0, "&type=durable.*").await;
        assert_eq!(offsets(&all), acked);
        let next = api.post("/v1/events", &ev("durable.event", "s", 300)).await;
        assert_eq!(next.body["offset"].as_u64(), Some(301), "offsets go on after the crash");
    })
    .await;
}

#[tokio::test]
async fn the_engine_publishes_task_and_workflow_events_in_order() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let id = api.submit_named("report.build").await;
        let leased = api.lease_one("w1", 30_000).await;
        api.succeed("w1", &id, &support::token_of(&leased), json!({"pages": 3})).await;
        let events = read_all(&api, 0, "&type=task.*").await;
        let mine: Vec<&str> = events
            .iter()
            .filter(|e| e["payload"]["task"] == id.as_str())
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(mine, vec!["task.queued", "task.started", "task.succeeded"]);
        assert!(events.iter().all(|e| e["source"] == "quern"));
        let wf = api.post("/v1/workflows", &json!({"name": "tiny", "chain": [{"name": "step.one"}]})).await;
        assert_eq!(wf.status, 201, "{wf:?}");
        let t = api.lease_one("w1", 30_000).await;
        api.succeed("w1", &support::id_of(&t), &support::token_of(&t), json!(null)).await;
        let ends = read_all(&api, 0, "&type=workflow.*").await;
        assert_eq!(ends.len(), 1);
        assert_eq!(
            (ends[0]["type"].as_str(), ends[0]["payload"]["workflow"].clone()),
            (Some("workflow.succeeded"), wf.body["id"].clone())
        );
    })
    .await;
}

#[tokio::test]
async fn purged_offsets_are_reported() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with_config("events:\n  max_events: 2\nretention:\n  sweep_interval: 100ms\n");
        let api = server.api();
        for n in 0..5 {
            api.post("/v1/events", &ev("tick", "s", n)).await;
        }
        // A sweep may run between two of the posts: wait for one after them.
        let r = eventually("the sweep", Duration::from_secs(10), async || {
            let r = api.get("/v1/events?after=0").await;
            (r.status == 410 && r.body["error"]["details"]["earliest"].as_u64() >= Some(4)).then_some(r)
        })
        .await;
        assert_eq!(r.code(), "offset_expired");
        let earliest = r.body["error"]["details"]["earliest"].as_u64().unwrap();
        assert!(earliest >= 4, "{r:?}");
        let kept = api.get(&format!("/v1/events?after={}", earliest - 1)).await;
        assert_eq!(kept.status, 200);
        let from_start = api.get("/v1/events").await;
        assert_eq!(
            from_start.body["events"][0]["offset"].as_u64(),
            Some(earliest),
            "no `after`: from the earliest kept"
        );
        quern_client::install_tls_provider();
        let stream = reqwest::get(format!("{}/v1/events/stream?after=0", server.url)).await.unwrap();
        assert_eq!(stream.status(), 410);
    })
    .await;
}

#[tokio::test]
async fn bad_events_and_queries_are_refused() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        for (body, status, code) in [
            (&b"{nope"[..], 400, "malformed_json"),
            (br#"{"source": "s"}"#, 400, "invalid_request"),
            (br#"{"type": "a.b"}"#, 400, "invalid_request"),
            (br#"{"type": "bad type", "source": "s"}"#, 400, "invalid_request"),
            (br#"{"type": "a", "source": "s", "color": 1}"#, 400, "invalid_request"),
            (br#"{"type": 5, "source": "s"}"#, 400, "invalid_request"),
            (br#"{"events": [{"type": "ok", "source": "s"}, {"type": "", "source": "s"}]}"#, 400, "invalid_request"),
        ] {
            let r = api.post_raw("/v1/events", body.to_vec()).await;
            assert_eq!((r.status, r.code()), (status, code), "{}: {r:?}", String::from_utf8_lossy(body));
        }
        let r = api
            .post_raw(
                "/v1/events",
                br#"{"events": [{"type": "ok", "source": "s"}, {"type": "", "source": "s"}]}"#.to_vec(),
            )
            .await;
        assert_eq!(r.body["error"]["details"]["index"], 1);
        for q in [
            "after=abc",
            "limit=0",
            "limit=5000",
            "wait=5m",
            "colour=red",
            "group=g&visibility=10ms",
            "group=bad%20group",
            "visibility=1s",
        ] {
            let r = api.get(&format!("/v1/events?{q}")).await;
            assert_eq!((r.status, r.code()), (400, "invalid_request"), "{q}: {r:?}");
        }
        assert_eq!(api.get("/v1/events").await.body["events"], json!([]), "nothing was appended");
    })
    .await;
}

#[tokio::test]
async fn the_cli_publishes_and_tails() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let quern = |args: &[&str]| {
            let out =
                Command::new(env!("CARGO_BIN_EXE_quern")).args(["--server", &server.url]).args(args).output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, err) = quern(&[
            "events",
            "publish",
            "email.batch_processed",
            "--payload",
            r#"{"batch_size": 10}"#,
            "--source",
            "email-agent",
        ]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("email.batch_processed") && out.contains("email-agent"), "{out}");
        quern(&["events", "publish", "other.thing", "--source", "x", "--target", "bot"]);
        let (code, out, err) =
            quern(&["--output", "json", "events", "tail", "--after", "0", "--type", "email.*", "--count", "1"]);
        assert_eq!(code, Some(0), "{err}");
        let e: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!((e["offset"].as_u64(), e["payload"]["batch_size"].as_u64()), (Some(1), Some(10)));
        let (code, out, err) = quern(&["events", "tail", "--group", "cli-g", "--after", "0", "--count", "2"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out.lines().count(), 2, "{out}");
        quern(&["events", "publish", "third.one", "--source", "x"]);
        let (code, out, err) = quern(&["events", "tail", "--group", "cli-g", "--count", "1"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("third.one"), "the group goes on where it stood: {out}");
        let (code, _, err) = quern(&["events", "publish", "bad type"]);
        assert_eq!(code, Some(2));
        assert!(err.contains("invalid_request"), "{err}");
    })
    .await;
}

async fn group_read(api: &Api, member: &str, visibility: &str) -> Vec<Value> {
    let r = api
        .get(&format!("/v1/events?group=g&member={member}&visibility={visibility}&limit=7&after=0&wait=200ms"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["events"].as_array().unwrap().clone()
}

async fn ack(api: &Api, events: &[Value]) -> Value {
    let r = api.post("/v1/events/ack", &json!({"group": "g", "offsets": offsets(events)})).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

#[tokio::test]
async fn a_consumer_group_shares_a_stream_once_each_and_redelivers_what_a_dead_member_held() {
    bounded(Duration::from_secs(60), async {
        let mut server = Server::start();
        let api = server.api();
        let batch: Vec<Value> = (0..300).map(|n| ev("work.item", "producer", n)).collect();
        api.post("/v1/events", &json!({"events": batch})).await;
        // Three members read and ack concurrently.
        let mut members = Vec::new();
        for m in 0..3 {
            let api = api.clone();
            members.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let events = group_read(&api, &format!("m{m}"), "30s").await;
                    if events.is_empty() {
                        return got;
                    }
                    ack(&api, &events).await;
                    got.extend(offsets(&events));
                }
            }));
        }
        let mut all = Vec::new();
        for m in members {
            all.extend(m.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=300).collect::<Vec<u64>>(), "each event to exactly one member");
        // A member takes events and dies without acking: after the visibility
        // timeout another member gets them.
        let more: Vec<Value> = (0..5).map(|n| ev("work.item", "producer", n)).collect();
        api.post("/v1/events", &json!({"events": more})).await;
        let taken = group_read(&api, "doomed", "500ms").await;
        assert_eq!(offsets(&taken), (301..=305).collect::<Vec<u64>>());
        assert!(group_read(&api, "m1", "30s").await.is_empty(), "held by the dead member for now");
        let again = eventually("redelivery", Duration::from_secs(10), async || {
            let e = group_read(&api, "m1", "30s").await;
            (!e.is_empty()).then_some(e)
        })
        .await;
        assert_eq!(offsets(&again), (301..=305).collect::<Vec<u64>>());
        let answer = ack(&api, &again[..2]).await;
        assert_eq!((answer["acked"].as_u64(), answer["cursor"].as_u64()), (Some(2), Some(302)));
        // After a crash the group resumes from its committed cursor: what
        // was not acknowledged comes again.
        server.restart();
        let api = server.api();
        let after = group_read(&api, "m2", "30s").await;
        assert_eq!(offsets(&after), vec![303, 304, 305]);
        let r = api.post("/v1/events/ack", &json!({"group": "bad group", "offsets": [1]})).await;
        assert_eq!(r.status, 400);
        let r = api.get("/v1/events?member=x").await;
        assert_eq!(r.status, 400, "member without group");
    })
    .await;
}

#[tokio::test]
async fn a_group_behind_retention_goes_on_from_the_earliest_kept_event() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start_with_config("events:\n  max_events: 2\nretention:\n  sweep_interval: 100ms\n");
        let api = server.api();
        api.post("/v1/events", &ev("work.item", "producer", 0)).await;
        let taken = group_read(&api, "slow", "300ms").await;
        assert_eq!(offsets(&taken), vec![1], "held, never acknowledged");
        for n in 1..6 {
            api.post("/v1/events", &ev("work.item", "producer", n)).await;
        }
        let earliest = eventually("the sweep", Duration::from_secs(10), async || {
            let r = api.get("/v1/events?after=0").await;
            (r.status == 410).then(|| r.body["error"]["details"]["earliest"].as_u64()).flatten()
        })
        .await;
        // The held event and those after it up to the earliest kept are gone:
        // the group hands out what is kept instead of failing.
        let kept = eventually("the kept events", Duration::from_secs(10), async || {
            let e = group_read(&api, "m1", "30s").await;
            (!e.is_empty()).then_some(e)
        })
        .await;
        assert_eq!(offsets(&kept), (earliest..=6).collect::<Vec<u64>>());
        let answer = ack(&api, &kept).await;
        assert_eq!(answer["acked"].as_u64(), Some(kept.len() as u64), "{answer}");
        // Once the slow member's hold runs out, the next read finds its event
        // purged and lets it go: the cursor passes it.
        eventually("the cursor past the purged event", Duration::from_secs(10), async || {
            assert!(group_read(&api, "m1", "30s").await.is_empty(), "nothing is left to hand out");
            (ack(&api, &kept).await["cursor"].as_u64() == Some(6)).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn what_a_dead_member_held_between_acked_events_comes_again_complete() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let batch: Vec<Value> = (0..7).map(|n| ev("work.item", "producer", n)).collect();
        api.post("/v1/events", &json!({"events": batch})).await;
        let taken = group_read(&api, "doomed", "300ms").await;
        assert_eq!(offsets(&taken), (1..=7).collect::<Vec<u64>>());
        // It acked every other one, then died holding the rest.
        let acked = api.post("/v1/events/ack", &json!({"group": "g", "offsets": [2, 4, 6]})).await;
        assert_eq!(acked.body["acked"], 3, "{acked:?}");
        let again = eventually("redelivery", Duration::from_secs(10), async || {
            let e = group_read(&api, "heir", "30s").await;
            (!e.is_empty()).then_some(e)
        })
        .await;
        assert_eq!(offsets(&again), vec![1, 3, 5, 7], "the held ones, each with its own payload");
        let payloads: Vec<u64> = again.iter().filter_map(|e| e["payload"]["n"].as_u64()).collect();
        assert_eq!(payloads, vec![0, 2, 4, 6]);
    })
    .await;
}
