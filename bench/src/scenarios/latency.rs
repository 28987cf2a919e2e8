//! Latency on an idle server: one worker parked in a long-poll lease; the
//! client submits one task and then waits for its result with
//! `GET /v1/tasks/{id}?wait=5s` while the worker completes it at once.
//!
//! Times: submit → acknowledged, submit → the worker's lease returned (the
//! worker could start), submit → the waiting client saw `succeeded`.

use super::{Ctx, secs, submit_body};
use crate::client::Conn;
use crate::samples::Samples;
use crate::{Result, Row};
use bytes::Bytes;
use quern_wire::{CompleteRequest, Completion, LeaseRequest, Leased};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Long-poll of the parked worker.
const LEASE_WAIT_MS: u64 = 5_000;
/// Time for the worker's lease request to reach the server and park.
const PARK: Duration = Duration::from_millis(3);

#[derive(Deserialize)]
struct TaskRef<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
}

/// What the worker tells the client.
enum WorkerEvent {
    /// About to send a lease request.
    Parking,
    /// A lease returned a task at this instant.
    Started(Instant),
}

async fn worker(mut conn: Conn, queue: String, events: mpsc::UnboundedSender<WorkerEvent>) -> Result<()> {
    let request = LeaseRequest { wait_ms: LEASE_WAIT_MS, ..LeaseRequest::new("bench-latency", vec![queue]) };
    let lease = Bytes::from(serde_json::to_vec(&request)?);
    loop {
        if events.send(WorkerEvent::Parking).is_err() {
            return Ok(());
        }
        let answer = conn.post("/v1/lease", lease.clone()).await?;
        let started = Instant::now();
        let leased: Leased = serde_json::from_slice(&answer)?;
        let Some(task) = leased.tasks.into_iter().next() else { continue };
        if events.send(WorkerEvent::Started(started)).is_err() {
            return Ok(());
        }
        let token = task.lease.map(|l| l.token).unwrap_or_default();
        let results = vec![Completion::succeeded(task.id, token, &serde_json::Value::Null)];
        let body = CompleteRequest { worker: "bench-latency".into(), results };
        conn.post("/v1/complete", Bytes::from(serde_json::to_vec(&body)?)).await?;
    }
}

/// Waits for the worker to announce its next lease, then lets it park.
async fn until_parked(events: &mut mpsc::UnboundedReceiver<WorkerEvent>) -> Result<()> {
    match events.recv().await {
        Some(WorkerEvent::Parking) => {}
        Some(WorkerEvent::Started(_)) => return Err("the worker leased a task nobody submitted".into()),
        None => return Err("the worker stopped".into()),
    }
    tokio::time::sleep(PARK).await;
    Ok(())
}

/// The instant the worker's lease returned the task; skips the announcement
/// of a lease that parked in vain before it.
async fn started(events: &mut mpsc::UnboundedReceiver<WorkerEvent>) -> Result<Instant> {
    loop {
        match events.recv().await {
            Some(WorkerEvent::Parking) => {}
            Some(WorkerEvent::Started(at)) => return Ok(at),
            None => return Err("the worker stopped before it reported the task it ran".into()),
        }
    }
}

pub(super) async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let queue = ctx.queue("latency");
    let (tx, mut events) = mpsc::unbounded_channel();
    let worker = tokio::spawn(worker(ctx.connect().await?, queue.clone(), tx));
    let result = measure(ctx, &queue, &mut events).await;
    worker.abort();
    if worker.is_finished()
        && let Ok(Err(e)) = worker.await
    {
        return Err(format!("latency worker: {e}").into());
    }
    result
}

async fn measure(ctx: &Ctx, queue: &str, events: &mut mpsc::UnboundedReceiver<WorkerEvent>) -> Result<Vec<Row>> {
    let n = ctx.opts.latency_samples;
    let mut client = ctx.connect().await?;
    let submit = submit_body(queue);
    let (mut ack, mut start, mut result) = (Samples::default(), Samples::default(), Samples::default());
    let cpu0 = ctx.cpu()?;
    let begin = Instant::now();
    for _ in 0..n {
        until_parked(events).await?;
        let t0 = Instant::now();
        let answer = client.post("/v1/tasks", submit.clone()).await?;
        ack.record(t0.elapsed());
        let id = serde_json::from_slice::<TaskRef<'_>>(&answer)?.id.into_owned();
        let answer = client.get(&format!("/v1/tasks/{id}?wait=5s")).await?;
        let done = Instant::now();
        let task: TaskRef<'_> = serde_json::from_slice(&answer)?;
        if task.status != "succeeded" {
            return Err(format!("task {id} was {} after the wait, not succeeded", task.status).into());
        }
        result.record(done - t0);
        start.record(started(events).await?.saturating_duration_since(t0));
    }
    let seconds = secs(begin, Instant::now());
    let cpu1 = ctx.cpu()?;
    let mut rows = Vec::new();
    for (variant, mut s) in [("submit→ack", ack), ("submit→start", start), ("submit→result", result)] {
        let mut row = Row::new("latency", variant).with_cpu(&cpu0, &cpu1);
        row.tasks = s.len() as u64;
        row.seconds = seconds;
        row.latencies(&mut s);
        rows.push(row);
    }
    Ok(rows)
}
