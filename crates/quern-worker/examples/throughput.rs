//! End-to-end throughput of the Rust worker runtime: submits N no-op tasks
//! in batches of 1,000 while one `Worker` (concurrency C) runs them, and
//! prints tasks per second from the first submit to the last completion.
//!
//! ```sh
//! quern server &
//! cargo run --release -p quern-worker --example throughput -- http://127.0.0.1:7311 100000 1000
//! ```

use quern_client::Client;
use quern_core::TaskSpec;
use quern_worker::{TaskContext, TaskFailure, TaskType, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:7311".to_owned());
    let n: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let concurrency: usize = args.next().map_or(Ok(1_000), |s| s.parse())?;
    let name = format!("noop.{}", std::process::id());
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let worker = Worker::builder(Client::new(&url, None))
        .concurrency(concurrency)
        .handler(TaskType::new(name.clone()), move |_ctx: TaskContext| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, TaskFailure>(serde_json::Value::Null) }
        })
        .build();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let client = Client::new(&url, None);
    let start = Instant::now();
    let submitter = tokio::spawn(async move {
        let mut left = n;
        while left > 0 {
            let batch = left.min(1_000);
            let specs: Vec<TaskSpec> = (0..batch).map(|_| TaskSpec::named(name.clone())).collect();
            client.submit_batch(&specs).await?;
            left -= batch;
        }
        Ok::<_, quern_client::Error>(())
    });
    // Every handler ran; the last completions may still be in flight, so
    // stop the worker (which delivers them) before reading the clock.
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    submitter.await??;
    let _ = stop.send(());
    running.await??;
    let secs = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!("{n} no-op tasks through one Worker (concurrency {concurrency}) in {secs:.2} s: {rate:.0} tasks/s");
    Ok(())
}
