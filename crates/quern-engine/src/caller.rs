//! Who is calling: the principal every engine operation takes, so that
//! every door (HTTP, and the doors to come) hands the engine the same
//! thing to decide on.
//!
//! Invariant: a door never decides access itself; it names the caller (from
//! the request's token, through [`crate::Engine::authenticate`]) and the
//! engine admits it or not.

use quern_core::Millis;
use quern_core::auth::{Permission, Role, scope_covers};
use std::fmt;
use std::sync::Arc;

/// The principal behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A request without a token, on a server that does not require one:
    /// it may do everything (zero setup on loopback).
    Anonymous,
    /// The server itself: the schedules file applied at start, the
    /// scheduler's firings, the CLI working on a data directory offline.
    Server,
    /// A request with a valid token.
    Token(Arc<Principal>),
}

/// What a token lets its bearer do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name: who did it, in logs and histories.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The queue globs it is confined to; none: every queue.
    pub queues: Vec<String>,
    /// It may decide `approval` tasks.
    pub approve: bool,
    /// It may submit `shell` tasks.
    pub shell: bool,
    /// When it stops working, if ever.
    pub expires_at: Option<Millis>,
    /// The most requests a second it may send, if limited.
    pub rate_per_s: Option<u32>,
    /// The largest request body it may send, if limited.
    pub max_body_bytes: Option<u64>,
}

impl Caller {
    /// Whether the caller holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Caller::Anonymous | Caller::Server => true,
            Caller::Token(t) => {
                t.role.grants(permission)
                    || (permission == Permission::Approve && t.approve)
                    || (permission == Permission::Shell && t.shell)
            }
        }
    }

    /// Whether the caller's scope covers `queue`.
    pub fn covers(&self, queue: &str) -> bool {
        match self {
            Caller::Token(t) => scope_covers(&t.queues, queue),
            Caller::Anonymous | Caller::Server => true,
        }
    }

    /// The queue globs the caller is confined to, when it is.
    pub fn scope(&self) -> Option<&[String]> {
        match self {
            Caller::Token(t) if !t.queues.is_empty() => Some(&t.queues),
            _ => None,
        }
    }

    /// Who, as the audit log names it: the token's name, `anonymous` or
    /// `server`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Server => "server".into(),
            Caller::Token(t) => t.name.clone(),
        }
    }

    /// The largest body the caller may send, when its token says.
    pub fn max_body_bytes(&self) -> Option<u64> {
        match self {
            Caller::Token(t) => t.max_body_bytes,
            Caller::Anonymous | Caller::Server => None,
        }
    }

    /// The token's name, when the caller has one: who made a move, in a
    /// task's history.
    pub fn token_name(&self) -> Option<String> {
        match self {
            Caller::Token(t) => Some(t.name.clone()),
            Caller::Anonymous | Caller::Server => None,
        }
    }

    /// The engine's own writes come from [`Caller::Server`] only.
    pub fn is_server(&self) -> bool {
        matches!(self, Caller::Server)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::Server => f.write_str("server"),
            Caller::Token(t) => write!(f, "token {} ({})", t.name, t.role),
        }
    }
}
