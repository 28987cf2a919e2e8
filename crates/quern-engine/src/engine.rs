//! The engine: the one place that changes state. Every door calls it; it
//! admits the caller, validates, reads the clock, calls the store, and waits
//! on the store's signals for long-polls. Its background services (timers,
//! retention sweeper, scheduler, webhooks, worker sync) run until the
//! shutdown signal.
//!
//! Invariant: nothing reaches the store that [`quern_core`] has not
//! validated, and no time is read except through the engine's [`Clock`].

mod audit;
mod events;
mod groups;
mod metrics;
mod schedules;
pub mod supervise;
mod tokens;
mod webhooks;

pub use groups::GroupRead;
pub use metrics::Observed;
pub use schedules::{ApplyReport, PutOutcome, ScheduleView};
pub use webhooks::{SIGNATURE_HEADER, WebhookSpec, signature};

use crate::caller::Caller;
use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::registry::Registry;
use crate::workflow::{self, WorkflowError, WorkflowSpec};
use quern_core::auth::Permission;
use quern_core::integrity::LeaseKeys;
use quern_core::spec::{
    MAX_APPROVER_LEN, MAX_COMMENT_LEN, check_json_depth, check_lease_names, check_text, check_worker_name,
};
use quern_core::{Clock, ExecutionDefaults, HistoryEntry, Millis, Outcome, Status, Task, TaskSpec};
use quern_store::{
    Approval, CompleteParams, Completion, HeartbeatLease, HeartbeatParams, LeaseParams, ListQuery, NewWorkflow,
    QueueInfo, Store, StoreError, Submitted, TaskPage, WorkflowPage, WorkflowQuery, WorkflowRecord,
};
use quern_wire::worker as wire;
use quern_wire::{
    CompleteRequest, Completed, HeartbeatRequest, Heartbeats, LeaseRequest, Leased, Refusal, RegisterRequest,
    Registered, TaskTypeView, WorkerView,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// What the scheduler's idempotency keys start with: no one else may use it,
/// or a task could take a schedule's slot before it fires.
pub const RESERVED_KEY_PREFIX: &str = "schedule:";
/// The built-in task that runs a command on a worker.
const SHELL_TASK: &str = "shell";

/// The permission each operation needs: the one table every door's access
/// is decided by (`docs/security.md` shows it as a matrix). An operation
/// not named here needs `admin`.
pub fn permission_of(op: &str) -> Permission {
    match op {
        "get" | "workflow" | "workflow_page" | "list" | "history" | "workers" | "task_types" | "queues" | "ready"
        | "read_events" | "event_head" | "read_group" | "ack_events" | "schedules" | "schedule" | "schedule_runs"
        | "metrics" => Permission::Read,
        "submit" | "submit_batch" | "submit_workflow" | "cancel_workflow" | "cancel" | "retry" | "publish" => {
            Permission::Submit
        }
        "register" | "lease" | "heartbeat" | "stops" | "complete" => Permission::Work,
        "approve" => Permission::Approve,
        _ => Permission::Admin,
    }
}

/// The longest a timer sleeps without looking again, in case a signal was
/// missed.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);
/// How long the task types read from the store are taken as current.
const TYPES_FRESH_FOR: Duration = Duration::from_secs(1);
/// How often a node tells the store what it heard of its workers, and how
/// long the workers read from the store are taken as current: a worker
/// shows on every node within about twice this.
const WORKERS_SYNC: Duration = Duration::from_secs(1);
/// Tasks deleted per retention transaction.
const PURGE_CHUNK: usize = 2_000;

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    defaults: ExecutionDefaults,
    retention_ttl_ms: u64,
    audit_ttl_ms: u64,
    sweep_interval: Duration,
    events_ttl_ms: u64,
    events_max: u64,
    backoffs: webhooks::Backoffs,
    /// Raised when a webhook is put or resumed on this node: the deliverer
    /// waits on it, not on every commit, while no webhook is due.
    webhooks_changed: tokio::sync::Notify,
    shutdown: watch::Receiver<bool>,
    registry: Registry,
    started_at: Millis,
    /// This server's name among the nodes sharing a store.
    node: String,
    /// The kind of store: `sqlite` or `postgres`.
    backend: &'static str,
    /// The reads of the task types declared through other nodes.
    types_read: Refresh,
    /// The reads of the workers other nodes heard from.
    workers_read: Refresh,
    /// The background loops' states.
    loops: Arc<supervise::Loops>,
    /// Every request needs a valid token.
    auth_required: bool,
    /// Webhooks may reach internal addresses.
    webhooks_allow_private: bool,
    /// The tokens this node knows.
    tokens: tokens::Tokens,
    /// What an operator should know of how this server runs (listening
    /// beyond loopback without tokens), shown by `/v1/health`.
    warnings: std::sync::Mutex<Vec<String>>,
    /// The keys leases are signed with, when the server has a key file.
    lease_keys: std::sync::RwLock<Option<Arc<LeaseKeys>>>,
    /// What the engine counts for the metrics.
    counters: metrics::Counters,
    /// The most queues `/metrics` shows by name.
    metrics_max_queues: usize,
}

