//! `/metrics`: the HTTP door's own counts (requests by route template and
//! status, with their durations), and the Prometheus exposition of
//! everything the engine observes ([`quern_engine::Observed`]), in the
//! Prometheus text format or OpenMetrics, as the scraper asks.
//!
//! Invariant: counting a request costs a few atomic adds, one short lock of
//! its own route and the box of its future, never a new table entry; routes
//! are labelled by their template (`/v1/tasks/{id}`), never by the path
//! asked, so that no client can add series; names follow Prometheus
//! conventions (base units, `_total`, `_seconds`).

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use quern_engine::Observed;
use quern_engine::types::{BUCKETS_MS, Durations, Histogram, MOVE_KINDS, SUBMITTED};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// The bounds of request durations, in seconds.
const HTTP_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// One route and method's requests.
#[derive(Debug, Default)]
struct RouteStats {
    /// Requests by status code.
    statuses: Mutex<Vec<(u16, u64)>>,
    /// Durations by bucket of [`HTTP_SECONDS`] (not cumulative).
    buckets: [AtomicU64; HTTP_SECONDS.len() + 1],
    /// Their sum, in microseconds.
    sum_us: AtomicU64,
}

impl RouteStats {
    fn count(&self, status: u16) {
        if let Ok(mut statuses) = self.statuses.lock() {
            match statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => statuses.push((status, 1)),
            }
        }
    }

    fn time(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = HTTP_SECONDS.partition_point(|b| *b < seconds);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The requests of every route, by route template and method: the table is
/// made once from the routes, so counting never inserts a route.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Each route template's methods, with the index of their stats.
    index: HashMap<String, Vec<(&'static str, usize)>>,
    /// (template, method, stats), the unmatched last.
    stats: Vec<(String, &'static str, RouteStats)>,
}

impl HttpMetrics {
    /// A table for `routes`: (template, methods).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, Vec<&'static str>)>) -> Self {
        let mut index: HashMap<String, Vec<(&'static str, usize)>> = HashMap::new();
        let mut stats = Vec::new();
        let mut routes: Vec<_> = routes.into_iter().collect();
        routes.sort_unstable();
        for (path, methods) in routes {
            for method in methods {
                index.entry(path.to_owned()).or_default().push((method, stats.len()));
                stats.push((path.to_owned(), method, RouteStats::default()));
            }
        }
        stats.push((UNMATCHED.to_owned(), "", RouteStats::default()));
        Self { index, stats }
    }

    /// The index of a route template and method's stats (the unmatched
    /// requests' when it is none of the table's).
    fn slot(&self, route: Option<&str>, method: &str) -> usize {
        route
            .and_then(|r| self.index.get(r))
            .and_then(|methods| methods.iter().find(|(m, _)| *m == method))
            .map_or(self.stats.len() - 1, |(_, i)| *i)
    }

    fn at(&self, slot: usize) -> Option<&RouteStats> {
        self.stats.get(slot).map(|(_, _, s)| s)
    }

    /// Counts a request no route matched, or refused before routing (it is
    /// not timed: it cost the server next to nothing).
    pub(crate) fn unmatched(&self, status: u16) {
        if let Some((_, _, s)) = self.stats.last() {
            s.count(status);
        }
    }
}

/// Counts and times every request a route matched, by its template and
/// method (a route layer of the router: it sees the matched template).
#[derive(Debug, Clone)]
pub(crate) struct RecordLayer(pub(crate) Arc<HttpMetrics>);

impl<S> tower_layer::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record { inner, metrics: self.0.clone() }
    }
}

/// [`RecordLayer`]'s service.
#[derive(Debug, Clone)]
pub(crate) struct Record<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> tower_service::Service<Request> for Record<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let began = Instant::now();
        let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let slot = self.metrics.slot(route, req.method().as_str());
        // The one route that reads the table is handed it.
        if route == Some(METRICS_ROUTE) {
            req.extensions_mut().insert(self.metrics.clone());
        }
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = answer.await?;
            if let Some(stats) = metrics.at(slot) {
                stats.count(response.status().as_u16());
                stats.time(began.elapsed());
            }
            Ok(response)
        })
    }
}

