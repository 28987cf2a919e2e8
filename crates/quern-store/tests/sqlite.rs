//! The conformance suite against the embedded SQLite backend, on real files.

#![allow(clippy::unwrap_used)]

mod conformance;

use quern_core::Millis;
use quern_store::Store;
use quern_store::sqlite::{Durability, SqliteOptions, SqliteStore};
use std::sync::Arc;

struct Sqlite {
    dir: tempfile::TempDir,
    durability: Durability,
}

impl conformance::Factory for Sqlite {
    fn open(&mut self, now: Millis) -> Arc<dyn Store> {
        let opts = SqliteOptions { dir: self.dir.path().to_owned(), durability: self.durability };
        Arc::new(SqliteStore::open(&opts, now).unwrap())
    }

    fn reopen(&mut self, now: Millis) -> Arc<dyn Store> {
        self.open(now)
    }
}

#[tokio::test]
async fn sqlite_conforms() {
    conformance::run_all(|| Sqlite { dir: tempfile::tempdir().unwrap(), durability: Durability::Normal }).await;
}

#[tokio::test]
async fn sqlite_strict_conforms() {
    conformance::run_all(|| Sqlite { dir: tempfile::tempdir().unwrap(), durability: Durability::Strict }).await;
}
