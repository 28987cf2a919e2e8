//! Submit throughput: single tasks from one connection or many, and
//! 1,000-task batches. Each connection sends sequentially until the
//! measurement's time is up; latency is per request.

use super::{Ctx, batch_body, join_all, secs, submit_body};
use crate::client::Conn;
use crate::report::Cpu;
use crate::samples::Samples;
use crate::{Result, Row};
use bytes::Bytes;
use std::time::Instant;

/// Tasks per batch request.
const BATCH: u64 = 1_000;
/// Connections sending batches.
const BATCH_CONNS: usize = 4;

/// Sends `body` on `conn` until `until`; answers tasks submitted and the
/// latency of each request.
async fn until(
    mut conn: Conn,
    path: &'static str,
    body: Bytes,
    per_request: u64,
    until: Instant,
) -> Result<(u64, Samples)> {
    let mut samples = Samples::with_capacity(1 << 16);
    let mut tasks = 0;
    while Instant::now() < until {
        let t0 = Instant::now();
        conn.post(path, body.clone()).await?;
        samples.record(t0.elapsed());
        tasks += per_request;
    }
    Ok((tasks, samples))
}

/// `conns` connections sending `body` for the scenario's duration.
async fn measure(ctx: &Ctx, conns: usize, path: &'static str, body: Bytes, per_request: u64) -> Result<Measured> {
    let conns = ctx.connect_many(conns).await?;
    let cpu0 = ctx.cpu()?;
    let start = Instant::now();
    let end = start + ctx.opts.duration;
    let mut set = tokio::task::JoinSet::new();
    for conn in conns {
        set.spawn(until(conn, path, body.clone(), per_request, end));
    }
    let parts = join_all(set).await?;
    let seconds = secs(start, Instant::now());
    let cpu1 = ctx.cpu()?;
    let mut all = Samples::default();
    let mut tasks = 0;
    for (n, s) in parts {
        tasks += n;
        all.merge(s);
    }
    Ok(Measured { tasks, seconds, samples: all, cpu: (cpu0, cpu1) })
}

/// What one measurement saw.
struct Measured {
    tasks: u64,
    seconds: f64,
    samples: Samples,
    cpu: (Cpu, Cpu),
}

impl Measured {
    fn row(mut self, scenario: &str, variant: &str) -> Row {
        let mut row = Row::throughput(scenario, variant, self.tasks, self.seconds).with_cpu(&self.cpu.0, &self.cpu.1);
        row.latencies(&mut self.samples);
        row
    }
}

pub(super) async fn single(ctx: &Ctx) -> Result<Vec<Row>> {
    let queue = ctx.queue("submit-single");
    let m = measure(ctx, 1, "/v1/tasks", submit_body(&queue), 1).await?;
    super::expect_count(&mut ctx.connect().await?, &queue, "queued", m.tasks).await?;
    Ok(vec![m.row("submit-single", "1 conn")])
}

pub(super) async fn concurrent(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for conns in [16, 64] {
        let queue = ctx.queue(&format!("submit-c{conns}"));
        let m = measure(ctx, conns, "/v1/tasks", submit_body(&queue), 1).await?;
        super::expect_count(&mut ctx.connect().await?, &queue, "queued", m.tasks).await?;
        rows.push(m.row("submit-concurrent", &format!("{conns} conns")));
    }
    Ok(rows)
}

pub(super) async fn batch(ctx: &Ctx) -> Result<Vec<Row>> {
    let queue = ctx.queue("submit-batch");
    let body = batch_body(&queue, BATCH);
    let m = measure(ctx, BATCH_CONNS, "/v1/tasks/batch", body, BATCH).await?;
    super::expect_count(&mut ctx.connect().await?, &queue, "queued", m.tasks).await?;
    let mut row = m.row("submit-batch", &format!("{BATCH}/req, {BATCH_CONNS} conns"));
    row.note = "latency per request".into();
    Ok(vec![row])
}
