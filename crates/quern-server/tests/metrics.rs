//! `/metrics` after a known workload: exact counters, queue depths that
//! match `/v1/queues`, histogram counts that match the tasks, HTTP requests
//! by route template, both exposition formats, the label bounds, and what a
//! token confined to queues may see.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::{Api, Server, id_of, token_of};

/// A scrape: each sample's value by its name and labels as written
/// (`name{a="b",c="d"}`).
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    async fn of(api: &Api) -> Scrape {
        let reply = api.get("/metrics").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let text = reply.body.as_str().expect("a text body").to_owned();
        Scrape::parse(text)
    }

    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line}"));
            assert!(samples.insert(series.to_owned(), value).is_none(), "one sample per series: {line}");
        }
        Scrape { samples, text }
    }

    fn value(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }
}

#[tokio::test]
async fn a_known_workload_shows_exact_counts() {
    let server = Server::start();
    let api = server.api();
    for i in 0..100 {
        api.submit(json!({"name": "resize", "queue": "images", "input": {"i": i}})).await;
    }
    let mut tasks = Vec::new();
    while tasks.len() < 100 {
        tasks.extend(api.lease_from("w1", &["images"], 100, 1_000, 60_000).await);
    }
    for (i, t) in tasks.iter().enumerate() {
        if i < 3 {
            api.fail("w1", &id_of(t), &token_of(t), "boom", false).await;
        } else {
            api.succeed("w1", &id_of(t), &token_of(t), json!(i)).await;
        }
    }
    let s = Scrape::of(&api).await;
    let by = |metric: &str, extra: &str| format!("{metric}{{queue=\"images\",name=\"resize\"{extra}}}");
    assert_eq!(s.value(&by("quern_tasks_submitted_total", "")), 100.0);
    assert_eq!(s.value(&by("quern_tasks_started_total", "")), 100.0);
    assert_eq!(s.value(&by("quern_tasks_finished_total", ",outcome=\"succeeded\"")), 97.0);
    assert_eq!(s.value(&by("quern_tasks_finished_total", ",outcome=\"failed\"")), 3.0);
    assert_eq!(s.value(&by("quern_tasks_finished_total", ",outcome=\"cancelled\"")), 0.0);
    assert_eq!(s.value(&by("quern_task_retries_total", "")), 0.0);
    for histogram in ["quern_task_wait_seconds", "quern_task_run_seconds", "quern_task_latency_seconds"] {
        assert_eq!(s.value(&format!("{histogram}_count{{queue=\"images\"}}")), 100.0, "{histogram}");
        assert_eq!(s.value(&format!("{histogram}_bucket{{queue=\"images\",le=\"+Inf\"}}")), 100.0, "{histogram}");
    }
    let queues = api.get("/v1/queues").await.body;
    let images = queues.as_array().and_then(|q| q.iter().find(|q| q["name"] == "images")).expect("the queue");
    for (status, n) in images["counts"].as_object().expect("counts") {
        let depth = s.value(&format!("quern_queue_depth{{queue=\"images\",status=\"{status}\"}}"));
        assert_eq!(Some(depth), n.as_f64(), "{status}");
    }
    assert_eq!(s.value("quern_queue_depth{queue=\"images\",status=\"succeeded\"}"), 97.0);
    let route = "quern_http_requests_total{route=\"/v1/tasks\",method=\"POST\",status=\"201\"}";
    assert_eq!(s.value(route), 100.0);
    let completes = "quern_http_request_duration_seconds_count{route=\"/v1/complete\",method=\"POST\"}";
    assert_eq!(s.value(completes), 100.0);
    assert_eq!(s.value("quern_workers_live"), 1.0);
    assert!(s.value("quern_store_commit_requests_sum{backend=\"sqlite\"}") >= 200.0);
    assert!(s.text.contains("# TYPE quern_tasks_finished_total counter"), "Prometheus text names counters with _total");
}

#[tokio::test]
async fn openmetrics_is_served_when_asked_for() {
    let server = Server::start();
    let api = server.api();
    api.submit(json!({"name": "a"})).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("a client");
    let answer = http
        .get(format!("{}/metrics", server.url))
        .header("accept", "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        .send()
        .await
        .expect("an answer");
    let kind = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = answer.text().await.expect("a body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE quern_tasks_submitted counter\n"), "{text}");
    assert!(text.contains("quern_tasks_submitted_total{queue=\"default\",name=\"a\"} 1\n"), "{text}");
}

