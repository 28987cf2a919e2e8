//! The worker loop: lease in batches up to the free concurrency, run each
//! task's handler in its own tokio task, heartbeat every in-flight lease in
//! one request, deliver completions in batches, and shut down gracefully.
//!
//! Invariants: a result is never dropped while the worker runs — completions
//! that cannot be delivered are retried with their token until the server
//! takes them (it may then refuse them as stale, which is final); a task whose
//! lease is lost, that is cancelled, or that passes its timeout is told to
//! stop through its context; at shutdown, tasks still running after the grace
//! period are handed back (`released`) so that they re-queue at once.

use crate::context::{HandlerResult, TaskContext, TaskFailure};
use quern_client::{
    Client, CompleteRequest, Completion, HeartbeatRequest, LeaseBeat, LeaseRequest, Outcome, RegisterRequest,
    TaskTypeDecl,
};
use quern_core::{ErrorKind, Progress, Task};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use uuid::Uuid;

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture + Send + Sync>;

/// The most results one completion request carries.
const MAX_COMPLETE_BATCH: usize = 1_000;
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
        Self { decl: TaskTypeDecl { name: name.into(), description: None, input_schema: None } }
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

/// State shared by the loops and the task contexts.
pub(crate) struct Shared {
    flights: Mutex<HashMap<Uuid, Flight>>,
    progress_changed: Notify,
}

struct Flight {
    token: String,
    progress: Option<Progress>,
    progress_dirty: bool,
    cancel: watch::Sender<bool>,
    /// The handler's tokio task, aborted when the task is handed back.
    abort: Option<tokio::task::AbortHandle>,
}

impl Shared {
    pub(crate) fn set_progress(&self, task: Uuid, progress: Progress) {
        if let Ok(mut f) = self.flights.lock()
            && let Some(flight) = f.get_mut(&task)
        {
            flight.progress = Some(progress);
            flight.progress_dirty = true;
        }
        self.progress_changed.notify_one();
    }

    fn cancel(&self, task: Uuid) {
        if let Ok(f) = self.flights.lock()
            && let Some(flight) = f.get(&task)
        {
            let _ = flight.cancel.send(true);
        }
    }

    fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }
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
        let shared = Arc::new(Shared { flights: Mutex::new(HashMap::new()), progress_changed: Notify::new() });
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let completer = tokio::spawn(deliver(b.client.clone(), b.id.clone(), done_rx));
        let beats =
            tokio::spawn(heartbeat(b.client.clone(), b.id.clone(), b.lease_ms, shared.clone(), stop_rx.clone()));
        let handlers = Arc::new(b.handlers);
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
        tokio::pin!(shutdown);
        let mut registered = false;
        let mut backoff = BACKOFF_MIN;
        tracing::info!(worker = %b.id, concurrency = b.concurrency, "worker started");
        loop {
            let mut permits = tokio::select! {
                () = &mut shutdown => break,
                p = sem.clone().acquire_many_owned(1) => match p { Ok(p) => p, Err(_) => break },
            };
            while permits.num_permits() < MAX_COMPLETE_BATCH {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.merge(p),
                    Err(_) => break,
                }
            }
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
                    for task in tasks {
                        let Some(permit) = permits.split(1) else { break };
                        start(task, &handlers, &shared, &done_tx, permit);
                    }
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
        let _ = completer.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Gives every running task back to the server and tells its handler to
/// stop; the handlers' own results are then dropped.
fn hand_back(shared: &Shared, done: &mpsc::UnboundedSender<Completion>) {
    let flights: Vec<(Uuid, Flight)> = shared.flights.lock().map(|mut f| f.drain().collect()).unwrap_or_default();
    for (task, flight) in flights {
        tracing::info!(%task, "handing back an unfinished task");
        let _ = flight.cancel.send(true);
        if let Some(abort) = flight.abort {
            abort.abort();
        }
        let _ = done.send(Completion { task, token: flight.token, outcome: Outcome::Released });
    }
}

