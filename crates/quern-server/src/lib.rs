//! Quern's HTTP door: routes, request parsing, and the table from the
//! engine's failure codes to HTTP statuses. Every handler parses, names the
//! caller, calls one engine operation, and renders its answer.
//!
//! Invariant: this crate never touches the store; everything goes through
//! [`quern_engine::Engine`], as every other door does.
//!
//! # Layout
//! - [`api`]: axum routes, error rendering, request parsing.
//! - [`conn`]: the connections, which give hyper's own error answers our body.
//! - [`metrics`]: the HTTP door's request counts and the `/metrics` exposition.
//! - [`serve`]: binds the pieces together and runs until shutdown.

pub mod api;
pub mod conn;
pub mod metrics;
pub mod tls;

pub use quern_engine::Config;

use axum::serve::ListenerExt;
use quern_core::integrity::LeaseKeys;
use quern_core::{Clock, SystemClock};
use quern_engine::{Caller, Engine};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] quern_engine::config::ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] quern_engine::OpenError),
    /// The schedules file given at start cannot be read or applied.
    #[error("schedules file {path}: {message}")]
    Schedules {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The bootstrap token file cannot be read or used.
    #[error("bootstrap token file {path}: {message}")]
    Bootstrap {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Listening beyond loopback without tokens, not asked for.
    #[error(
        "refusing to listen on {0} without tokens: anyone who reaches it could do everything, \
         run commands on shell workers included. Start with `--auth required` (make the first token \
         with `quern token create admin --role admin --data DIR`), or with `--insecure` to accept that"
    )]
    Insecure(std::net::SocketAddr),
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The lease key file cannot be used.
    #[error("lease key file {path}: {error}")]
    LeaseKeys {
        /// The file.
        path: String,
        /// Why.
        error: quern_core::integrity::KeyFileError,
    },
    /// Socket trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
    serve_announcing(config, listener, shutdown, |_| {}).await
}

/// [`serve`], calling `ready` with the URL served (`http://…` or
/// `https://…`) once the store is open and the server is about to answer:
/// what `quern server` prints as `listening on …`, never before a store
/// that cannot be opened has failed the start.
pub async fn serve_announcing(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&str) + Send,
) -> Result<(), ServeError> {
    config.validate()?;
    let local = listener.local_addr()?;
    let open_to_all = !local.ip().is_loopback() && !config.auth.required;
    if open_to_all && !config.server.insecure {
        return Err(ServeError::Insecure(local));
    }
    let certificates = match &config.server.tls {
        Some(tls) => Some(tls::Certificates::load(&tls.cert, &tls.key).map_err(ServeError::Tls)?),
        None => None,
    };
    let lease_keys = match &config.server.lease_key_file {
        Some(path) => Some(
            LeaseKeys::load(path).map_err(|error| ServeError::LeaseKeys { path: path.display().to_string(), error })?,
        ),
        None => None,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (engine, storage) = Engine::open(&config, clock, stop_rx).await?;
    if let Some(keys) = lease_keys {
        tracing::info!(keys = ?keys.ids(), "leases are signed with key {}", keys.ids()[0]);
        engine.set_lease_keys(Some(keys));
    }
    if let Some(path) = &config.auth.bootstrap_token_file {
        let fail = |message: String| ServeError::Bootstrap { path: path.display().to_string(), message };
        let secret = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        engine.bootstrap_token(&secret).await.map_err(|e| fail(e.to_string()))?;
    }
    if open_to_all {
        let warning =
            format!("listening on {local} without tokens (--insecure): anyone who reaches it may do everything");
        tracing::warn!("{warning}");
        engine.warn(warning);
    }
    if let Some(path) = &config.server.schedules {
        let fail = |message: String| ServeError::Schedules { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let report =
            engine.apply_schedules(&Caller::Server, &text, false, false).await.map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            created = report.created.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged.len(),
            "schedules file applied"
        );
    }
    let url = format!("{}://{local}", if certificates.is_some() { "https" } else { "http" });
    if let Err(e) = storage.announce(&url) {
        tracing::warn!(error = %e, "the data directory's lock file does not name this server's address");
    }
    ready(&url);
    let loops = engine.spawn_loops();
    if certificates.is_some() || config.server.lease_key_file.is_some() {
        reload_on_sighup(engine.clone(), certificates.clone(), config.server.lease_key_file.clone());
    }
    let app = api::router(engine, config.server.max_body_bytes);
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    let result = match certificates {
        Some(certificates) => run(tls::TlsListener::new(listener, certificates)?, app, stopping).await,
        None => {
            // Small answers (a lease, an SSE event) go out at once, not held
            // back by Nagle's algorithm waiting for the client's delayed ACK.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            run(listener, app, stopping).await
        }
    };
    for handle in loops {
        let _ = handle.await;
    }
    storage.close();
    result.map_err(ServeError::Io)
}

/// Serves `app` on `listener` until `stopping` completes, then drains.
async fn run<L>(
    listener: L,
    app: axum::Router,
    stopping: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    axum::serve(conn::WireListener(listener), app.into_make_service_with_connect_info::<conn::Peer>())
        .with_graceful_shutdown(stopping)
        .await
}

/// Reloads the TLS certificate and the lease keys on every SIGHUP, until the
/// runtime ends. A file that cannot be used leaves the old one in place.
fn reload_on_sighup(
    engine: Arc<Engine>,
    certificates: Option<Arc<tls::Certificates>>,
    lease_key_file: Option<std::path::PathBuf>,
) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate and lease keys will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(certificates) = &certificates {
                match certificates.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the old one stays"),
                }
            }
            if let Some(path) = &lease_key_file {
                match LeaseKeys::load(path) {
                    Ok(keys) => {
                        tracing::info!(keys = ?keys.ids(), "SIGHUP: lease keys reloaded; signing with {}", keys.ids()[0]);
                        engine.set_lease_keys(Some(keys));
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: lease keys not reloaded; the old ones stay"),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_door_does_not_depend_on_the_store() {
        let manifest = include_str!("../Cargo.toml");
        assert!(!manifest.contains("quern-store"), "quern-server must reach the store only through quern-engine");
    }
}
