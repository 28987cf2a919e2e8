//! The audit log: who did what to what, and when, for every change an
//! operator may have to explain.
//!
//! Invariant: entries are only ever appended (and dropped by retention);
//! nothing rewrites one.

use quern_core::Millis;

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: Millis,
    /// Who: a token's name, `anonymous` or `server`.
    pub actor: String,
    /// What, dotted: `token.create`, `queue.pause`, `task.cancel`.
    pub action: String,
    /// To what: a token's, queue's, schedule's or webhook's name, a task's
    /// or workflow's id.
    pub target: String,
    /// More, as JSON text (a role, an approval's decision).
    pub detail: Option<String>,
}

/// An entry as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its place: larger is later.
    pub seq: u64,
    /// The entry.
    pub entry: AuditEntry,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries before this place (the previous page's last `seq`).
    pub before: Option<u64>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only actions starting with this (`token.`, `queue.pause`).
    pub action: Option<String>,
    /// At most this many.
    pub limit: usize,
}
