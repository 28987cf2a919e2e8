//! End to end: submitters and no-op workers at once, timed from the first
//! submit to the last completion; then the queue must show every task
//! succeeded. With several nodes, the submitters and the workers are spread
//! over them (at least one of each per node), so tasks submitted on one node
//! are leased and completed on another.

use super::{Ctx, claim, drain, expect_count, fill, join_all, secs, submit_body};
use crate::client::Conn;
use crate::{Result, Row};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// Tasks per batch submit in `e2e`.
const BATCH: u64 = 1_000;
/// Connections submitting batches in `e2e`.
const BATCH_SUBMITTERS: usize = 2;
/// Most tasks per lease in `e2e`.
const LEASE_MAX: u64 = 500;
/// Submitters and workers in `e2e-single`.
const SINGLE_CONNS: usize = 16;
/// How long a lease may park.
const WAIT_MS: u64 = 1_000;

pub(super) async fn batched(ctx: &Ctx) -> Result<Vec<Row>> {
    let n = ctx.opts.e2e_tasks;
    let k = ctx.opts.workers.max(ctx.nodes());
    let submitter_conns = BATCH_SUBMITTERS.max(ctx.nodes());
    let queue = ctx.queue("e2e");
    let submitters = ctx.connect_many(submitter_conns).await?;
    let workers = ctx.connect_many(k).await?;
    let cpu0 = ctx.cpu()?;
    let start = Instant::now();
    let (submitted, last) =
        tokio::join!(fill(submitters, &queue, n, BATCH), drain(workers, &queue, n, LEASE_MAX, WAIT_MS));
    submitted?;
    let end = last?.unwrap_or_else(Instant::now);
    let cpu1 = ctx.cpu()?;
    expect_count(&mut ctx.connect().await?, &queue, "succeeded", n).await?;
    let variant = format!("batch {BATCH}, {k} workers × lease {LEASE_MAX}");
    let mut row = Row::throughput("e2e", &variant, n, secs(start, end)).with_cpu(&cpu0, &cpu1);
    row.note = format!("{submitter_conns} submit conns{}", ctx.nodes_note());
    Ok(vec![row])
}

/// Sends single submits until the shared budget is spent.
async fn submit_singles(mut conn: Conn, queue: String, budget: Arc<AtomicU64>) -> Result<()> {
    let body = submit_body(&queue);
    while claim(&budget, 1) == 1 {
        conn.post("/v1/tasks", body.clone()).await?;
    }
    Ok(())
}

pub(super) async fn single(ctx: &Ctx) -> Result<Vec<Row>> {
    let n = ctx.opts.e2e_single_tasks;
    let queue = ctx.queue("e2e-single");
    let submitters = ctx.connect_many(SINGLE_CONNS).await?;
    let workers = ctx.connect_many(SINGLE_CONNS).await?;
    let cpu0 = ctx.cpu()?;
    let start = Instant::now();
    let budget = Arc::new(AtomicU64::new(n));
    let mut set = tokio::task::JoinSet::new();
    for conn in submitters {
        set.spawn(submit_singles(conn, queue.clone(), budget.clone()));
    }
    let (submitted, last) = tokio::join!(join_all(set), drain(workers, &queue, n, 1, WAIT_MS));
    submitted?;
    let end = last?.unwrap_or_else(Instant::now);
    let cpu1 = ctx.cpu()?;
    expect_count(&mut ctx.connect().await?, &queue, "succeeded", n).await?;
    let mut row = Row::throughput(
        "e2e-single",
        &format!("{SINGLE_CONNS} submitters, {SINGLE_CONNS} workers × lease 1"),
        n,
        secs(start, end),
    )
    .with_cpu(&cpu0, &cpu1);
    row.note = ctx.nodes_note().trim_start_matches("; ").to_owned();
    Ok(vec![row])
}
