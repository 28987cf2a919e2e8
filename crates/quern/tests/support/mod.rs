//! What the integration tests share: the real `quern` binary started on port 0
//! in a temporary directory ([`Server`]), a fresh PostgreSQL schema for the
//! tests that keep their state there ([`PgSchema`]), a small HTTP client of
//! the public API ([`Api`]) and bounded waiting ([`eventually`]).
//!
//! Every test starts its own server (and PostgreSQL test its own schema), so
//! tests run in parallel. Nothing here sleeps blindly: waits poll a condition
//! every 20 ms up to a limit.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use quern_core::time::parse_rfc3339;
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The listen address of a server on a port of its own choosing.
const EPHEMERAL: &str = "127.0.0.1:0";

/// A `quern server` child process on an ephemeral port.
///
/// Its stderr (the logs) goes to a file in the temporary directory; when a
/// test panics, dropping the server prints the end of that file.
pub(crate) struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) url: String,
    /// The `--listen` address: `127.0.0.1:0` unless the test chose a port.
    listen: String,
    data: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    dir: Option<TempDir>,
}

impl Server {
    /// A server on a fresh data directory with the default configuration.
    pub(crate) fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server on a fresh data directory, with extra command-line arguments.
    pub(crate) fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server on the given data directory (which the caller keeps), with
    /// extra command-line arguments.
    pub(crate) fn start_in(data: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let data = data.to_owned();
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server on `listen` (e.g. from [`free_port`]), on a fresh data
    /// directory, with extra command-line arguments. Unlike a server on port
    /// 0 it keeps its address across [`Server::restart`], so clients that
    /// outlive a crash find it again.
    pub(crate) fn start_at(listen: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server =
            Server { child: None, url: String::new(), listen: listen.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server whose `--config` file holds `yaml`.
    pub(crate) fn start_with_config(yaml: &str) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write the config file");
        let config = config.to_str().expect("utf-8 temp path").to_owned();
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = vec!["--config".to_owned(), config];
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// The data directory (it outlives restarts).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A client of this server's API at its current address.
    pub(crate) fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// SIGKILL the server and reap it: no shutdown code runs.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on unix.
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
    }

    /// Ask the server to stop (SIGTERM), as a service manager would.
    pub(crate) fn terminate(&self) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The CPU time (user and system) the server has used so far.
    pub(crate) fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc/PID/stat");
        // The fields after the command name (which may hold spaces) in
        // parentheses; utime and stime are the 14th and 15th of the line.
        let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // Linux reports in USER_HZ, 100 on every platform it runs on.
        Duration::from_millis(ticks * 10)
    }

    /// The server's resident set size, in bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
        kb * 1024
    }

