//! The scenarios, their settings, and what they share: the task bodies, the
//! worker loop that leases and completes, and the check of a queue's counts.
//!
//! Every scenario uses its own queue (`bench-<scenario>-<run tag>`), so
//! scenarios never lease each other's tasks even on one shared server.

mod cancel;
mod depth;
mod e2e;
mod idle;
mod latency;
mod shell;
mod submit;

use crate::client::{Conn, authority};
use crate::report::Cpu;
use crate::server::{cpu_of, cpu_with_children_of, machine_busy, threads_of};
use crate::{Result, Row};
use bytes::Bytes;
use quern_wire::{CompleteRequest, Completed, Completion, LeaseRequest};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Server RSS after start, idle.
    Idle,
    /// One client, sequential single submits.
    SubmitSingle,
    /// 16 and 64 connections of sequential single submits.
    SubmitConcurrent,
    /// 1,000-task batch submits over 4 connections.
    SubmitBatch,
    /// Batched submits while batched workers lease and complete.
    E2e,
    /// One task per submit, lease and complete request.
    E2eSingle,
    /// Submit → worker start and submit → result on an idle server.
    Latency,
    /// Lease + complete throughput with many tasks already queued.
    Depth,
    /// `true` shell tasks through a real `quern worker`.
    Shell,
    /// Cancel → the worker hears of it, and → a shell task ends cancelled.
    Cancel,
}

impl Scenario {
    /// Every scenario, in the order a full run takes them.
    pub const ALL: [Self; 10] = [
        Self::Idle,
        Self::SubmitSingle,
        Self::SubmitConcurrent,
        Self::SubmitBatch,
        Self::E2e,
        Self::E2eSingle,
        Self::Latency,
        Self::Depth,
        Self::Shell,
        Self::Cancel,
    ];

    /// Its name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::SubmitSingle => "submit-single",
            Self::SubmitConcurrent => "submit-concurrent",
            Self::SubmitBatch => "submit-batch",
            Self::E2e => "e2e",
            Self::E2eSingle => "e2e-single",
            Self::Latency => "latency",
            Self::Depth => "depth",
            Self::Shell => "shell",
            Self::Cancel => "cancel",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {name:?}; known: {}", known.join(", ")).into()
        })
    }

    pub(crate) async fn run(self, ctx: &Ctx) -> Result<Vec<Row>> {
        match self {
            Self::Idle => idle::run(ctx).await,
            Self::SubmitSingle => submit::single(ctx).await,
            Self::SubmitConcurrent => submit::concurrent(ctx).await,
            Self::SubmitBatch => submit::batch(ctx).await,
            Self::E2e => e2e::batched(ctx).await,
            Self::E2eSingle => e2e::single(ctx).await,
            Self::Latency => latency::run(ctx).await,
            Self::Depth => depth::run(ctx).await,
            Self::Shell => shell::run(ctx).await,
            Self::Cancel => cancel::run(ctx).await,
        }
    }
}

/// How big and how long each scenario is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of each time-bounded throughput measurement (submit scenarios).
    pub duration: Duration,
    /// Tasks through `e2e`.
    pub e2e_tasks: u64,
    /// Tasks through `e2e-single`.
    pub e2e_single_tasks: u64,
    /// Worker loops in `e2e` and `depth`.
    pub workers: usize,
    /// Samples in `latency`.
    pub latency_samples: usize,
    /// Queue depths in `depth`.
    pub depths: Vec<u64>,
    /// Tasks leased and completed at each depth.
    pub depth_measured: u64,
    /// Shell tasks through the worker in `shell`, for each of its variants.
    pub shell_tasks: u64,
    /// How long the idle server settles before its RSS is read.
    pub idle_settle: Duration,
    /// The longest any one scenario may take before the run fails.
    pub scenario_timeout: Duration,
}

impl Options {
    /// The full suite, or with `quick` the seconds-long smoke settings.
    pub fn defaults(quick: bool) -> Self {
        if quick {
            Self {
                duration: Duration::from_secs(1),
                e2e_tasks: 5_000,
                e2e_single_tasks: 2_000,
                workers: 4,
                latency_samples: 20,
                depths: vec![10_000, 100_000],
                depth_measured: 2_000,
                shell_tasks: 300,
                idle_settle: Duration::from_millis(300),
                scenario_timeout: Duration::from_secs(120),
            }
        } else {
            Self {
                duration: Duration::from_secs(10),
                e2e_tasks: 100_000,
                e2e_single_tasks: 20_000,
                workers: 4,
                latency_samples: 200,
                depths: vec![10_000, 100_000, 1_000_000],
                depth_measured: 20_000,
                shell_tasks: 4_000,
                idle_settle: Duration::from_secs(2),
                scenario_timeout: Duration::from_secs(900),
            }
        }
    }
}

