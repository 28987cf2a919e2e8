//! API tokens: who a request's bearer token names, and the operations that
//! make, list and revoke tokens.
//!
//! Invariants: a secret is shown once, when it is made, and never stored
//! (only its SHA-256); tokens are checked from memory, read again from the
//! store at most once per [`TOKENS_FRESH_FOR`], so a token made or revoked
//! through any node holds on every node within that long.

use super::Refresh;
use crate::caller::{Caller, Principal};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use quern_core::Millis;
use quern_core::auth::{Role, TOKEN_PREFIX, check_token_name, check_token_queues};
use quern_core::spec::hex;
use quern_store::TokenRecord;
use quern_wire::tokens::{CreateToken, TokenCreated, TokenView};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long the tokens read from the store are taken as current.
pub(crate) const TOKENS_FRESH_FOR: Duration = Duration::from_secs(1);
/// The name of the admin token a bootstrap file makes.
const BOOTSTRAP_NAME: &str = "bootstrap";
/// The longest a token may live: ten years.
const MAX_EXPIRY_MS: u64 = 10 * 366 * 24 * 3_600_000;

/// The tokens this node knows, by the hash of their secret.
pub(crate) struct Tokens {
    by_hash: RwLock<HashMap<String, Known>>,
    /// The request budget of each rate-limited token, by name (per node).
    buckets: Mutex<HashMap<String, Bucket>>,
    read: Refresh,
}

#[derive(Clone)]
struct Known {
    principal: Arc<Principal>,
    revoked: bool,
}

impl Default for Tokens {
    fn default() -> Self {
        Self { by_hash: RwLock::default(), buckets: Mutex::default(), read: Refresh::new(TOKENS_FRESH_FOR) }
    }
}

impl Tokens {
    fn adopt(&self, records: Vec<TokenRecord>) {
        let map = records.into_iter().map(|r| (r.hash.clone(), known(&r))).collect();
        if let Ok(mut by_hash) = self.by_hash.write() {
            *by_hash = map;
        }
    }

    fn insert(&self, record: &TokenRecord) {
        if let Ok(mut by_hash) = self.by_hash.write() {
            by_hash.insert(record.hash.clone(), known(record));
        }
    }

    fn get(&self, hash: &str) -> Option<Known> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }
}

fn known(r: &TokenRecord) -> Known {
    let principal = Principal {
        name: r.name.clone(),
        role: r.role,
        queues: r.queues.clone(),
        approve: r.approve,
        shell: r.shell,
        expires_at: r.expires_at,
        rate_per_s: r.rate_per_s,
        max_body_bytes: r.max_body_bytes,
    };
    Known { principal: Arc::new(principal), revoked: r.revoked_at.is_some() }
}

/// The lowercase hex SHA-256 of a secret: what the store keeps.
fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: the prefix and 256 random bits in hex.
fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| EngineError::Store(quern_store::StoreError::Backend(e.to_string())))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

fn view(r: TokenRecord) -> TokenView {
    TokenView {
        name: r.name,
        role: r.role,
        queues: r.queues,
        approve: r.approve,
        shell: r.shell,
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        rate_per_s: r.rate_per_s,
        max_body_bytes: r.max_body_bytes,
    }
}

/// A token bucket: up to `rate` requests at once, refilled at `rate` a
/// second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests it may send now, in thousandths.
    milli: u64,
    /// When it was last refilled.
    at: Millis,
}

impl Bucket {
    /// Takes one request at `now` from a bucket of `rate` a second; the
    /// milliseconds until one is there when it is empty.
    fn take(&mut self, rate: u32, now: Millis) -> std::result::Result<(), u64> {
        let full = u64::from(rate) * 1_000;
        let elapsed = u64::try_from(now.saturating_sub(self.at)).unwrap_or(0);
        self.milli = full.min(self.milli.saturating_add(elapsed.saturating_mul(u64::from(rate))));
        self.at = now;
        if self.milli >= 1_000 {
            self.milli -= 1_000;
            return Ok(());
        }
        let missing = 1_000 - self.milli;
        Err(missing.div_ceil(u64::from(rate.max(1))).max(1))
    }
}

