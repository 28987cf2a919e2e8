//! Quern's benchmark harness.
//!
//! It starts a fresh `quern server` for each scenario (or several nodes on
//! one PostgreSQL database, or drives a server given by URL), runs named scenarios against it over a lean HTTP/1.1
//! client, and reports one [`Row`] per measured figure: a table on the
//! terminal and, on request, a JSON file with the machine it ran on.
//!
//! # Layout
//!
//! - [`client`]: one keep-alive HTTP/1.1 connection over hyper, nothing more;
//!   the client shares the machine's two cores with the server, so it must
//!   stay cheap.
//! - [`server`]: starting, watching (RSS, liveness) and stopping a server
//!   process on a temporary data directory.
//! - [`worker`]: the same for a `quern worker` process (the `shell` scenario).
//! - [`deployment`]: the servers of one scenario: one on SQLite, or several
//!   nodes on one fresh PostgreSQL schema (`--database`, `--nodes`).
//! - [`scenarios`]: the workloads, one module per family; each returns rows.
//! - [`samples`]: latency samples and their percentiles.
//! - [`report`]: the [`Row`], the terminal table, the JSON file, machine info.
//! - [`peers`]: other systems' rows (Celery, RQ, BullMQ, …) from their own
//!   runner, joined to Quern's in one table with Quern's ratio to each.
//! - [`plot`]: the PNG chart of Quern beside the peers.
//!
//! Invariant: a figure is only reported when every request of its scenario
//! succeeded and the server is still alive; anything else ends the run with
//! an error.

pub mod client;
pub mod deployment;
pub mod peers;
pub mod plot;
pub mod quota;
pub mod report;
pub mod samples;
pub mod scenarios;
pub mod server;
pub mod worker;

pub use deployment::{Deployment, Storage};
pub use report::Row;
pub use scenarios::{Options, Scenario};
use server::Server;

/// The harness's error: anything that stops a run, with a message for a person.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A harness result.
pub type Result<T> = std::result::Result<T, Error>;

/// Where the scenarios send their requests.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start a fresh server from this binary for each scenario.
    Spawn {
        /// The `quern` binary.
        bin: std::path::PathBuf,
        /// Where they keep their state: SQLite, or PostgreSQL with one or
        /// more nodes.
        storage: Storage,
    },
    /// A running server; nothing is started or stopped, and no RSS is read.
    Url(String),
}

/// Runs `scenarios` one after another against `target`, each on fresh
/// servers (and, on PostgreSQL, a fresh schema) when the harness starts
/// them; stops at the first failure.
pub async fn run(target: &Target, scenarios: &[Scenario], opts: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for scenario in scenarios {
        eprintln!("quern-bench: running {}", scenario.name());
        let mut deployment = match target {
            Target::Spawn { bin, storage } => Some(Deployment::start(bin, storage).await?),
            Target::Url(_) => None,
        };
        let nodes: Vec<(String, Option<u32>)> = match (&deployment, target) {
            (Some(d), _) => d.servers().iter().map(|s| (s.url().to_owned(), Some(s.pid()))).collect(),
            (None, Target::Url(u)) => vec![(u.clone(), None)],
            (None, Target::Spawn { .. }) => return Err("no server to run against".into()),
        };
        let quern_bin = match target {
            Target::Spawn { bin, .. } => Some(bin.clone()),
            Target::Url(_) => server::default_bin().ok(),
        };
        let database = match target {
            Target::Spawn { storage: Storage::Postgres { url, .. }, .. } => Some(url.as_str()),
            _ => None,
        };
        let ctx = scenarios::Ctx::new(&nodes, quern_bin.as_deref(), database, opts)?;
        let result = tokio::time::timeout(opts.scenario_timeout, scenario.run(&ctx)).await;
        let mut out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("{}: {e}", scenario.name()).into()),
            Err(_) => {
                return Err(format!("{}: did not finish within {:?}", scenario.name(), opts.scenario_timeout).into());
            }
        };
        if let Some(mut d) = deployment.take() {
            d.check_alive()?;
            // With several nodes, the largest one's.
            let mems = d.servers().iter().map(Server::memory).collect::<Result<Vec<_>>>()?;
            let rss = mems.iter().map(|m| m.rss_mb).fold(0.0, f64::max);
            let peak = mems.iter().map(|m| m.peak_mb).fold(0.0, f64::max);
            for row in &mut out {
                if row.rss_mb.is_none() {
                    row.rss_mb = Some(rss);
                    row.peak_rss_mb = Some(peak);
                }
            }
            d.stop().await?;
        }
        let store = match target {
            Target::Spawn { storage: Storage::Sqlite { .. }, .. } => Some("sqlite"),
            Target::Spawn { storage: Storage::Postgres { .. }, .. } => Some("postgres"),
            Target::Url(_) => None,
        };
        for row in &mut out {
            row.store = store.map(str::to_owned);
            eprintln!("quern-bench:   {}", row.one_line());
        }
        rows.extend(out);
    }
    Ok(rows)
}
