//! The worker loop: lease in batches up to the free concurrency, run each
//! task's handler in one tokio task of its own, heartbeat every in-flight
//! lease in one request, deliver completions in batches, and shut down
//! gracefully.
//!
//! A task costs one allocation of its own (its [`Flight`](crate::flight::Flight): the task, its
//! cancel signal and progress) and one tokio task, and takes no lock: the
//! list of flights is locked once per lease and once per heartbeat.
//!
//! Invariants: a result is never dropped while the worker runs — completions
//! that cannot be delivered are retried with their token until the server
//! takes them (it may then refuse them as stale, which is final); a task whose
//! lease is lost, that is cancelled, or that passes its timeout is told to
//! stop through its context; at shutdown, tasks still running after the grace
//! period are handed back (`released`) so that they re-queue at once. A
//! worker given lease keys runs no task whose lease signature fails to
//! verify (see [`quern_core::integrity`]).

use crate::context::{HandlerResult, TaskContext, TaskFailure};
use crate::flight::{Flight, Shared};
use quern_client::{
    Client, CompleteRequest, Completion, HeartbeatRequest, LeaseBeat, LeaseRequest, RegisterRequest, StopsRequest,
    TaskDefaults, TaskTypeDecl,
};
use quern_core::integrity::LeaseKeys;
use quern_core::{ErrorKind, Task};
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture + Send + Sync>;

/// The most results one completion request carries.
const MAX_COMPLETE_BATCH: usize = 1_000;
/// The most tasks one lease asks for (the server's limit).
const MAX_LEASE_BATCH: usize = 1_000;
/// How long a lease waits for running tasks to end when fewer than half of
/// a batch's permits are free.
const LEASE_LINGER: Duration = Duration::from_millis(3);
/// Completion requests in flight at once.
const MAX_COMPLETES_IN_FLIGHT: usize = 2;
/// The fewest results worth a second completion request while one is out.
const SECOND_COMPLETE_AT: usize = 200;
/// How long a watch for tasks to stop parks on the server.
const STOPS_WAIT_MS: u64 = 25_000;
/// How long a lease request parks on the server.
const LEASE_WAIT_MS: u64 = 30_000;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The soonest a progress report brings a heartbeat forward.
const PROGRESS_DEBOUNCE: Duration = Duration::from_millis(200);
/// How long a handler may take to stop after its timeout passed.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// A task type a worker serves.
#[derive(Debug, Clone)]
pub struct TaskType {
    decl: TaskTypeDecl,
}

impl TaskType {
    /// The task type `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { decl: TaskTypeDecl { name: name.into(), description: None, input_schema: None, defaults: None } }
    }

    /// With a description for `GET /v1/task-types`.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.decl.description = Some(text.into());
        self
    }

    /// With a JSON Schema the server checks inputs against (422 on mismatch).
    #[must_use]
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.decl.input_schema = Some(schema);
        self
    }

    /// With a timeout for its tasks whose submission gives none.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.decl.defaults.get_or_insert_with(TaskDefaults::default).timeout_ms = Some(ms);
        self
    }

    /// With a number of attempts (in all) for its tasks whose submission
    /// gives none.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.decl.defaults.get_or_insert_with(TaskDefaults::default).max_attempts = Some(attempts);
        self
    }

    /// With a retry policy for its tasks whose submission gives none.
    #[must_use]
    pub fn retry(mut self, retry: quern_core::RetryPolicy) -> Self {
        self.decl.defaults.get_or_insert_with(TaskDefaults::default).retry = Some(retry);
        self
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    client: Client,
    id: String,
    queues: Vec<String>,
    concurrency: usize,
    lease_ms: u64,
    grace: Duration,
    handlers: HashMap<String, Handler>,
    types: Vec<TaskTypeDecl>,
    lease_keys: Option<Arc<LeaseKeys>>,
}

impl WorkerBuilder {
    /// The worker's id (default: `<host>-<pid>`).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The queues to take tasks from (default: `default`).
    #[must_use]
    pub fn queues(mut self, queues: Vec<String>) -> Self {
        self.queues = queues;
        self
    }