/// The route of the exposition.
const METRICS_ROUTE: &str = "/metrics";

/// The exposition of one scrape: what the engine observed and the HTTP
/// counts, as one collector of a registry made for the scrape.
#[derive(Debug)]
struct Scrape {
    observed: Observed,
    http: Option<Arc<HttpMetrics>>,
}

/// Durations in milliseconds, as a histogram in seconds (the encoder makes
/// the buckets cumulative).
fn seconds_of(d: &Durations) -> Value {
    let buckets = d
        .buckets
        .iter()
        .enumerate()
        .map(|(i, n)| (BUCKETS_MS.get(i).map_or(f64::INFINITY, |ms| *ms as f64 / 1000.0), *n))
        .collect();
    Value::Histogram(d.sum_ms as f64 / 1000.0, d.count, buckets)
}

/// A histogram (the encoder makes the buckets cumulative).
fn histogram_of(h: &Histogram) -> Value {
    let buckets =
        h.buckets.iter().enumerate().map(|(i, n)| (h.bounds.get(i).copied().unwrap_or(f64::INFINITY), *n)).collect();
    Value::Histogram(h.sum, h.count, buckets)
}

/// Encodes one family: `each` gives its label sets and values.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, Value)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut m = metric.encode_family(&labels)?;
        match value {
            Value::Counter(v) => m.encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(&v, None)?,
            Value::Gauge(v) => m.encode_gauge(&v)?,
            Value::Histogram(sum, count, buckets) => {
                m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
    }
    Ok(())
}

/// One series' value.
enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(f64, u64, Vec<(f64, u64)>),
}

fn gauge(n: u64) -> Value {
    Value::Gauge(i64::try_from(n).unwrap_or(i64::MAX))
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.observed;
        let mut queues: Vec<_> = o.tasks.queues.iter().collect();
        queues.sort_by(|a, b| a.0.cmp(b.0));
        // Every series of a (queue, name) seen is shown, zeros included,
        // so that a rate starts from the first increment.
        let moves = |kinds: &[usize], outcome: bool| {
            let mut series = Vec::new();
            for (queue, q) in &queues {
                let mut names: Vec<_> = q.moves.iter().collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                for (name, c) in names {
                    for kind in kinds {
                        let mut labels = vec![("queue", queue.to_string()), ("name", name.to_string())];
                        if outcome {
                            labels.push(("outcome", MOVE_KINDS[*kind].to_owned()));
                        }
                        series.push((labels, Value::Counter(c[*kind])));
                    }
                }
            }
            series
        };
        let help = "Tasks submitted (whether queued at once or held for a delay or their parents).";
        family(&mut e, "quern_tasks_submitted", help, MetricType::Counter, moves(&[SUBMITTED], false))?;
        let help = "Attempts started (tasks leased by a worker).";
        family(&mut e, "quern_tasks_started", help, MetricType::Counter, moves(&[1], false))?;
        let help = "Tasks that ended, by outcome (succeeded, failed, cancelled, timed_out, skipped).";
        family(&mut e, "quern_tasks_finished", help, MetricType::Counter, moves(&[3, 4, 5, 6, 7], true))?;
        let help = "Failed attempts given another attempt.";
        family(&mut e, "quern_task_retries", help, MetricType::Counter, moves(&[2], false))?;
        let per_queue = |f: &dyn Fn(&quern_engine::types::QueueTally) -> u64| {
            queues.iter().map(|(queue, q)| ([("queue", queue.as_str())], Value::Counter(f(q)))).collect::<Vec<_>>()
        };
        family(
            &mut e,
            "quern_lease_expiries",
            "Attempts ended because their worker's lease ran out.",
            MetricType::Counter,
            per_queue(&|q| q.lease_expired),
        )?;
        family(
            &mut e,
            "quern_task_timeouts",
            "Attempts the server ended at their timeout.",
            MetricType::Counter,
            per_queue(&|q| q.timed_out),
        )?;
        let durations = |f: &dyn Fn(&quern_engine::types::QueueTally) -> &Durations| {
            queues.iter().map(|(queue, q)| ([("queue", queue.as_str())], seconds_of(f(q)))).collect::<Vec<_>>()
        };
        family(
            &mut e,
            "quern_task_wait_seconds",
            "From when a task was due (submitted, or its delay or backoff over) to its start.",
            MetricType::Histogram,
            durations(&|q| &q.wait),
        )?;
        family(
            &mut e,
            "quern_task_run_seconds",
            "From an attempt's start to its end.",
            MetricType::Histogram,
            durations(&|q| &q.run),
        )?;
        family(
            &mut e,
            "quern_task_latency_seconds",
            "From submit to the end of the attempt that ended the task.",
            MetricType::Histogram,
            durations(&|q| &q.latency),
        )?;
        let mut depth = Vec::new();
        for q in &o.queues {
            for (status, n) in &q.counts {
                depth.push(([("queue", q.name.as_str()), ("status", status.as_str())], gauge(*n)));
            }
        }
        family(
            &mut e,
            "quern_queue_depth",
            "Tasks in each queue by status, from the counts the server keeps.",
            MetricType::Gauge,
            depth,
        )?;
        let paused = o.queues.iter().map(|q| ([("queue", q.name.as_str())], Value::Gauge(i64::from(q.paused))));
        family(&mut e, "quern_queue_paused", "1 while the queue is paused.", MetricType::Gauge, paused)?;
        if !o.whole {
            return Ok(());
        }
        self.encode_server(&mut e)
    }
}

