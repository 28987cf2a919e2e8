//! Schedules through the real binary: the REST routes, bad schedules, apply
//! over HTTP and from the CLI, `--schedules` at start, and a one-second
//! schedule that fires once per slot across a `kill -9` and restart.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use support::{Api, Server, bounded, eventually, parse_rfc3339_ms};

async fn put(api: &Api, name: &str, body: &Value) -> support::Reply {
    api.send(Method::PUT, &format!("/v1/schedules/{name}"), Some(body.to_string().as_bytes())).await
}

async fn runs(api: &Api, name: &str) -> Vec<Value> {
    let reply = api.get(&format!("/v1/schedules/{name}/runs?limit=1000")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["tasks"].as_array().cloned().unwrap_or_default()
}

fn quern(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["--server", &server.url])
        .args(args)
        .output()
        .expect("run quern");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn schedules_round_trip_through_every_route() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let spec = json!({"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "description": "standup",
                          "task": {"name": "report.generate", "input": {"format": "pdf"}}});
        let created = put(&api, "daily", &spec).await;
        assert_eq!((created.status, created.body["outcome"].as_str()), (201, Some("created")), "{created:?}");
        let s = &created.body;
        assert_eq!(
            (s["name"].as_str(), s["enabled"].as_bool(), s["overlap"].as_str()),
            (Some("daily"), Some(true), Some("allow"))
        );
        let next = parse_rfc3339_ms(s["next_fire_at"].as_str().unwrap());
        assert!(next > parse_rfc3339_ms(s["created_at"].as_str().unwrap()));
        let local = s["next_fire_local"].as_str().unwrap();
        assert!(local.contains("09:00:00") && (local.ends_with("CET") || local.ends_with("CEST")), "{local}");
        let same = put(&api, "daily", &spec).await;
        assert_eq!((same.status, same.body["outcome"].as_str()), (200, Some("unchanged")));
        let mut changed = spec.clone();
        changed["cron"] = json!("0 10 * * MON-FRI");
        let updated = put(&api, "daily", &changed).await;
        assert_eq!((updated.status, updated.body["outcome"].as_str()), (200, Some("updated")));
        assert_ne!(updated.body["next_fire_at"], s["next_fire_at"]);
        put(&api, "every-5m", &json!({"every": "5 minutes", "task": {"name": "email.process"}})).await;
        let list = api.get("/v1/schedules").await;
        let names: Vec<&str> =
            list.body["schedules"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, vec!["daily", "every-5m"]);
        let off = api.post("/v1/schedules/daily/disable", &json!({})).await;
        assert_eq!(
            (off.status, off.body["enabled"].as_bool(), off.body["next_fire_at"].is_null()),
            (200, Some(false), true)
        );
        let on = api.post("/v1/schedules/daily/enable", &json!({})).await;
        assert_eq!((on.body["enabled"].as_bool(), on.body["next_fire_at"].is_null()), (Some(true), false));
        let fired = api.post("/v1/schedules/daily/trigger", &json!({})).await;
        assert_eq!(fired.status, 201, "{fired:?}");
        assert_eq!(fired.body["metadata"]["schedule"], "daily");
        assert_eq!(fired.body["input"], json!({"format": "pdf"}));
        let got = api.get("/v1/schedules/daily").await;
        assert_eq!(got.body["last_task"], fired.body["id"]);
        assert!(got.body["last_fired_at"].is_string());
        let listed = runs(&api, "daily").await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], fired.body["id"]);
        assert!(runs(&api, "every-5m").await.is_empty());
        let gone = api.send(Method::DELETE, "/v1/schedules/daily", None).await;
        assert_eq!(gone.status, 200);
        for path in
            ["/v1/schedules/daily", "/v1/schedules/daily/runs", "/v1/schedules/nope", "/v1/schedules/bad%20name"]
        {
            let r = api.get(path).await;
            assert_eq!((r.status, r.code()), (404, "not_found"), "{path}: {r:?}");
        }
        let r = api.post("/v1/schedules/nope/trigger", &json!({})).await;
        assert_eq!((r.status, r.code()), (404, "not_found"));
        assert_eq!(
            api.get(&format!("/v1/tasks/{}", fired.body["id"].as_str().unwrap())).await.status,
            200,
            "runs outlive it"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_schedules_are_refused_and_change_nothing() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let task = json!({"name": "t"});
        let cases = [
            (json!({"cron": "61 * * * *", "task": task}), "cron"),
            (json!({"cron": "* * *", "task": task}), "cron"),
            (json!({"cron": "* * * * *", "timezone": "Mars/Olympus", "task": task}), "timezone"),
            (json!({"every": "0 seconds", "task": task}), "every"),
            (json!({"every": "-5 minutes", "task": task}), "every"),
            (json!({"every": 0, "task": task}), "every"),
            (json!({"cron": "* * * * *", "every": "1 hour", "task": task}), "every"),
            (json!({"cron": "* * * * *", "at": "2030-01-01T00:00:00Z", "task": task}), "at"),
            (json!({"task": task}), "cron"),
            (json!({"at": "1969-12-31T23:59:59Z", "task": task}), "at"),
            (json!({"at": "0001-01-01T00:00:00Z", "task": task}), "at"),
            (json!({"at": "1970-01-01T00:00:00.001+14:00", "task": task}), "at"),
            (json!({"name": "other", "every": "1 hour", "task": task}), "name"),
            (json!({"every": "1 hour", "task": {"name": "bad name"}}), "task.name"),
        ];
        for (body, field) in cases {
            let r = put(&api, "x", &body).await;
            assert_eq!((r.status, r.code()), (422, "invalid_schedule"), "{body}: {r:?}");
            assert_eq!(r.body["error"]["details"]["field"], field, "{body}: {r:?}");
            assert!(r.body["error"]["message"].as_str().unwrap().starts_with(field), "{r:?}");
        }
        for body in [json!({"every": "1 hour"}), json!({"cron": 5, "task": task}), json!({"every": "1h", "task": task, "color": "red"})] {
            let r = put(&api, "x", &body).await;
            assert_eq!((r.status, r.code()), (422, "invalid_schedule"), "{body}: {r:?}");
        }
        let r = api.send(Method::PUT, "/v1/schedules/x", Some(b"{not json")).await;
        assert_eq!((r.status, r.code()), (400, "malformed_json"));
        let r = put(&api, "bad%20name", &json!({"every": "1 hour", "task": task})).await;
        assert_eq!(r.status, 422);
        let file = "schedules:\n  - name: good\n    every: 1 hour\n    task: {name: t}\n  - name: broken\n    cron: \"0 25 * * *\"\n    task: {name: t}\n";
        let r = api.post_typed("/v1/schedules/apply", file.as_bytes(), "application/yaml").await;
        assert_eq!((r.status, r.code()), (422, "invalid_schedule"), "{r:?}");
        assert_eq!(r.body["error"]["details"]["entry"], "schedules[1] (broken)");
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with("schedules[1] (broken): cron:"), "{r:?}");
        for bad in ["schedules: 5", "- just a list", "nothing: here", ":\n  - [unbalanced"] {
            let r = api.post_typed("/v1/schedules/apply", bad.as_bytes(), "application/yaml").await;
            assert_eq!(r.status, 422, "{bad}: {r:?}");
        }
        let r = api.post_typed("/v1/schedules/apply?prune=maybe", b"schedules: []", "application/yaml").await;
        assert_eq!(r.status, 400);
        put(&api, "ok", &json!({"every": "1 hour", "task": task})).await;
        for q in ["limit=0", "limit=1001", "limit=x", "colour=red"] {
            let r = api.get(&format!("/v1/schedules/ok/runs?{q}")).await;
            assert_eq!((r.status, r.code()), (400, "invalid_request"), "{q}: {r:?}");
        }
        api.send(Method::DELETE, "/v1/schedules/ok", None).await;
        assert_eq!(api.get("/v1/schedules").await.body["schedules"], json!([]), "nothing was stored");
        assert_eq!(api.get("/healthz").await.status, 200);
    })
    .await;
}

