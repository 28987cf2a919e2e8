//! Lease + complete throughput with a deep queue. At each depth D the queue
//! is filled to D + M queued tasks by batch submits, then M tasks are leased
//! and completed in batches of 500 by the worker loops, leaving D queued for
//! the next, deeper step. Server RSS is read after the fill and after the
//! measurement.

use super::{Ctx, drain, expect_count, fill, queue_count, secs};
use crate::report::group;
use crate::server::memory_of;
use crate::{Result, Row};
use std::time::Instant;

/// Tasks per fill request.
const FILL_BATCH: u64 = 1_000;
/// Connections filling.
const FILL_CONNS: usize = 4;
/// Most tasks per lease.
const LEASE_MAX: u64 = 500;
/// How long a lease may park.
const WAIT_MS: u64 = 1_000;

fn depth_label(d: u64) -> String {
    match d {
        d if d >= 1_000_000 && d % 1_000_000 == 0 => format!("{}M", d / 1_000_000),
        d if d >= 1_000 && d % 1_000 == 0 => format!("{}k", d / 1_000),
        d => d.to_string(),
    }
}

pub(super) async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let queue = ctx.queue("depth");
    let m = ctx.opts.depth_measured;
    let mut control = ctx.connect().await?;
    let mut depths = ctx.opts.depths.clone();
    depths.sort_unstable();
    let mut rows = Vec::new();
    for d in depths {
        let queued = queue_count(&mut control, &queue, "queued").await?;
        let add = (d + m).saturating_sub(queued);
        let t0 = Instant::now();
        fill(ctx.connect_many(FILL_CONNS).await?, &queue, add, FILL_BATCH).await?;
        let fill_s = secs(t0, Instant::now());
        expect_count(&mut control, &queue, "queued", queued + add).await?;
        let filled_mem = ctx.pid.map(memory_of).transpose()?;

        let cpu0 = ctx.cpu()?;
        let start = Instant::now();
        let last = drain(ctx.connect_many(ctx.opts.workers).await?, &queue, m, LEASE_MAX, WAIT_MS).await?;
        let end = last.unwrap_or_else(Instant::now);
        let cpu1 = ctx.cpu()?;
        expect_count(&mut control, &queue, "queued", queued + add - m).await?;

        let mut row = Row::throughput(
            "depth",
            &format!("{} queued, {} workers × lease {LEASE_MAX}", depth_label(d), ctx.opts.workers),
            m,
            secs(start, end),
        )
        .with_cpu(&cpu0, &cpu1);
        #[allow(clippy::cast_precision_loss)]
        let (added, fill_rate) = (add as f64, add as f64 / fill_s.max(1e-9));
        row.note = format!("filled {} at {}/s", group(added, 0), group(fill_rate, 0));
        if let Some(mem) = filled_mem {
            #[allow(clippy::cast_precision_loss)]
            let full = (queued + add) as f64;
            row.note.push_str(&format!("; RSS {:.1} MB with {} queued", mem.rss_mb, group(full, 0)));
        }
        if let Some(pid) = ctx.pid {
            let mem = memory_of(pid)?;
            row.rss_mb = Some(mem.rss_mb);
            row.peak_rss_mb = Some(mem.peak_mb);
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::depth_label;

    #[test]
    fn labels() {
        assert_eq!(depth_label(10_000), "10k");
        assert_eq!(depth_label(1_000_000), "1M");
        assert_eq!(depth_label(1_500), "1500");
    }
}
