//! The status of a task and the table of moves between statuses.
//!
//! Invariant: a task's status changes only along [`Status::can_move`], and a
//! terminal status never changes again except by an explicit manual retry
//! ([`Status::can_manual_retry`]), which starts a new attempt and is recorded in
//! the task's history. Every backend checks the table before writing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a task stands. Which component moves it in and out of each status is
/// said on each variant.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not runnable yet: delayed (`run_at` in the future), waiting out a retry
    /// backoff, or waiting for dependencies. The store's timer moves it to
    /// `queued` when its time comes; a cancel moves it to `cancelled`; a
    /// dependency that can no longer hold moves it to `skipped`.
    Pending,
    /// Ready to run. A worker's lease moves it to `running`; a cancel to
    /// `cancelled`. An `approval` task waits here for a person's decision,
    /// which moves it to `succeeded` or `failed` (or the server to
    /// `timed_out` when its timeout passes first).
    Queued,
    /// Leased by a worker. The worker's completion moves it to `succeeded` or
    /// `failed` (or back to `pending`/`queued` for a retry); the server moves it
    /// to `timed_out` past its timeout, back to `queued` when its lease is lost,
    /// and to `cancelled` when a requested cancel is acknowledged.
    Running,
    /// Terminal: the handler returned a result.
    Succeeded,
    /// Terminal: the handler failed and no attempts are left (or the failure
    /// was not retryable, or the lease was lost on the last attempt).
    Failed,
    /// Terminal: cancelled by a client.
    Cancelled,
    /// Terminal: ran past its timeout on its last attempt.
    TimedOut,
    /// Terminal: its dependencies' conditions can no longer hold.
    Skipped,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::TimedOut,
        Status::Skipped,
    ];

    /// The name used on the wire and in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Skipped => "skipped",
        }
    }

    /// True for the statuses a task never leaves on its own.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled | Status::TimedOut | Status::Skipped)
    }

    /// The statuses a new task may start in.
    pub const fn can_start_in(self) -> bool {
        matches!(self, Status::Pending | Status::Queued)
    }

    /// The transition table: may a task move from `self` to `to`?
    pub const fn can_move(self, to: Status) -> bool {
        use Status::{Cancelled, Failed, Pending, Queued, Running, Skipped, Succeeded, TimedOut};
        matches!(
            (self, to),
            (Pending, Queued | Cancelled | Skipped)
                | (Queued, Running | Cancelled | Skipped | Succeeded | Failed | TimedOut)
                | (Running, Succeeded | Failed | Cancelled | TimedOut | Pending | Queued)
        )
    }

    /// May a client ask for a new attempt of a task in this status?
    pub const fn can_manual_retry(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status `{0}` (expected one of pending, queued, running, succeeded, failed, cancelled, timed_out, skipped)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).ok(), Some(format!("\"{}\"", s.as_str())));
        }
        assert!("done".parse::<Status>().is_err());
    }

    #[test]
    fn table_is_exactly_the_documented_one() {
        use Status::*;
        let allowed = [
            (Pending, Queued),
            (Pending, Cancelled),
            (Pending, Skipped),
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Skipped),
            (Queued, Succeeded),
            (Queued, Failed),
            (Queued, TimedOut),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
            (Running, Pending),
            (Running, Queued),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(from.can_move(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn manual_retry_only_from_unsuccessful_ends() {
        let retryable: Vec<_> = Status::ALL.into_iter().filter(|s| s.can_manual_retry()).collect();
        assert_eq!(retryable, [Status::Failed, Status::Cancelled, Status::TimedOut]);
    }

    fn any_status() -> impl Strategy<Value = Status> {
        prop::sample::select(Status::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn terminal_statuses_never_move(from in any_status(), to in any_status()) {
            if from.is_terminal() {
                prop_assert!(!from.can_move(to));
            }
        }

        #[test]
        fn no_status_moves_to_itself(s in any_status()) {
            prop_assert!(!s.can_move(s));
        }

        #[test]
        fn every_walk_along_the_table_ends_or_can_go_on(
            steps in prop::collection::vec(0usize..8, 0..64)
        ) {
            // From any start status, a walk that picks allowed moves never
            // reaches a non-terminal status with no way out.
            let mut s = Status::Queued;
            for pick in steps {
                let next: Vec<_> = Status::ALL.into_iter().filter(|t| s.can_move(*t)).collect();
                if next.is_empty() {
                    prop_assert!(s.is_terminal(), "{s} is stuck");
                    break;
                }
                s = next[pick % next.len()];
            }
        }
    }
}
