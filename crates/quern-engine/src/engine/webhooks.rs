//! Webhooks: the server POSTs the events a webhook's filter selects to its
//! URL, one request per event in log order, signed with HMAC-SHA256 when the
//! webhook has a secret, and retried with backoff until it answers 2xx.
//!
//! A webhook delivers in order: the event after its cursor is retried (with
//! `max_attempts` tries at most) before any later one goes, and a webhook
//! that keeps failing is paused, not retried forever; `resume` starts it
//! again. Every attempt is recorded with the state it leads to, in one
//! transaction (see the store).

use crate::caller::Caller;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use hmac::{Hmac, KeyInit, Mac};
use quern_core::{Event, ValidationError};
use quern_store::{Delivery, EventQuery, StoreError, WebhookRecord};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events one round of a webhook delivers at most.
const ROUND: usize = 100;
/// How long a receiver may take to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the deliverer sleeps without looking again.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one node's turn at delivering lasts; the deliverer renews it at
/// half that, and another node takes over when it lapses.
const LEAD_MS: u64 = 10_000;
/// The longest webhook URL, in bytes.
const MAX_URL_LEN: usize = 2_048;
/// The longest webhook secret, in bytes.
const MAX_SECRET_LEN: usize = 1_024;
/// The header carrying `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-quern-signature";

pub use quern_wire::webhooks::WebhookSpec;

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else { return "sha256=".into() };
    mac.update(body);
    let mut out = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn invalid(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::Invalid { error: ValidationError::new(field, message), index: None }
}

/// When each webhook may try again, by name (in memory: after a restart
/// every webhook tries at once).
#[derive(Debug, Default)]
pub(crate) struct Backoffs(std::sync::Mutex<HashMap<String, Instant>>);

impl Backoffs {
    /// Forgets the backoffs that have passed and those of webhooks paused or
    /// gone, and answers the rest. Invariant: every backoff kept lies ahead,
    /// so the deliverer's next wake-up (the earliest of them) never lies in
    /// the past and an idle deliverer sleeps instead of spinning.
    fn prune(&self, hooks: &[WebhookRecord], now: Instant) -> HashMap<String, Instant> {
        let Ok(mut b) = self.0.lock() else { return HashMap::new() };
        b.retain(|name, until| *until > now && hooks.iter().any(|w| &w.name == name && !w.paused));
        b.clone()
    }
}

/// Whether a webhook may not reach `ip` unless `webhooks.allow_private`:
/// loopback, private, link-local, shared (CGNAT), unspecified, multicast,
/// broadcast and documentation ranges, and IPv4 inside IPv6.
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || first == 0
                || (first == 100 && (second & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some_and(|v4| internal(IpAddr::V4(v4)))
                || a.to_ipv4().is_some_and(|v4| internal(IpAddr::V4(v4)))
        }
    }
}

