//! Multi-node mode: three `quern server` processes on one PostgreSQL database
//! and schema, two worker processes on each, submits spread over all three,
//! and one node killed with `kill -9` and started again mid-load.
//!
//! What must hold: every task a submit acknowledged exists and ends
//! `succeeded`, on an attempt a worker ran, with exactly one succeeded
//! attempt in its history (read for every task that ran more than once and a
//! sample of the others); no task is ever leased twice at once (each attempt
//! is leased and runs at most once, and the runs of one task never overlap in
//! time); and a one-second schedule makes one task per slot across the
//! nodes, never two.
//!
//! The worker processes are this test binary run again with its
//! [`worker_process`] entry point selected and told what to do through the
//! environment: real processes running the Rust worker runtime (a no-op
//! handler that records when each attempt ran), at no extra build cost. The
//! test needs PostgreSQL (`QUERN_TEST_DATABASE_URL`) and is skipped, loudly,
//! without it.

mod support;

use quern_client::Client;
use quern_worker::{TaskContext, TaskFailure, TaskType, Worker};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Api, PgSchema, Server, bounded, eventually, free_port, history_problem, id_of};

/// Server processes on the one database.
const NODES: usize = 3;
/// Worker processes per node.
const WORKERS_PER_NODE: usize = 2;
/// Tasks run per worker process at once.
const WORKER_CONCURRENCY: usize = 64;
/// Tasks submitted in all.
const TASKS: usize = 20_000;
/// Tasks per batch submit.
const BATCH: usize = 100;
/// Submitting connections per node.
const SUBMITTERS_PER_NODE: usize = 2;
/// Acknowledged tasks after which one node is killed.
const KILL_AFTER: usize = 8_000;
/// The node killed mid-load.
const VICTIM: usize = 1;
/// The workers' lease: short, so that leases the crash orphaned run again soon.
const LEASE_MS: u64 = 2_000;
/// How long the killed node stays down: longer than a lease, so that the
/// leases its workers held expire and run again through the other nodes,
/// and the workers' late completions (once it is back) are refused.
const DOWN_FOR: Duration = Duration::from_millis(LEASE_MS + 500);
/// How long a handler takes: long enough that each worker holds leases when
/// its node is killed, and that two overlapping runs of a task would show.
const RUN_TIME: Duration = Duration::from_millis(5);
/// Attempts per task: a lease lost in the crash costs one.
const MAX_ATTEMPTS: u32 = 5;
/// The whole test, servers and checks included.
const LIMIT: Duration = Duration::from_secs(90);
/// One in this many histories is read even when nothing about its task
/// stands out.
const HISTORY_SAMPLE: usize = 8;
/// The name of the tasks the workers run.
const TASK_NAME: &str = "mn.work";
/// The schedule's queue: no worker takes from it, its tasks only count slots.
const TICK_QUEUE: &str = "mn-ticks";

/// The environment of a worker process: the server it works for, its id, and
/// the file it writes its runs to when it stops.
const WORKER_URL_ENV: &str = "QUERN_MN_WORKER_URL";
const WORKER_ID_ENV: &str = "QUERN_MN_WORKER_ID";
const WORKER_RUNS_ENV: &str = "QUERN_MN_WORKER_RUNS";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("no thread panicked holding the lock")
}

/// Microseconds since the epoch: comparable across processes.
fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros()
}

/// One handler run, as a worker process records it.
#[derive(Debug, Clone)]
struct Run {
    task: String,
    attempt: u32,
    worker: String,
    start_us: u128,
    end_us: u128,
}

impl Run {
    fn line(&self) -> String {
        format!("{} {} {} {} {}\n", self.task, self.attempt, self.worker, self.start_us, self.end_us)
    }

    fn parse(line: &str) -> Run {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "a run line has five fields: {line:?}");
        let num = |s: &str| s.parse::<u128>().unwrap_or_else(|e| panic!("{s:?} in {line:?}: {e}"));
        Run {
            task: f[0].to_owned(),
            attempt: u32::try_from(num(f[1])).expect("an attempt fits u32"),
            worker: f[2].to_owned(),
            start_us: num(f[3]),
            end_us: num(f[4]),
        }
    }
}

