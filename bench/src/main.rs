//! `quern-bench`: parses the command line, runs the scenarios, prints the
//! table, writes the JSON. The work is in the library.

use clap::Parser;
use quern_bench::report::{Machine, Report, ServerBin, markdown, median_of, table};
use quern_bench::{Options, Scenario, Storage, Target, peers, plot, server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Quern's benchmark harness. By default it starts a fresh `quern server`
/// (the binary next to this one) for each scenario on a temporary data
/// directory, and stops it afterwards.
#[derive(Debug, Parser)]
#[command(name = "quern-bench")]
struct Args {
    /// The `quern` binary to start [default: the one next to this binary].
    #[arg(long, conflicts_with = "url")]
    server_bin: Option<PathBuf>,
    /// Run against this server instead of starting one (no RSS figures).
    #[arg(long)]
    url: Option<String>,
    /// Send this bearer token on every request (with --url).
    #[arg(long, env = "QUERN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start the servers with tokens required, and send the admin token:
    /// what authentication costs.
    #[arg(long, conflicts_with = "url")]
    auth: bool,
    /// Comma-separated scenarios: idle, submit-single, submit-concurrent,
    /// submit-batch, e2e, e2e-single, latency, depth, shell [default: all].
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Seconds-long settings for smoke runs (no 1M depth).
    #[arg(long)]
    quick: bool,
    /// Write every row and the machine info to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print the table as Markdown.
    #[arg(long)]
    markdown: bool,
    /// Durability of the started server (on SQLite).
    #[arg(long, default_value = "normal", value_parser = ["normal", "strict"])]
    durability: String,
    /// Start the servers on this PostgreSQL database instead of SQLite, each
    /// scenario in a fresh schema dropped afterwards (needs `psql`), e.g.
    /// postgres://root@127.0.0.1:5432/test.
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    database: Option<String>,
    /// After the scenarios on SQLite, run them again on this PostgreSQL
    /// database (one node): one run gives Quern on each store, each beside
    /// the peers on the same kind of store (Redis, PostgreSQL).
    #[arg(long, value_name = "URL", conflicts_with_all = ["url", "database"])]
    also_database: Option<String>,
    /// Servers (nodes) to start on the one database; scenarios spread their
    /// connections over them. More than one needs --database.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Limit each server the harness starts to this many CPUs (e.g. 0.5),
    /// each in a control group of its own (cgroup v2 `cpu.max`, else cgroup
    /// v1 `cpu.cfs_quota_us`; needs root), so that adding nodes adds
    /// capacity where the nodes are the bound. PostgreSQL and the harness
    /// stay unconstrained. Rows' notes say how the nodes were limited.
    #[arg(long, value_name = "CPUS", conflicts_with = "url")]
    node_cpu_quota: Option<f64>,
    /// Seconds of each time-bounded submit measurement [default: 10, quick 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Tasks through e2e [default: 100000, quick 5000].
    #[arg(long)]
    e2e_tasks: Option<u64>,
    /// Tasks through e2e-single [default: 20000, quick 2000].
    #[arg(long)]
    e2e_single_tasks: Option<u64>,
    /// Worker loops in e2e and depth [default: 4].
    #[arg(long)]
    workers: Option<usize>,
    /// Tasks leased and completed in each of the five rounds at each depth
    /// [default: 20000, quick 2000].
    #[arg(long)]
    depth_tasks: Option<u64>,
    /// Leave out depths above this many queued tasks.
    #[arg(long)]
    max_depth: Option<u64>,
    /// Shell tasks through the worker, per variant [default: 4000, quick 300].
    #[arg(long)]
    shell_tasks: Option<u64>,
    /// Run the whole suite this many times and report each figure's median run.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Merge the rows of a peers' run (bench/peers/run.sh --out FILE) into the table.
    #[arg(long, conflicts_with = "with_peers")]
    peers: Option<PathBuf>,
    /// After Quern's scenarios, run the peers (bench/peers/run.sh, with
    /// --quick when this run is quick; needs Redis on 127.0.0.1:6379) and
    /// merge their rows into the table.
    #[arg(long)]
    with_peers: bool,
    /// Write a PNG chart of Quern beside the peers to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The TrueType font of the chart's text.
    #[arg(long, default_value = plot::DEFAULT_FONT)]
    plot_font: PathBuf,
    /// Client runtime threads; 1 leaves the most CPU to the server.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

fn options(args: &Args) -> Options {
    let mut opts = Options::defaults(args.quick);
    if let Some(d) = args.duration {
        opts.duration = Duration::from_secs_f64(d.max(0.1));
    }
    if let Some(n) = args.e2e_tasks {
        opts.e2e_tasks = n;
    }
    if let Some(n) = args.e2e_single_tasks {
        opts.e2e_single_tasks = n;
    }
    if let Some(k) = args.workers {
        opts.workers = k.max(1);
    }
    if let Some(n) = args.depth_tasks {
        opts.depth_measured = n.max(1);
    }
    if let Some(max) = args.max_depth {
        opts.depths.retain(|d| *d <= max);
    }
    if let Some(n) = args.shell_tasks {
        opts.shell_tasks = n.max(1);
    }
    opts
}

/// The store of a target, as the table's header names it.
fn target_label(target: &Target) -> String {
    match target {
        Target::Spawn { storage, .. } => storage.label(),
        Target::Url(_) => "external".to_owned(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quern-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> quern_bench::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.iter().map(|s| Scenario::parse(s.trim())).collect::<quern_bench::Result<_>>()?
    };
    if args.nodes > 1 && args.database.is_none() {
        return Err("--nodes above 1 needs --database: nodes share one PostgreSQL database".into());
    }
    if let Some(cores) = args.node_cpu_quota {
        eprintln!("quern-bench: {}", quern_bench::quota::limit_nodes(cores)?);
    }
    if args.auth {
        // The servers' admin token: they live and die with this run.
        quern_bench::server::require_token(&format!("qrn_{}", "b".repeat(64)))?;
    } else if let Some(token) = &args.token {
        quern_bench::client::use_token(token)?;
    }
    let target = match &args.url {
        Some(url) => Target::Url(url.clone()),
        None => Target::Spawn {
            bin: match &args.server_bin {
                Some(b) => b.clone(),
                None => server::default_bin()?,
            },
            storage: match &args.database {
                Some(url) => Storage::Postgres { url: url.clone(), nodes: usize::from(args.nodes) },
                None => Storage::Sqlite { durability: args.durability.clone() },
            },
        },
    };
    let (durability, storage) = match &target {
        Target::Url(_) => ("external", "external".to_owned()),
        Target::Spawn { storage: Storage::Sqlite { durability }, .. } => (durability.as_str(), target_label(&target)),
        Target::Spawn { .. } => ("postgres", target_label(&target)),
    };
    let server_bin = match &target {
        Target::Spawn { bin, .. } => Some(ServerBin::probe(bin)),
        Target::Url(_) => None,
    };
    let opts = options(args);
    let machine = Machine::probe();
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()?
    };
    // Each figure from the median of `--runs` runs of the scenarios on `target`.
    let median_run = |target: &Target| -> quern_bench::Result<Vec<quern_bench::Row>> {
        let mut runs = Vec::new();
        for i in 0..args.runs.max(1) {
            if args.runs > 1 {
                eprintln!("quern-bench: {}, run {} of {}", target_label(target), i + 1, args.runs);
            }
            runs.push(runtime.block_on(quern_bench::run(target, &scenarios, &opts))?);
        }
        Ok(median_of(runs, machine.nproc))
    };
    let mut quern_rows = median_run(&target)?;
    let mut storage = storage;
    if let (Some(url), Target::Spawn { bin, .. }) = (&args.also_database, &target) {
        let also = Target::Spawn { bin: bin.clone(), storage: Storage::Postgres { url: url.clone(), nodes: 1 } };
        eprintln!("quern-bench: the same scenarios on {}", target_label(&also));
        quern_rows.extend(median_run(&also)?);
        storage = format!("{storage} and {}", target_label(&also));
    }
    let peer_run = match &args.peers {
        Some(path) => Some(peers::load(path)?),
        None if args.with_peers => {
            eprintln!("quern-bench: running the peers (bench/peers/run.sh)");
            Some(peers::run(args.quick)?)
        }
        None => None,
    };
    let (peer_rows, peer_versions) = match peer_run {
        Some(run) => (run.rows, Some(run.versions)),
        None => (Vec::new(), None),
    };
    let rows = peers::merge(quern_rows, peer_rows);
    println!("{}  ·  store {storage}{}", machine.summary(), if args.quick { "  ·  quick" } else { "" });
    print!("{}", table(&rows));
    if args.markdown {
        print!("\n{}", markdown(&rows));
    }
    if let Some(path) = &args.json {
        let report = Report {
            machine: &machine,
            durability,
            storage: &storage,
            quick: args.quick,
            runs: args.runs.max(1),
            rows: &rows,
            peer_versions: peer_versions.as_ref(),
            server_bin: server_bin.as_ref(),
        };
        report.write(path)?;
        eprintln!("quern-bench: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let title = format!("Quern and its peers · {}", machine.summary());
        plot::write(&rows, path, &args.plot_font, &title)?;
        eprintln!("quern-bench: wrote {}", path.display());
    }
    Ok(())
}
