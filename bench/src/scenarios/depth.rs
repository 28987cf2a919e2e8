//! Lease + complete throughput with a deep queue. At each depth D the queue
//! is filled to D + M queued tasks by batch submits, then M tasks are leased
//! and completed in batches of 500 by the worker loops, leaving D queued;
//! that is done [`ROUNDS`] times (the queue refilled before each) and the
//! row sums the rounds, then the next, deeper step follows. Server RSS is
//! read after the first fill and after the last round.

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
/// Measured rounds at each depth. One round of 20,000 tasks takes about a
/// tenth of a second, too short to stand against the machine's noise alone;
/// the queue stays between D and D + M in every round.
const ROUNDS: usize = 5;

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
        let variant = format!("{} queued, {} workers × lease {LEASE_MAX}", depth_label(d), ctx.opts.workers);
        let mut rounds = Vec::with_capacity(ROUNDS);
        // What the first fill (the one that reaches the depth) took.
        let mut fill_note = String::new();
        for round in 0..ROUNDS {
            let queued = queue_count(&mut control, &queue, "queued").await?;
            let add = (d + m).saturating_sub(queued);
            let t0 = Instant::now();
            fill(ctx.connect_many(FILL_CONNS).await?, &queue, add, FILL_BATCH).await?;
            let fill_s = secs(t0, Instant::now());
            expect_count(&mut control, &queue, "queued", queued + add).await?;
            if round == 0 {
                #[allow(clippy::cast_precision_loss)]
                let (added, full) = (add as f64, (queued + add) as f64);
                fill_note = format!("; filled {} at {}/s", group(added, 0), group(added / fill_s.max(1e-9), 0));
                if let Some(mem) = ctx.pid.map(memory_of).transpose()? {
                    fill_note.push_str(&format!("; RSS {:.1} MB with {} queued", mem.rss_mb, group(full, 0)));
                }
            }

            let cpu0 = ctx.cpu()?;
            let start = Instant::now();
            let last = drain(ctx.connect_many(ctx.opts.workers).await?, &queue, m, LEASE_MAX, WAIT_MS).await?;
            let end = last.unwrap_or_else(Instant::now);
            let cpu1 = ctx.cpu()?;
            expect_count(&mut control, &queue, "queued", queued + add - m).await?;
            rounds.push(Row::throughput("depth", &variant, m, secs(start, end)).with_cpu(&cpu0, &cpu1));
        }

        let mut row = sum_rounds(&variant, &rounds);
        row.note.push_str(&fill_note);
        if let Some(pid) = ctx.pid {
            let mem = memory_of(pid)?;
            row.rss_mb = Some(mem.rss_mb);
            row.peak_rss_mb = Some(mem.peak_mb);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One row for all rounds at a depth: their tasks over their time, their
/// CPU summed, and the slowest and fastest round in the note.
fn sum_rounds(variant: &str, rounds: &[Row]) -> Row {
    let tasks = rounds.iter().map(|r| r.tasks).sum();
    let seconds = rounds.iter().map(|r| r.seconds).sum();
    let mut row = Row::throughput("depth", variant, tasks, seconds);
    row.server_cpu_s = rounds.iter().map(|r| r.server_cpu_s).sum();
    row.client_cpu_s = rounds.iter().map(|r| r.client_cpu_s).sum();
    row.other_cpu_s = rounds.iter().map(|r| r.other_cpu_s).sum();
    let rates = rounds.iter().filter_map(|r| r.tasks_per_s);
    let (slowest, fastest) = rates.fold((f64::INFINITY, 0.0_f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let each = rounds.first().map_or(0, |r| r.tasks);
    #[allow(clippy::cast_precision_loss)]
    let each = group(each as f64, 0);
    row.note = format!("{} rounds of {each}: {}–{}/s", rounds.len(), group(slowest, 0), group(fastest, 0));
    row
}

#[cfg(test)]
mod tests {
    use super::{depth_label, sum_rounds};
    use crate::Row;

    #[test]
    fn rounds_are_summed() {
        let rounds = [Row::throughput("depth", "v", 100, 1.0), Row::throughput("depth", "v", 100, 0.25)];
        let row = sum_rounds("v", &rounds);
        assert_eq!((row.tasks, row.seconds, row.tasks_per_s), (200, 1.25, Some(160.0)));
        assert_eq!(row.note, "2 rounds of 100: 100–400/s");
    }

    #[test]
    fn labels() {
        assert_eq!(depth_label(10_000), "10k");
        assert_eq!(depth_label(1_000_000), "1M");
        assert_eq!(depth_label(1_500), "1500");
    }
}