/// The IP a URL's host is, when it is written as one (the URL parser has
/// already turned `2130706433` or `0x7f.1` into `127.0.0.1`).
fn host_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Refuses a URL whose host is, or resolves to, an internal address.
async fn reachable(url: &reqwest::Url) -> Result<()> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match (host_ip(url), url.host_str()) {
        (Some(ip), _) => vec![ip],
        (None, Some(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| EngineError::Target(format!("cannot resolve {name}: {e}")))?
            .map(|a| a.ip())
            .collect(),
        (None, None) => Vec::new(),
    };
    match addrs.iter().find(|ip| internal(**ip)) {
        Some(ip) => Err(EngineError::Target(format!(
            "{} is {ip}, an internal address: webhooks reach public addresses unless webhooks.allow_private is set",
            url.host_str().unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// A delivery refused before any connection: a URL whose host is an
/// internal IP written out (names go through [`PublicOnly`]).
fn literal_target(url: &str, allow_private: bool) -> Option<String> {
    let ip = host_ip(&reqwest::Url::parse(url).ok()?)?;
    (!allow_private && internal(ip)).then(|| format!("refused: {ip} is an internal address"))
}

/// Resolves a receiver's name to its public addresses only.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = addrs.filter(|a| allow_private || !internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("refused: {} resolves to internal addresses only", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Engine {
    /// Creates or replaces webhook `name`. A replaced webhook keeps its
    /// cursor and gets a fresh start (not paused, no failures).
    pub async fn put_webhook(&self, caller: &Caller, name: &str, spec: WebhookSpec) -> Result<(WebhookRecord, bool)> {
        self.admit(caller, "put_webhook")?;
        quern_core::spec::check_queue_name(name).map_err(|e| invalid("name", e.message))?;
        quern_core::spec::check_text("url", &spec.url, MAX_URL_LEN)?;
        if let Some(secret) = &spec.secret {
            quern_core::spec::check_text("secret", secret, MAX_SECRET_LEN)?;
        }
        let url =
            reqwest::Url::parse(&spec.url).map_err(|e| invalid("url", format!("{:?} is not a URL: {e}", spec.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid("url", format!("{:?} is not an http:// or https:// URL", spec.url)));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EngineError::Target("no credentials in the URL: sign deliveries with `secret`".into()));
        }
        if !self.webhooks_allow_private {
            reachable(&url).await?;
        }
        if !(1..=100).contains(&spec.max_attempts) {
            return Err(invalid("max_attempts", "must be 1 to 100"));
        }
        let now = self.now();
        let existing = self.store.webhooks().await?.into_iter().find(|w| w.name == name);
        let created = existing.is_none();
        let cursor = match (&existing, spec.after) {
            (Some(w), _) => w.cursor,
            (None, Some(after)) => after,
            (None, None) => self.event_head(caller).await?,
        };
        let record = WebhookRecord {
            name: name.to_owned(),
            url: spec.url,
            filter: spec.filters,
            secret: spec.secret.filter(|s| !s.is_empty()),
            max_attempts: spec.max_attempts,
            paused: false,
            cursor,
            failures: 0,
            last_error: None,
            created_at: existing.as_ref().map_or(now, |w| w.created_at),
            updated_at: now,
        };
        self.store.put_webhook(record.clone()).await?;
        self.webhooks_changed.notify_waiters();
        self.record(caller, "webhook.put", name, Some(serde_json::json!({"url": record.url}))).await;
        Ok((record, created))
    }

    /// Every webhook.
    pub async fn webhooks(&self, caller: &Caller) -> Result<Vec<WebhookRecord>> {
        self.admit(caller, "webhooks")?;
        Ok(self.store.webhooks().await?)
    }

    /// One webhook.
    pub async fn webhook(&self, caller: &Caller, name: &str) -> Result<WebhookRecord> {
        self.admit(caller, "webhook")?;
        self.store
            .webhooks()
            .await?
            .into_iter()
            .find(|w| w.name == name)
            .ok_or_else(|| StoreError::WebhookNotFound(name.to_owned()).into())
    }

    /// Deletes a webhook with its delivery log.
    pub async fn delete_webhook(&self, caller: &Caller, name: &str) -> Result<WebhookRecord> {
        self.admit(caller, "delete_webhook")?;
        let w = self.webhook(caller, name).await?;
        self.store.delete_webhook(name.to_owned()).await?;
        self.record(caller, "webhook.delete", name, None).await;
        Ok(w)
    }

    /// Resumes a paused webhook: it tries its next event again at once.
    pub async fn resume_webhook(&self, caller: &Caller, name: &str) -> Result<WebhookRecord> {
        self.admit(caller, "resume_webhook")?;
        let mut w = self.webhook(caller, name).await?;
        w.paused = false;
        w.failures = 0;
        w.updated_at = self.now();
        self.store.webhook_progress(w.clone(), None).await?;
        if let Ok(mut b) = self.backoffs.0.lock() {
            b.remove(name);
        }
        self.record(caller, "webhook.resume", name, None).await;
        self.webhooks_changed.notify_waiters();
        Ok(w)
    }

    /// A webhook's latest delivery attempts, newest first.
    pub async fn deliveries(&self, caller: &Caller, name: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.admit(caller, "deliveries")?;
        self.webhook(caller, name).await?;
        Ok(self.store.deliveries(name.to_owned(), limit).await?)
    }

    /// Delivers events to every webhook that is due, until shutdown.
    pub async fn run_webhooks(&self) {
        // TLS is rustls with *ring*, checking receivers against the system's
        // roots; installing the provider twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            // A receiver cannot send the body on to another address.
            .redirect(reqwest::redirect::Policy::none())
            // Names are resolved again at every delivery, and an internal
            // address is never connected to (DNS can change after a PUT).
            .dns_resolver(Arc::new(PublicOnly { allow_private: self.webhooks_allow_private }))
            .build();
        let http = match http {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot build the HTTP client; no webhook will be delivered");
                return;
            }
        };
        let mut shutdown = self.shutdown.clone();
        // Nodes sharing a store take turns: one delivers, so that an event
        // goes to a webhook once, not once per node.
        let mut renew_at = Instant::now();
        loop {
            if Instant::now() >= renew_at {
                match self.store.lead("webhooks".into(), self.node.clone(), self.now(), LEAD_MS).await {
                    Ok(true) => renew_at = Instant::now() + Duration::from_millis(LEAD_MS / 2),
                    Ok(false) => {
                        tokio::select! {
                            () = tokio::time::sleep(MAX_SLEEP) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        continue;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "webhooks: cannot claim delivery");
                        tokio::select! {
                            () = tokio::time::sleep(MAX_SLEEP) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        continue;
                    }
                }
            }
            let appended = self.store.signals().events.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let changed = self.webhooks_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let hooks = match self.store.webhooks().await {
                Ok(h) => h,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: cannot list them");
                    Vec::new()
                }
            };
            let now = Instant::now();
            let due: Vec<WebhookRecord> = {
                let backoffs = self.backoffs.prune(&hooks, now);
                hooks.into_iter().filter(|w| !w.paused && !backoffs.contains_key(&w.name)).collect()
            };
            // With no webhook to deliver to, a commit's events wake nothing
            // here: only a webhook put or resumed on this node, or the next
            // look (at most a second away, for other nodes' changes).
            let idle = due.is_empty();
            let mut busy = false;
            for w in due {
                match self.deliver(&http, w).await {
                    Ok(more) => busy |= more,
                    Err(EngineError::Store(StoreError::Closed)) => return,
                    Err(e) => tracing::error!(error = %e, "webhooks: delivery round failed"),
                }
            }
            if busy {
                continue;
            }
            let next = self.backoffs.0.lock().ok().and_then(|b| b.values().min().copied());
            let sleep = next.map_or(MAX_SLEEP, |t| t.saturating_duration_since(Instant::now()).min(MAX_SLEEP));
            tokio::select! {
                () = &mut appended, if !idle => {}
                () = &mut changed => {}
                () = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round of one webhook: the events after its cursor, in order,
    /// until one fails. Answers whether a full round went out (more may wait).
    async fn deliver(&self, http: &reqwest::Client, mut w: WebhookRecord) -> Result<bool> {
        let query = EventQuery { after: Some(w.cursor), filter: w.filter.clone(), limit: ROUND };
        let page = match self.store.read_events(query).await {
            Ok(p) => p,
            Err(StoreError::OffsetExpired { earliest, .. }) => {
                w.last_error = Some(format!("events {}..{} were purged before delivery", w.cursor + 1, earliest - 1));
                w.cursor = earliest - 1;
                w.updated_at = self.now();
                self.store.webhook_progress(w, None).await?;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        let full = page.events.len() == ROUND;
        for e in &page.events {
            if !self.deliver_one(http, &mut w, e).await? {
                return Ok(false);
            }
        }
        if page.events.is_empty() && page.next_after > w.cursor {
            // Only events the filter passes by: move past them.
            w.cursor = page.next_after;
            w.updated_at = self.now();
            self.store.webhook_progress(w, None).await?;
        }
        Ok(full)
    }

    /// Tries one event; answers whether it was delivered.
    async fn deliver_one(&self, http: &reqwest::Client, w: &mut WebhookRecord, e: &Event) -> Result<bool> {
        let body = serde_json::to_vec(e).map_err(|err| StoreError::Backend(err.to_string()))?;
        let attempt = w.failures + 1;
        let mut req = http
            .post(&w.url)
            .header("content-type", "application/json")
            .header("x-quern-event-type", &e.kind)
            .header("x-quern-event-offset", e.offset.to_string())
            .header("x-quern-delivery-attempt", attempt.to_string());
        if let Some(secret) = &w.secret {
            req = req.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let started = Instant::now();
        let answer = match literal_target(&w.url, self.webhooks_allow_private) {
            Some(refusal) => Err(refusal),
            None => req.body(body).send().await.map_err(|err| format!("no answer: {err}")),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match answer {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (Some(r.status().as_u16()), Some(format!("the receiver answered {}", r.status()))),
            Err(err) => (None, Some(err)),
        };
        let now = self.now();
        let ok = error.is_none();
        self.counters.delivery(&w.name, ok);
        if ok {
            w.cursor = e.offset;
            w.failures = 0;
        } else {
            w.failures = attempt;
            w.paused = attempt >= w.max_attempts;
            w.last_error.clone_from(&error);
            let delay = FIRST_BACKOFF.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
            if let Ok(mut b) = self.backoffs.0.lock() {
                b.insert(w.name.clone(), Instant::now() + delay);
            }
            if w.paused {
                tracing::warn!(webhook = %w.name, attempts = attempt, "webhook paused after failing again and again");
            }
        }
        w.updated_at = now;
        let delivery =
            Delivery { webhook: w.name.clone(), offset: e.offset, attempt, at: now, status, error, duration_ms };
        self.store.webhook_progress(w.clone(), Some(delivery)).await?;
        Ok(ok)
    }
}
