//! The seam for other task queues (Celery, RQ, arq, Dramatiq, BullMQ).
//!
//! Each peer will run the same scenarios as far as it can (by its own small
//! script, in its own venv or node_modules) and hand back [`Row`]s whose
//! `system` names it; [`merge`] puts them beside Quern's so the table and the
//! JSON carry every system's figure for a scenario together. The peers'
//! own runner (`bench/peers/run.sh`) writes `{"rows": [Row, …], "versions":
//! {…}}`; [`load`] reads that file for `--peers`.

use crate::{Result, Row};
use std::path::Path;

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
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: not a peers file: {e}", path.display()))?)
}

/// Quern's rows, each scenario's followed by the peers' rows of that
/// scenario (variants differ between systems, so scenarios are what match);
/// peers' rows of scenarios Quern did not run come last.
pub fn merge(quern: Vec<Row>, peers: Vec<Row>) -> Vec<Row> {
    let mut out = Vec::with_capacity(quern.len() + peers.len());
    let mut rest = peers;
    let mut quern = quern.into_iter().peekable();
    while let Some(row) = quern.next() {
        let last_of_scenario = quern.peek().is_none_or(|next| next.scenario != row.scenario);
        let scenario = row.scenario.clone();
        out.push(row);
        if last_of_scenario {
            let (same, other): (Vec<Row>, Vec<Row>) = rest.into_iter().partition(|p| p.scenario == scenario);
            rest = other;
            out.extend(same);
        }
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::merge;
    use crate::Row;

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
        let peer = |system: &str, scenario: &str| {
            let mut r = Row::new(scenario, "2 worker processes");
            r.system = system.into();
            r
        };
        let out = merge(q, vec![peer("rq", "shell"), peer("celery", "latency"), peer("celery", "e2e")]);
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