const FILE: &str = "schedules:
  - name: daily_report
    cron: \"0 9 * * *\"
    timezone: Europe/Berlin
    task: {name: report.generate, input: {format: pdf}}
";

const AGENT_FILE: &str = "tasks:
  - name: process_pending_emails
    description: Process pending emails every 5 minutes
    enabled: true
    type: interval
    schedule: \"5 minutes\"
    function: \"app.services.email_service:process_pending_emails_task\"
    kwargs:
      batch_size: 10
  - name: daily_report
    type: cron
    schedule: \"0 9 * * *\"
    function: \"app.services.report_service:generate_report_task\"
";

#[tokio::test]
async fn apply_over_http_and_from_the_cli() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let r = api.post_typed("/v1/schedules/apply", FILE.as_bytes(), "application/yaml").await;
        assert_eq!((r.status, r.body["created"].clone()), (200, json!(["daily_report"])), "{r:?}");
        let r = api.post_typed("/v1/schedules/apply", FILE.as_bytes(), "application/yaml").await;
        assert_eq!(r.body["unchanged"], json!(["daily_report"]), "idempotent: {r:?}");
        let json_file = json!({"schedules": [{"name": "daily_report", "cron": "0 9 * * *", "timezone": "Europe/Berlin",
                                              "task": {"input": {"format": "pdf"}, "name": "report.generate"}}]});
        let r = api.post("/v1/schedules/apply", &json_file).await;
        assert_eq!(r.body["unchanged"], json!(["daily_report"]), "the same schedule in JSON: {r:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.yaml");
        std::fs::write(&path, AGENT_FILE).unwrap();
        let path = path.to_str().unwrap();
        let (code, out, err) = quern(&server, &["schedule", "apply", path, "--dry-run", "--prune"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("dry run"), "{out}");
        assert!(
            out.contains("created   1 process_pending_emails") && out.contains("updated   1 daily_report"),
            "{out}"
        );
        assert_eq!(runs(&api, "daily_report").await.len(), 0);
        assert!(api.get("/v1/schedules/process_pending_emails").await.status == 404, "a dry run changes nothing");
        let (code, out, err) = quern(&server, &["--output", "json", "schedule", "apply", path]);
        assert_eq!(code, 0, "{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (report["created"].clone(), report["updated"].clone()),
            (json!(["process_pending_emails"]), json!(["daily_report"]))
        );
        let emails = api.get("/v1/schedules/process_pending_emails").await.body;
        assert_eq!(emails["every"], "5 minutes");
        assert_eq!(emails["task"]["name"], "app.services.email_service:process_pending_emails_task");
        assert_eq!(emails["task"]["input"], json!({"batch_size": 10}));
        assert_eq!(emails["description"], "Process pending emails every 5 minutes");

        let (code, out, _) = quern(&server, &["schedule", "list"]);
        assert_eq!(code, 0);
        assert!(out.contains("process_pending_emails") && out.contains("every 5 minutes"), "{out}");
        let (code, out, _) = quern(&server, &["schedule", "trigger", "daily_report"]);
        assert_eq!(code, 0, "{out}");
        let (_, out, _) = quern(&server, &["schedule", "runs", "daily_report"]);
        assert!(out.contains("report_service:generate_report_task"), "{out}");
        for verb in ["disable", "enable", "get"] {
            let (code, out, err) = quern(&server, &["schedule", verb, "daily_report"]);
            assert_eq!(code, 0, "{verb}: {err}");
            assert!(out.contains("daily_report"), "{out}");
        }
        let (code, _, err) = quern(&server, &["schedule", "get", "nope"]);
        assert_eq!(code, 2);
        assert!(err.contains("not_found"), "{err}");
        std::fs::write(dir.path().join("bad.yaml"), "schedules:\n  - name: b\n    every: 0\n    task: {name: t}\n")
            .unwrap();
        let (code, _, err) = quern(&server, &["schedule", "apply", dir.path().join("bad.yaml").to_str().unwrap()]);
        assert_eq!(code, 2);
        assert!(err.contains("invalid_schedule") && err.contains("schedules[0] (b): every"), "{err}");
        let (code, _, _) = quern(&server, &["schedule", "apply", path, "--prune"]);
        assert_eq!(code, 0);
        let (code, _, _) = quern(&server, &["schedule", "delete", "daily_report"]);
        assert_eq!(code, 0);
        let names: Vec<Value> = api.get("/v1/schedules").await.body["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("process_pending_emails")]);
    })
    .await;
}

