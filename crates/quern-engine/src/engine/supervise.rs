//! Supervision of the engine's background loops (timers, retention,
//! scheduler, webhooks, worker sync).
//!
//! Each loop runs as a task of its own under a supervisor that awaits it.
//! Invariant: a loop that panics is logged, reported down, and started again
//! after a backoff (1 s, doubling to 60 s, back to 1 s once a run lasted a
//! minute); only the shutdown signal or the loop's own return ends it. So no
//! single bad record can silently stop every schedule or webhook for good,
//! and `/readyz` says when a loop is down.

use quern_core::{Clock, Millis};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first restart's delay; each next one doubles, up to [`MAX_RESTART`].
const FIRST_RESTART: Duration = Duration::from_secs(1);
const MAX_RESTART: Duration = Duration::from_secs(60);
/// A run at least this long starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What `/readyz` shows of one loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoopState {
    /// Running now (false between a panic and its restart).
    pub running: bool,
    /// How often it panicked and was started again.
    pub restarts: u64,
    /// The message of its last panic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<String>,
    /// When it last panicked.
    #[serde(skip_serializing_if = "Option::is_none", with = "quern_core::time::rfc3339::option")]
    pub last_panic_at: Option<Millis>,
}

/// The state of every supervised loop, by name.
#[derive(Debug, Default)]
pub struct Loops(Mutex<BTreeMap<&'static str, LoopState>>);

impl Loops {
    /// Every loop's state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, LoopState> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The loops that are down now.
    pub fn down(&self) -> Vec<&'static str> {
        self.states().into_iter().filter(|(_, s)| !s.running).map(|(name, _)| name).collect()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut LoopState)) {
        if let Ok(mut m) = self.0.lock() {
            change(m.entry(name).or_default());
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `run()` as loop `name` under supervision until `shutdown` turns
/// true or a run returns on its own; see the module doc.
pub fn supervise<F, Fut>(
    loops: Arc<Loops>,
    name: &'static str,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
    run: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_RESTART;
        loop {
            loops.update(name, |s| s.running = true);
            let started = tokio::time::Instant::now();
            let Err(e) = tokio::spawn(run()).await else { return };
            let message = if e.is_panic() { panic_message(&*e.into_panic()) } else { "cancelled".to_owned() };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_RESTART;
            }
            tracing::error!(
                background_loop = name,
                panic = %message,
                restart_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "a background loop panicked; it will be started again"
            );
            loops.update(name, |s| {
                s.running = false;
                s.restarts += 1;
                s.last_panic = Some(message);
                s.last_panic_at = Some(clock.now());
            });
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(MAX_RESTART);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quern_core::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_reported_and_started_again_until_shutdown() {
        let loops = Arc::new(Loops::default());
        let (stop, shutdown) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let (ran_again_tx, mut ran_again) = watch::channel(0usize);
        let handle = supervise(loops.clone(), "flaky", Arc::new(ManualClock::new(5_000)), shutdown.clone(), {
            let runs = runs.clone();
            let shutdown = shutdown.clone();
            move || {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = ran_again_tx.send(n);
                let mut shutdown = shutdown.clone();
                async move {
                    assert!(n > 2, "run {n} breaks");
                    let _ = shutdown.wait_for(|s| *s).await;
                }
            }
        });
        // The first two runs panic; the third, a second and two seconds
        // later, stays up.
        ran_again.wait_for(|n| *n >= 3).await.unwrap_or_else(|e| panic!("{e}"));
        tokio::task::yield_now().await;
        let state = loops.states().remove("flaky").unwrap_or_default();
        assert!(state.running, "{state:?}");
        assert_eq!(state.restarts, 2);
        assert_eq!(state.last_panic.as_deref(), Some("run 2 breaks"));
        assert_eq!(state.last_panic_at, Some(5_000));
        assert!(loops.down().is_empty());
        let _ = stop.send(true);
        handle.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_down_between_a_panic_and_its_restart_is_reported_down() {
        let loops = Arc::new(Loops::default());
        let (stop, shutdown) = watch::channel(false);
        let handle = supervise(loops.clone(), "broken", Arc::new(ManualClock::new(0)), shutdown, || async {
            panic!("always");
        });
        while loops.states().get("broken").is_none_or(|s| s.running) {
            tokio::task::yield_now().await;
        }
        assert_eq!(loops.down(), vec!["broken"]);
        let _ = stop.send(true);
        handle.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