impl Scrape {
    /// The series that are the server's as a whole, not a queue's.
    fn encode_server(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.observed;
        let none: [(&str, &str); 0] = [];
        family(
            e,
            "quern_workers_live",
            "Workers heard from within the last minute (every node's).",
            MetricType::Gauge,
            [(none, gauge(o.live_workers as u64))],
        )?;
        let up = o.loops.iter().map(|(name, running, _)| ([("loop", *name)], Value::Gauge(i64::from(*running))));
        family(
            e,
            "quern_loop_up",
            "1 while the background loop runs (0 between a panic and its restart).",
            MetricType::Gauge,
            up,
        )?;
        let restarts = o.loops.iter().map(|(name, _, n)| ([("loop", *name)], Value::Counter(*n)));
        family(
            e,
            "quern_loop_restarts",
            "Times the background loop was started again after a panic.",
            MetricType::Counter,
            restarts,
        )?;
        family(
            e,
            "quern_events_published",
            "Events published through the API.",
            MetricType::Counter,
            [(none, Value::Counter(o.events_published))],
        )?;
        family(
            e,
            "quern_event_head",
            "The event log's last offset.",
            MetricType::Gauge,
            [(none, gauge(o.event_head))],
        )?;
        let lag = o.group_lag.iter().map(|(g, n)| ([("group", g.as_str())], gauge(*n)));
        family(
            e,
            "quern_consumer_group_lag",
            "Events a consumer group has not acknowledged yet.",
            MetricType::Gauge,
            lag,
        )?;
        let deliveries = o.webhook_deliveries.iter().flat_map(|(w, [ok, failed])| {
            [
                ([("webhook", w.as_str()), ("outcome", "delivered")], Value::Counter(*ok)),
                ([("webhook", w.as_str()), ("outcome", "failed")], Value::Counter(*failed)),
            ]
        });
        family(
            e,
            "quern_webhook_deliveries",
            "Webhook deliveries tried, by outcome.",
            MetricType::Counter,
            deliveries,
        )?;
        let fired = o.schedule_slots.iter().map(|(s, [n, _])| ([("schedule", s.as_str())], Value::Counter(*n)));
        family(e, "quern_schedule_fires", "Schedule slots that created a task.", MetricType::Counter, fired)?;
        let skipped = o.schedule_slots.iter().map(|(s, [_, n])| ([("schedule", s.as_str())], Value::Counter(*n)));
        family(
            e,
            "quern_schedule_skipped",
            "Schedule slots skipped because the last run was unfinished.",
            MetricType::Counter,
            skipped,
        )?;
        if let Some(store) = &o.store {
            let backend = [("backend", o.backend)];
            family(
                e,
                "quern_store_commit_seconds",
                "How long each store transaction took, begin to commit.",
                MetricType::Histogram,
                [(backend, histogram_of(&store.commit_seconds))],
            )?;
            family(
                e,
                "quern_store_commit_requests",
                "Requests each store transaction carried (group commit, merged transactions).",
                MetricType::Histogram,
                [(backend, histogram_of(&store.commit_requests))],
            )?;
            if let Some(n) = store.writer_queue {
                family(
                    e,
                    "quern_store_writer_queue",
                    "Requests waiting for SQLite's writer thread.",
                    MetricType::Gauge,
                    [(none, gauge(n))],
                )?;
            }
            if let Some(n) = store.wal_bytes {
                family(
                    e,
                    "quern_store_wal_bytes",
                    "The size of SQLite's write-ahead log.",
                    MetricType::Gauge,
                    [(none, gauge(n))],
                )?;
            }
            if let Some(pool) = &store.pool {
                let connections = [
                    ([("state", "idle")], gauge(pool.idle)),
                    ([("state", "busy")], gauge(pool.open.saturating_sub(pool.idle))),
                ];
                family(
                    e,
                    "quern_store_pool_connections",
                    "PostgreSQL connections open, by state.",
                    MetricType::Gauge,
                    connections,
                )?;
                family(
                    e,
                    "quern_store_pool_max_connections",
                    "The most PostgreSQL connections the pool opens.",
                    MetricType::Gauge,
                    [(none, gauge(pool.max))],
                )?;
                family(
                    e,
                    "quern_store_pool_waiting",
                    "Requests waiting for a PostgreSQL connection.",
                    MetricType::Gauge,
                    [(none, gauge(pool.waiting))],
                )?;
                family(
                    e,
                    "quern_store_pool_wait_seconds",
                    "How long requests waited for a PostgreSQL connection.",
                    MetricType::Histogram,
                    [(none, histogram_of(&pool.wait_seconds))],
                )?;
            }
        }
        if let Some(http) = &self.http {
            self.encode_http(e, http)?;
        }
        Ok(())
    }

