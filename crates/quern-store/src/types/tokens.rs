//! API tokens as stored: a name, a role, a scope, and only a hash of the
//! secret.
//!
//! Invariant: no secret is ever stored; a record carries the SHA-256 of its
//! secret and nothing from which the secret can be read back.

use quern_core::Millis;
use quern_core::auth::Role;

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its name, unique for ever (a revoked token keeps its name).
    pub name: String,
    /// The lowercase hex SHA-256 of the secret.
    pub hash: String,
    /// What it may do.
    pub role: Role,
    /// The queue globs it is confined to; none: every queue.
    pub queues: Vec<String>,
    /// It may decide `approval` tasks (whatever its role).
    pub approve: bool,
    /// It may submit `shell` tasks (whatever its role).
    pub shell: bool,
    /// When it was made.
    pub created_at: Millis,
    /// When it stops working, if ever.
    pub expires_at: Option<Millis>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Millis>,
    /// The most requests a second it may send, if limited.
    pub rate_per_s: Option<u32>,
    /// The largest request body it may send, in bytes, if limited.
    pub max_body_bytes: Option<u64>,
}
