//! Opening the store an engine runs on: the embedded SQLite store in the
//! data directory, or PostgreSQL when `storage.url` is set.
//!
//! Invariant: a door never touches the store; it gets an [`Engine`] and a
//! [`Storage`] to close when it has drained.

use crate::config::Config;
use crate::engine::Engine;
use quern_core::Clock;
use quern_store::postgres::PgStore;
use quern_store::sqlite::{SqliteOptions, SqliteStore};
use quern_store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::watch;

/// The store could not be opened (a locked or newer data directory, an
/// unreachable database).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OpenError(#[from] StoreError);

/// The store an engine runs on, to close once the doors have drained.
pub struct Storage(Opened);

enum Opened {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Storage {
    /// Records the address this process serves where a second server on
    /// the same data directory will read it (nothing to record on
    /// PostgreSQL, where many nodes share the store).
    pub fn announce(&self, url: &str) -> Result<(), OpenError> {
        match &self.0 {
            Opened::Sqlite(s) => Ok(s.announce(url)?),
            Opened::Postgres(_) => Ok(()),
        }
    }

    /// Flushes and closes the store.
    pub fn close(&self) {
        match &self.0 {
            Opened::Sqlite(s) => s.close(),
            Opened::Postgres(s) => s.close(),
        }
    }
}

impl Engine {
    /// Opens the store `config` names and an engine over it, reading time
    /// from `clock` and stopping when `shutdown` turns true. The background
    /// loops are not started: see [`Engine::spawn_loops`].
    pub async fn open(
        config: &Config,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Engine>, Storage), OpenError> {
        let now = clock.now();
        let opened = match config.storage.postgres() {
            Some(opts) => Opened::Postgres(Arc::new(PgStore::open(&opts, now).await?)),
            None => {
                let opts = SqliteOptions { dir: config.storage.data.clone(), durability: config.storage.durability };
                Opened::Sqlite(Arc::new(SqliteStore::open(&opts, now)?))
            }
        };
        let store: Arc<dyn Store> = match &opened {
            Opened::Sqlite(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        };
        Ok((Arc::new(Engine::new(store, clock, config, shutdown)), Storage(opened)))
    }
}