    fn encode_http(&self, e: &mut DescriptorEncoder, http: &HttpMetrics) -> Result<(), std::fmt::Error> {
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for (route, method, stats) in &http.stats {
            let mut statuses = stats.statuses.lock().map(|s| s.clone()).unwrap_or_default();
            if statuses.is_empty() {
                continue;
            }
            statuses.sort_unstable();
            for (status, n) in statuses {
                let labels =
                    vec![("route", route.clone()), ("method", (*method).to_owned()), ("status", status.to_string())];
                requests.push((labels, Value::Counter(n)));
            }
            if route == UNMATCHED {
                continue;
            }
            let mut count = 0;
            let buckets: Vec<(f64, u64)> = stats
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let n = b.load(Ordering::Relaxed);
                    count += n;
                    (HTTP_SECONDS.get(i).copied().unwrap_or(f64::INFINITY), n)
                })
                .collect();
            let sum = stats.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let labels = vec![("route", route.clone()), ("method", (*method).to_owned())];
            durations.push((labels, Value::Histogram(sum, count, buckets)));
        }
        family(
            e,
            "quern_http_requests",
            "HTTP requests answered, by route template, method and status.",
            MetricType::Counter,
            requests,
        )?;
        family(
            e,
            "quern_http_request_duration_seconds",
            "How long HTTP requests took to answer, by route template and method.",
            MetricType::Histogram,
            durations,
        )
    }
}

/// The two formats a scrape may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it.
    pub fn of_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition of `observed` and the HTTP counts, in `format`.
pub fn render(observed: Observed, http: Option<Arc<HttpMetrics>>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { observed, http }));
    let mut out = String::with_capacity(16 * 1024);
    let encoded = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    if let Err(e) = encoded {
        tracing::error!(error = %e, "metrics exposition failed");
    }
    out
}