/// What a scenario runs against: one server, or several nodes on one
/// database. Control requests go to the first; [`Ctx::connect_many`] spreads
/// connections over all of them.
pub(crate) struct Ctx {
    /// The first server's URL.
    pub(crate) url: String,
    /// Its `host:port`.
    pub(crate) authority: String,
    /// The first server's process, when the harness started it (for RSS).
    pub(crate) pid: Option<u32>,
    /// `host:port` of every node, the first one first.
    authorities: Vec<String>,
    /// Every node's process the harness started (for CPU).
    pids: Vec<u32>,
    /// The `quern` binary, for scenarios that start a worker.
    pub(crate) quern_bin: Option<PathBuf>,
    pub(crate) opts: Options,
    tag: String,
    /// The PostgreSQL database the servers run on, if they do.
    database: Option<String>,
}

impl Ctx {
    /// A context on `nodes`: each one's URL and, when the harness started
    /// it, its process id; at least one.
    pub(crate) fn new(
        nodes: &[(String, Option<u32>)],
        quern_bin: Option<&Path>,
        database: Option<&str>,
        opts: &Options,
    ) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let (url, pid) = nodes.first().ok_or("no server to run against")?;
        Ok(Self {
            url: url.clone(),
            authority: authority(url)?,
            pid: *pid,
            authorities: nodes.iter().map(|(u, _)| authority(u)).collect::<Result<_>>()?,
            pids: nodes.iter().filter_map(|(_, p)| *p).collect(),
            quern_bin: quern_bin.map(Path::to_path_buf),
            opts: opts.clone(),
            tag: format!("{:06x}", nanos & 0xff_ffff),
            database: database.map(str::to_owned),
        })
    }

    /// This run's queue for `scenario`.
    pub(crate) fn queue(&self, scenario: &str) -> String {
        format!("bench-{scenario}-{}", self.tag)
    }

    /// CPU used so far by the servers (all nodes together; not a
    /// PostgreSQL's, which only the machine's figure counts) and by the
    /// harness.
    pub(crate) fn cpu(&self) -> Result<Cpu> {
        let server = if self.pids.is_empty() {
            None
        } else {
            Some(self.pids.iter().map(|p| cpu_of(*p)).sum::<Result<Duration>>()?)
        };
        let mut server_threads = Vec::new();
        for pid in &self.pids {
            server_threads.extend(threads_of(*pid)?);
        }
        Ok(Cpu {
            server,
            client: cpu_of(std::process::id())?,
            machine: machine_busy().ok(),
            server_threads,
            postgres: self.database.as_deref().map(crate::server::postgres_use).transpose()?,
            at: Instant::now(),
        })
    }

    /// How many nodes the scenario runs against.
    pub(crate) fn nodes(&self) -> usize {
        self.authorities.len()
    }

    /// `"; N nodes"` for a row's note when there are several, else "".
    pub(crate) fn nodes_note(&self) -> String {
        let quota = crate::quota::describe();
        let quota = if quota.is_empty() { quota } else { format!(", {quota}") };
        if self.nodes() > 1 {
            format!("; {} nodes, spread round-robin{quota}", self.nodes())
        } else if quota.is_empty() {
            String::new()
        } else {
            format!("; 1 node{quota}")
        }
    }

    /// [`Ctx::cpu`] with the CPU of worker `pid` and its reaped task
    /// processes counted as the server's: together they do what the server
    /// does in the other scenarios.
    pub(crate) fn cpu_with_worker(&self, pid: u32) -> Result<Cpu> {
        let mut cpu = self.cpu()?;
        let worker = cpu_with_children_of(pid)?;
        cpu.server = cpu.server.map(|s| s + worker);
        Ok(cpu)
    }

    pub(crate) async fn connect(&self) -> Result<Conn> {
        Conn::open(&self.authority).await
    }

    /// `n` connections, opened before any clock starts, spread round-robin
    /// over the nodes (the i-th to node i mod N).
    pub(crate) async fn connect_many(&self, n: usize) -> Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            conns.push(Conn::open(&self.authorities[i % self.authorities.len()]).await?);
        }
        Ok(conns)
    }
}

