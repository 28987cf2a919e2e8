//! How a running attempt ends: the one decision between success, retry and
//! failure, shared by every backend so that they cannot disagree.
//!
//! Invariant: a cancel asked for while running wins over any outcome; a
//! retry is given only while attempts are left (a released attempt is given
//! back and does not count); a retry due now skips `pending`.

use quern_core::{ErrorKind, Millis, Outcome, RetryPolicy, Status, TaskError, jitter_unit};
use serde_json::value::RawValue;
use uuid::Uuid;

/// How an attempt ended, as the store sees it.
pub(crate) enum AttemptEnd {
    Succeeded(Box<RawValue>),
    Failed { error: TaskError, retry: bool },
    TimedOut,
    Lost,
    Released,
}

impl AttemptEnd {
    /// A worker's report. A worker that enforced the timeout itself reports
    /// what the server's own timer would have decided: the same end.
    pub(crate) fn reported(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { result } => AttemptEnd::Succeeded(result),
            Outcome::Failed { error, .. } if error.kind == ErrorKind::Timeout => AttemptEnd::TimedOut,
            Outcome::Failed { error, retry } => {
                AttemptEnd::Failed { retry: retry && error.kind != ErrorKind::Rejected, error }
            }
            Outcome::Released => AttemptEnd::Released,
        }
    }
}

/// What the decision needs of the running attempt.
pub(crate) struct Running<'a> {
    pub(crate) id: Uuid,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) retry: &'a RetryPolicy,
    pub(crate) cancel_requested: bool,
    pub(crate) worker: &'a str,
    pub(crate) lease_ms: u64,
    pub(crate) timeout_ms: Option<u64>,
    /// The task's history is still told by its row alone.
    pub(crate) compact: bool,
}

/// The attempt's end, decided.
pub(crate) struct Decision {
    /// Where the task goes.
    pub(crate) to: Status,
    /// The result, on success.
    pub(crate) result: Option<Box<RawValue>>,
    /// The error, on anything else.
    pub(crate) error: Option<TaskError>,
    /// When a task that goes back runs again.
    pub(crate) run_at: Millis,
    /// 1 when the attempt was given back (it does not count), else 0.
    pub(crate) given_back: u32,
    /// The history entry's note.
    pub(crate) note: Option<String>,
    /// The row alone still tells the history: no entry is written.
    pub(crate) stays_compact: bool,
    /// An attempt ended with an error and the task goes back for another.
    pub(crate) retrying: bool,
}

/// Decides how attempt `r` ends at `now`; `actor` is `worker` for a report,
/// `server` for a timer.
pub(crate) fn decide(r: &Running<'_>, end: AttemptEnd, now: Millis, actor: &str) -> Decision {
    let attempts_left = r.attempt < r.max_attempts;
    let released = matches!(end, AttemptEnd::Released);
    let backoff = || {
        now.saturating_add(crate::stored::ms_i64(r.retry.delay_ms(r.attempt, jitter_unit(r.id.as_u128(), r.attempt))))
    };
    let (to, result, error, retry_at) = if r.cancel_requested {
        let error = TaskError::new(ErrorKind::Cancelled, "cancelled by a client while running");
        (Status::Cancelled, None, Some(error), None)
    } else {
        match end {
            AttemptEnd::Succeeded(result) => (Status::Succeeded, Some(result), None, None),
            AttemptEnd::Failed { error, retry } if retry && attempts_left => {
                (Status::Pending, None, Some(error), Some(backoff()))
            }
            AttemptEnd::Failed { error, .. } => (Status::Failed, None, Some(error), None),
            AttemptEnd::TimedOut => {
                let message =
                    format!("attempt {} ran past its timeout of {} ms", r.attempt, r.timeout_ms.unwrap_or_default());
                let error = TaskError::new(ErrorKind::Timeout, message);
                if attempts_left {
                    (Status::Pending, None, Some(error), Some(backoff()))
                } else {
                    (Status::TimedOut, None, Some(error), None)
                }
            }
            AttemptEnd::Lost => {
                let message = format!("lease of worker {} expired: no heartbeat within {} ms", r.worker, r.lease_ms);
                let error = TaskError::new(ErrorKind::Lost, message);
                if attempts_left {
                    (Status::Queued, None, Some(error), Some(now))
                } else {
                    (Status::Failed, None, Some(error), None)
                }
            }
            AttemptEnd::Released => (Status::Queued, None, None, Some(now)),
        }
    };
    let given_back = u32::from(released && to == Status::Queued);
    let to = if to == Status::Pending && retry_at.is_some_and(|at| at <= now) { Status::Queued } else { to };
    let stays_compact =
        r.compact && to.is_terminal() && actor == "worker" && matches!(to, Status::Succeeded | Status::Failed);
    let note = if given_back == 1 {
        Some("released unfinished by its worker; the attempt does not count".to_owned())
    } else {
        error.as_ref().map(|e| e.message.clone())
    };
    let retrying = error.is_some() && !to.is_terminal();
    Decision { to, result, error, run_at: retry_at.unwrap_or(now), given_back, note, stays_compact, retrying }
}
