//! Upgrades of the embedded store: a data directory written by build
//! 3e97bdc, the last before the SQLite schema was versioned
//! (`tests/fixtures/data-v1`, made by `tests/fixtures/make_data_v1.py`),
//! opens with this build and keeps everything; a data directory from a newer
//! Quern is refused with a message naming both versions.

mod support;

use quern_store::sqlite::SCHEMA_VERSION;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::{Api, Server, bounded};

const LIMIT: Duration = Duration::from_secs(60);
/// Where SQLite keeps `user_version` in the file's header: 4 bytes, big-endian.
const USER_VERSION_AT: usize = 60;

/// A copy of the fixture in a temporary directory.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-v1/quern.db");
    std::fs::copy(from, dir.path().join("quern.db")).expect("copy the fixture");
    dir
}

fn user_version(data: &Path) -> u32 {
    let bytes = std::fs::read(data.join("quern.db")).expect("read quern.db");
    u32::from_be_bytes(bytes[USER_VERSION_AT..USER_VERSION_AT + 4].try_into().expect("four bytes"))
}

async fn tasks(api: &Api, query: &str) -> Vec<Value> {
    let reply = api.get(&format!("/v1/tasks?{query}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["tasks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_data_directory_from_before_schema_versions_opens_with_everything() {
    let dir = fixture_copy();
    assert_eq!(user_version(dir.path()), 0, "the fixture predates versions");
    let server = Server::start_in(dir.path(), &[]);
    let api = server.api();
    bounded(LIMIT, async {
        for (status, n) in [
            ("pending", 1),
            ("queued", 2),
            ("running", 1),
            ("succeeded", 2),
            ("failed", 1),
            ("cancelled", 1),
            ("timed_out", 1),
            ("skipped", 1),
        ] {
            // fx-daily fires at 09:00 Berlin: once that hour has passed since the
            // fixture was made, the server queues its missed run, fx.report.
            let listed = tasks(&api, &format!("status={status}")).await;
            let fixture_made = listed.iter().filter(|t| t["name"] != "fx.report").count();
            assert_eq!(fixture_made, n, "{status}");
        }
        assert!(tasks(&api, "name=fx.report").await.len() <= 1, "at most one missed run is caught up");
        let queued = tasks(&api, "name=fx.queued").await;
        assert_eq!(
            (queued[0]["input"]["n"].as_i64(), queued[0]["metadata"]["fixture"].as_str()),
            (Some(1), Some("v1"))
        );
        let succeeded = tasks(&api, "name=fx.succeeded").await;
        assert_eq!(succeeded[0]["result"]["pages"], 12);
        let failed = tasks(&api, "name=fx.failed").await;
        assert_eq!(failed[0]["error"]["message"], "boom");
        let history = api.get(&format!("/v1/tasks/{}/history", succeeded[0]["id"].as_str().unwrap_or(""))).await;
        assert!(history.body.as_array().is_some_and(|h| h.len() >= 3), "{history:?}");

        let build = tasks(&api, "name=fx.build").await;
        let workflow = build[0]["workflow"].as_str().expect("fx.build is in a workflow").to_owned();
        let wf = api.get(&format!("/v1/workflows/{workflow}")).await.body;
        assert_eq!(
            (wf["name"].as_str(), wf["total"].as_u64(), wf["status"].as_str()),
            (Some("fx.release"), Some(3), Some("running"))
        );
        assert_eq!((wf["counts"]["succeeded"].as_u64(), wf["counts"]["skipped"].as_u64()), (Some(1), Some(1)));

        let schedules = api.get("/v1/schedules").await.body;
        let names: Vec<(&str, bool)> = schedules["schedules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?, s["enabled"].as_bool()?)))
            .collect();
        assert_eq!(names, [("fx-daily", true), ("fx-every", false), ("fx-once", true)]);

        let events = api.get("/v1/events?after=0&type=fx.*").await.body;
        assert_eq!(events["events"].as_array().map(Vec::len), Some(3), "{events}");
        // The group acknowledged the first two: it is handed the third.
        let group = api.get("/v1/events?group=fx-group&member=m1&type=fx.*").await.body;
        let payloads: Vec<&Value> = group["events"].as_array().into_iter().flatten().map(|e| &e["payload"]).collect();
        assert_eq!(payloads, [&serde_json::json!({"i": 2})], "{group}");

        let hook = api.get("/v1/webhooks/fx-hook").await;
        assert_eq!((hook.status, hook.body["max_attempts"].as_u64()), (200, Some(3)), "{hook:?}");

        // Submits and leases go on as ever.
        let id = api.submit_named("fx.after").await;
        assert_eq!(api.status_of(&id).await, "queued");
    })
    .await;
    let mut server = server;
    server.terminate();
    assert!(server.wait_for_exit(LIMIT).is_some_and(|s| s.success()), "a graceful stop");
    assert_eq!(i64::from(user_version(dir.path())), SCHEMA_VERSION, "the file now says which schema it has");
}

#[tokio::test]
async fn a_data_directory_from_a_newer_quern_is_refused() {
    let dir = fixture_copy();
    let path = dir.path().join("quern.db");
    let mut bytes = std::fs::read(&path).expect("read");
    let newer = u32::try_from(SCHEMA_VERSION + 1).expect("a small version");
    bytes[USER_VERSION_AT..USER_VERSION_AT + 4].copy_from_slice(&newer.to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("run quern server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("version {newer}")) && stderr.contains(&format!("({SCHEMA_VERSION})")),
        "{stderr}"
    );
    let left = std::fs::read(&path).expect("read");
    assert_eq!(left.get(USER_VERSION_AT + 3), newer.to_be_bytes().get(3), "the file is left as it was");
}
