//! The engine's event bus: publishing, reading with a long-poll, and
//! retention of the log.
//!
//! Invariants: a reader parked on the log registers for the wake-up before it
//! reads, so an event appended between its read and its wait wakes it; a
//! token (other than an admin's) never reads an event aimed at another
//! target than its own name.

use crate::caller::Caller;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use quern_core::auth::Role;
use quern_core::{Event, EventFilter, EventSpec};
use quern_store::{EventPage, EventQuery, StoreError};
use std::time::Duration;

/// The event types the engine publishes (and no one else may).
const ENGINE_TYPES: [&str; 3] = ["task.", "workflow.", "schedule."];
/// The source of the engine's own events.
const ENGINE_SOURCE: &str = "quern";

/// Whether a caller confined to some queues may see `event`: a task's
/// event when its queue is in scope, no workflow or schedule event, every
/// event published by clients.
pub(super) fn visible_event(caller: &Caller, event: &Event) -> bool {
    if caller.scope().is_none() || event.source != ENGINE_SOURCE {
        return true;
    }
    if !event.kind.starts_with("task.") {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Queue<'a> {
        #[serde(borrow)]
        queue: &'a str,
    }
    serde_json::from_str::<Queue<'_>>(event.payload.get()).is_ok_and(|q| caller.covers(q.queue))
}

/// A token other than an admin's reads the log as the subscriber its name
/// is: broadcasts and the events aimed at it, never those aimed at another
/// target. Its filter's target becomes its name; another target is refused.
pub(super) fn read_as(caller: &Caller, filter: &mut EventFilter) -> Result<()> {
    let Caller::Token(token) = caller else { return Ok(()) };
    if token.role == Role::Admin {
        return Ok(());
    }
    match &filter.target {
        None => filter.target = Some(token.name.clone()),
        Some(target) if *target == token.name => {}
        Some(target) => {
            return Err(EngineError::Forbidden(format!(
                "{caller} reads events as the subscriber `{}`: the events aimed at `{target}` are not for it",
                token.name
            )));
        }
    }
    Ok(())
}

impl Engine {
    /// Appends events, all or none; answers them with their offsets.
    pub async fn publish(&self, caller: &Caller, specs: Vec<EventSpec>) -> Result<Vec<Event>> {
        self.admit(caller, "publish")?;
        if !caller.is_server() {
            for spec in &specs {
                if ENGINE_TYPES.iter().any(|p| spec.kind.starts_with(p)) {
                    let message = format!("types starting {} are the engine's own", ENGINE_TYPES.join(", "));
                    return Err(EngineError::Reserved { field: "type", message });
                }
                if spec.source == ENGINE_SOURCE {
                    let message = format!("the source {ENGINE_SOURCE:?} is the engine's own");
                    return Err(EngineError::Reserved { field: "source", message });
                }
            }
        }
        let events = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.validate().map_err(|error| EngineError::Invalid { error, index: Some(i) }))
            .collect::<Result<Vec<_>>>()?;
        let published = self.store.publish(events, self.now()).await?;
        self.counters.published(published.len());
        Ok(published)
    }

    /// Events after `query.after` that pass its filter; with `wait`, held
    /// until one is appended or the wait elapses.
    pub async fn read_events(
        &self,
        caller: &Caller,
        mut query: EventQuery,
        wait: Option<Duration>,
    ) -> Result<EventPage> {
        self.admit(caller, "read_events")?;
        read_as(caller, &mut query.filter)?;
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
        let mut shutdown = self.shutdown.clone();
        loop {
            let appended = self.store.signals().events.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let mut page = self.store.read_events(query.clone()).await?;
            if caller.scope().is_some() {
                page.events.retain(|e| visible_event(caller, e));
            }
            if !page.events.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(page);
            }
            // Keep the place: what was looked at matched nothing.
            query.after = Some(page.next_after);
            tokio::select! {
                () = &mut appended => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
    }

    /// The newest offset in the log (0 while it is empty).
    pub async fn event_head(&self, caller: &Caller) -> Result<u64> {
        self.admit(caller, "event_head")?;
        Ok(self.store.read_events(EventQuery { limit: 0, ..EventQuery::default() }).await?.head)
    }

    /// Deletes events past their retention; answers how many went.
    pub(super) async fn purge_events(&self) -> std::result::Result<u64, StoreError> {
        let before = self.now().saturating_sub(i64::try_from(self.events_ttl_ms).unwrap_or(i64::MAX));
        self.store.purge_events(before, self.events_max).await
    }
}