/// The name of every benchmark task; no worker runs real code for it.
const TASK_NAME: &str = "bench.noop";

/// One no-op task for `queue`, as JSON.
fn noop_task(queue: &str) -> String {
    format!(r#"{{"name":"{TASK_NAME}","queue":"{queue}"}}"#)
}

/// The body of a single submit to `queue`.
pub(crate) fn submit_body(queue: &str) -> Bytes {
    Bytes::from(noop_task(queue))
}

/// The body of a batch submit of `n` no-op tasks to `queue`.
pub(crate) fn batch_body(queue: &str, n: u64) -> Bytes {
    batch_of(&noop_task(queue), n)
}

/// The body of a batch submit of `n` copies of the task `one` (JSON).
fn batch_of(one: &str, n: u64) -> Bytes {
    let mut s = String::with_capacity(16 + (one.len() + 1) * usize::try_from(n).unwrap_or(0));
    s.push_str(r#"{"tasks":["#);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(one);
    }
    s.push_str("]}");
    Bytes::from(s)
}

/// Takes up to `max` from a shared budget; 0 once it is spent.
pub(crate) fn claim(budget: &AtomicU64, max: u64) -> u64 {
    budget
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| (left > 0).then(|| left - left.min(max)))
        .map_or(0, |left| left.min(max))
}

/// Submits `total` no-op tasks to `queue` in batches of up to `batch` over
/// `conns`, as fast as the server takes them.
pub(crate) async fn fill(conns: Vec<Conn>, queue: &str, total: u64, batch: u64) -> Result<()> {
    fill_with(conns, &noop_task(queue), total, batch).await
}

/// [`fill`] with copies of the task `one` (JSON, naming its queue).
pub(crate) async fn fill_with(conns: Vec<Conn>, one: &str, total: u64, batch: u64) -> Result<()> {
    let budget = Arc::new(AtomicU64::new(total));
    let full = batch_of(one, batch);
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let budget = budget.clone();
        let full = full.clone();
        let one = one.to_owned();
        set.spawn(async move {
            loop {
                let n = claim(&budget, batch);
                if n == 0 {
                    return Ok::<(), crate::Error>(());
                }
                let body = if n == batch { full.clone() } else { batch_of(&one, n) };
                conn.post("/v1/tasks/batch", body).await?;
            }
        });
    }
    join_all(set).await?;
    Ok(())
}

/// Waits for every task of `set`; the first error wins.
pub(crate) async fn join_all<T: 'static>(mut set: tokio::task::JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e);
            }
            Err(e) => {
                set.abort_all();
                return Err(format!("a client task failed: {e}").into());
            }
        }
    }
    Ok(out)
}

/// A lease answer, of which the load generator reads only each task's id
/// and token: parsing whole tasks would take CPU the server under test
/// shares.
#[derive(Deserialize)]
struct Leased<'a> {
    #[serde(borrow)]
    tasks: Vec<LeasedTask<'a>>,
}

#[derive(Deserialize)]
struct LeasedTask<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    lease: LeaseToken<'a>,
}

#[derive(Deserialize)]
struct LeaseToken<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// A worker loop's settings.
#[derive(Clone)]
pub(crate) struct WorkerLoop {
    pub(crate) worker: String,
    pub(crate) queue: String,
    pub(crate) max: u64,
    pub(crate) wait_ms: u64,
}