    /// Wait up to `limit` for the server to exit on its own; its exit status.
    pub(crate) fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("poll the server") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Start the server again on the same data directory and arguments (it
    /// gets a new port unless it was started with [`Server::start_at`]: use
    /// [`Server::api`] again afterwards). Kills the running one first, if
    /// any.
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        let stderr = OpenOptions::new().create(true).append(true).open(&self.log).expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_quern"))
            .arg("server")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn the quern binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut first = true;
            // Keep draining after the first line so the server never blocks
            // on a full pipe.
            while let Some(Ok(line)) = lines.next() {
                if first && let Some(url) = line.trim().strip_prefix("listening on ") {
                    first = false;
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_LIMIT) {
            Ok(url) => {
                assert!(url.starts_with("http://127.0.0.1:"), "unexpected listen line: {url}");
                self.url = url;
            }
            Err(_) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                self.kill9();
                panic!(
                    "the server printed no `listening on` line within {START_LIMIT:?} (exit: {status:?})\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// The last lines of the server's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log) else {
            return String::from("(no server log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(8_000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!("--- end of the server log ({}) ---\n{text}", self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            // Keep the directory for a look after a failure.
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the server's directory: {}", dir.keep().display());
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 as `127.0.0.1:PORT`, for a server that must
/// keep its address across restarts ([`Server::start_at`]). The port is free
/// when this returns; nothing reserves it afterwards.
pub(crate) fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("the bound address");
    format!("127.0.0.1:{}", addr.port())
}

/// The environment variable naming the PostgreSQL database of the tests that
/// need one (`.ci/run` sets it).
pub(crate) const DATABASE_ENV: &str = "QUERN_TEST_DATABASE_URL";

/// Schemas made by this test process so far, for unique names.
static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// A PostgreSQL schema of one test, named `quern_t_<pid>_<n>`, on the
/// database of [`DATABASE_ENV`]. The servers create it (`--schema`); dropping
/// this drops it with everything in it, unless the test failed: then it is
/// kept for a look, and its name printed.
///
/// SQL goes through the `psql` client, so the tests need no PostgreSQL
/// driver of their own.
pub(crate) struct PgSchema {
    /// The database URL, as the servers get it.
    pub(crate) url: String,
    /// The schema's name.
    pub(crate) name: String,
}

impl PgSchema {
    /// A fresh schema name on the test database, or `None` when
    /// [`DATABASE_ENV`] is unset: then `test` is skipped, loudly, on stderr.
    pub(crate) fn fresh(test: &str) -> Option<PgSchema> {
        let Some(url) = std::env::var(DATABASE_ENV).ok().filter(|u| !u.trim().is_empty()) else {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {DATABASE_ENV} is not set ({test} needs PostgreSQL)");
            return None;
        };
        let n = SCHEMAS.fetch_add(1, Ordering::SeqCst);
        let name = format!("quern_t_{}_{n}", std::process::id());
        let schema = PgSchema { url, name };
        // A schema left by an earlier process with the same pid.
        schema.psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.name));
        Some(schema)
    }

    /// `--database URL --schema NAME`, the arguments of a server on it.
    pub(crate) fn server_args(&self) -> [&str; 4] {
        ["--database", &self.url, "--schema", &self.name]
    }

    /// Runs `sql` with `psql` (stopping at the first error) with this schema
    /// first on the search path; its output, unaligned and without headers.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let output = Command::new("psql")
            .arg(&self.url)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-c")
            .arg(format!("SET search_path TO {}, public; {sql}", self.name))
            .stdin(Stdio::null())
            .output()
            .expect("run psql (the PostgreSQL client)");
        assert!(output.status.success(), "psql {sql}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the PostgreSQL schema {} of {}", self.name, self.url);
            return;
        }
        self.psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// An HTTP answer: status code and body (JSON, or the raw text as a JSON
/// string when the body is not JSON, or null when it is empty).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    /// The `error.code` of an error body, or "" when there is none.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A small client of the public HTTP API.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) fn new(base: &str) -> Api {
        quern_client::install_tls_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            // Above the longest long-poll the contract allows (60 s).
            .timeout(Duration::from_secs(75))
            .build()
            .expect("build the HTTP client");
        Api { http, base: base.trim_end_matches('/').to_owned() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send a request; transport errors are returned (the crash test needs
    /// them), not panicked on.
    pub(crate) async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        json_content_type: bool,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            if json_content_type {
                req = req.header("content-type", "application/json");
            }
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply { status, body })
    }

    pub(crate) async fn try_post(&self, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
        let bytes = serde_json::to_vec(body).expect("serialize a request body");
        self.try_send(reqwest::Method::POST, path, Some(bytes), true).await
    }

    pub(crate) async fn try_get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        self.try_send(reqwest::Method::GET, path, None, false).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.try_get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.try_post(path, body).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// GET `path`: the status and the length of the body in bytes.
    pub(crate) async fn get_len(&self, path: &str) -> (u16, usize) {
        let resp = self.http.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (status, bytes.len())
    }

    /// POST raw bytes with `content-type: application/json`.
    pub(crate) async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.try_send(reqwest::Method::POST, path, Some(body.into()), true)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST raw bytes with the given content type.
    pub(crate) async fn post_typed(&self, path: &str, body: &[u8], content_type: &str) -> Reply {
        let req = self.http.post(self.url(path)).header("content-type", content_type).body(body.to_vec());
        let resp = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// Any method, raw body, no content type.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Option<&[u8]>) -> Reply {
        self.try_send(method.clone(), path, body.map(<[u8]>::to_vec), false)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    // ---- tasks -------------------------------------------------------------

    /// Submit one task; asserts 201 and returns the task.
    pub(crate) async fn submit(&self, spec: Value) -> Value {
        let reply = self.post("/v1/tasks", &spec).await;
        assert_eq!(reply.status, 201, "submit {spec}: {reply:?}");
        reply.body
    }

    /// Submit a task named `name` with no other fields; returns its id.
    pub(crate) async fn submit_named(&self, name: &str) -> String {
        id_of(&self.submit(json!({ "name": name })).await)
    }

    /// GET the task; asserts 200.
    pub(crate) async fn task(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(reply.status, 200, "GET task {id}: {reply:?}");
        if let Some(problem) = task_problem(&reply.body) {
            panic!("GET task {id}: {problem}: {}", reply.body);
        }
        reply.body
    }

    /// The task's status (asserts 200).
    pub(crate) async fn status_of(&self, id: &str) -> String {
        self.task(id).await["status"].as_str().expect("status is a string").to_owned()
    }

    /// The task's history entries, oldest first (asserts 200).
    pub(crate) async fn history(&self, id: &str) -> Vec<Value> {
        let reply = self.get(&format!("/v1/tasks/{id}/history")).await;
        assert_eq!(reply.status, 200, "GET history {id}: {reply:?}");
        reply.body.as_array().expect("history is an array").clone()
    }

    /// Poll the task until its status is one of `want` (every 20 ms, at most
    /// `limit`); returns the task.
    pub(crate) async fn wait_status(&self, id: &str, want: &[&str], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let task = self.task(id).await;
            if want.contains(&task["status"].as_str().unwrap_or("")) {
                return task;
            }
            assert!(start.elapsed() < limit, "task {id} did not reach {want:?} within {limit:?}; last state: {task}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every task the listing `query` (e.g. `status=queued`) gives, following
    /// cursors, newest first.
    pub(crate) async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tasks?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&encode(c));
            }
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
            for task in reply.body["tasks"].as_array().expect("tasks array") {
                if let Some(problem) = task_problem(task) {
                    panic!("GET {path}: {problem}: {task}");
                }
                out.push(task.clone());
            }
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// How many tasks the server holds in all.
    pub(crate) async fn count_tasks(&self) -> usize {
        self.list_all("").await.len()
    }

    // ---- worker protocol ---------------------------------------------------

    /// Lease from the default queue; asserts 200 and returns the tasks.
    pub(crate) async fn lease(&self, worker: &str, max: u32, wait_ms: u64, lease_ms: u64) -> Vec<Value> {
        self.lease_from(worker, &["default"], max, wait_ms, lease_ms).await
    }

    /// Lease from `queues`; asserts 200 and returns the tasks.
    pub(crate) async fn lease_from(
        &self,
        worker: &str,
        queues: &[&str],
        max: u32,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Vec<Value> {
        let body = json!({
            "worker": worker, "queues": queues, "max": max,
            "wait_ms": wait_ms, "lease_ms": lease_ms,
        });
        let reply = self.post("/v1/lease", &body).await;
        assert_eq!(reply.status, 200, "lease {body}: {reply:?}");
        reply.body["tasks"].as_array().expect("lease answer has tasks").clone()
    }

    /// Lease exactly one task from the default queue (waiting up to 10 s).
    pub(crate) async fn lease_one(&self, worker: &str, lease_ms: u64) -> Value {
        let mut tasks = self.lease(worker, 1, 10_000, lease_ms).await;
        assert_eq!(tasks.len(), 1, "expected one leased task, got {tasks:?}");
        tasks.remove(0)
    }

    /// One heartbeat for one lease; returns its entry of the answer.
    pub(crate) async fn heartbeat(&self, worker: &str, task: &str, token: &str, progress: Option<Value>) -> Value {
        let mut lease = json!({ "task": task, "token": token });
        if let Some(p) = progress {
            lease["progress"] = p;
        }
        let body = json!({ "worker": worker, "leases": [lease] });
        let reply = self.post("/v1/heartbeat", &body).await;
        assert_eq!(reply.status, 200, "heartbeat {body}: {reply:?}");
        let leases = reply.body["leases"].as_array().expect("heartbeat answer has leases");
        assert_eq!(leases.len(), 1, "one entry per lease: {reply:?}");
        assert_eq!(leases[0]["task"], task, "entry names the task: {reply:?}");
        leases[0].clone()
    }

    /// Send one completion; returns its entry of the answer.
    pub(crate) async fn complete(&self, worker: &str, result: Value) -> Value {
        let task = result["task"].clone();
        let body = json!({ "worker": worker, "results": [result] });
        let reply = self.post("/v1/complete", &body).await;
        assert_eq!(reply.status, 200, "complete {body}: {reply:?}");
        let results = reply.body["results"].as_array().expect("complete answer has results");
        assert_eq!(results.len(), 1, "one entry per result: {reply:?}");
        assert_eq!(results[0]["task"], task, "entry names the task: {reply:?}");
        results[0].clone()
    }

    /// Complete `task` as succeeded with `result`.
    pub(crate) async fn succeed(&self, worker: &str, task: &str, token: &str, result: Value) -> Value {
        self.complete(worker, json!({ "task": task, "token": token, "outcome": "succeeded", "result": result })).await
    }

    /// Complete `task` as failed (kind `exception`).
    pub(crate) async fn fail(&self, worker: &str, task: &str, token: &str, message: &str, retry: bool) -> Value {
        self.complete(
            worker,
            json!({
                "task": task, "token": token, "outcome": "failed",
                "error": { "kind": "exception", "message": message }, "retry": retry,
            }),
        )
        .await
    }
}

/// The `id` of a task.
pub(crate) fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap_or_else(|| panic!("task without id: {task}")).to_owned()
}

/// The lease token of a leased task.
pub(crate) fn token_of(task: &Value) -> String {
    task["lease"]["token"].as_str().unwrap_or_else(|| panic!("leased task without lease.token: {task}")).to_owned()
}

/// The `(from, to)` pairs of a history, with `from` "-" for null.
pub(crate) fn moves(history: &[Value]) -> Vec<(String, String)> {
    history
        .iter()
        .map(|e| (e["from"].as_str().unwrap_or("-").to_owned(), e["to"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

/// Checks a history against the transition table: it starts with the
/// submission (`null` → queued|pending), each entry starts where the one
/// before ended, and every move is allowed (including a manual retry of a
/// failed, timed-out or cancelled task back to queued). Returns the problem.
pub(crate) fn history_problem(history: &[Value]) -> Option<String> {
    let allowed = |from: &str, to: &str| {
        matches!(
            (from, to),
            ("pending", "queued" | "cancelled" | "skipped")
                | ("queued", "running" | "cancelled" | "skipped")
                | ("running", "succeeded" | "failed" | "cancelled" | "timed_out" | "pending" | "queued")
                | ("failed" | "timed_out" | "cancelled", "queued")
        )
    };
    let moves = moves(history);
    let Some((first_from, first_to)) = moves.first() else {
        return Some("empty history".to_owned());
    };
    if first_from != "-" || !matches!(first_to.as_str(), "queued" | "pending") {
        return Some(format!("starts with {first_from} -> {first_to}"));
    }
    if history.iter().any(|e| e["at"].as_str().and_then(parse_rfc3339).is_none()) {
        return Some("an entry without a valid `at`".to_owned());
    }
    for pair in moves.windows(2) {
        let ((_, before), (from, to)) = (&pair[0], &pair[1]);
        if from != before {
            return Some(format!("{from} -> {to} follows a move to {before}"));
        }
        if !allowed(from, to) {
            return Some(format!("{from} -> {to} is not in the transition table"));
        }
    }
    None
}

/// Checks that the `at` times of a history never go backwards (oldest
/// first). Returns the problem.
pub(crate) fn history_time_problem(history: &[Value]) -> Option<String> {
    let times: Vec<Option<i64>> = history.iter().map(|e| e["at"].as_str().and_then(parse_rfc3339)).collect();
    if times.windows(2).any(|w| w[1] < w[0]) {
        let moves = moves(history);
        return Some(format!(
            "`at` goes backwards: {:?}",
            moves.iter().zip(history).map(|(m, e)| (m, e["at"].clone())).collect::<Vec<_>>()
        ));
    }
    None
}

/// Checks the fields of a task that follow from its status; returns the
/// problem.
pub(crate) fn task_problem(task: &Value) -> Option<String> {
    let status = task["status"].as_str().unwrap_or("");
    let terminal = matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out" | "skipped");
    let attempt = task["attempt"].as_u64();
    let max = task["max_attempts"].as_u64();
    if terminal != task["finished_at"].is_string() {
        return Some(format!("{status} with finished_at {}", task["finished_at"]));
    }
    if attempt.is_none() || max.is_none() || attempt > max {
        return Some(format!("attempt {attempt:?} of {max:?}"));
    }
    if status == "running" && (attempt == Some(0) || !task["started_at"].is_string() || !task["worker"].is_string()) {
        return Some("running without an attempt, started_at or worker".to_owned());
    }
    if status == "succeeded" && task["error"].is_object() && task["result"].is_null() {
        return Some("succeeded with an error and no result".to_owned());
    }
    for key in ["created_at", "updated_at", "run_at"] {
        if parse_rfc3339(task[key].as_str().unwrap_or("")).is_none() {
            return Some(format!("{key} is not an RFC 3339 time: {}", task[key]));
        }
    }
    None
}

/// Checks that a task's times are causal: it did not start before it was
/// created nor end before it started. Returns the problem.
pub(crate) fn causality_problem(task: &Value) -> Option<String> {
    let time = |key: &str| task[key].as_str().and_then(parse_rfc3339);
    let created = time("created_at");
    if let Some(started) = time("started_at")
        && Some(started) < created
    {
        return Some("started_at is before created_at".to_owned());
    }
    if let Some(finished) = time("finished_at")
        && (Some(finished) < created || Some(finished) < time("started_at"))
    {
        return Some("finished_at is before created_at or started_at".to_owned());
    }
    None
}

/// Percent-encode a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Poll `check` every 20 ms until it gives `Some`, for at most `limit`.
pub(crate) async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run a whole test body under a time limit, so that a hung server fails the
/// test instead of hanging the suite.
pub(crate) async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}

/// An RFC 3339 UTC time `offset_ms` from now (negative: in the past).
pub(crate) fn rfc3339_from_now(offset_ms: i64) -> String {
    let now = quern_core::Clock::now(&quern_core::SystemClock);
    quern_core::time::format_rfc3339(now + offset_ms)
}

/// Milliseconds since the epoch of an RFC 3339 time as the server writes it.
pub(crate) fn parse_rfc3339_ms(s: &str) -> i64 {
    parse_rfc3339(s).unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"))
}

#[test]
fn rfc3339_round_trips() {
    let s = rfc3339_from_now(0);
    let back = parse_rfc3339_ms(&s);
    assert_eq!(rfc3339_from_now(0).len(), s.len());
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("fits");
    assert!((now - back).abs() < 1000, "{s} -> {back} vs {now}");
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
}