impl Engine {
    /// The caller a request's bearer token names: [`Caller::Anonymous`]
    /// without one where tokens are not required; a refusal for a missing
    /// (where required), unknown, expired or revoked token.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller> {
        let Some(secret) = bearer else {
            if self.auth_required {
                return Err(EngineError::Unauthorized(
                    "this server requires a token: send `Authorization: Bearer qrn_…`".into(),
                ));
            }
            return Ok(Caller::Anonymous);
        };
        let refused = || EngineError::Unauthorized("the token is not valid: unknown, expired or revoked".into());
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(refused());
        }
        let hash = hash(secret);
        // Revocations through other nodes arrive with the next read; while
        // the store cannot be read, the tokens known go on working.
        if !self.tokens.read.is_fresh()
            && let Err(e) = self.read_tokens().await
        {
            if self.tokens.get(&hash).is_none() {
                return Err(e);
            }
            tracing::warn!(error = %e, "tokens not read again; using those known");
        }
        let known = self.tokens.get(&hash).ok_or_else(refused)?;
        if known.revoked || known.principal.expires_at.is_some_and(|at| at <= self.now()) {
            return Err(refused());
        }
        if let Some(rate) = known.principal.rate_per_s {
            self.spend(&known.principal.name, rate)?;
        }
        Ok(Caller::Token(known.principal))
    }

    /// Counts one request of a rate-limited token; refuses it when its
    /// bucket is empty, saying when to come back.
    fn spend(&self, name: &str, rate: u32) -> Result<()> {
        let now = self.now();
        let Ok(mut buckets) = self.tokens.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry(name.to_owned()).or_insert(Bucket { milli: u64::from(rate) * 1_000, at: now });
        bucket.take(rate, now).map_err(|retry_after_ms| EngineError::RateLimited {
            message: format!("token {name} may send {rate} requests a second"),
            retry_after_ms,
        })
    }

    /// Adopts the tokens stored (made or revoked through any node), at most
    /// once per [`TOKENS_FRESH_FOR`].
    async fn read_tokens(&self) -> Result<()> {
        let read = async {
            self.tokens.adopt(self.store.tokens().await?);
            Ok(())
        };
        self.tokens.read.run(read).await
    }

    /// Makes a token; the answer holds its secret, shown this once.
    pub async fn create_token(&self, caller: &Caller, req: CreateToken) -> Result<TokenCreated> {
        self.admit(caller, "create_token")?;
        let created = self.make_token(req).await?;
        let detail = serde_json::json!({"role": created.view.role, "queues": created.view.queues});
        self.record(caller, "token.create", &created.view.name, Some(detail)).await;
        Ok(created)
    }

    async fn make_token(&self, req: CreateToken) -> Result<TokenCreated> {
        check_token_name(&req.name)?;
        check_token_queues(&req.queues)?;
        if req.rate_per_s == Some(0) {
            return Err(EngineError::Field { field: "rate_per_s", message: "must be at least 1".into() });
        }
        if req.max_body_bytes.is_some_and(|n| n < 1_024) {
            return Err(EngineError::Field { field: "max_body_bytes", message: "must be at least 1024".into() });
        }
        if req.expires_in_ms.is_some_and(|ms| ms == 0 || ms > MAX_EXPIRY_MS) {
            let message = format!("must be 1 to {MAX_EXPIRY_MS} ms (ten years)");
            return Err(EngineError::Field { field: "expires_in_ms", message });
        }
        let secret = new_secret()?;
        let now = self.now();
        let record = TokenRecord {
            name: req.name,
            hash: hash(&secret),
            role: req.role,
            queues: req.queues,
            approve: req.approve,
            shell: req.shell,
            created_at: now,
            expires_at: req.expires_in_ms.map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
            revoked_at: None,
            rate_per_s: req.rate_per_s,
            max_body_bytes: req.max_body_bytes,
        };
        self.store.create_token(record.clone()).await?;
        self.tokens.insert(&record);
        Ok(TokenCreated { token: secret, view: view(record) })
    }

    /// Every token, revoked ones too.
    pub async fn tokens(&self, caller: &Caller) -> Result<Vec<TokenView>> {
        self.admit(caller, "tokens")?;
        Ok(self.store.tokens().await?.into_iter().map(view).collect())
    }

    /// Revokes a token: every node refuses it within [`TOKENS_FRESH_FOR`].
    pub async fn revoke_token(&self, caller: &Caller, name: &str) -> Result<TokenView> {
        self.admit(caller, "revoke_token")?;
        let record = self.store.revoke_token(name.to_owned(), self.now()).await?;
        let record = record.ok_or_else(|| EngineError::NotFound(format!("no token named {name:?}")))?;
        self.tokens.insert(&record);
        self.record(caller, "token.revoke", name, None).await;
        Ok(view(record))
    }

    /// Makes sure the admin token whose secret is `secret` exists (a
    /// container's first token, given as a file): made as `bootstrap` when
    /// no token has this secret.
    pub async fn bootstrap_token(&self, secret: &str) -> Result<()> {
        let secret = secret.trim();
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() < TOKEN_PREFIX.len() + 32 {
            return Err(EngineError::Field {
                field: "bootstrap_token_file",
                message: format!("must hold a secret of `{TOKEN_PREFIX}` and at least 32 more characters"),
            });
        }
        let hash = hash(secret);
        if self.store.tokens().await?.iter().any(|t| t.hash == hash) {
            return Ok(());
        }
        let record = TokenRecord {
            name: BOOTSTRAP_NAME.to_owned(),
            hash,
            role: Role::Admin,
            queues: Vec::new(),
            approve: true,
            shell: true,
            created_at: self.now(),
            expires_at: None,
            revoked_at: None,
            rate_per_s: None,
            max_body_bytes: None,
        };
        match self.store.create_token(record.clone()).await {
            Ok(()) => {}
            // Another node starting from the same file made it first.
            Err(quern_store::StoreError::TokenExists(_))
                if self.store.tokens().await?.iter().any(|t| t.hash == record.hash) => {}
            Err(quern_store::StoreError::TokenExists(_)) => {
                return Err(EngineError::Field {
                    field: "bootstrap_token_file",
                    message: format!("a token named {BOOTSTRAP_NAME:?} exists with another secret"),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.tokens.insert(&record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_rate_through_a_second_and_says_when_to_come_back() {
        let mut b = Bucket { milli: 2_000, at: 0 };
        assert_eq!((b.take(2, 0), b.take(2, 0)), (Ok(()), Ok(())));
        assert_eq!(b.take(2, 0), Err(500), "one more in half a second");
        assert_eq!(b.take(2, 499), Err(1));
        assert_eq!(b.take(2, 500), Ok(()));
        assert_eq!(b.take(2, 10_000), Ok(()), "a long pause refills it, no further than full");
        assert_eq!((b.take(2, 10_000), b.take(2, 10_000)), (Ok(()), Err(500)));
    }

    #[test]
    fn secrets_are_prefixed_256_bit_and_stored_as_hashes() {
        let (a, b) = (new_secret().ok(), new_secret().ok());
        let a = a.unwrap_or_default();
        assert!(a.starts_with("qrn_") && a.len() == 4 + 64, "{a}");
        assert_ne!(Some(a.clone()), b);
        let h = hash(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[4..]));
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