/// A read of what other nodes share, done at most once per period: callers
/// in between take what the last read brought. Within the period a caller
/// looks at one atomic, not the lock (these run on every submit and every
/// authenticated request).
struct Refresh {
    every: Duration,
    /// When the last read succeeded, in milliseconds since `epoch` (0: never).
    read_at_ms: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    /// Held while reading, so that callers that come meanwhile wait for
    /// that read rather than read too.
    reading: tokio::sync::Mutex<()>,
}

impl Refresh {
    fn new(every: Duration) -> Self {
        Self {
            every,
            read_at_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A read succeeded within the period.
    fn is_fresh(&self) -> bool {
        let at = self.read_at_ms.load(std::sync::atomic::Ordering::Acquire);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        at != 0 && self.since_epoch_ms().saturating_sub(at) < every
    }

    /// Runs `read` unless a read succeeded within the period.
    async fn run(&self, read: impl Future<Output = Result<()>>) -> Result<()> {
        if self.is_fresh() {
            return Ok(());
        }
        let _reading = self.reading.lock().await;
        if self.is_fresh() {
            return Ok(());
        }
        read.await?;
        self.read_at_ms.store(self.since_epoch_ms().max(1), std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

impl Engine {
    /// An engine over `store`, reading time from `clock`, stopping when
    /// `shutdown` turns true.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: &Config, shutdown: watch::Receiver<bool>) -> Self {
        let started_at = clock.now();
        store.signals().bound_totals(config.metrics.max_task_names, config.metrics.max_queues);
        Self {
            store,
            clock,
            defaults: config.execution.clone(),
            retention_ttl_ms: config.retention.ttl.0,
            audit_ttl_ms: config.retention.audit_ttl.0,
            sweep_interval: Duration::from_millis(config.retention.sweep_interval.0),
            events_ttl_ms: config.events.ttl.0,
            events_max: config.events.max_events,
            backoffs: webhooks::Backoffs::default(),
            webhooks_changed: tokio::sync::Notify::new(),
            shutdown,
            registry: Registry::default(),
            started_at,
            node: Uuid::new_v4().simple().to_string(),
            backend: if config.storage.url.is_some() { "postgres" } else { "sqlite" },
            types_read: Refresh::new(TYPES_FRESH_FOR),
            workers_read: Refresh::new(WORKERS_SYNC),
            loops: Arc::default(),
            auth_required: config.auth.required,
            webhooks_allow_private: config.webhooks.allow_private,
            tokens: tokens::Tokens::default(),
            warnings: std::sync::Mutex::default(),
            lease_keys: std::sync::RwLock::default(),
            counters: metrics::Counters::default(),
            metrics_max_queues: config.metrics.max_queues,
        }
    }

    /// Signs every lease from now on with the first of `keys` (none: leases
    /// go out unsigned). Set at start and again on each reload of the file.
    pub fn set_lease_keys(&self, keys: Option<LeaseKeys>) {
        if let Ok(mut held) = self.lease_keys.write() {
            *held = keys.map(Arc::new);
        }
    }

    /// Signs each leased task's lease (see [`quern_core::integrity`]).
    fn sign_leases(&self, tasks: &mut [Task]) {
        let Some(keys) = self.lease_keys.read().ok().and_then(|k| k.clone()) else { return };
        for task in tasks {
            if let Some(lease) = task.lease.as_mut() {
                lease.signature = Some(keys.sign(task.id, &task.digest));
            }
        }
    }

    /// Starts the background loops (timers, retention, scheduler, webhooks,
    /// worker sync), each supervised: a panic is logged and the loop started
    /// again. They end at shutdown.
    pub fn spawn_loops(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        fn each<Fut: Future<Output = ()> + Send + 'static>(
            engine: &Arc<Engine>,
            name: &'static str,
            run: fn(Arc<Engine>) -> Fut,
        ) -> tokio::task::JoinHandle<()> {
            let e = engine.clone();
            supervise::supervise(engine.loops.clone(), name, engine.clock.clone(), engine.shutdown.clone(), move || {
                run(e.clone())
            })
        }
        vec![
            each(self, "timers", |e| async move { e.run_timers().await }),
            each(self, "retention", |e| async move { e.run_retention().await }),
            each(self, "scheduler", |e| async move { e.run_scheduler().await }),
            each(self, "webhooks", |e| async move { e.run_webhooks().await }),
            each(self, "worker_sync", |e| async move { e.run_worker_sync().await }),
        ]
    }

    /// The background loops' states, by name.
    pub fn loops(&self) -> &supervise::Loops {
        &self.loops
    }

    /// The kind of store: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Records a warning about how this server runs, for `/v1/health`.
    pub fn warn(&self, warning: impl Into<String>) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(warning.into());
        }
    }

    /// The warnings about how this server runs.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Whether every request needs a valid token.
    pub fn auth_required(&self) -> bool {
        self.auth_required
    }

    /// Lets `caller` run operation `op`, or refuses it: every operation of
    /// every door passes here first, and [`permission_of`] is the one table
    /// it decides by.
    pub fn admit(&self, caller: &Caller, op: &str) -> Result<()> {
        let need = permission_of(op);
        if caller.may(need) {
            return Ok(());
        }
        tracing::info!(%caller, op, "refused: needs the {} permission", need.as_str());
        Err(EngineError::Forbidden(format!("{caller} may not {op}: it needs the `{}` permission", need.as_str())))
    }

    /// Refuses a task in a queue outside the caller's scope, as if it were
    /// not there: a confined token learns nothing of other queues.
    async fn visible(&self, caller: &Caller, id: Uuid) -> Result<()> {
        if caller.scope().is_some() && !caller.covers(&self.store.get(id).await?.queue) {
            return Err(StoreError::NotFound(id).into());
        }
        Ok(())
    }

    /// Refuses a submission that depends on a task that does not exist (or
    /// that the caller cannot see), naming the edge.
    async fn parents_exist(&self, caller: &Caller, task: &quern_core::NewTask, index: Option<usize>) -> Result<()> {
        for (j, d) in task.depends_on.iter().enumerate() {
            let seen = match self.store.get(d.task).await {
                Ok(parent) => caller.covers(&parent.queue),
                Err(StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if !seen {
                let error =
                    quern_core::ValidationError::new(format!("depends_on[{j}].task"), format!("no task {}", d.task));
                return Err(EngineError::Invalid { error, index });
            }
        }
        Ok(())
    }

    /// Refuses a workflow with a task outside the caller's scope, as if it
    /// were not there.
    async fn visible_workflow(&self, caller: &Caller, id: Uuid) -> Result<()> {
        if caller.scope().is_some() && !self.store.workflow(id).await?.tasks.iter().all(|t| caller.covers(&t.queue)) {
            return Err(StoreError::WorkflowNotFound(id).into());
        }
        Ok(())
    }

    /// Refuses to write into a queue outside the caller's scope, naming it.
    fn may_write(caller: &Caller, queue: &str) -> Result<()> {
        match caller.scope() {
            Some(scope) if !caller.covers(queue) => Err(EngineError::Forbidden(format!(
                "{caller} is confined to the queues {}; {queue:?} is not one of them",
                scope.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// What only the engine may write in a submission: idempotency keys
    /// under `schedule:`; and a `shell` task needs the `shell` permission.
    fn may_submit(caller: &Caller, task: &quern_core::NewTask) -> Result<()> {
        Self::may_write(caller, &task.queue)?;
        if !caller.is_server() && task.idempotency_key.as_deref().is_some_and(|k| k.starts_with(RESERVED_KEY_PREFIX)) {
            return Err(EngineError::Reserved {
                field: "idempotency_key",
                message: format!("keys starting {RESERVED_KEY_PREFIX:?} are the scheduler's"),
            });
        }
        if task.name == SHELL_TASK && !caller.may(Permission::Shell) {
            return Err(EngineError::Forbidden(format!(
                "{caller} may not submit `shell` tasks: it needs the `shell` permission"
            )));
        }
        Ok(())
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Milliseconds since the engine started.
    pub fn uptime_ms(&self) -> Millis {
        self.now() - self.started_at
    }

    fn validate(&self, mut spec: TaskSpec, now: Millis, index: Option<usize>) -> Result<quern_core::NewTask> {
        self.registry.with_defaults(&mut spec);
        let task = spec
            .validate(&self.defaults, Uuid::now_v7(), now)
            .map_err(|error| EngineError::Invalid { error, index })?;
        self.registry.check_input(&task.name, &task.input).map_err(|message| EngineError::InputRejected {
            name: task.name.clone(),
            message,
            index,
        })?;
        Ok(task)
    }

    /// Submits one task.
    pub async fn submit(&self, caller: &Caller, spec: TaskSpec) -> Result<Submitted> {
        self.admit(caller, "submit")?;
        self.read_task_types().await?;
        let task = self.validate(spec, self.now(), None)?;
        Self::may_submit(caller, &task)?;
        self.parents_exist(caller, &task, None).await?;
        let mut out = self.store.submit(vec![task]).await?;
        out.pop().ok_or_else(|| StoreError::Backend("the store answered no task".into()).into())
    }

    /// Submits tasks, all or none.
    pub async fn submit_batch(&self, caller: &Caller, specs: Vec<TaskSpec>) -> Result<Vec<Submitted>> {
        self.admit(caller, "submit_batch")?;
        if specs.len() > quern_wire::tasks::MAX_BATCH {
            let message = format!("at most {} tasks per batch", quern_wire::tasks::MAX_BATCH);
            return Err(EngineError::Field { field: "tasks", message });
        }
        self.read_task_types().await?;
        let now = self.now();
        let tasks =
            specs.into_iter().enumerate().map(|(i, s)| self.validate(s, now, Some(i))).collect::<Result<Vec<_>>>()?;
        for (i, task) in tasks.iter().enumerate() {
            Self::may_submit(caller, task)?;
            self.parents_exist(caller, task, Some(i)).await?;
        }
        Ok(self.store.submit(tasks).await?)
    }

    /// A task; with `wait`, held until it ends or the wait elapses.
    pub async fn get(&self, caller: &Caller, id: Uuid, wait: Option<Duration>) -> Result<Task> {
        self.admit(caller, "get")?;
        self.visible(caller, id).await?;
        let Some(wait) = wait.filter(|w| !w.is_zero()) else {
            return Ok(self.explain(self.store.get(id).await?).await);
        };
        let ended = self.store.signals().wait_for_end(id);
        let task = self.store.get(id).await?;
        if task.status.is_terminal() {
            self.store.signals().forget_closed(id);
            return Ok(task);
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = ended => {}
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
        self.store.signals().forget_closed(id);
        Ok(self.explain(self.store.get(id).await?).await)
    }

    /// Adds the notice that no live worker (of any node) serves a queued
    /// task, so that a waiting client can say why nothing happens.
    async fn explain(&self, mut task: Task) -> Task {
        if task.status != Status::Queued {
            return task;
        }
        if let Err(e) = self.read_workers().await {
            tracing::debug!(error = %e, "workers of other nodes not read");
        }
        if !self.registry.serves(&task.queue, &task.name, self.now()) {
            task.notice = Some(format!("no live worker serves `{}` on queue `{}`", task.name, task.queue));
        }
        task
    }

    /// Submits a workflow: every task, or none.
    pub async fn submit_workflow(
        &self,
        caller: &Caller,
        mut spec: WorkflowSpec,
    ) -> Result<(Uuid, indexmap::IndexMap<String, Uuid>)> {
        self.admit(caller, "submit_workflow")?;
        self.read_task_types().await?;
        let now = self.now();
        let id = Uuid::now_v7();
        let name = spec.name.clone();
        for task in &mut spec.tasks {
            self.registry.with_defaults(&mut task.spec);
        }
        let (tasks, by_key) = workflow::build(spec, id, &self.defaults, now).map_err(|e| match e {
            WorkflowError::Task { index, error } => EngineError::Invalid { error, index: Some(index) },
            WorkflowError::Graph(error) => EngineError::Workflow(error),
        })?;
        for (i, t) in tasks.iter().enumerate() {
            self.registry.check_input(&t.name, &t.input).map_err(|message| EngineError::InputRejected {
                name: t.name.clone(),
                message,
                index: Some(i),
            })?;
            Self::may_submit(caller, t)?;
        }
        self.store.submit_workflow(NewWorkflow { id, name, created_at: now }, tasks).await?;
        Ok((id, by_key))
    }

    /// A workflow with every task (what its graph is drawn from).
    pub async fn workflow(&self, caller: &Caller, id: Uuid) -> Result<WorkflowRecord> {
        self.admit(caller, "workflow")?;
        let workflow = self.store.workflow(id).await?;
        if !workflow.tasks.iter().all(|t| caller.covers(&t.queue)) {
            return Err(StoreError::WorkflowNotFound(id).into());
        }
        Ok(workflow)
    }

    /// A workflow's counts by status and one page of its tasks; with
    /// `wait`, held until every task ended or the wait elapses. While it
    /// waits it reads no page, and it waits on one unfinished task at a
    /// time: the workflow cannot end before that one.
    pub async fn workflow_page(
        &self,
        caller: &Caller,
        query: WorkflowQuery,
        wait: Option<Duration>,
    ) -> Result<WorkflowPage> {
        self.admit(caller, "workflow_page")?;
        self.visible_workflow(caller, query.id).await?;
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
        let mut shutdown = self.shutdown.clone();
        let probe = WorkflowQuery { limit: 0, ..query.clone() };
        while tokio::time::Instant::now() < deadline && !self.shutting_down() {
            let Some(open) = self.store.workflow_page(probe.clone()).await?.first_open else { break };
            let ended = self.store.signals().wait_for_end(open);
            // Read again after registering, so that an end in between is seen.
            if !self.store.get(open).await?.status.is_terminal() {
                tokio::select! {
                    _ = ended => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
            self.store.signals().forget_closed(open);
        }
        Ok(self.store.workflow_page(query).await?)
    }

    /// Cancels every unfinished task of a workflow.
    pub async fn cancel_workflow(&self, caller: &Caller, id: Uuid) -> Result<usize> {
        self.admit(caller, "cancel_workflow")?;
        self.visible_workflow(caller, id).await?;
        let cancelled = self.store.cancel_workflow(id, self.now(), caller.token_name()).await?;
        self.record(caller, "workflow.cancel", &id.to_string(), Some(serde_json::json!({"cancelled": cancelled})))
            .await;
        Ok(cancelled)
    }

    /// Decides an `approval` task.
    pub async fn approve(&self, caller: &Caller, id: Uuid, mut approval: Approval) -> Result<Task> {
        self.admit(caller, "approve")?;
        self.visible(caller, id).await?;
        let texts = [("by", &approval.by, MAX_APPROVER_LEN), ("comment", &approval.comment, MAX_COMMENT_LEN)];
        for (field, text, max) in texts {
            if let Some(text) = text {
                check_text(field, text, max)?;
            }
        }
        // A token decides as itself, whatever name the request gives.
        if let Some(name) = caller.token_name() {
            approval.by = Some(name);
        }
        let decision = serde_json::json!({"approved": approval.approved, "by": approval.by});
        let task = self.store.approve(id, approval, self.now()).await?;
        self.record(caller, "task.approve", &id.to_string(), Some(decision)).await;
        Ok(task)
    }

    /// A page of tasks.
    pub async fn list(&self, caller: &Caller, query: ListQuery) -> Result<TaskPage> {
        self.admit(caller, "list")?;
        if let Some(scope) = caller.scope()
            && !query.queue.as_deref().is_some_and(|q| caller.covers(q))
        {
            return Err(EngineError::Forbidden(format!(
                "{caller} is confined to the queues {}: list one of them at a time (`queue=`)",
                scope.join(", ")
            )));
        }
        Ok(self.store.list(query).await?)
    }

    /// A task's history.
    pub async fn history(&self, caller: &Caller, id: Uuid) -> Result<Vec<HistoryEntry>> {
        self.admit(caller, "history")?;
        self.visible(caller, id).await?;
        Ok(self.store.history(id).await?)
    }

    /// Cancels a task.
    pub async fn cancel(&self, caller: &Caller, id: Uuid) -> Result<Task> {
        self.admit(caller, "cancel")?;
        self.visible(caller, id).await?;
        let task = self.store.cancel(id, self.now(), caller.token_name()).await?;
        self.record(caller, "task.cancel", &id.to_string(), None).await;
        Ok(task)
    }

    /// Gives a task a new attempt.
    pub async fn retry(&self, caller: &Caller, id: Uuid) -> Result<Task> {
        self.admit(caller, "retry")?;
        self.visible(caller, id).await?;
        let task = self.store.retry(id, self.now(), caller.token_name()).await?;
        self.record(caller, "task.retry", &id.to_string(), None).await;
        Ok(task)
    }

    /// Records a worker and the task types it serves.
    pub async fn register(&self, caller: &Caller, req: RegisterRequest) -> Result<Registered> {
        self.admit(caller, "register")?;
        check_worker_name(&req.worker)?;
        for queue in &req.queues {
            Self::may_write(caller, queue)?;
        }
        let records = self.registry.register(&req.worker, req.queues, req.task_types, self.now())?;
        if !records.is_empty() {
            self.store.put_task_types(records).await?;
        }
        Ok(Registered { worker: req.worker, registered: true })
    }

    /// Adopts the task types declared through other nodes, at most once per
    /// [`TYPES_FRESH_FOR`]: a schema declared anywhere is enforced here
    /// within that long.
    pub(crate) async fn read_task_types(&self) -> Result<()> {
        let read = async {
            self.registry.adopt(self.store.task_types().await?);
            Ok(())
        };
        self.types_read.run(read).await
    }

    /// Adopts what other nodes heard of workers, at most once per
    /// [`WORKERS_SYNC`].
    async fn read_workers(&self) -> Result<()> {
        let since = self.now().saturating_sub(crate::registry::FORGET_MS);
        let read = async {
            self.registry.adopt_workers(self.store.workers(since).await?);
            Ok(())
        };
        self.workers_read.run(read).await
    }

    /// Workers heard from recently, by any node.
    pub async fn workers(&self, caller: &Caller) -> Result<Vec<WorkerView>> {
        self.admit(caller, "workers")?;
        self.read_workers().await?;
        Ok(self.registry.workers(self.now()))
    }

    /// The task types workers serve, with the live workers of every node.
    pub async fn task_types(&self, caller: &Caller) -> Result<Vec<TaskTypeView>> {
        self.admit(caller, "task_types")?;
        self.read_task_types().await?;
        self.read_workers().await?;
        Ok(self.registry.task_types(self.now()))
    }

    /// Workers heard from within the last minute: of every node, or of this
    /// one while the store cannot be read.
    pub async fn live_workers(&self) -> usize {
        if let Err(e) = self.read_workers().await {
            tracing::debug!(error = %e, "workers of other nodes not read");
        }
        self.registry.live(self.now())
    }

    /// Tells the store, every [`WORKERS_SYNC`], what this node heard of its
    /// workers, until shutdown.
    pub async fn run_worker_sync(&self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(WORKERS_SYNC) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let changed = self.registry.take_changed();
            if changed.is_empty() {
                continue;
            }
            match self.store.put_workers(changed).await {
                Ok(()) => {}
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "workers not shared with the other nodes"),
            }
        }
    }

    /// Leases ready tasks, parking up to `wait_ms` while there are none. A
    /// submit (or a timer making a task ready) wakes a parked lease at once.
    pub async fn lease(&self, caller: &Caller, req: LeaseRequest) -> Result<Leased> {
        self.admit(caller, "lease")?;
        if !(1..=wire::MAX_LEASE).contains(&req.max) {
            return Err(EngineError::Field { field: "max", message: format!("must be 1 to {}", wire::MAX_LEASE) });
        }
        if req.wait_ms > wire::MAX_LEASE_WAIT_MS {
            let message = format!("must be at most {}", wire::MAX_LEASE_WAIT_MS);
            return Err(EngineError::Field { field: "wait_ms", message });
        }
        if !wire::LEASE_MS.contains(&req.lease_ms) {
            let message = format!("must be {} to {}", wire::LEASE_MS.start(), wire::LEASE_MS.end());
            return Err(EngineError::Field { field: "lease_ms", message });
        }
        if req.queues.is_empty() {
            return Err(EngineError::Field { field: "queues", message: "must name at least one queue".into() });
        }
        check_worker_name(&req.worker)?;
        check_lease_names(&req.queues, req.names.as_deref())?;
        for queue in &req.queues {
            Self::may_write(caller, queue)?;
        }
        let params = LeaseParams {
            worker: req.worker,
            queues: req.queues,
            names: req.names,
            max: req.max as usize,
            lease_ms: req.lease_ms,
            now: 0,
        };
        self.registry.leasing(&params.worker, &params.queues, params.names.as_deref(), self.now());
        self.store.signals().expect_stops(&params.worker);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms);
        let lot = self.store.signals().ready.join(&params.queues, params.names.as_deref());
        self.lease_parked(&params, &lot, deadline).await
    }

    /// [`Engine::lease`]'s loop: looks for tasks, and parks in `lot` until
    /// woken or `deadline` while there are none.
    async fn lease_parked(
        &self,
        params: &LeaseParams,
        lot: &quern_store::ready::Lot,
        deadline: tokio::time::Instant,
    ) -> Result<Leased> {
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return Ok(Leased { tasks: Vec::new() });
            }
            let woken = lot.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = self.now();
            let mut tasks = self.store.lease(LeaseParams { now, ..params.clone() }).await?;
            if !tasks.is_empty() || tokio::time::Instant::now() >= deadline {
                self.sign_leases(&mut tasks);
                self.registry.seen(&params.worker, now, i64::try_from(tasks.len()).unwrap_or(0));
                return Ok(Leased { tasks });
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|s| *s) => return Ok(Leased { tasks: Vec::new() }),
            }
        }
    }

    /// The running tasks `req.worker` should stop (cancelled, or ended by
    /// the server), parking up to `wait_ms` while there are none: a cancel
    /// reaches a watching worker at once rather than at its next heartbeat.
    /// A token confined to queues hears only of its queues' tasks.
    pub async fn stops(&self, caller: &Caller, req: wire::StopsRequest) -> Result<wire::Stops> {
        self.admit(caller, "stops")?;
        check_worker_name(&req.worker)?;
        if req.wait_ms > wire::MAX_LEASE_WAIT_MS {
            let message = format!("must be at most {}", wire::MAX_LEASE_WAIT_MS);
            return Err(EngineError::Field { field: "wait_ms", message });
        }
        let signals = self.store.signals();
        let woken = signals.watch_stops(&req.worker);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms);
        let mut shutdown = self.shutdown.clone();
        loop {
            let notified = woken.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let stops: Vec<wire::StopNotice> = signals
                .take_stops(&req.worker)
                .into_iter()
                .filter(|s| caller.covers(&s.queue))
                .map(|s| wire::StopNotice {
                    task: s.task,
                    reason: match s.reason {
                        quern_store::StopReason::Cancel => wire::StopReason::Cancel,
                        quern_store::StopReason::Ended => wire::StopReason::Ended,
                    },
                })
                .collect();
            if !stops.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(wire::Stops { stops });
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
    }

    /// Extends leases and records progress.
    pub async fn heartbeat(&self, caller: &Caller, req: HeartbeatRequest) -> Result<Heartbeats> {
        self.admit(caller, "heartbeat")?;
        if req.leases.len() > wire::MAX_ITEMS {
            let message = format!("at most {} per heartbeat", wire::MAX_ITEMS);
            return Err(EngineError::Field { field: "leases", message });
        }
        check_worker_name(&req.worker)?;
        for (i, lease) in req.leases.iter().enumerate() {
            if let Some(progress) = &lease.progress {
                progress.validate(&format!("leases[{i}].progress"))?;
            }
        }
        let leases = req
            .leases
            .into_iter()
            .map(|l| HeartbeatLease { task: l.task, token: l.token, progress: l.progress })
            .collect();
        let worker = req.worker;
        let answers = self.store.heartbeat(HeartbeatParams { worker: worker.clone(), leases, now: self.now() }).await?;
        let held = answers.iter().filter(|a| a.ok).count();
        self.registry.set_in_flight(&worker, self.now(), u64::try_from(held).unwrap_or(0));
        let leases = answers
            .into_iter()
            .map(|a| wire::HeartbeatAnswer { task: a.task, ok: a.ok, cancel: a.cancel, expires_at: a.expires_at })
            .collect();
        Ok(Heartbeats { leases })
    }

    /// Records outcomes.
    pub async fn complete(&self, caller: &Caller, req: CompleteRequest) -> Result<Completed> {
        self.admit(caller, "complete")?;
        if req.results.len() > wire::MAX_ITEMS {
            let message = format!("at most {} per completion", wire::MAX_ITEMS);
            return Err(EngineError::Field { field: "results", message });
        }
        check_worker_name(&req.worker)?;
        let mut results = Vec::with_capacity(req.results.len());
        let mut last_progress = Vec::new();
        for (i, mut item) in req.results.into_iter().enumerate() {
            if let Some(progress) = item.progress.take() {
                progress.validate(&format!("results[{i}].progress"))?;
                last_progress.push(HeartbeatLease {
                    task: item.task,
                    token: item.token.clone(),
                    progress: Some(progress),
                });
            }
            let (task, token, outcome) = item.into_outcome();
            match &outcome {
                Outcome::Succeeded { result } => check_json_depth(&format!("results[{i}].result"), result.get())?,
                Outcome::Failed { error, .. } => error.validate(&format!("results[{i}].error"))?,
                Outcome::Released => {}
            }
            results.push(Completion { task, token, outcome });
        }
        let worker = req.worker;
        if !last_progress.is_empty() {
            // Progress no heartbeat carried yet goes in first, under the
            // same tokens (a stale one records nothing).
            let beat = HeartbeatParams { worker: worker.clone(), leases: last_progress, now: self.now() };
            self.store.heartbeat(beat).await?;
        }
        let answers = self.store.complete(CompleteParams { worker: worker.clone(), results, now: self.now() }).await?;
        let done = answers.iter().filter(|a| a.ok).count();
        self.registry.seen(&worker, self.now(), -i64::try_from(done).unwrap_or(0));
        let results = answers
            .into_iter()
            .map(|a| wire::CompleteAnswer { task: a.task, ok: a.ok, error: (!a.ok).then_some(Refusal::STALE_LEASE) })
            .collect();
        Ok(Completed { results })
    }

    /// The queues.
    pub async fn queues(&self, caller: &Caller) -> Result<Vec<QueueInfo>> {
        self.admit(caller, "queues")?;
        let mut queues = self.store.queues().await?;
        queues.retain(|q| caller.covers(&q.name));
        Ok(queues)
    }

    /// Pauses or resumes a queue.
    pub async fn set_paused(&self, caller: &Caller, queue: &str, paused: bool) -> Result<()> {
        self.admit(caller, "set_paused")?;
        quern_core::spec::check_queue_name(queue).map_err(|error| EngineError::Invalid { error, index: None })?;
        self.store.set_paused(queue, paused).await?;
        self.record(caller, if paused { "queue.pause" } else { "queue.resume" }, queue, None).await;
        Ok(())
    }

    /// Is the store reachable?
    pub async fn ready(&self, caller: &Caller) -> Result<()> {
        self.admit(caller, "ready")?;
        Ok(self.store.ready().await?)
    }

    /// Moves what is due (delays, backoffs, lease expiry, timeouts) when it
    /// is due, until shutdown.
    pub async fn run_timers(&self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let now = self.now();
            let sleep = match self.store.tick(now).await {
                Ok(out) => out
                    .next_due
                    .map_or(MAX_TIMER_SLEEP, |due| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)))
                    .min(MAX_TIMER_SLEEP),
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "timer tick failed");
                    MAX_TIMER_SLEEP
                }
            };
            if sleep.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.store.signals().timers.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Deletes finished tasks older than the retention TTL, every sweep
    /// interval, until shutdown.
    pub async fn run_retention(&self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let cutoff = self.now().saturating_sub(i64::try_from(self.retention_ttl_ms).unwrap_or(i64::MAX));
            loop {
                match self.store.purge(cutoff, PURGE_CHUNK).await {
                    Ok(n) if n == PURGE_CHUNK => {}
                    Ok(n) => {
                        if n > 0 {
                            tracing::debug!(deleted = n, "retention sweep");
                        }
                        break;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "retention sweep failed");
                        break;
                    }
                }
            }
            match self.purge_events().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "event retention sweep"),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::error!(error = %e, "event retention sweep failed"),
            }
            match self.purge_audit().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "audit retention sweep"),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::error!(error = %e, "audit retention sweep failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.sweep_interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
