//! Tokens in PostgreSQL: one row each, the secret's hash and never the
//! secret.
//!
//! Invariant: a name is used once; revoking keeps the row (and its first
//! revocation time).

use super::Tx;
use crate::error::backend;
use crate::{Result, StoreError, TokenRecord};
use quern_core::auth::Role;

const COLUMNS: &str =
    "name, hash, role, queues, approve, shell, created_at, expires_at, revoked_at, rate_per_s, max_body_bytes";

fn record(r: &tokio_postgres::Row) -> TokenRecord {
    TokenRecord {
        name: r.get(0),
        hash: r.get(1),
        // A role this build does not know reads as the least one.
        role: r.get::<_, &str>(2).parse().unwrap_or(Role::Viewer),
        queues: serde_json::from_str(r.get(3)).unwrap_or_default(),
        approve: r.get(4),
        shell: r.get(5),
        created_at: r.get(6),
        expires_at: r.get(7),
        revoked_at: r.get(8),
        rate_per_s: r.get::<_, Option<i32>>(9).map(i32::unsigned_abs),
        max_body_bytes: r.get::<_, Option<i64>>(10).map(i64::unsigned_abs),
    }
}

pub(super) async fn list(tx: &mut Tx) -> Result<Vec<TokenRecord>> {
    let rows = tx.query(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name"), &[]).await?;
    Ok(rows.iter().map(record).collect())
}

pub(super) async fn create(tx: &mut Tx, t: TokenRecord) -> Result<()> {
    let queues = serde_json::to_string(&t.queues).map_err(backend)?;
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[
                &t.name,
                &t.hash,
                &t.role.as_str(),
                &queues,
                &t.approve,
                &t.shell,
                &t.created_at,
                &t.expires_at,
                &t.revoked_at,
                &t.rate_per_s.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                &t.max_body_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::TokenExists(t.name));
    }
    Ok(())
}

pub(super) async fn revoke(tx: &mut Tx, name: String, at: i64) -> Result<Option<TokenRecord>> {
    tx.execute("UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL", &[&name, &at]).await?;
    let row = tx.query_opt(&format!("SELECT {COLUMNS} FROM tokens WHERE name = $1"), &[&name]).await?;
    Ok(row.as_ref().map(record))
}
