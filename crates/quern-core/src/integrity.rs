//! Lease signatures: the server signs each task it leases with an
//! HMAC-SHA256, under a key it shares with its workers, of the task's id and
//! digest; a worker holding the key recomputes the digest from the fields it
//! received and checks the signature before it runs anything.
//!
//! Invariant: a worker that holds keys runs a task only when the task's
//! fields digest to the signed digest and the signature verifies under one
//! of its keys. An unsigned task, one signed by a key the worker does not
//! hold, and one whose input (or any other digested field) changed on the
//! way are refused.
//!
//! A key file holds one secret per line (blank lines and `#` comments
//! aside), each at least [`MIN_SECRET_LEN`] characters. The first signs;
//! every one verifies, which is how keys rotate: give the workers the new
//! key beside the old, make it the server's first, then drop the old.

use crate::spec::{hex, spec_digest};
use crate::task::{LeaseSignature, Task};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;
use uuid::Uuid;

/// The shortest secret a key file may hold, in characters
/// (`openssl rand -hex 32` writes 64).
pub const MIN_SECRET_LEN: usize = 32;

/// What a signature covers, ahead of the task's id and digest: a version,
/// so that a later form cannot be confused with this one.
const CONTEXT: &[u8] = b"quern-lease-v1\0";

/// One shared secret and its public id.
#[derive(Clone)]
struct LeaseKey {
    /// The first 8 bytes of the secret's SHA-256, in hex: names the key in
    /// a signature without revealing it.
    id: String,
    /// The keyed HMAC state, cloned for each use.
    mac: Hmac<Sha256>,
}

/// The keys a server signs leases with, or a worker verifies them with.
#[derive(Clone)]
pub struct LeaseKeys {
    /// The signing key first; at least one.
    keys: Vec<LeaseKey>,
}

impl std::fmt::Debug for LeaseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeys").field("ids", &self.ids()).finish()
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The reason.
        message: String,
    },
    /// The file holds no key.
    #[error("holds no key (one secret per line, at least {MIN_SECRET_LEN} characters: `openssl rand -hex 32`)")]
    Empty,
    /// A line is too short to be a secret.
    #[error("line {line}: a secret needs at least {MIN_SECRET_LEN} characters (`openssl rand -hex 32`)")]
    Short {
        /// The line, counting from 1.
        line: usize,
    },
}

/// Why a leased task is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The lease carries no signature, though this worker requires one.
    #[error("the lease is not signed, and this worker only runs signed leases")]
    Unsigned,
    /// The signing key is not one this worker holds.
    #[error("the lease is signed with key {0}, which this worker does not hold")]
    UnknownKey(String),
    /// The task's fields do not digest to its digest: something rewrote
    /// them on the way.
    #[error("the task's fields do not match its digest: they were changed on the way")]
    Altered,
    /// The signature does not verify: the digest, the id or the signature
    /// itself was changed on the way.
    #[error("the lease signature does not verify: the task was changed on the way")]
    BadSignature,
}

impl LeaseKeys {
    /// The keys in a key file's text.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let secret = line.trim();
            if secret.is_empty() || secret.starts_with('#') {
                continue;
            }
            if secret.chars().count() < MIN_SECRET_LEN {
                return Err(KeyFileError::Short { line: i + 1 });
            }
            let id = hex(&Sha256::digest(secret.as_bytes())[..8]);
            let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
                .map_err(|_| KeyFileError::Short { line: i + 1 })?;
            keys.push(LeaseKey { id, mac });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(Self { keys })
    }

    /// The keys in the file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyFileError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Self::parse(&text)
    }

    /// The keys' ids, the signing key's first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The signature of the task `id` with `digest`, under the first key.
    pub fn sign(&self, id: Uuid, digest: &str) -> LeaseSignature {
        let key = &self.keys[0];
        let mut mac = key.mac.clone();
        feed(&mut mac, id, digest);
        LeaseSignature { key: key.id.clone(), hmac: hex(&mac.finalize().into_bytes()) }
    }

    /// Checks a leased task: its fields digest to its digest, and its
    /// lease's signature over the id and digest verifies under one of these
    /// keys.
    pub fn verify(&self, task: &Task) -> Result<(), IntegrityError> {
        let signature = task.lease.as_ref().and_then(|l| l.signature.as_ref()).ok_or(IntegrityError::Unsigned)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == signature.key)
            .ok_or_else(|| IntegrityError::UnknownKey(signature.key.clone()))?;
        let digest = spec_digest(
            &task.name,
            &task.queue,
            task.input.get(),
            task.priority,
            &task.metadata,
            task.max_attempts,
            task.timeout_ms,
            &task.retry,
        );
        if digest != task.digest {
            return Err(IntegrityError::Altered);
        }
        let claimed = unhex(&signature.hmac).ok_or(IntegrityError::BadSignature)?;
        let mut mac = key.mac.clone();
        feed(&mut mac, task.id, &task.digest);
        mac.verify_slice(&claimed).map_err(|_| IntegrityError::BadSignature)
    }
}