    /// How many tasks run at once (default 16, at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The lease length (default 30 s); heartbeats go every third of it.
    #[must_use]
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms.clamp(1_000, 600_000);
        self
    }

    /// How long running tasks may finish after a shutdown begins (default
    /// 30 s); then they are handed back.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs only tasks whose lease is signed under one of `keys` (the
    /// server's lease key file) and whose fields still digest to what was
    /// signed; any other task fails as `rejected` without running.
    #[must_use]
    pub fn lease_keys(mut self, keys: LeaseKeys) -> Self {
        self.lease_keys = Some(Arc::new(keys));
        self
    }

    /// Runs `handler` for tasks of `task_type`.
    #[must_use]
    pub fn handler<F, Fut>(mut self, task_type: TaskType, handler: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let name = task_type.decl.name.clone();
        self.handlers.insert(name.clone(), Arc::new(move |ctx| Box::pin(handler(ctx)) as BoxFuture));
        self.types.retain(|t| t.name != name);
        self.types.push(task_type.decl);
        self
    }

    /// The worker.
    pub fn build(self) -> Worker {
        Worker { b: self }
    }
}

/// A worker: register handlers with [`Worker::builder`], then [`Worker::run`].
pub struct Worker {
    b: WorkerBuilder,
}

/// Why [`Worker::run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker has no handlers.
    #[error("the worker has no handlers")]
    NoHandlers,
    /// The shell executor's sandbox policy cannot be set up (an unknown
    /// `run_as` user, a missing allowed working-directory prefix).
    #[error("sandbox policy: {0}")]
    Sandbox(String),
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "worker".to_owned() } else { host };
    format!("{host}-{}", std::process::id())
}

