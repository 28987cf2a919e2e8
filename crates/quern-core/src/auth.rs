//! Who may do what: the roles a token has, the permissions each grants,
//! and the queue scopes that confine a token.
//!
//! Invariant: this table is the only place a role becomes permissions;
//! every door asks the engine, and the engine asks [`Role::grants`].

use crate::error::{ValidationError, ValidationResult};
use crate::event::glob_match;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest token name, in bytes.
pub const MAX_TOKEN_NAME_LEN: usize = 100;
/// The most queue globs one token may be confined to.
pub const MAX_TOKEN_QUEUES: usize = 100;
/// What every token secret starts with, so that secret scanners find a
/// leaked one.
pub const TOKEN_PREFIX: &str = "qrn_";

/// What a token is for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads tasks, workflows, events, queues, workers.
    Viewer,
    /// Reads, and submits, cancels and retries tasks, submits and cancels
    /// workflows, publishes events.
    Producer,
    /// Reads, and leases, heartbeats, completes and declares task types.
    Worker,
    /// Everything: queues, schedules, webhooks, tokens, and every other role's
    /// permissions.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Producer, Role::Worker, Role::Admin];

    /// The role as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// Whether the role alone grants `permission` ([`Permission::Approve`]
    /// and [`Permission::Shell`] are given to a token on their own too).
    pub fn grants(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Role::Admin, _)
                | (_, Permission::Read)
                | (Role::Producer, Permission::Submit)
                | (Role::Worker, Permission::Work)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            ValidationError::new("role", format!("must be viewer, producer, worker or admin (got {s:?})"))
        })
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read tasks, workflows, events, queues, workers, task types.
    Read,
    /// Submit, cancel and retry tasks; submit and cancel workflows; publish
    /// events.
    Submit,
    /// Lease, heartbeat, complete; declare task types.
    Work,
    /// Decide an `approval` task.
    Approve,
    /// Submit a `shell` task (run a command on a worker).
    Shell,
    /// Pause queues; manage schedules, webhooks and tokens.
    Admin,
}

impl Permission {
    /// The permission as `docs/security.md` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Submit => "submit",
            Permission::Work => "work",
            Permission::Approve => "approve",
            Permission::Shell => "shell",
            Permission::Admin => "admin",
        }
    }
}

/// Whether a token confined to `scope` (queue globs; none: every queue)
/// covers `queue`.
pub fn scope_covers(scope: &[String], queue: &str) -> bool {
    scope.is_empty() || scope.iter().any(|g| glob_match(g, queue))
}

/// Checks a token's name: 1 to 100 characters of A-Z, a-z, 0-9, `_`, `.`,
/// `:` or `-`.
pub fn check_token_name(name: &str) -> ValidationResult<()> {
    crate::spec::check_identifier("name", name, MAX_TOKEN_NAME_LEN)
}

/// Checks a token's queue globs: queue names that may hold `*` and `?`.
pub fn check_token_queues(queues: &[String]) -> ValidationResult<()> {
    if queues.len() > MAX_TOKEN_QUEUES {
        return Err(ValidationError::new("queues", format!("at most {MAX_TOKEN_QUEUES} globs")));
    }
    for q in queues {
        let plain = q.replace(['*', '?'], "x");
        crate::spec::check_identifier("queues", &plain, crate::spec::MAX_QUEUE_LEN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_grants_what_the_matrix_says() {
        use Permission::*;
        let table = [
            (Role::Viewer, [Read].as_slice()),
            (Role::Producer, &[Read, Submit]),
            (Role::Worker, &[Read, Work]),
            (Role::Admin, &[Read, Submit, Work, Approve, Shell, Admin]),
        ];
        for (role, granted) in table {
            for p in [Read, Submit, Work, Approve, Shell, Admin] {
                assert_eq!(role.grants(p), granted.contains(&p), "{role} {p:?}");
            }
        }
    }

    #[test]
    fn scopes_are_queue_globs() {
        let scope = vec!["billing.*".to_owned()];
        assert!(scope_covers(&scope, "billing.eu"));
        assert!(!scope_covers(&scope, "hr.payroll"));
        assert!(scope_covers(&[], "anything"));
        assert!(check_token_queues(&scope).is_ok());
        assert!(check_token_queues(&["bad queue".to_owned()]).is_err());
        assert_eq!("admin".parse::<Role>().ok(), Some(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