#[tokio::test]
async fn task_names_past_the_bound_count_as_other() {
    let server = Server::start_with_config("metrics:\n  max_task_names: 2\n");
    let api = server.api();
    for name in ["a", "b", "c", "d", "a"] {
        api.submit(json!({"name": name})).await;
    }
    let s = Scrape::of(&api).await;
    assert_eq!(s.value("quern_tasks_submitted_total{queue=\"default\",name=\"a\"}"), 2.0);
    assert_eq!(s.value("quern_tasks_submitted_total{queue=\"default\",name=\"b\"}"), 1.0);
    assert_eq!(s.value("quern_tasks_submitted_total{queue=\"default\",name=\"other\"}"), 2.0);
    assert!(!s.text.contains("name=\"c\""), "{}", s.text);
}

#[tokio::test]
async fn a_bad_scrape_is_refused_and_changes_nothing() {
    let server = Server::start();
    let api = server.api();
    let reply = api.get("/metrics?format=json").await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"), "{reply:?}");
    let reply = api.post("/metrics", &Value::Null).await;
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_eq!(api.get("/v1/nothing/here").await.status, 404);
    let s = Scrape::of(&api).await;
    assert_eq!(s.value("quern_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"400\"}"), 1.0);
    assert_eq!(s.value("quern_http_requests_total{route=\"unmatched\",method=\"\",status=\"405\"}"), 1.0);
    assert_eq!(s.value("quern_http_requests_total{route=\"unmatched\",method=\"\",status=\"404\"}"), 1.0);
}

/// A token confined to queues sees its queues' series and nothing of the
/// server as a whole; a request without a token is refused.
#[tokio::test]
async fn a_confined_token_sees_only_its_queues() {
    const ADMIN: &str = "qrn_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).expect("write the bootstrap file");
    let yaml = format!("auth:\n  required: true\n  bootstrap_token_file: {}\n", file.display());
    let server = Server::start_in(dir, &yaml);
    let admin = server.api().with_token(ADMIN);
    admin.submit(json!({"name": "a", "queue": "mine"})).await;
    admin.submit(json!({"name": "a", "queue": "theirs"})).await;
    let made = admin.post("/v1/tokens", &json!({"name": "scraper", "role": "viewer", "queues": ["mine"]})).await;
    assert_eq!(made.status, 201, "{made:?}");
    let secret = made.body["token"].as_str().expect("a secret");
    let confined = Scrape::of(&server.api().with_token(secret)).await;
    assert_eq!(confined.value("quern_tasks_submitted_total{queue=\"mine\",name=\"a\"}"), 1.0);
    assert!(!confined.text.contains("theirs"), "{}", confined.text);
    assert!(!confined.text.contains("quern_http_requests_total"), "{}", confined.text);
    let whole = Scrape::of(&admin).await;
    assert_eq!(whole.value("quern_tasks_submitted_total{queue=\"theirs\",name=\"a\"}"), 1.0);
    let anonymous = server.api().get("/metrics").await;
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized"), "{anonymous:?}");
}

/// The metric names a text mentions: `quern_…` words, histogram samples
/// named by their family.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("quern_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

/// docs/grafana-dashboard.json asks only for metrics docs/observability.md
/// lists, and the page lists only metrics the server serves (those a fresh
/// SQLite server has not shown yet are named here, with why).
#[tokio::test]
async fn the_dashboard_and_the_guide_name_the_metrics_the_server_serves() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json")).expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().expect("an expression"));
            exprs.push('\n');
        }
    }
    let guide = include_str!("../../../docs/observability.md");
    let listed: std::collections::BTreeSet<String> =
        guide.lines().filter(|l| l.starts_with("| `quern_")).flat_map(metric_names).collect();
    let asked = metric_names(&exprs);
    let unlisted: Vec<_> = asked.difference(&listed).collect();
    assert!(unlisted.is_empty(), "the dashboard asks for metrics the guide does not list: {unlisted:?}");

    let server = Server::start();
    let api = server.api();
    api.submit(json!({"name": "a"})).await;
    let s = Scrape::of(&api).await;
    let served = metric_names(&s.text);
    // Shown once there is something to count, or on PostgreSQL only.
    let later = [
        "quern_consumer_group_lag",
        "quern_schedule_fires_total",
        "quern_schedule_skipped_total",
        "quern_webhook_deliveries_total",
        "quern_store_pool_connections",
        "quern_store_pool_max_connections",
        "quern_store_pool_waiting",
        "quern_store_pool_wait_seconds",
    ];
    for name in &listed {
        assert!(served.contains(name) || later.contains(&name.as_str()), "the guide lists {name}, not served");
    }
}
