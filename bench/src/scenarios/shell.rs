//! Shell tasks through the real `quern worker`: for each variant of the
//! worker's flags, one worker process (the same `quern` binary as the
//! server) on a queue of its own, N `{"command": ["true"]}` tasks submitted
//! in batches, timed from the first submit until the queue counts N
//! terminal tasks; then every one of them must have succeeded.
//!
//! The row's RSS is the worker's (the server's is in the note), and its
//! server CPU is the server's plus the worker's and its task processes', as
//! the peers' rows count Redis and their workers together.

use super::{Ctx, fill_with, queue_count, queue_counts, secs};
use crate::client::Conn;
use crate::server::memory_of;
use crate::worker::Worker;
use crate::{Result, Row};
use std::time::{Duration, Instant};

/// Tasks the worker runs at once.
const CONCURRENCY: usize = 64;
/// Tasks per batch submit.
const BATCH: u64 = 1_000;
/// How often the queue's counts are read while the worker runs.
const POLL: Duration = Duration::from_millis(5);
/// The statuses a task ends in.
const TERMINAL: [&str; 5] = ["succeeded", "failed", "cancelled", "timed_out", "skipped"];

/// The worker flags of each variant beyond `--concurrency` and `--queues`.
const VARIANTS: [&[&str]; 2] = [&[], &["--fast-spawn"]];

pub(super) async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = Vec::with_capacity(VARIANTS.len());
    for (i, extra) in VARIANTS.into_iter().enumerate() {
        rows.push(variant(ctx, &format!("shell{i}"), extra).await?);
    }
    Ok(rows)
}

/// One worker with flags `extra` runs `shell_tasks` tasks on the queue
/// `name` of this run.
async fn variant(ctx: &Ctx, name: &str, extra: &[&str]) -> Result<Row> {
    let bin = ctx.quern_bin.as_deref().ok_or("the shell scenario needs the quern binary to start a worker")?;
    let n = ctx.opts.shell_tasks;
    let queue = ctx.queue(name);
    let mut flags = vec!["--concurrency".to_owned(), CONCURRENCY.to_string()];
    flags.extend(extra.iter().map(|f| (*f).to_owned()));
    // The variant names the flags but not the queue, whose name changes from
    // run to run: repeated runs' rows are matched by variant.
    let variant = format!("quern worker {}", flags.join(" "));
    flags.extend(["--queues".to_owned(), queue.clone()]);
    let mut control = ctx.connect().await?;
    let mut worker = Worker::start(bin, &ctx.url, &queue, &flags, &mut control).await?;
    let task = format!(r#"{{"name":"shell","queue":"{queue}","input":{{"command":["true"]}}}}"#);
    let submitter = ctx.connect_many(1).await?;
    let cpu0 = ctx.cpu_with_worker(worker.pid())?;
    let start = Instant::now();
    let (submitted, ended) =
        tokio::join!(fill_with(submitter, &task, n, BATCH), until_ended(&mut control, &mut worker, &queue, n));
    submitted?;
    let end = ended?;
    let cpu1 = ctx.cpu_with_worker(worker.pid())?;
    let succeeded = queue_count(&mut control, &queue, "succeeded").await?;
    if succeeded != n {
        return Err(format!("{succeeded} of {n} shell tasks succeeded").into());
    }
    let mem = memory_of(worker.pid())?;
    worker.stop().await?;
    let mut row = Row::throughput("shell", &variant, n, secs(start, end)).with_cpu(&cpu0, &cpu1);
    row.rss_mb = Some(mem.rss_mb);
    row.peak_rss_mb = Some(mem.peak_mb);
    let server_rss =
        ctx.pid.map(memory_of).transpose()?.map_or_else(String::new, |m| format!("; server RSS {:.1} MB", m.rss_mb));
    row.note =
        format!("`true` tasks, batches of {BATCH}; RSS is the worker's, srv CPU server + worker + tasks{server_rss}");
    Ok(row)
}

/// Waits until `queue` counts `n` terminal tasks (checking that the worker
/// lives on); answers when it first saw them.
async fn until_ended(conn: &mut Conn, worker: &mut Worker, queue: &str, n: u64) -> Result<Instant> {
    loop {
        worker.check_alive()?;
        let counts = queue_counts(conn, queue).await?;
        if TERMINAL.iter().filter_map(|s| counts.get(*s)).sum::<u64>() >= n {
            return Ok(Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }
}