#[tokio::test]
async fn a_schedules_file_is_applied_at_start_and_a_bad_one_stops_the_server() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("schedules.yaml");
        std::fs::write(&good, FILE).unwrap();
        let server = Server::start_with(&["--schedules", good.to_str().unwrap()]);
        let r = server.api().get("/v1/schedules/daily_report").await;
        assert_eq!(r.status, 200, "{r:?}");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "schedules:\n  - name: x\n    cron: \"* * * * *\"\n    timezone: Nowhere/Land\n    task: {name: t}\n",
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data2"))
            .args(["--schedules", bad.to_str().unwrap()])
            .output()
            .expect("run quern server");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("schedules[0] (x): timezone"), "{err}");
    })
    .await;
}

/// Slots (ms) of the runs, oldest first, asserting one task per slot.
async fn slots(api: &Api) -> Vec<i64> {
    let all = runs(api, "tick").await;
    let slots: Vec<i64> =
        all.iter().rev().map(|t| parse_rfc3339_ms(t["metadata"]["schedule.slot"].as_str().unwrap())).collect();
    let distinct: BTreeSet<i64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    slots
}

#[tokio::test]
async fn a_one_second_schedule_fires_once_per_second_across_kill_9() {
    bounded(Duration::from_secs(60), async {
        let mut server = Server::start();
        let api = server.api();
        let r = put(&api, "tick", &json!({"every": "1 second", "task": {"name": "tick"}})).await;
        assert_eq!(r.status, 201);
        eventually("three runs", Duration::from_secs(10), async || (slots(&api).await.len() >= 3).then_some(())).await;
        server.restart();
        let api = server.api();
        let before = slots(&api).await.len();
        eventually("three more runs", Duration::from_secs(10), async || {
            (slots(&api).await.len() >= before + 3).then_some(())
        })
        .await;
        let slots = slots(&api).await;
        let gaps: Vec<i64> = slots.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| g % 1000 == 0 && *g > 0), "slots on the second grid: {gaps:?}");
        // Only the restart may leave a hole (catch-up fires one task for the
        // slots missed while no server ran).
        assert!(gaps.iter().filter(|g| **g > 1000).count() <= 1, "holes: {gaps:?}");
        assert!(gaps.iter().all(|g| *g <= 5_000), "the restart took seconds? {gaps:?}");
        for t in runs(&api, "tick").await {
            let (slot, created) = (
                parse_rfc3339_ms(t["metadata"]["schedule.slot"].as_str().unwrap()),
                parse_rfc3339_ms(t["created_at"].as_str().unwrap()),
            );
            assert!(created >= slot, "a task before its slot: {t}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_time_before_1970_is_refused_and_the_scheduler_keeps_firing() {
    bounded(Duration::from_secs(60), async {
        let server = Server::start();
        let api = server.api();
        let tick = put(&api, "tick", &json!({"every": "1s", "task": {"name": "t"}})).await;
        assert_eq!(tick.status, 201, "{tick:?}");
        for at in ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00.001+14:00"] {
            let r = put(&api, "bad", &json!({"at": at, "task": {"name": "x"}})).await;
            assert_eq!((r.status, r.code()), (422, "invalid_schedule"), "{at}: {r:?}");
        }
        let r = api.get("/v1/schedules/bad").await;
        assert_eq!(r.status, 404, "nothing was stored: {r:?}");
        let r = api.get("/v1/schedules").await;
        assert_eq!(r.status, 200, "{r:?}");
        eventually("two ticks", Duration::from_secs(20), async || (runs(&api, "tick").await.len() >= 2).then_some(()))
            .await;
        let ready = api.get("/readyz").await;
        assert_eq!(ready.status, 200, "{ready:?}");
        for name in ["timers", "retention", "scheduler", "webhooks", "worker_sync"] {
            assert_eq!(ready.body["loops"][name]["running"], true, "{name}: {ready:?}");
            assert_eq!(ready.body["loops"][name]["restarts"], 0, "{name}: {ready:?}");
        }
    })
    .await;
}
