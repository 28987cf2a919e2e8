//! Other task queues (Celery, RQ, arq, Dramatiq, BullMQ) beside Quern.
//!
//! Each peer runs the same scenarios as far as it can (by its own small
//! script, in its own venv or node_modules) and hands back [`Row`]s whose
//! `system` names it. The peers' own runner (`bench/peers/run.sh`) writes
//! `{"rows": [Row, …], "versions": {…}}`: [`load`] reads such a file for
//! `--peers`, and [`run`] runs the runner for `--with-peers` and reads what
//! it wrote. Either way [`merge`] puts the rows beside Quern's and gives each
//! its ratio to Quern's figure, so the table, the JSON and the chart carry
//! every system's figure for a scenario together.

use crate::{Result, Row};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// What a peers' run wrote.
#[derive(Debug, serde::Deserialize)]
pub struct PeerRun {
    /// Their figures, `system` naming each peer.
    pub rows: Vec<Row>,
    /// Versions of what ran (packages, Redis).
    #[serde(default)]
    pub versions: serde_json::Value,
}

/// Reads a peers' JSON file.
pub fn load(path: &Path) -> Result<PeerRun> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut run: PeerRun =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a peers file: {e}", path.display()))?;
    for row in run.rows.iter_mut().filter(|r| r.store.is_none()) {
        let postgres = row.pg_cpu_us_per_task.is_some() || row.note.contains("PostgreSQL");
        row.store = Some(if postgres { "postgres" } else { "redis" }.to_owned());
    }
    Ok(run)
}

/// The peers' runner in this source tree.
const RUNNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/run.sh");

/// Runs the peers' runner (with `--quick` for the smoke settings), its
/// output going to stderr so the table stays alone on stdout, and reads the
/// file it wrote. The runner installs the peers on first use and gives a
/// peer that fails rows that say so; only a runner that cannot run or writes
/// no file is an error.
pub fn run(quick: bool) -> Result<PeerRun> {
    let dir = tempfile::Builder::new().prefix("quern-bench-peers-").tempdir()?;
    let out = dir.path().join("peers.json");
    let mut cmd = Command::new("bash");
    cmd.arg(RUNNER).arg("--out").arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .map_err(|e| format!("cannot run {RUNNER}: {e}"))?;
    if !status.success() {
        return Err(format!("{RUNNER} failed ({status})").into());
    }
    load(&out)
}

/// The Quern row a peer's row is compared with: the same scenario and
/// variant, or else the first of the scenario with the same kind of figure
/// (throughput, or latency only).
pub fn counterpart<'a>(quern: &'a [Row], peer: &Row) -> Option<&'a Row> {
    let same = |q: &&Row| q.scenario == peer.scenario && same_store(q, peer);
    quern
        .iter()
        .filter(same)
        .find(|q| q.variant == peer.variant)
        .or_else(|| quern.iter().filter(same).find(|q| q.tasks_per_s.is_some() == peer.tasks_per_s.is_some()))
}

/// Whether `peer` may be compared with Quern's row `quern`: a peer on
/// PostgreSQL with Quern on PostgreSQL, any other with Quern on SQLite (a
/// server given by URL, of an unknown store, with either).
fn same_store(quern: &Row, peer: &Row) -> bool {
    let on_postgres = |r: &Row| r.store.as_deref() == Some("postgres");
    quern.store.is_none() || on_postgres(quern) == on_postgres(peer)
}

/// How many times better Quern's figure is than `peer`'s: throughput over
/// throughput, or for latency rows the peer's p50 over Quern's.
pub fn ratio(quern: &Row, peer: &Row) -> Option<f64> {
    match (quern.tasks_per_s, peer.tasks_per_s) {
        (Some(q), Some(p)) => Some(q / p).filter(|r| r.is_finite()),
        (None, None) => quern.p50_us.zip(peer.p50_us).map(|(q, p)| p / q).filter(|r| r.is_finite()),
        _ => None,
    }
}