/// The entry point of a worker process (see the module docs); a no-op when
/// the test binary runs as a test suite.
#[test]
fn worker_process() {
    let Ok(url) = std::env::var(WORKER_URL_ENV) else { return };
    let id = std::env::var(WORKER_ID_ENV).expect("a worker process has an id");
    let runs_path = std::env::var(WORKER_RUNS_ENV).expect("a worker process has a runs file");
    quern_client::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let runs = runtime.block_on(work_until_stdin_closes(&url, &id));
    let mut file = std::io::BufWriter::new(File::create(&runs_path).expect("create the runs file"));
    for run in &runs {
        file.write_all(run.line().as_bytes()).expect("write a run");
    }
    file.flush().expect("flush the runs file");
}

/// Runs `mn.work` tasks for `url` until stdin closes (the test's way to stop
/// a worker), then stops gracefully; every handler run, in no order.
async fn work_until_stdin_closes(url: &str, id: &str) -> Vec<Run> {
    let runs: Arc<Mutex<Vec<Run>>> = Arc::new(Mutex::new(Vec::new()));
    let record = runs.clone();
    let worker_id = id.to_owned();
    let worker = Worker::builder(Client::new(url, None))
        .id(id)
        .concurrency(WORKER_CONCURRENCY)
        .lease_ms(LEASE_MS)
        .grace(Duration::from_secs(1))
        .handler(TaskType::new(TASK_NAME), move |ctx: TaskContext| {
            let record = record.clone();
            let worker = worker_id.clone();
            async move {
                let start_us = now_us();
                tokio::time::sleep(RUN_TIME).await;
                let run =
                    Run { task: ctx.id().to_string(), attempt: ctx.attempt(), worker, start_us, end_us: now_us() };
                lock(&record).push(run);
                Ok::<_, TaskFailure>(Value::Null)
            }
        })
        .build();
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    worker
        .run(async {
            let _ = closed.await;
        })
        .await
        .expect("the worker runs");
    std::mem::take(&mut *lock(&runs))
}

