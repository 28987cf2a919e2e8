//! The node's ear: one connection that `LISTEN`s for what other nodes
//! committed and raises this node's signals for it.
//!
//! A notification's payload is a set of flags (`r`eady somewhere,
//! `s`chedules, `e`vents); or, after `r` and a tab, the queues where tasks
//! became ready and how many (`r\tqueue\tn\tqueue\tn`); or, after an `x`,
//! the ids of tasks that ended; or, after a `k`, stops. What this node's own
//! sequencer sent, it has raised already: only its stops are taken from the
//! connection. Invariant: after the connection is lost and made again,
//! every signal is raised once, since notifications sent meanwhile are gone;
//! a waiter then reads again and finds what changed.

use crate::{Result, Signals, Stop, StopReason, StoreError};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// How long to wait before connecting again after the connection was lost.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Connects and listens (failing if the first connection fails), then keeps
/// listening in a task of its own until aborted.
pub(super) async fn spawn(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    channel: String,
    signals: Arc<Signals>,
    own: Arc<AtomicI32>,
) -> Result<tokio::task::JoinHandle<()>> {
    let first = listen_once(&config, &tls, &channel, &signals, &own).await?;
    Ok(tokio::spawn(async move {
        first.await;
        loop {
            tracing::warn!("the LISTEN connection to PostgreSQL was lost; connecting again");
            raise_all(&signals);
            tokio::time::sleep(RECONNECT_AFTER).await;
            match listen_once(&config, &tls, &channel, &signals, &own).await {
                Ok(running) => running.await,
                Err(e) => tracing::warn!(error = %e, "cannot listen to PostgreSQL"),
            }
        }
    }))
}

fn raise_all(signals: &Signals) {
    signals.ready.raise_all();
    signals.events.notify_waiters();
    signals.schedules.notify_one();
    signals.timers.notify_one();
}

/// Opens the connection and issues `LISTEN`; the future it answers runs
/// until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    channel: &str,
    signals: &Arc<Signals>,
    own: &Arc<AtomicI32>,
) -> Result<impl std::future::Future<Output = ()> + use<>> {
    let (client, mut connection) =
        config.connect(tls.clone()).await.map_err(|e| StoreError::Backend(format!("cannot connect to listen: {e}")))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send((n.process_id(), n.payload().to_owned())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listen connection failed");
                    break;
                }
            }
        }
    });
    let quoted = channel.replace('"', "\"\"");
    client.batch_execute(&format!("LISTEN \"{quoted}\"")).await.map_err(crate::error::backend)?;
    let (signals, own) = (signals.clone(), own.clone());
    Ok(async move {
        // The client must live as long as the connection listens.
        let _client = client;
        while let Some((pid, payload)) = rx.recv().await {
            if pid == own.load(Ordering::Relaxed) && !payload.starts_with('k') {
                continue;
            }
            heard(&signals, &payload);
        }
        driver.abort();
    })
}

/// One stop as a notification line: the task id (32 hex digits), `c`
/// (cancel) or `e` (ended by the server), the queue, a tab, the worker.
pub(super) fn stop_line(stop: &Stop) -> String {
    let reason = match stop.reason {
        StopReason::Cancel => 'c',
        StopReason::Ended => 'e',
    };
    format!("{}{reason}{}\t{}", stop.task.simple(), stop.queue, stop.worker)
}

fn stop_of(line: &str) -> Option<Stop> {
    let task = Uuid::try_parse(line.get(..32)?).ok()?;
    let reason = match line.get(32..33)? {
        "c" => StopReason::Cancel,
        "e" => StopReason::Ended,
        _ => return None,
    };
    let (queue, worker) = line.get(33..)?.split_once('\t')?;
    Some(Stop { worker: worker.to_owned(), task, queue: queue.to_owned(), reason })
}

/// Raises the signals a notification names.
fn heard(signals: &Signals, payload: &str) {
    if let Some(ids) = payload.strip_prefix('x') {
        signals.ended(ids.split(',').filter_map(|s| Uuid::try_parse(s).ok()));
        return;
    }
    if let Some(lines) = payload.strip_prefix('k') {
        signals.stop(lines.split('\n').filter_map(stop_of));
        return;
    }
    if let Some(pairs) = payload.strip_prefix("r\t") {
        let mut fields = pairs.split('\t');
        while let (Some(queue), Some(n)) = (fields.next(), fields.next()) {
            signals.ready.raise(queue, n.parse().unwrap_or(usize::MAX));
        }
        return;
    }
    for flag in payload.chars() {
        match flag {
            'r' => signals.ready.raise_all(),
            's' => signals.schedules.notify_one(),
            'e' => signals.events.notify_waiters(),
            _ => {}
        }
    }
}