fn feed(mac: &mut Hmac<Sha256>, id: Uuid, digest: &str) {
    mac.update(CONTEXT);
    mac.update(id.as_bytes());
    mac.update(digest.as_bytes());
}

/// Lowercase or uppercase hex to bytes; `None` for anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskSpec;
    use crate::task::Lease;
    use serde_json::value::RawValue;

    const OLD: &str = "old-key-0123456789abcdef0123456789abcdef";
    const NEW: &str = "new-key-0123456789abcdef0123456789abcdef";

    fn leased(input: &str, keys: &LeaseKeys) -> Task {
        let spec: TaskSpec =
            serde_json::from_str(&format!(r#"{{"name":"pay","input":{input}}}"#)).expect("test spec parses");
        let n = spec.validate(&crate::ExecutionDefaults::default(), Uuid::now_v7(), 0).expect("valid");
        let signature = keys.sign(n.id, &n.digest);
        Task {
            id: n.id,
            name: n.name,
            queue: n.queue,
            input: RawValue::from_string(n.input).expect("json"),
            status: crate::Status::Running,
            priority: n.priority,
            metadata: n.metadata,
            attempt: 1,
            max_attempts: n.max_attempts,
            timeout_ms: n.timeout_ms,
            retry: n.retry,
            run_at: 0,
            progress: None,
            result: None,
            error: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            updated_at: 0,
            worker: None,
            workflow: None,
            key: None,
            depends_on: Vec::new(),
            idempotency_key: None,
            digest: n.digest,
            cancel_requested: false,
            lease: Some(Lease { token: "t".into(), expires_at: 0, signature: Some(signature) }),
            parents: None,
            notice: None,
            traceparent: None,
        }
    }

    #[test]
    fn a_signed_task_verifies_and_an_altered_one_does_not() {
        let keys = LeaseKeys::parse(OLD).expect("a key");
        let task = leased(r#"{"to":"alice","amount":[1.5,1e-7,1e22]}"#, &keys);
        assert_eq!(keys.verify(&task), Ok(()));

        let mut altered = task.clone();
        altered.input = RawValue::from_string(r#"{"to":"mally","amount":[1.5,1e-7,1e22]}"#.into()).expect("json");
        assert_eq!(keys.verify(&altered), Err(IntegrityError::Altered));

        // Rewriting the digest to match the new input breaks the signature.
        let redigested = leased(r#"{"to":"mally","amount":[1.5,1e-7,1e22]}"#, &keys);
        altered.digest = redigested.digest;
        assert_eq!(keys.verify(&altered), Err(IntegrityError::BadSignature));

        // Another task's signature does not carry over.
        let mut swapped = task.clone();
        swapped.id = Uuid::now_v7();
        assert_eq!(keys.verify(&swapped), Err(IntegrityError::BadSignature));

        let mut unsigned = task;
        unsigned.lease = Some(Lease { token: "t".into(), expires_at: 0, signature: None });
        assert_eq!(keys.verify(&unsigned), Err(IntegrityError::Unsigned));
    }

    #[test]
    fn during_a_rotation_old_and_new_keys_both_verify() {
        let old = LeaseKeys::parse(OLD).expect("a key");
        let new_first = LeaseKeys::parse(&format!("{NEW}\n{OLD}\n")).expect("two keys");
        let by_old = leased("1", &old);
        let by_new = leased("1", &new_first);
        assert_eq!(new_first.verify(&by_old), Ok(()));
        assert_eq!(new_first.verify(&by_new), Ok(()));
        let new_id = new_first.ids()[0].to_owned();
        assert_eq!(old.verify(&by_new), Err(IntegrityError::UnknownKey(new_id)));
    }

    #[test]
    fn key_files_hold_long_secrets() {
        assert!(matches!(LeaseKeys::parse("# only a comment\n\n"), Err(KeyFileError::Empty)));
        assert!(matches!(LeaseKeys::parse(&format!("{OLD}\nshort")), Err(KeyFileError::Short { line: 2 })));
        let keys = LeaseKeys::parse(&format!("# rotated 2026-12\n{NEW}\n  {OLD}  \n")).expect("two keys");
        assert_eq!(keys.ids().len(), 2);
        assert!(keys.ids().iter().all(|id| id.len() == 16));
        assert!(!format!("{keys:?}").contains("0123456789abcdef0123"), "Debug shows ids, not secrets");
    }

    #[test]
    fn signatures_are_pinned() {
        // Pinned: the Python worker computes the same bytes.
        let keys = LeaseKeys::parse(OLD).expect("a key");
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let signature = keys.sign(id, "sha256:00");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(OLD.as_bytes()).expect("key");
        mac.update(b"quern-lease-v1\0");
        mac.update(id.as_bytes());
        mac.update(b"sha256:00");
        assert_eq!(signature.hmac, hex(&mac.finalize().into_bytes()));
        assert_eq!(signature.key, hex(&Sha256::digest(OLD.as_bytes())[..8]));
    }
}
