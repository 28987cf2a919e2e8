//! The Quern server: configuration, the engine, and the HTTP API.
//!
//! # Layout
//! - [`config`]: what the server can be told, and its defaults.
//! - [`engine`]: the only place that changes state; long-polls and the
//!   background services (timers, retention) live here.
//! - [`registry`]: workers and the task types they serve.
//! - [`workflow`]: workflow graphs into tasks, their status and renderings.
//! - [`wire`]: the connections, which give hyper's own error answers our body.
//! - [`api`]: axum routes, error rendering, request parsing.
//! - [`serve`]: binds the pieces together and runs until shutdown.

pub mod api;
pub mod config;
pub mod engine;
pub mod registry;
pub mod wire;
pub mod workflow;

pub use config::Config;

use axum::serve::ListenerExt;
use engine::Engine;
use quern_core::{Clock, SystemClock};
use quern_store::Store;
use quern_store::postgres::PgStore;
use quern_store::sqlite::{SqliteOptions, SqliteStore};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] quern_store::StoreError),
    /// The schedules file given at start cannot be read or applied.
    #[error("schedules file {path}: {message}")]
    Schedules {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The store a server runs on.
enum Opened {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Opened {
    /// The embedded store in `storage.data`, or PostgreSQL at `storage.url`.
    async fn open(config: &Config, now: quern_core::Millis) -> Result<Self, ServeError> {
        Ok(match config.storage.postgres() {
            Some(opts) => Opened::Postgres(Arc::new(PgStore::open(&opts, now).await?)),
            None => {
                let opts = SqliteOptions { dir: config.storage.data.clone(), durability: config.storage.durability };
                Opened::Sqlite(Arc::new(SqliteStore::open(&opts, now)?))
            }
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Sqlite(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        }
    }

    fn close(&self) {
        match self {
            Opened::Sqlite(s) => s.close(),
            Opened::Postgres(s) => s.close(),
        }
    }
}

/// Opens the store (the data directory, or PostgreSQL when
/// `storage.url` is set), serves the API on `listener`
/// until `shutdown` completes, then drains: parked long-polls return, the
/// background services stop, the store flushes and closes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Opened::open(&config, clock.now()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let engine = Arc::new(Engine::new(store.store(), clock, &config, stop_rx));
    if let Some(path) = &config.server.schedules {
        let fail = |message: String| ServeError::Schedules { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let report = engine.apply_schedules(&text, false, false).await.map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            created = report.created.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged.len(),
            "schedules file applied"
        );
    }
    let loops = engine.spawn_loops();
    let app = api::router(engine, config.server.max_body_bytes);
    // Small answers (a lease, an SSE event) go out at once, not held back
    // by Nagle's algorithm waiting for the client's delayed ACK.
    let listener = wire::WireListener(listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    }));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        })
        .await;
    for handle in loops {
        let _ = handle.await;
    }
    store.close();
    result.map_err(ServeError::Io)
}