/// A worker process the test started: this binary running [`worker_process`].
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    runs: PathBuf,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts worker `id` for the server at `url`; its files go in `dir`.
    fn start(url: &str, id: &str, dir: &Path) -> WorkerProcess {
        let runs = dir.join(format!("{id}.runs"));
        let log = dir.join(format!("{id}.log"));
        let out = File::create(&log).expect("create the worker log");
        let err = out.try_clone().expect("clone the worker log");
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args(["worker_process", "--exact", "--nocapture", "--test-threads", "1"])
            .env(WORKER_URL_ENV, url)
            .env(WORKER_ID_ENV, id)
            .env(WORKER_RUNS_ENV, &runs)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start a worker process");
        let stdin = child.stdin.take();
        WorkerProcess { child, stdin, runs, log }
    }

    /// Asks it to stop (closes its stdin) and waits up to `limit` for it to
    /// exit; its runs.
    fn stop(&mut self, limit: Duration) -> Vec<Run> {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a worker") {
                assert!(status.success(), "a worker exited with {status}:\n{}", self.log_tail());
                break;
            }
            assert!(start.elapsed() < limit, "a worker did not stop within {limit:?}:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
        let file =
            File::open(&self.runs).unwrap_or_else(|e| panic!("{}: {e}\n{}", self.runs.display(), self.log_tail()));
        BufReader::new(file).lines().map(|l| Run::parse(&l.expect("read a run"))).collect()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the submitters saw: the id each task number was acknowledged with,
/// and answers no correct server gives.
#[derive(Default)]
struct Submitted {
    ids: Mutex<HashMap<usize, String>>,
    acked: AtomicUsize,
    unexpected: Mutex<Vec<String>>,
}

fn spec(n: usize) -> Value {
    json!({
        "name": TASK_NAME, "input": {"n": n}, "max_attempts": MAX_ATTEMPTS,
        "idempotency_key": format!("mn-{n}"),
    })
}

/// Submits the batches claimed from `next`, each to node `home` first and,
/// while a node does not answer, to the next one: the idempotency keys make
/// a resent batch that was stored after all answer with the tasks it stored.
async fn submitter(apis: Vec<Api>, home: usize, next: Arc<AtomicUsize>, seen: Arc<Submitted>) {
    loop {
        let first = next.fetch_add(BATCH, Ordering::SeqCst);
        if first >= TASKS {
            return;
        }
        let last = (first + BATCH).min(TASKS);
        let body = json!({ "tasks": (first..last).map(spec).collect::<Vec<_>>() });
        let mut node = home;
        let reply = loop {
            match apis[node].try_post("/v1/tasks/batch", &body).await {
                Ok(reply) if reply.status < 500 => break reply,
                // Down, or on its way down: the next node takes it.
                Ok(_) | Err(_) => {
                    node = (node + 1) % apis.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        if !matches!(reply.status, 200 | 201) {
            lock(&seen.unexpected).push(format!("batch {first}..{last}: {reply:?}"));
            return;
        }
        let ids: Vec<String> =
            reply.body["tasks"].as_array().map(|t| t.iter().map(id_of).collect()).unwrap_or_default();
        assert_eq!(ids.len(), last - first, "one task per spec: {reply:?}");
        let mut known = lock(&seen.ids);
        for (n, id) in (first..last).zip(ids) {
            if let Some(before) = known.insert(n, id.clone())
                && before != id
            {
                lock(&seen.unexpected).push(format!("task {n} acknowledged as {before} and as {id}"));
            }
        }
        drop(known);
        seen.acked.fetch_add(last - first, Ordering::SeqCst);
    }
}

/// The count of `status` tasks in `queue`, by `GET /v1/queues`.
async fn queue_count(api: &Api, queue: &str, status: &str) -> u64 {
    let reply = api.get("/v1/queues").await;
    assert_eq!(reply.status, 200, "GET /v1/queues: {reply:?}");
    let queues = reply.body.as_array().cloned().unwrap_or_default();
    queues.iter().find(|q| q["name"] == queue).and_then(|q| q["counts"][status].as_u64()).unwrap_or(0)
}

/// Waits until node `api` lists worker `id`.
async fn wait_registered(api: &Api, id: &str) {
    support::eventually(&format!("worker {id} registered"), Duration::from_secs(30), async || {
        let reply = api.get("/v1/workers").await;
        let workers = reply.body["workers"].as_array().cloned().unwrap_or_default();
        workers.iter().any(|w| w["id"] == id).then_some(())
    })
    .await;
}

/// Checks the runs the workers recorded for one task, which ended on
/// attempt `ended`: no attempt ran twice, no two runs overlapped in time, and
/// a worker ran the attempt that ended it. Returns the problem.
fn runs_problem(id: &str, ended: u64, runs: &[&Run]) -> Option<String> {
    let mut ran = HashSet::new();
    for run in runs {
        if !ran.insert(u64::from(run.attempt)) {
            return Some(format!("task {id}: attempt {} ran twice: {runs:?}", run.attempt));
        }
    }
    if !ran.contains(&ended) {
        return Some(format!("task {id}: attempt {ended} ended it, but no worker ran it: {runs:?}"));
    }
    let mut by_start = runs.to_vec();
    by_start.sort_by_key(|r| r.start_us);
    if let Some(w) = by_start.windows(2).find(|w| w[1].start_us < w[0].end_us) {
        return Some(format!("task {id}: two runs at once: {:?} and {:?}", w[0], w[1]));
    }
    None
}

/// Checks the history of one task against the runs recorded for it: moves
/// along the transition table, exactly one succeeded attempt, which a worker
/// ran, and no attempt leased twice or run without a lease. Returns the
/// problem.
fn history_problem_with(id: &str, history: &[Value], runs: &[&Run]) -> Option<String> {
    if let Some(problem) = history_problem(history) {
        return Some(format!("task {id}: {problem}"));
    }
    let succeeded: Vec<&Value> = history.iter().filter(|e| e["to"] == "succeeded").collect();
    if succeeded.len() != 1 {
        return Some(format!("task {id}: {} succeeded entries in {history:?}", succeeded.len()));
    }
    let mut leased = HashSet::new();
    for e in history.iter().filter(|e| e["to"] == "running") {
        let Some(attempt) = e["attempt"].as_u64() else {
            return Some(format!("task {id}: a lease without its attempt: {history:?}"));
        };
        if !leased.insert(attempt) {
            return Some(format!("task {id}: attempt {attempt} leased twice: {history:?}"));
        }
    }
    if let Some(run) = runs.iter().find(|r| !leased.contains(&u64::from(r.attempt))) {
        return Some(format!("task {id}: {run:?} ran an attempt its history never leased: {history:?}"));
    }
    let won = succeeded[0]["attempt"].as_u64().unwrap_or(0);
    runs_problem(id, won, runs)
}

/// Every history, fetched over all the nodes at once.
async fn histories(apis: &[Api], ids: Vec<String>) -> Vec<(String, Vec<Value>)> {
    let queue = Arc::new(Mutex::new(ids));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let api = apis[i % apis.len()].clone();
        let queue = queue.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let Some(id) = lock(&queue).pop() else { return out };
                let history = api.history(&id).await;
                out.push((id, history));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(part) = set.join_next().await {
        all.extend(part.expect("a history reader"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_database_and_survive_a_kill() {
    let Some(schema) = PgSchema::fresh("three_nodes_share_one_database_and_survive_a_kill") else { return };
    bounded(LIMIT, run(&schema)).await;
}

async fn run(schema: &PgSchema) {
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let args = schema.server_args();
    // All at once: the migrations run once, under their lock, whichever
    // node takes it first.
    let mut nodes: Vec<Server> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..NODES).map(|_| s.spawn(|| Server::start_at(&free_port(), &args))).collect();
        starts.into_iter().map(|h| h.join().expect("a server starts")).collect()
    });
    let apis: Vec<Api> = nodes.iter().map(Server::api).collect();
    eprintln!("multinode: {NODES} nodes up after {:?}", began.elapsed());

    let tick = json!({"every": "1 second", "task": {"name": "mn.tick", "queue": TICK_QUEUE}});
    let put = apis[0].send(reqwest::Method::PUT, "/v1/schedules/mn-tick", Some(tick.to_string().as_bytes())).await;
    assert!(matches!(put.status, 200 | 201), "PUT the schedule: {put:?}");

    let mut workers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..WORKERS_PER_NODE {
            let id = format!("mn-n{n}-w{w}");
            workers.push(WorkerProcess::start(&node.url, &id, dir.path()));
            wait_registered(&apis[n], &id).await;
        }
    }
    eprintln!("multinode: {} workers up after {:?}", workers.len(), began.elapsed());

    let seen = Arc::new(Submitted::default());
    let next = Arc::new(AtomicUsize::new(0));
    let load = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for home in 0..NODES {
        for _ in 0..SUBMITTERS_PER_NODE {
            submitters.spawn(submitter(apis.clone(), home, next.clone(), seen.clone()));
        }
    }
    support::eventually("the acknowledgements before the kill", Duration::from_secs(60), async || {
        (seen.acked.load(Ordering::SeqCst) >= KILL_AFTER).then_some(())
    })
    .await;
    nodes[VICTIM].kill9();
    eprintln!(
        "multinode: killed node {VICTIM} at {} acknowledged, {:?} into the load",
        seen.acked.load(Ordering::SeqCst),
        load.elapsed()
    );
    tokio::time::sleep(DOWN_FOR).await;
    tokio::task::block_in_place(|| nodes[VICTIM].restart());
    assert_eq!(nodes[VICTIM].url, apis[VICTIM].base, "the node came back on its address");
    while let Some(done) = submitters.join_next().await {
        done.expect("a submitter");
    }
    assert!(lock(&seen.unexpected).is_empty(), "unexpected answers: {:?}", lock(&seen.unexpected));
    eprintln!("multinode: {TASKS} acknowledged after {:?}", load.elapsed());

    let finish = Instant::now();
    loop {
        let succeeded = queue_count(&apis[0], "default", "succeeded").await;
        let failed = queue_count(&apis[0], "default", "failed").await;
        assert_eq!(failed, 0, "tasks failed");
        if succeeded == TASKS as u64 {
            break;
        }
        assert!(
            finish.elapsed() < Duration::from_secs(45),
            "{succeeded} of {TASKS} succeeded after {:?}",
            finish.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load_time = load.elapsed();
    eprintln!(
        "multinode: {TASKS} succeeded after {load_time:?} ({:.0} tasks/s)",
        TASKS as f64 / load_time.as_secs_f64()
    );

    // The schedule's runs, before the workers stop (it keeps firing).
    let runs_reply = apis[NODES - 1].get("/v1/schedules/mn-tick/runs?limit=1000").await;
    assert_eq!(runs_reply.status, 200, "{runs_reply:?}");

    let mut runs: Vec<Run> = Vec::new();
    for worker in &mut workers {
        runs.extend(worker.stop(Duration::from_secs(15)));
    }

    // Every acknowledged id exists, once, and succeeded; nothing else is there.
    let acked: HashSet<String> = lock(&seen.ids).values().cloned().collect();
    assert_eq!(lock(&seen.ids).len(), TASKS, "every batch was acknowledged");
    assert_eq!(acked.len(), TASKS, "one id per task");
    let listed = apis[VICTIM].list_all("queue=default").await;
    let listed_ids: HashSet<String> = listed.iter().map(id_of).collect();
    assert_eq!(listed.len(), TASKS, "one task per acknowledged submit");
    assert_eq!(listed_ids, acked, "the tasks are the acknowledged ones");
    let not_done: Vec<&Value> = listed.iter().filter(|t| t["status"] != "succeeded").collect();
    assert!(not_done.is_empty(), "{} unfinished, e.g. {}", not_done.len(), not_done[0]);

    // Each ran to success on an attempt a worker ran; no attempt ran twice,
    // no two runs of a task overlapped.
    let mut by_task: HashMap<&str, Vec<&Run>> = HashMap::new();
    for run in &runs {
        by_task.entry(run.task.as_str()).or_default().push(run);
    }
    assert!(by_task.keys().all(|id| acked.contains(*id)), "a worker ran a task nobody submitted");
    let runs_of = |id: &str| by_task.get(id).map_or(&[][..], Vec::as_slice);
    let mut problems: Vec<String> = listed
        .iter()
        .filter_map(|t| runs_problem(&id_of(t), t["attempt"].as_u64().unwrap_or(0), runs_of(&id_of(t))))
        .collect();
    // The histories of every task that took more than one run or attempt,
    // and of every HISTORY_SAMPLE-th of the others (reading all 20,000 would
    // take most of the test's time).
    let read: Vec<String> = listed
        .iter()
        .enumerate()
        .filter(|(i, t)| i % HISTORY_SAMPLE == 0 || t["attempt"] != 1 || runs_of(&id_of(t)).len() != 1)
        .map(|(_, t)| id_of(t))
        .collect();
    let checked = Instant::now();
    let all = histories(&apis, read).await;
    problems.extend(all.iter().filter_map(|(id, history)| history_problem_with(id, history, runs_of(id))));
    assert!(
        problems.is_empty(),
        "{} tasks with problems, e.g.:\n{}",
        problems.len(),
        problems[..problems.len().min(5)].join("\n")
    );
    let reruns = runs.len() - by_task.len();
    eprintln!(
        "multinode: {} runs ({reruns} after a lost lease), {} histories checked in {:?}",
        runs.len(),
        all.len(),
        checked.elapsed()
    );

    // One task per slot of the schedule, on its one-second grid.
    let ticks = runs_reply.body["tasks"].as_array().cloned().unwrap_or_default();
    let mut slots: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &ticks {
        let slot = t["metadata"]["schedule.slot"].as_str().unwrap_or_else(|| panic!("a run without its slot: {t}"));
        *slots.entry(support::parse_rfc3339_ms(slot)).or_default() += 1;
    }
    let twice: Vec<_> = slots.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "slots fired more than once: {twice:?}");
    let (first, last) = (*slots.keys().next().expect("the schedule fired"), *slots.keys().last().expect("fired"));
    assert!(slots.keys().all(|s| (s - first) % 1_000 == 0), "slots off the one-second grid: {:?}", slots.keys());
    let span = usize::try_from((last - first) / 1_000 + 1).expect("a positive span");
    eprintln!("multinode: the schedule fired {} of the {span} one-second slots it spanned", slots.len());
    assert!(span >= 5, "the schedule fired over {span} s only");
    // Catch-up is `once`: a scheduler more than a second late (a busy
    // machine) fires the latest slot only, so a few may pass; most may not.
    assert!(slots.len() * 10 >= span * 8, "the schedule fired {} of {span} slots", slots.len());
    eprintln!("multinode: done in {:?}", began.elapsed());
}

/// NOTIFY carries wake-ups between nodes: a lease parked on one node answers
/// as soon as a task is submitted on another, and a `?wait=` on one node
/// answers as soon as the task ends through another — each well within the
/// parked request's wait, so no poll interval is hiding behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_request_wakes_on_a_change_through_another_node() {
    let Some(schema) = PgSchema::fresh("a_parked_request_wakes_on_a_change_through_another_node") else { return };
    bounded(Duration::from_secs(60), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (api_a, api_b) = (a.api(), b.api());
        let parked = tokio::spawn(async move {
            let started = Instant::now();
            let tasks = api_b.lease_from("mn-parked", &["wake"], 1, 20_000, 30_000).await;
            (tasks, started.elapsed())
        });
        // Let the lease park before the submit (a lease that comes after
        // would find the task without any wake-up).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let submitted = Instant::now();
        let id = id_of(&api_a.submit(json!({"name": "mn.wake", "queue": "wake"})).await);
        let (tasks, parked_for) = parked.await.expect("the parked lease");
        let woke_after = submitted.elapsed();
        assert_eq!(tasks.len(), 1, "the parked lease got the task: {tasks:?}");
        assert_eq!(id_of(&tasks[0]), id);
        assert!(parked_for >= Duration::from_millis(250), "the lease answered before the submit: {parked_for:?}");
        assert!(woke_after < Duration::from_secs(2), "the parked lease woke {woke_after:?} after the submit");

        let api_b = b.api();
        let path = format!("/v1/tasks/{id}?wait=20s");
        let waiting = tokio::spawn(async move { api_b.get(&path).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = Instant::now();
        let token = support::token_of(&tasks[0]);
        let answer = api_a.succeed("mn-parked", &id, &token, json!({"ok": true})).await;
        assert_eq!(answer["ok"], true, "{answer}");
        let waited = waiting.await.expect("the waiting GET");
        let woke_after = ended.elapsed();
        assert_eq!(waited.status, 200, "{waited:?}");
        assert_eq!(waited.body["status"], "succeeded", "the wait answered with the end: {waited:?}");
        assert!(woke_after < Duration::from_secs(2), "the wait answered {woke_after:?} after the completion");
    })
    .await;
}

/// A cancel made through one node reaches the worker watching for stops
/// through another at once (NOTIFY carries it), long before a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_node_reaches_a_worker_watching_another() {
    let Some(schema) = PgSchema::fresh("a_cancel_through_one_node_reaches_a_worker_watching_another") else { return };
    bounded(Duration::from_secs(60), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (api_a, api_b) = (a.api(), b.api());
        let idle = api_b.post("/v1/stops", &json!({"worker": "mn-stops", "wait_ms": 10})).await;
        assert_eq!(idle.body, json!({"stops": []}), "{idle:?}");
        let id = id_of(&api_a.submit(json!({"name": "mn.stop", "queue": "stops"})).await);
        let tasks = api_b.lease_from("mn-stops", &["stops"], 1, 5_000, 60_000).await;
        assert_eq!(tasks.len(), 1);
        let watching =
            tokio::spawn(
                async move { api_b.post("/v1/stops", &json!({"worker": "mn-stops", "wait_ms": 20_000})).await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        assert_eq!(api_a.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await.status, 200);
        let heard = watching.await.expect("the watch");
        assert_eq!(heard.body, json!({"stops": [{"task": id, "reason": "cancel"}]}), "{heard:?}");
        assert!(asked.elapsed() < Duration::from_secs(2), "heard {:?} after the cancel", asked.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_schema_declared_through_one_node_is_enforced_by_the_others() {
    let Some(schema) = PgSchema::fresh("a_schema_declared_through_one_node_is_enforced_by_the_others") else { return };
    bounded(Duration::from_secs(60), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (api_a, api_b) = (a.api(), b.api());
        // Node A reads the shared types once before the declaration exists.
        let before = api_a.post("/v1/tasks", &json!({"name": "mn.typed", "input": {"to": 5}})).await;
        assert_eq!(before.status, 201, "no schema yet: {before:?}");
        let decl = json!({
            "worker": "mn-typed",
            "task_types": [{"name": "mn.typed", "input_schema": {
                "type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}}]
        });
        let registered = api_b.post("/v1/workers/register", &decl).await;
        assert_eq!(registered.status, 200, "{registered:?}");
        // Within a second node A enforces it too.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let bad = api_a.post("/v1/tasks", &json!({"name": "mn.typed", "input": {"to": 5}})).await;
            if bad.status == 422 {
                assert_eq!(bad.code(), "invalid_input", "{bad:?}");
                break;
            }
            assert!(Instant::now() < deadline, "node A still takes a bad input: {bad:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let good = api_a.post("/v1/tasks", &json!({"name": "mn.typed", "input": {"to": "a@b.c"}})).await;
        assert_eq!(good.status, 201, "{good:?}");
    })
    .await;
}

#[tokio::test]
async fn every_node_lists_the_workers_of_all() {
    let Some(schema) = PgSchema::fresh("every_node_lists_the_workers_of_all") else { return };
    bounded(Duration::from_secs(60), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (api_a, api_b) = (a.api(), b.api());
        let decl = json!({"worker": "mn-listed", "queues": ["mn-q"], "task_types": [{"name": "mn.listed"}]});
        let registered = api_b.post("/v1/workers/register", &decl).await;
        assert_eq!(registered.status, 200, "{registered:?}");
        // Node A has never heard from the worker; within about two seconds
        // it lists it, and counts it as serving its type.
        support::eventually("node A lists node B's worker", Duration::from_secs(10), async || {
            let workers = api_a.get("/v1/workers").await.body["workers"].as_array().cloned().unwrap_or_default();
            let w = workers.into_iter().find(|w| w["id"] == "mn-listed")?;
            let types = api_a.get("/v1/task-types").await.body["task_types"].as_array().cloned().unwrap_or_default();
            let t = types.into_iter().find(|t| t["name"] == "mn.listed")?;
            (t["workers"] == 1).then_some(())?;
            assert_eq!((w["live"].clone(), w["queues"].clone()), (json!(true), json!(["mn-q"])), "{w}");
            Some(())
        })
        .await;
        let health = api_a.get("/v1/health").await;
        assert_eq!(health.body["workers"]["live"], 1, "{health:?}");
        assert_eq!(health.body["store"]["backend"], "postgres", "{health:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_read_through_two_nodes_hands_each_event_to_one_member() {
    let Some(schema) = PgSchema::fresh("a_consumer_group_read_through_two_nodes") else { return };
    bounded(Duration::from_secs(90), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let apis = [a.api(), b.api()];
        let events: Vec<Value> =
            (0..400).map(|n| json!({"type": "mn.item", "source": "mn", "payload": {"n": n}})).collect();
        let published = apis[0].post("/v1/events", &json!({"events": events})).await;
        assert_eq!(published.status, 201, "{published:?}");
        // Four members, two on each node, read and ack at once.
        let mut members = Vec::new();
        for m in 0..4 {
            let api = apis[m % 2].clone();
            members.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let path = format!("/v1/events?group=mn-g&member=m{m}&visibility=30s&limit=9&after=0&wait=300ms");
                    let r = api.get(&path).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    let offsets: Vec<u64> = r.body["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["offset"].as_u64())
                        .collect();
                    if offsets.is_empty() {
                        return got;
                    }
                    let acked = api.post("/v1/events/ack", &json!({"group": "mn-g", "offsets": offsets})).await;
                    assert_eq!(acked.status, 200, "{acked:?}");
                    got.extend(offsets);
                }
            }));
        }
        let mut all = Vec::new();
        for m in members {
            all.extend(m.await.expect("a member panicked"));
        }
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<u64>>(), "each event to exactly one member, whichever node");
    })
    .await;
}

#[test]
fn quern_migrate_applies_once_and_refuses_what_it_cannot_reach() {
    let Some(schema) = PgSchema::fresh("quern_migrate_applies_once_and_refuses_what_it_cannot_reach") else { return };
    let migrate = |url: &str, name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(["migrate", "--database", url, "--schema", name])
            .output()
            .expect("run quern migrate")
    };
    let first = migrate(&schema.url, &schema.name);
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied migration 1"), "{first:?}");
    let again = migrate(&schema.url, &schema.name);
    assert!(String::from_utf8_lossy(&again.stdout).contains("is up to date"), "{again:?}");
    assert_eq!(
        schema.psql("SELECT count(*) FROM quern_migrations"),
        schema.psql("SELECT max(version) FROM quern_migrations")
    );
    let unreachable = migrate("postgres://nobody@127.0.0.1:1/none", &schema.name);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    let bad_name = migrate(&schema.url, "Not-A-Schema");
    assert_eq!(bad_name.status.code(), Some(2), "{bad_name:?}");
}

#[tokio::test]
async fn a_token_revoked_through_one_node_is_refused_by_every_node_within_two_seconds() {
    let Some(schema) = PgSchema::fresh("a_token_revoked_through_one_node_is_refused_by_every_node") else { return };
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("admin.token");
        let admin = format!("qrn_{}", "a".repeat(64));
        std::fs::write(&file, &admin).expect("write the bootstrap file");
        let file = file.to_str().expect("a UTF-8 path").to_owned();
        let mut args: Vec<&str> = schema.server_args().to_vec();
        args.extend(["--auth", "required", "--bootstrap-token-file", &file]);
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (admin_a, admin_b) = (a.api().with_token(&admin), b.api().with_token(&admin));
        let made = admin_a.post("/v1/tokens", &json!({"name": "mn-viewer", "role": "viewer"})).await;
        assert_eq!(made.status, 201, "{made:?}");
        let secret = made.body["token"].as_str().expect("a secret").to_owned();
        let viewer_b = b.api().with_token(&secret);
        let made_at = Instant::now();
        let seen = eventually("node B takes the new token", Duration::from_secs(5), async || {
            (viewer_b.get("/v1/queues").await.status == 200).then(|| made_at.elapsed())
        })
        .await;
        assert!(seen < Duration::from_secs(2), "a new token held on node B after {seen:?}");
        let revoked = admin_b.send(reqwest::Method::DELETE, "/v1/tokens/mn-viewer", None).await;
        assert_eq!(revoked.status, 200, "{revoked:?}");
        let revoked_at = Instant::now();
        let viewer_a = a.api().with_token(&secret);
        let refused = eventually("node A refuses the revoked token", Duration::from_secs(5), async || {
            (viewer_a.get("/v1/queues").await.status == 401).then(|| revoked_at.elapsed())
        })
        .await;
        assert!(refused < Duration::from_secs(2), "node A took the revoked token for {refused:?}");
        assert_eq!(viewer_b.get("/v1/queues").await.status, 401, "and the node that revoked it at once");
    })
    .await;
}

/// The value of one series in a `/metrics` scrape (`name{labels}` as
/// written), if the scrape has it.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// On PostgreSQL each node counts what its own transactions did (summed
/// across nodes), while the queue depths are the shared store's (the same on
/// every node); the pool and the commits show under `backend="postgres"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_per_node_and_show_the_shared_depths_and_the_pool() {
    let Some(schema) = PgSchema::fresh("metrics_count_per_node_and_show_the_shared_depths_and_the_pool") else {
        return;
    };
    bounded(Duration::from_secs(60), async {
        let args = schema.server_args();
        let (a, b) = (Server::start_with(&args), Server::start_with(&args));
        let (api_a, api_b) = (a.api(), b.api());
        for _ in 0..5 {
            api_a.submit(json!({"name": "mn.metric", "queue": "metrics"})).await;
        }
        for _ in 0..3 {
            api_b.submit(json!({"name": "mn.metric", "queue": "metrics"})).await;
        }
        let submitted = "quern_tasks_submitted_total{queue=\"metrics\",name=\"mn.metric\"}";
        let queued = "quern_queue_depth{queue=\"metrics\",status=\"queued\"}";
        for (api, mine) in [(&api_a, 5.0), (&api_b, 3.0)] {
            let scrape = eventually("the shared depth", Duration::from_secs(20), async || {
                let text = api.get("/metrics").await.body.as_str()?.to_owned();
                (sample(&text, queued) == Some(8.0)).then_some(text)
            })
            .await;
            assert_eq!(sample(&scrape, submitted), Some(mine), "{scrape}");
            assert!(sample(&scrape, "quern_store_pool_max_connections").is_some_and(|n| n >= 2.0), "{scrape}");
            assert!(sample(&scrape, "quern_store_pool_connections{state=\"idle\"}").is_some(), "{scrape}");
            let commits = "quern_store_commit_requests_count{backend=\"postgres\"}";
            assert!(sample(&scrape, commits).is_some_and(|n| n >= mine), "{scrape}");
            assert_eq!(sample(&scrape, "quern_store_writer_queue"), None, "SQLite's alone");
        }
    })
    .await;
}
