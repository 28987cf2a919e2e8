//! The history a task's row tells while it is compact, the same in every
//! backend.
//!
//! Invariant: a row stays compact only on the common path (submitted, maybe
//! delayed and released, leased once, ended by its worker), which the row's
//! own columns tell; any other move first writes this history out as
//! entries, then appends itself.

use quern_core::{HistoryEntry, Millis, Status, Task};

/// The history a compact row tells: submitted (maybe delayed and then
/// released), leased once, ended by its worker.
pub(crate) fn compact_history(task: &Task) -> Vec<HistoryEntry> {
    let delayed = task.run_at > task.created_at;
    let mut out = vec![HistoryEntry {
        at: task.created_at,
        from: None,
        to: if delayed { Status::Pending } else { Status::Queued },
        attempt: 0,
        worker: None,
        actor: "client".to_owned(),
        note: None,
        by: None,
    }];
    if delayed && task.status != Status::Pending {
        out.push(entry(task.run_at, Status::Pending, Status::Queued, 0, None, "server", Some("run_at reached")));
    }
    if let Some(started) = task.started_at {
        out.push(entry(started, Status::Queued, Status::Running, task.attempt, task.worker.clone(), "worker", None));
        if let Some(finished) = task.finished_at {
            let note = task.error.as_ref().map(|e| e.message.as_str());
            out.push(entry(finished, Status::Running, task.status, task.attempt, task.worker.clone(), "worker", note));
        }
    }
    out
}

/// One history entry.
pub(crate) fn entry(
    at: Millis,
    from: Status,
    to: Status,
    attempt: u32,
    worker: Option<String>,
    actor: &str,
    note: Option<&str>,
) -> HistoryEntry {
    HistoryEntry {
        at,
        from: Some(from),
        to,
        attempt,
        worker,
        actor: actor.to_owned(),
        note: note.map(str::to_owned),
        by: None,
    }
}

/// The first entry of a task that waits for its dependencies (off the
/// compact path from the start: its release is a move the row alone could
/// not tell).
pub(crate) fn waiting(at: Millis) -> HistoryEntry {
    HistoryEntry {
        at,
        from: None,
        to: Status::Pending,
        attempt: 0,
        worker: None,
        actor: "client".to_owned(),
        note: Some("waiting for its dependencies".to_owned()),
        by: None,
    }
}