/// Quern's rows, each scenario's followed by the peers' rows of that
/// scenario (variants differ between systems, so scenarios are what match),
/// each peer's row with its [`ratio`] to its [`counterpart`]; peers' rows of
/// scenarios Quern did not run come last.
pub fn merge(quern: Vec<Row>, peers: Vec<Row>) -> Vec<Row> {
    let mut out = Vec::with_capacity(quern.len() + peers.len());
    let mut rest: Vec<Row> = peers
        .into_iter()
        .map(|mut p| {
            p.quern_ratio = counterpart(&quern, &p).and_then(|q| ratio(q, &p));
            p
        })
        .collect();
    let mut quern = quern.into_iter().peekable();
    while let Some(row) = quern.next() {
        let last_of_scenario = quern.peek().is_none_or(|next| next.scenario != row.scenario || next.store != row.store);
        let anchor = row.clone();
        out.push(row);
        if last_of_scenario {
            let (same, other): (Vec<Row>, Vec<Row>) =
                rest.into_iter().partition(|p| p.scenario == anchor.scenario && same_store(&anchor, p));
            rest = other;
            out.extend(same);
        }
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{counterpart, merge};
    use crate::Row;

    fn peer(system: &str, scenario: &str, variant: &str) -> Row {
        let mut r = Row::new(scenario, variant);
        r.system = system.into();
        r
    }

    #[test]
    fn ratios_are_quern_over_peer() {
        let mut lat = Row::new("latency", "submit→result");
        lat.p50_us = Some(1_000.0);
        let mut ack = Row::new("latency", "submit→ack");
        ack.p50_us = Some(400.0);
        let quern = vec![Row::throughput("e2e", "batch", 60_000, 1.0), ack, lat];
        let mut e2e = Row::throughput("e2e", "2 worker processes", 6_000, 1.0);
        e2e.system = "bullmq".into();
        let mut slow = peer("bullmq", "latency", "submit→result");
        slow.p50_us = Some(2_500.0);
        let out = merge(quern.clone(), vec![e2e, slow, peer("rq", "shell", "x")]);
        let ratios: Vec<_> = out.iter().map(|r| r.quern_ratio).collect();
        assert_eq!(ratios, [None, Some(10.0), None, None, Some(2.5), None]);
        assert_eq!(counterpart(&quern, &out[4]).map(|q| q.variant.as_str()), Some("submit→result"));
    }

    #[test]
    fn peers_on_postgresql_meet_quern_on_postgresql() {
        let on = |mut r: Row, store: &str| {
            r.store = Some(store.into());
            r
        };
        let quern = vec![
            on(Row::throughput("e2e", "batch", 60_000, 1.0), "sqlite"),
            on(Row::throughput("e2e", "batch", 20_000, 1.0), "postgres"),
        ];
        let bullmq = on(Row::throughput("e2e", "w", 6_000, 1.0), "redis");
        let graphile = on(Row::throughput("e2e", "w", 10_000, 1.0), "postgres");
        let out = merge(
            quern,
            vec![Row { system: "graphile".into(), ..graphile }, Row { system: "bullmq".into(), ..bullmq }],
        );
        let shown: Vec<_> = out.iter().map(|r| (r.system_label(), r.quern_ratio)).collect();
        assert_eq!(
            shown,
            [
                ("quern".to_owned(), None),
                ("bullmq".to_owned(), Some(10.0)),
                ("quern (pg)".to_owned(), None),
                ("graphile".to_owned(), Some(2.0))
            ]
        );
    }

    #[test]
    fn rows_round_trip_through_json() {
        let mut row = Row::throughput("e2e", "2 worker processes", 20_000, 4.0);
        row.system = "bullmq".into();
        row.busiest_thread = Some(("node".into(), 0.93));
        let text = serde_json::json!({"rows": [row], "versions": {"bullmq": "6.7.0"}}).to_string();
        let run: super::PeerRun = serde_json::from_str(&text).expect("a peers file");
        assert_eq!(run.rows[0].system, "bullmq");
        assert_eq!(run.rows[0].tasks_per_s, Some(5_000.0));
        assert_eq!(run.versions["bullmq"], "6.7.0");
    }

    #[test]
    fn peers_follow_their_scenario() {
        let q = vec![Row::new("e2e", "batch"), Row::new("latency", "ack"), Row::new("latency", "result")];
        let w = "2 worker processes";
        let out = merge(q, vec![peer("rq", "shell", w), peer("celery", "latency", w), peer("celery", "e2e", w)]);
        let order: Vec<_> = out.iter().map(|r| (r.system.as_str(), r.scenario.as_str())).collect();
        assert_eq!(
            order,
            [
                ("quern", "e2e"),
                ("celery", "e2e"),
                ("quern", "latency"),
                ("quern", "latency"),
                ("celery", "latency"),
                ("rq", "shell")
            ]
        );
    }
}