fn start(
    task: Task,
    handlers: &Arc<HashMap<String, Handler>>,
    shared: &Arc<Shared>,
    done: &mpsc::UnboundedSender<Completion>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(lease) = task.lease.clone() else { return };
    let (cancel_tx, cancel_rx) = watch::channel(false);
    if let Ok(mut f) = shared.flights.lock() {
        f.insert(
            task.id,
            Flight {
                token: lease.token.clone(),
                progress: None,
                progress_dirty: false,
                cancel: cancel_tx,
                abort: None,
            },
        );
    }
    let id = task.id;
    let task = Arc::new(task);
    let handler = handlers.get(&task.name).cloned();
    let ctx = TaskContext::new(task.clone(), shared.clone(), cancel_rx);
    let shared = shared.clone();
    let done = done.clone();
    let running = handler.map(|h| {
        let handle = tokio::spawn(h(ctx));
        if let Ok(mut f) = shared.flights.lock()
            && let Some(flight) = f.get_mut(&id)
        {
            flight.abort = Some(handle.abort_handle());
        }
        handle
    });
    tokio::spawn(async move {
        let outcome = match running {
            Some(handle) => run_handler(&task, &shared, handle).await,
            None => Err(TaskFailure::rejected(format!("this worker has no handler for {}", task.name))),
        };
        // A task handed back at shutdown is no longer ours to complete.
        let ours = shared.flights.lock().map(|mut f| f.remove(&id).is_some()).unwrap_or(false);
        if ours {
            let outcome = match outcome {
                Ok(result) => Outcome::Succeeded { result },
                Err(failure) => {
                    let (error, retry) = failure.into_error();
                    Outcome::Failed { error, retry }
                }
            };
            let _ = done.send(Completion { task: id, token: lease.token, outcome });
        }
        drop(permit);
    });
}

/// Awaits one handler, running in its own tokio task (so a panic is a
/// failure, not a crash), enforcing the task's timeout locally.
async fn run_handler(
    task: &Task,
    shared: &Shared,
    mut handle: tokio::task::JoinHandle<HandlerResult>,
) -> HandlerResult {
    let joined = match task.timeout_ms {
        None => (&mut handle).await,
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                shared.cancel(task.id);
                if tokio::time::timeout(TIMEOUT_GRACE, &mut handle).await.is_err() {
                    handle.abort();
                }
                let message = format!("attempt {} ran past its timeout of {ms} ms", task.attempt);
                return Err(TaskFailure { kind: ErrorKind::Timeout, message, details: None, retry: true });
            }
        },
    };
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(TaskFailure::retryable(format!("the handler panicked: {}", panic_message(e)))),
        Err(_) => Err(TaskFailure::retryable("the handler was aborted")),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Delivers completions in batches, retrying through server outages until
/// every result is taken (or refused as stale) and the channel is closed.
async fn deliver(client: Client, worker: String, mut rx: mpsc::UnboundedReceiver<Completion>) {
    while let Some(first) = rx.recv().await {
        let mut results = vec![first];
        while results.len() < MAX_COMPLETE_BATCH {
            match rx.try_recv() {
                Ok(c) => results.push(c),
                Err(_) => break,
            }
        }
        let request = CompleteRequest { worker: worker.clone(), results };
        let mut backoff = BACKOFF_MIN;
        loop {
            match client.complete(&request).await {
                Ok(answers) => {
                    for a in answers.iter().filter(|a| !a.ok) {
                        tracing::warn!(task = %a.task, "completion refused: the lease was no longer current");
                    }
                    break;
                }
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    tracing::error!(error = %e, "completion refused by the server; dropping it");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "completion not delivered; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
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
        let leases: Vec<LeaseBeat> = match shared.flights.lock() {
            Ok(mut f) => f
                .iter_mut()
                .map(|(task, flight)| {
                    let progress = if flight.progress_dirty { flight.progress.clone() } else { None };
                    flight.progress_dirty = false;
                    LeaseBeat { task: *task, token: flight.token.clone(), progress }
                })
                .collect(),
            Err(_) => return,
        };
        if leases.is_empty() {
            continue;
        }
        match client.heartbeat(&HeartbeatRequest { worker: worker.clone(), leases }).await {
            Ok(answers) => {
                for a in answers.into_iter().filter(|a| a.cancel || !a.ok) {
                    tracing::info!(task = %a.task, lost = !a.ok, "telling a task to stop");
                    shared.cancel(a.task);
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
    use super::{Flight, Shared};
    use crate::context::TaskContext;
    use quern_core::{Progress, Task};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::sync::{Notify, watch};

    /// A context for `task` as the runtime would give it to a handler; send
    /// `true` on the sender to cancel it; read its progress from the shared
    /// state.
    pub(crate) fn context(task: Task) -> (TaskContext, watch::Sender<bool>, Arc<Shared>) {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (flight_tx, _) = watch::channel(false);
        let flight =
            Flight { token: String::new(), progress: None, progress_dirty: false, cancel: flight_tx, abort: None };
        let shared = Arc::new(Shared {
            flights: Mutex::new(HashMap::from([(task.id, flight)])),
            progress_changed: Notify::new(),
        });
        (TaskContext::new(Arc::new(task), shared.clone(), cancel_rx), cancel_tx, shared)
    }

    /// The progress last reported for `task`.
    pub(crate) fn progress(shared: &Shared, task: uuid::Uuid) -> Option<Progress> {
        shared.flights.lock().ok()?.get(&task)?.progress.clone()
    }
}
