//! What the long-running commands (`server`, `worker`) share: logging to
//! stderr (as text or as JSON lines), a multi-threaded runtime, and the stop
//! signal.

use std::sync::OnceLock;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For a person: one line of text per event.
    #[default]
    Text,
    /// For a log pipeline: one JSON object per line, the event's fields at
    /// its top level and, under `span`, those of the span it happened in (a
    /// worker's task: `task`, `name`, `queue`, `attempt`, `trace_id`).
    Json,
}

/// The log format the global `--log-format` asked for.
static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets the log format [`start`] logs with.
pub(crate) fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

/// Starts logging (filter from `QUERN_LOG`, default `info`; format from
/// `--log-format`) and builds the runtime, with `threads` worker threads
/// (else one per core); on failure prints why, prefixed with `command`,
/// and answers `None`.
pub(crate) fn start(command: &str, threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUERN_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match LOG_FORMAT.get().copied().unwrap_or_default() {
        // Colour only for a person at a terminal, not in a log file.
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    crate::allocator::release_in_background();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{command}: cannot start the runtime: {e}");
            None
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, logging which.
pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