/// A no-op worker: leases up to `max` (never more than is left of
/// `budget`), completes all it got as succeeded in one request, and stops
/// when the budget is spent. Answers how many it completed and when it
/// completed the last of them.
pub(crate) async fn work(mut conn: Conn, w: WorkerLoop, budget: Arc<AtomicU64>) -> Result<(u64, Option<Instant>)> {
    let mut done = 0;
    let mut last = None;
    loop {
        let n = claim(&budget, w.max);
        if n == 0 {
            return Ok((done, last));
        }
        let request = LeaseRequest {
            max: u32::try_from(n)?,
            wait_ms: w.wait_ms,
            ..LeaseRequest::new(&w.worker, vec![w.queue.clone()])
        };
        let answer = conn.post("/v1/lease", Bytes::from(serde_json::to_vec(&request)?)).await?;
        let leased: Leased<'_> = serde_json::from_slice(&answer).map_err(|e| format!("lease answer: {e}"))?;
        let got = leased.tasks.len() as u64;
        if got > n {
            return Err(format!("asked to lease at most {n} tasks, got {got}").into());
        }
        budget.fetch_add(n - got, Ordering::AcqRel);
        if got == 0 {
            continue;
        }
        let mut results = Vec::with_capacity(leased.tasks.len());
        for t in &leased.tasks {
            let task = Uuid::try_parse(&t.id).map_err(|e| format!("lease answer: task id {:?}: {e}", t.id))?;
            results.push(Completion::succeeded(task, t.lease.token.as_ref(), &serde_json::Value::Null));
        }
        let body = serde_json::to_vec(&CompleteRequest { worker: w.worker.clone(), results })?;
        let answer = conn.post("/v1/complete", Bytes::from(body)).await?;
        let completed: Completed = serde_json::from_slice(&answer).map_err(|e| format!("complete answer: {e}"))?;
        let ok = completed.results.iter().filter(|r| r.ok).count() as u64;
        if ok != got {
            return Err(format!("completed {got} fresh leases, the server accepted {ok}").into());
        }
        done += ok;
        last = Some(Instant::now());
    }
}

/// Runs `workers` worker loops on `queue` until `total` tasks are completed;
/// answers the instant of the last completion.
pub(crate) async fn drain(
    conns: Vec<Conn>,
    queue: &str,
    total: u64,
    max: u64,
    wait_ms: u64,
) -> Result<Option<Instant>> {
    let budget = Arc::new(AtomicU64::new(total));
    let mut set = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let w = WorkerLoop { worker: format!("bench-w{i}"), queue: queue.to_owned(), max, wait_ms };
        set.spawn(work(conn, w, budget.clone()));
    }
    let done = join_all(set).await?;
    let completed: u64 = done.iter().map(|(n, _)| n).sum();
    if completed != total {
        return Err(format!("the workers completed {completed} tasks, expected {total}").into());
    }
    Ok(done.iter().filter_map(|(_, last)| *last).max())
}

/// The count of tasks in `status` in `queue`, by `GET /v1/queues`.
pub(crate) async fn queue_count(conn: &mut Conn, queue: &str, status: &str) -> Result<u64> {
    Ok(queue_counts(conn, queue).await?.get(status).copied().unwrap_or(0))
}

/// The count of tasks in each status in `queue`, by `GET /v1/queues`
/// (empty when the server does not know the queue yet).
pub(crate) async fn queue_counts(conn: &mut Conn, queue: &str) -> Result<HashMap<String, u64>> {
    let body = conn.get("/v1/queues").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let list = v.as_array().ok_or("GET /v1/queues: not a list of queues")?;
    let counts = list
        .iter()
        .find(|q| q.get("name").and_then(|n| n.as_str()) == Some(queue))
        .and_then(|q| q.get("counts"))
        .and_then(serde_json::Value::as_object);
    Ok(counts.into_iter().flatten().filter_map(|(status, n)| Some((status.clone(), n.as_u64()?))).collect())
}

/// An error unless `queue` holds exactly `expected` tasks in `status`.
pub(crate) async fn expect_count(conn: &mut Conn, queue: &str, status: &str, expected: u64) -> Result<()> {
    let n = queue_count(conn, queue, status).await?;
    if n != expected {
        return Err(format!("queue {queue} has {n} {status} tasks, expected {expected}").into());
    }
    Ok(())
}

/// Seconds between two instants.
pub(crate) fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::{Scenario, batch_body, claim};
    use std::sync::atomic::AtomicU64;

    #[test]
    fn claims_never_overdraw() {
        let budget = AtomicU64::new(1_200);
        assert_eq!(claim(&budget, 500), 500);
        assert_eq!(claim(&budget, 500), 500);
        assert_eq!(claim(&budget, 500), 200);
        assert_eq!(claim(&budget, 500), 0);
    }

    #[test]
    fn batch_is_json() {
        let v: serde_json::Value = serde_json::from_slice(&batch_body("q", 3)).expect("valid JSON");
        assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["tasks"][2]["queue"], "q");
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()).ok(), Some(s));
        }
        assert!(Scenario::parse("nope").is_err());
    }
}
