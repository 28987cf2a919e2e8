//! Tokens in SQLite: one row each, the secret's hash and never the secret.
//!
//! Invariant: a name is used once; revoking keeps the row (and its first
//! revocation time).

use crate::error::backend;
use crate::{Result, StoreError, TokenRecord};
use quern_core::auth::Role;
use rusqlite::{Connection, OptionalExtension, params};

const COLUMNS: &str =
    "name, hash, role, queues, approve, shell, created_at, expires_at, revoked_at, rate_per_s, max_body_bytes";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = r.get(2)?;
    let queues: String = r.get(3)?;
    Ok(TokenRecord {
        name: r.get(0)?,
        hash: r.get(1)?,
        // A role this build does not know reads as the least one.
        role: role.parse().unwrap_or(Role::Viewer),
        queues: serde_json::from_str(&queues).unwrap_or_default(),
        approve: r.get(4)?,
        shell: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        rate_per_s: r.get(9)?,
        max_body_bytes: r.get::<_, Option<i64>>(10)?.map(i64::unsigned_abs),
    })
}

pub(super) fn list(conn: &Connection) -> Result<Vec<TokenRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name")).map_err(backend)?;
    let rows = stmt.query_map([], row).map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

pub(super) fn create(conn: &Connection, t: &TokenRecord) -> Result<()> {
    let queues = serde_json::to_string(&t.queues).map_err(backend)?;
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (name) DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                t.name,
                t.hash,
                t.role.as_str(),
                queues,
                t.approve,
                t.shell,
                t.created_at,
                t.expires_at,
                t.revoked_at,
                t.rate_per_s,
                t.max_body_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            ])
        })
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::TokenExists(t.name.clone()));
    }
    Ok(())
}

pub(super) fn revoke(conn: &Connection, name: &str, at: i64) -> Result<Option<TokenRecord>> {
    conn.execute("UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL", params![name, at])
        .map_err(backend)?;
    conn.query_row(&format!("SELECT {COLUMNS} FROM tokens WHERE name = ?1"), [name], row).optional().map_err(backend)
}
