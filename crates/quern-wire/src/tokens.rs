//! API tokens: making one (the secret is shown once), listing, revoking.

use quern_core::auth::Role;
use quern_core::time::{Millis, rfc3339};
use serde::{Deserialize, Serialize};

/// `POST /v1/tokens`: a new token.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Its name, unique for ever: who did what, in logs and histories.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The queue globs it is confined to (`billing.*`); none: every queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// It may decide `approval` tasks, whatever its role.
    #[serde(default)]
    pub approve: bool,
    /// It may submit `shell` tasks, whatever its role.
    #[serde(default)]
    pub shell: bool,
    /// It stops working this long after it is made; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// The most requests a second it may send (over it: 429); unlimited
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<u32>,
    /// The largest request body it may send, in bytes (over it: 413); the
    /// server's limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// A token as the API shows it: never its secret.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The queue globs it is confined to; empty: every queue.
    pub queues: Vec<String>,
    /// It may decide `approval` tasks.
    pub approve: bool,
    /// It may submit `shell` tasks.
    pub shell: bool,
    /// When it was made.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    /// When it stops working, if ever.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Millis>,
    /// When it was revoked, if it was.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<Millis>,
    /// The most requests a second it may send, if limited.
    pub rate_per_s: Option<u32>,
    /// The largest request body it may send, if limited.
    pub max_body_bytes: Option<u64>,
}

/// The answer to making a token: the secret, shown this once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The secret (`qrn_…`): send it as `Authorization: Bearer …`. Only its
    /// hash is kept; it cannot be shown again.
    pub token: String,
    /// The token.
    #[serde(flatten)]
    pub view: TokenView,
}

/// `GET /v1/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Every token, revoked ones too, by name.
    pub tokens: Vec<TokenView>,
}