impl Worker {
    /// A worker of the server at `client`'s URL.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            id: default_id(),
            queues: vec!["default".to_owned()],
            concurrency: 16,
            lease_ms: 30_000,
            grace: Duration::from_secs(30),
            handlers: HashMap::new(),
            types: Vec::new(),
            lease_keys: None,
        }
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.b.id
    }

    /// Runs until `shutdown` resolves, then stops leasing, lets running tasks
    /// finish within the grace period, hands back the rest and delivers every
    /// result it holds.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        if self.b.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        let b = self.b;
        let shared = Arc::new(Shared { flights: Mutex::new(Vec::new()), progress_changed: Notify::new() });
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let completer = tokio::spawn(deliver(b.client.clone(), b.id.clone(), done_rx));
        let beats =
            tokio::spawn(heartbeat(b.client.clone(), b.id.clone(), b.lease_ms, shared.clone(), stop_rx.clone()));
        let watcher = tokio::spawn(watch_stops(b.client.clone(), b.id.clone(), shared.clone(), stop_rx.clone()));
        let handlers = b.handlers;
        let sem = Arc::new(Semaphore::new(b.concurrency));
        let register = RegisterRequest { worker: b.id.clone(), queues: b.queues.clone(), task_types: b.types };
        let mut names: Vec<String> = handlers.keys().cloned().collect();
        names.sort();
        let lease = LeaseRequest {
            worker: b.id.clone(),
            queues: b.queues,
            names: Some(names),
            max: 1,
            wait_ms: LEASE_WAIT_MS,
            lease_ms: b.lease_ms,
        };
        let batch = b.concurrency.min(MAX_LEASE_BATCH);
        tokio::pin!(shutdown);
        let mut registered = false;
        let mut backoff = BACKOFF_MIN;
        let keys = b.lease_keys;
        let signed_only = keys.as_ref().map(|k| k.ids());
        tracing::info!(worker = %b.id, concurrency = b.concurrency, lease_keys = ?signed_only, "worker started");
        loop {
            let permits = tokio::select! {
                () = &mut shutdown => break,
                p = gather(&sem, batch) => match p { Some(p) => p, None => break },
            };
            if !registered {
                match b.client.register(&register).await {
                    Ok(()) => registered = true,
                    Err(e) => tracing::warn!(error = %e, "registration failed; will retry"),
                }
            }
            let request = LeaseRequest { max: u32::try_from(permits.num_permits()).unwrap_or(1), ..lease.clone() };
            let leased = tokio::select! {
                () = &mut shutdown => break,
                r = b.client.lease(&request) => r,
            };
            match leased {
                Ok(tasks) => {
                    backoff = BACKOFF_MIN;
                    start_all(tasks, &handlers, keys.as_deref(), &shared, &done_tx, permits);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "lease failed");
                    registered = false;
                    drop(permits);
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        tracing::info!(in_flight = shared.in_flight(), grace = ?b.grace, "worker stopping");
        let all = u32::try_from(b.concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(b.grace, sem.acquire_many(all)).await.is_err() {
            hand_back(&shared, &done_tx);
        }
        let _ = stop_tx.send(true);
        drop(done_tx);
        let _ = beats.await;
        let _ = watcher.await;
        let _ = completer.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Permits for the next lease: at least one, and while fewer than half of
/// `batch` are free, up to [`LEASE_LINGER`] more waiting for running tasks
/// to end, so that a worker of short tasks leases (and the server answers)
/// in large batches rather than a few tasks at a time. `None` once the
/// semaphore is closed.
async fn gather(sem: &Arc<Semaphore>, batch: usize) -> Option<OwnedSemaphorePermit> {
    let mut permits = sem.clone().acquire_many_owned(1).await.ok()?;
    let half = u32::try_from(batch / 2).unwrap_or(u32::MAX);
    let have = u32::try_from(permits.num_permits() + sem.available_permits()).unwrap_or(u32::MAX);
    if have < half
        && let Ok(Ok(more)) = tokio::time::timeout(LEASE_LINGER, sem.clone().acquire_many_owned(half - 1)).await
    {
        permits.merge(more);
    }
    let free = sem.available_permits().min(batch.saturating_sub(permits.num_permits()));
    if free > 0
        && let Ok(more) = sem.clone().try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX))
    {
        permits.merge(more);
    }
    Some(permits)
}

/// Gives every running task back to the server and tells its handler to
/// stop; the handlers' own results are then dropped.
fn hand_back(shared: &Shared, done: &mpsc::UnboundedSender<Completion>) {
    let flights: Vec<Arc<Flight>> = shared.flights.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default();
    for flight in flights {
        if !flight.finish() {
            continue;
        }
        tracing::info!(task = %flight.task.id, "handing back an unfinished task");
        flight.cancel();
        if let Some(abort) = flight.abort.get() {
            abort.abort();
        }
        let _ = done.send(Completion::released(flight.task.id, flight.token.clone()));
    }
}

/// Starts a lease's tasks, each in one tokio task holding one of `permits`.
fn start_all(
    tasks: Vec<Task>,
    handlers: &HashMap<String, Handler>,
    keys: Option<&LeaseKeys>,
    shared: &Arc<Shared>,
    done: &mpsc::UnboundedSender<Completion>,
    mut permits: OwnedSemaphorePermit,
) {
    let mut flights = Vec::with_capacity(tasks.len());
    for task in tasks {
        let Some(token) = task.lease.as_ref().map(|l| l.token.clone()) else { continue };
        let Some(permit) = permits.split(1) else { break };
        if let Some(Err(e)) = keys.map(|k| k.verify(&task)) {
            tracing::error!(task = %task.id, error = %e, "lease signature check failed; task not run");
            let failure = TaskFailure::rejected(format!("lease signature check failed: {e}; not run"))
                .with_details(serde_json::json!({"reason": "integrity"}));
            let _ = done.send(completion(task.id, token, Err(failure)));
            continue;
        }
        let Some(handler) = handlers.get(&task.name) else {
            let failure = TaskFailure::rejected(format!("this worker has no handler for {}", task.name));
            let _ = done.send(completion(task.id, token, Err(failure)));
            continue;
        };
        let flight = Arc::new(Flight::new(task, token));
        let running = handler(TaskContext::new(flight.clone(), shared.clone()));
        let t = &flight.task;
        let span = tracing::info_span!(
            "task",
            task = %t.id,
            name = %t.name,
            queue = %t.queue,
            attempt = t.attempt,
            trace_id = tracing::field::Empty
        );
        // The trace the task continues, so that its log lines can be found
        // from the trace and the trace from them.
        if let Some(trace_id) = t.traceparent.as_deref().and_then(|tp| tp.split('-').nth(1)) {
            span.record("trace_id", trace_id);
        }
        let handle =
            tokio::spawn(tracing::Instrument::instrument(run_one(flight.clone(), running, done.clone(), permit), span));
        let _ = flight.abort.set(handle.abort_handle());
        flights.push(flight);
    }
    shared.track(&flights);
}

/// Runs one task's handler and queues its outcome, unless the task was
/// handed back meanwhile (it is then no longer ours to complete).
async fn run_one(
    flight: Arc<Flight>,
    running: BoxFuture,
    done: mpsc::UnboundedSender<Completion>,
    permit: OwnedSemaphorePermit,
) {
    let outcome = run_handler(&flight, running).await;
    if flight.finish() {
        let last = completion(flight.task.id, flight.token.clone(), outcome).with_progress(flight.take_progress());
        let _ = done.send(last);
    }
    drop(permit);
}

fn completion(task: Uuid, token: String, outcome: HandlerResult) -> Completion {
    match outcome {
        Ok(result) => Completion::succeeded(task, token, &result),
        Err(failure) => {
            let (error, retry) = failure.into_error();
            Completion::failed(task, token, error, retry)
        }
    }
}

/// Awaits one handler (a panic is a failure, not a crash), enforcing the
/// task's timeout locally.
async fn run_handler(flight: &Flight, running: BoxFuture) -> HandlerResult {
    let mut running = CatchPanic(running);
    let caught = match flight.task.timeout_ms {
        None => (&mut running).await,
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), &mut running).await {
            Ok(caught) => caught,
            Err(_) => {
                flight.cancel();
                // The handler may stop on its own within the grace; either
                // way the attempt timed out, and it is dropped after.
                let _ = tokio::time::timeout(TIMEOUT_GRACE, &mut running).await;
                let (attempt, ms) = (flight.task.attempt, ms);
                let message = format!("attempt {attempt} ran past its timeout of {ms} ms");
                return Err(TaskFailure { kind: ErrorKind::Timeout, message, details: None, retry: true });
            }
        },
    };
    caught.unwrap_or_else(|payload| {
        Err(TaskFailure::retryable(format!("the handler panicked: {}", panic_message(&*payload))))
    })
}

