//! How fast a cancel reaches a running task, on an idle server with
//! 30-second leases (heartbeats every 10 s, so only the pushed stop counts).
//!
//! - `cancel→worker`: a protocol worker holds the task and a watch
//!   (`POST /v1/stops`) open; timed from the cancel request to the watch's
//!   answer naming the task.
//! - `cancel→cancelled (quern worker)`: a real `quern worker` runs a shell
//!   `sleep 60`; timed from the cancel request until a client waiting on
//!   the task sees `cancelled` (the worker has stopped the process group and
//!   reported it).

use super::{Ctx, secs};
use crate::client::Conn;
use crate::report::Cpu;
use crate::samples::Samples;
use crate::worker::Worker;
use crate::{Result, Row};
use bytes::Bytes;
use quern_core::{ErrorKind, TaskError};
use quern_wire::{CompleteRequest, Completion, LeaseRequest, Leased, Stops, StopsRequest};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The lease the protocol worker takes: long enough that no heartbeat is due.
const LEASE_MS: u64 = 30_000;
/// Time for the watch to get back to the server and park after an answer.
const PARK: Duration = Duration::from_millis(3);
/// How long the shell variant waits for a task to start or end.
const WAIT: Duration = Duration::from_secs(10);
/// The protocol worker's id.
const WORKER: &str = "bench-cancel";

pub(super) async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = vec![protocol(ctx).await?];
    if ctx.quern_bin.is_some() {
        rows.push(shell(ctx).await?);
    }
    Ok(rows)
}

/// Holds a watch open and passes on when each answer came.
async fn watch(mut conn: Conn, heard: mpsc::UnboundedSender<(Instant, Stops)>) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec(&StopsRequest { worker: WORKER.into(), wait_ms: 30_000 })?);
    loop {
        let answer = conn.post("/v1/stops", body.clone()).await?;
        let at = Instant::now();
        let stops: Stops = serde_json::from_slice(&answer)?;
        if !stops.stops.is_empty() && heard.send((at, stops)).is_err() {
            return Ok(());
        }
    }
}

async fn protocol(ctx: &Ctx) -> Result<Row> {
    let n = ctx.opts.latency_samples;
    let queue = ctx.queue("cancel");
    let mut client = ctx.connect().await?;
    let mut worker = ctx.connect().await?;
    let (tx, mut heard) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(ctx.connect().await?, tx));
    let lease = LeaseRequest { lease_ms: LEASE_MS, wait_ms: 5_000, ..LeaseRequest::new(WORKER, vec![queue.clone()]) };
    let lease = Bytes::from(serde_json::to_vec(&lease)?);
    let submit = super::submit_body(&queue);
    let mut latency = Samples::default();
    let cpu0 = ctx.cpu()?;
    let begin = Instant::now();
    for _ in 0..n {
        client.post("/v1/tasks", submit.clone()).await?;
        let leased: Leased = serde_json::from_slice(&worker.post("/v1/lease", lease.clone()).await?)?;
        let task = leased.tasks.into_iter().next().ok_or("the submitted task was not leased")?;
        tokio::time::sleep(PARK).await;
        let t0 = Instant::now();
        client.post(&format!("/v1/tasks/{}/cancel", task.id), Bytes::from_static(b"{}")).await?;
        let (at, stops) = tokio::time::timeout(WAIT, heard.recv())
            .await
            .map_err(|_| "no stop heard within 10 s")?
            .ok_or("the watch stopped")?;
        if stops.stops.iter().all(|s| s.task != task.id) {
            return Err(format!("the watch named other tasks than {}", task.id).into());
        }
        latency.record(at.saturating_duration_since(t0));
        let error = TaskError::new(ErrorKind::Cancelled, "cancelled");
        let token = task.lease.map(|l| l.token).unwrap_or_default();
        let done =
            CompleteRequest { worker: WORKER.into(), results: vec![Completion::failed(task.id, token, error, false)] };
        worker.post("/v1/complete", Bytes::from(serde_json::to_vec(&done)?)).await?;
    }
    let seconds = secs(begin, Instant::now());
    let cpu1 = ctx.cpu()?;
    watcher.abort();
    Ok(row("cancel→worker", latency, seconds, &cpu0, &cpu1))
}

async fn shell(ctx: &Ctx) -> Result<Row> {
    let bin = ctx.quern_bin.as_deref().ok_or("the cancel scenario's shell variant needs the quern binary")?;
    let n = ctx.opts.latency_samples.min(50);
    let queue = ctx.queue("cancel-shell");
    let mut client = ctx.connect().await?;
    let flags = ["--queues".to_owned(), queue.clone(), "--lease".to_owned(), "30s".to_owned()];
    let worker = Worker::start(bin, &ctx.url, "bench-cancel-shell", &flags, &mut client).await?;
    let task = Bytes::from(format!(r#"{{"name":"shell","queue":"{queue}","input":{{"command":["sleep","60"]}}}}"#));
    let mut latency = Samples::default();
    let cpu0 = ctx.cpu_with_worker(worker.pid())?;
    let begin = Instant::now();
    for _ in 0..n {
        let answer = client.post("/v1/tasks", task.clone()).await?;
        let id = serde_json::from_slice::<serde_json::Value>(&answer)?["id"].as_str().unwrap_or_default().to_owned();
        let deadline = Instant::now() + WAIT;
        while status(&mut client, &id).await? != "running" {
            if Instant::now() > deadline {
                return Err(format!("shell task {id} did not start within 10 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        client.post(&format!("/v1/tasks/{id}/cancel"), Bytes::from_static(b"{}")).await?;
        let answer = client.get(&format!("/v1/tasks/{id}?wait=10s")).await?;
        let done = Instant::now();
        let ended =
            serde_json::from_slice::<serde_json::Value>(&answer)?["status"].as_str().unwrap_or_default().to_owned();
        if ended != "cancelled" {
            return Err(format!("shell task {id} ended {ended}, not cancelled").into());
        }
        latency.record(done - t0);
    }
    let seconds = secs(begin, Instant::now());
    let cpu1 = ctx.cpu_with_worker(worker.pid())?;
    worker.stop().await?;
    Ok(row("cancel→cancelled (quern worker)", latency, seconds, &cpu0, &cpu1))
}

/// A row of latencies: how many, over how long, p50 and p99.
fn row(variant: &str, mut latency: Samples, seconds: f64, cpu0: &Cpu, cpu1: &Cpu) -> Row {
    let mut row = Row::new("cancel", variant).with_cpu(cpu0, cpu1);
    row.tasks = latency.len() as u64;
    row.seconds = seconds;
    row.latencies(&mut latency);
    row
}

async fn status(client: &mut Conn, id: &str) -> Result<String> {
    let answer = client.get(&format!("/v1/tasks/{id}")).await?;
    Ok(serde_json::from_slice::<serde_json::Value>(&answer)?["status"].as_str().unwrap_or_default().to_owned())
}