/// A handler's future whose panics come out as `Err` with the payload, so
/// that the handler can run inside the task that completes it.
struct CatchPanic(BoxFuture);

impl Future for CatchPanic {
    type Output = Result<HandlerResult, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Delivers completions in batches, retrying through server outages until
/// every result is taken (or refused as stale) and the channel is closed.
/// One request is in flight at a time, and a second one only for a batch of
/// at least [`SECOND_COMPLETE_AT`] results: the results that come in while a
/// request is out make the next batch.
async fn deliver(client: Client, worker: String, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let mut pending: Vec<Completion> = Vec::new();
    let mut sending = JoinSet::new();
    let mut open = true;
    loop {
        while !pending.is_empty()
            && (sending.is_empty() || (sending.len() < MAX_COMPLETES_IN_FLIGHT && pending.len() >= SECOND_COMPLETE_AT))
        {
            let results: Vec<Completion> = pending.drain(..pending.len().min(MAX_COMPLETE_BATCH)).collect();
            sending.spawn(send_completions(client.clone(), CompleteRequest { worker: worker.clone(), results }));
        }
        if !open && pending.is_empty() && sending.is_empty() {
            return;
        }
        tokio::select! {
            got = rx.recv(), if open && pending.len() < MAX_COMPLETE_BATCH => match got {
                Some(c) => {
                    pending.push(c);
                    while pending.len() < MAX_COMPLETE_BATCH {
                        match rx.try_recv() {
                            Ok(c) => pending.push(c),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
        }
    }
}

/// Sends one batch of completions until the server takes it (or refuses it
/// as a bad request, which retrying would not change).
async fn send_completions(client: Client, request: CompleteRequest) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match client.complete(&request).await {
            Ok(answers) => {
                for a in answers.iter().filter(|a| !a.ok) {
                    tracing::warn!(task = %a.task, "completion refused: the lease was no longer current");
                }
                return;
            }
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::error!(error = %e, "completion refused by the server; dropping it");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "completion not delivered; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Holds a watch for the tasks to stop (`POST /v1/stops`) open all the
/// time, so that a cancel, or an attempt the server ended, reaches its task
/// at once; heartbeats still say so too, for a server without the route.
async fn watch_stops(client: Client, worker: String, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let request = StopsRequest { worker, wait_ms: STOPS_WAIT_MS };
    let mut backoff = BACKOFF_MIN;
    loop {
        let answer = tokio::select! {
            r = client.stops(&request) => r,
            () = stopped(&mut stop) => return,
        };
        match answer {
            Ok(stops) => {
                backoff = BACKOFF_MIN;
                if stops.is_empty() {
                    continue;
                }
                let Ok(flights) = shared.flights.lock().map(|f| f.clone()) else { return };
                for notice in stops {
                    for flight in flights.iter().filter(|f| f.task.id == notice.task && !f.is_finished()) {
                        tracing::info!(task = %notice.task, reason = ?notice.reason, "telling a task to stop");
                        flight.cancel();
                    }
                }
            }
            Err(e) if e.status() == Some(404) => {
                tracing::info!("the server does not push stops; cancels arrive with heartbeats");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?backoff, "watching for stops failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Beats every lease in one request every third of the lease length (sooner
/// after a progress report), and tells tasks to stop when the server says so.
async fn heartbeat(
    client: Client,
    worker: String,
    lease_ms: u64,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(lease_ms / 3);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shared.progress_changed.notified() => tokio::time::sleep(PROGRESS_DEBOUNCE).await,
            () = stopped(&mut stop) => return,
        }
        let Ok(flights) =
            shared.flights.lock().map(|f| f.iter().filter(|f| !f.is_finished()).cloned().collect::<Vec<_>>())
        else {
            return;
        };
        if flights.is_empty() {
            continue;
        }
        let leases = flights
            .iter()
            .map(|f| LeaseBeat { task: f.task.id, token: f.token.clone(), progress: f.take_progress() })
            .collect();
        match client.heartbeat(&HeartbeatRequest { worker: worker.clone(), leases }).await {
            Ok(answers) => {
                let stopping: HashMap<Uuid, bool> =
                    answers.into_iter().filter(|a| a.cancel || !a.ok).map(|a| (a.task, !a.ok)).collect();
                for flight in flights.iter().filter(|f| stopping.contains_key(&f.task.id)) {
                    let lost = stopping.get(&flight.task.id).copied().unwrap_or(false);
                    tracing::info!(task = %flight.task.id, lost, "telling a task to stop");
                    flight.cancel();
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Contexts for handlers run outside a [`Worker`], for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::context::TaskContext;
    use crate::flight::{Flight, Shared};
    use quern_core::{Progress, Task};
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;

    /// Tells the context's task to stop, as a cancel from the server would.
    pub(crate) struct Cancel(Arc<Flight>);

    impl Cancel {
        pub(crate) fn cancel(&self) {
            self.0.cancel();
        }
    }

    /// A context for `task` as the runtime would give it to a handler, the
    /// means to cancel it, and the shared state to read its progress from.
    pub(crate) fn context(task: Task) -> (TaskContext, Cancel, Arc<Shared>) {
        let flight = Arc::new(Flight::new(task, String::new()));
        let shared = Arc::new(Shared { flights: Mutex::new(vec![flight.clone()]), progress_changed: Notify::new() });
        (TaskContext::new(flight.clone(), shared.clone()), Cancel(flight), shared)
    }

    /// The progress last reported for `task`.
    pub(crate) fn progress(shared: &Shared, task: uuid::Uuid) -> Option<Progress> {
        let flights = shared.flights.lock().ok()?;
        let flight = flights.iter().find(|f| f.task.id == task)?;
        flight.progress.lock().ok()?.clone()
    }
}
