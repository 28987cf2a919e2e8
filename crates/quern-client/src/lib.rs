//! A typed Rust client of Quern's HTTP API (`api.md`, v1): submit and watch
//! tasks, list and manage queues, and speak the worker protocol.
//!
//! Every call is one HTTP request; the client keeps no state beyond its
//! connection pool, so one [`Client`] can be cloned and shared freely.
//!
//! ```no_run
//! # async fn demo() -> quern_client::Result<()> {
//! use quern_client::Client;
//! use quern_core::TaskSpec;
//! use std::time::Duration;
//!
//! let client = Client::new("http://127.0.0.1:7311", None);
//! let task = client.submit(&TaskSpec::named("email.send")).await?;
//! let task = client.get(task.id, Some(Duration::from_secs(30))).await?;
//! println!("{} is {}", task.id, task.status);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - this module: [`Client`] and the shapes of listings ([`ListFilter`],
//!   [`TaskPage`], [`QueueInfo`]).
//! - [`worker`]: the worker protocol's requests and answers.
//! - [`error`]: the one [`Error`] every call returns, and [`Result`].
//!
//! `http://` and `https://` URLs are supported; TLS is rustls with *ring*
//! (see [`install_tls_provider`]), verified against the system's roots.

#![warn(missing_docs)]

pub mod error;

pub use error::{Error, Result};
pub use quern_wire::audit::{AuditList, AuditView};
pub use quern_wire::events::{AckRequest, Acked, EventBatch, EventList, Published};
pub use quern_wire::ops::Health;
pub use quern_wire::schedules::{ApplyReport, ScheduleView, Schedules};
pub use quern_wire::tasks::{SubmittedTasks, TaskBatch};
pub use quern_wire::tokens::{CreateToken, TokenCreated, TokenView, Tokens};
pub use quern_wire::worker;
pub use quern_wire::workflows::{
    ApproveRequest, DependsOn, WorkflowCancelled, WorkflowRequest, WorkflowSubmitted, WorkflowTask, WorkflowView,
};
pub use quern_wire::{
    CompleteAnswer, CompleteRequest, Completed, Completion, HeartbeatAnswer, HeartbeatRequest, Heartbeats, LeaseBeat,
    LeaseRequest, Leased, OutcomeKind, Refusal, RegisterRequest, Registered, StopNotice, StopReason, Stops,
    StopsRequest, TaskDefaults, TaskTypeDecl, TaskTypeView, TaskTypes, WorkerView, Workers,
};
pub use uuid::Uuid;

use quern_core::{Event, EventSpec, HistoryEntry, ScheduleSpec, Status, Task, TaskSpec};
use reqwest::{Method, RequestBuilder};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// How long an ordinary request may take before it fails as a transport
/// error. Long polls (`get` with a wait, `lease` with `wait_ms`) get their
/// wait on top of this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one Quern server.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server's base URL without a trailing `/`.
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
}

/// Which tasks [`Client::list`] returns. The default lists every task,
/// newest first, in pages of the server's default size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only tasks in one of these statuses (none: any status).
    pub status: Vec<Status>,
    /// Only tasks of this queue.
    pub queue: Option<String>,
    /// Only tasks with this name.
    pub name: Option<String>,
    /// Only tasks of this workflow.
    pub workflow: Option<Uuid>,
    /// Only tasks carrying every one of these metadata entries.
    pub metadata: BTreeMap<String, String>,
    /// The page size (at most 1000).
    pub limit: Option<u32>,
    /// Where to continue: a previous page's [`TaskPage::next_cursor`].
    pub cursor: Option<String>,
}

impl ListFilter {
    /// The filter as query parameters, in the spelling of the contract.
    fn query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if !self.status.is_empty() {
            let list: Vec<&str> = self.status.iter().map(|s| s.as_str()).collect();
            q.push(("status".to_owned(), list.join(",")));
        }
        if let Some(queue) = &self.queue {
            q.push(("queue".to_owned(), queue.clone()));
        }
        if let Some(name) = &self.name {
            q.push(("name".to_owned(), name.clone()));
        }
        if let Some(workflow) = &self.workflow {
            q.push(("workflow".to_owned(), workflow.to_string()));
        }
        for (k, v) in &self.metadata {
            q.push((format!("metadata.{k}"), v.clone()));
        }
        if let Some(limit) = self.limit {
            q.push(("limit".to_owned(), limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            q.push(("cursor".to_owned(), cursor.clone()));
        }
        q
    }
}

/// One page of a task listing (`GET /v1/tasks`).
pub type TaskPage = quern_wire::tasks::TaskList;

/// A queue and how many of its tasks are in each status.
pub type QueueInfo = quern_wire::ops::QueueView;

/// A list answer, given either bare or wrapped in an object under `key`.
/// The contract shows history and queues bare; accepting the form wrapped
/// under the list's name too keeps the client working with servers built
/// before they followed it.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListAnswer<T> {
    Bare(Vec<T>),
    Wrapped(BTreeMap<String, Vec<T>>),
}

impl<T> ListAnswer<T> {
    fn into_vec(self, key: &str) -> Result<Vec<T>> {
        match self {
            ListAnswer::Bare(items) => Ok(items),
            ListAnswer::Wrapped(mut map) => {
                map.remove(key).ok_or_else(|| Error::Decode(format!("expected a list or an object with `{key}`")))
            }
        }
    }
}

/// Makes rustls (with *ring*) the process's TLS provider, which every
/// reqwest client in it needs before it is built. Safe to call any number of
/// times; [`Client::new`] calls it.
pub fn install_tls_provider() {
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7311`),
    /// sending `token` as a bearer token when given.
    ///
    /// A malformed URL is reported by the first call, as [`Error::Transport`].
    pub fn new(base_url: impl Into<String>, token: Option<String>) -> Self {
        install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            // Building only fails for TLS or resolver set-up, which this
            // TLS-less client does not do; the default client is equivalent.
            .unwrap_or_default();
        let base = base_url.into().trim().trim_end_matches('/').to_owned();
        // `127.0.0.1:7311` is taken as `http://127.0.0.1:7311`.
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        Self { base, token, http, timeout: DEFAULT_TIMEOUT }
    }

    /// The same client, trusting the CA certificates in `pem` (a private CA
    /// or a self-signed server certificate) besides the system's roots.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Transport(format!("the CA file holds no usable PEM certificate: {e}")))?;
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        self.http = builder.build().map_err(|e| Error::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(self)
    }

    /// The same client with `timeout` for ordinary requests instead of
    /// [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Submits one task (`POST /v1/tasks`). When the spec's idempotency key
    /// was seen before, the answer is the existing task.
    pub async fn submit(&self, spec: &TaskSpec) -> Result<Task> {
        self.call(self.request(Method::POST, "/v1/tasks").json(spec)).await
    }

    /// Submits tasks all or nothing (`POST /v1/tasks/batch`); the answer is
    /// in the order of `specs`.
    pub async fn submit_batch(&self, specs: &[TaskSpec]) -> Result<Vec<Task>> {
        let req = self.request(Method::POST, "/v1/tasks/batch").json(&TaskBatch { tasks: specs.to_vec() });
        let answer: SubmittedTasks = self.call(req).await?;
        Ok(answer.tasks)
    }

    /// Reads a task (`GET /v1/tasks/{id}`). With `wait`, the server holds the
    /// answer until the task is terminal or the wait elapses, then answers
    /// with the task as it stands.
    pub async fn get(&self, id: Uuid, wait: Option<Duration>) -> Result<Task> {
        let mut req = self.request(Method::GET, &format!("/v1/tasks/{id}"));
        if let Some(wait) = wait {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            req = req.query(&[("wait", ms)]).timeout(self.timeout.saturating_add(wait));
        }
        self.call(req).await
    }

    /// Lists tasks, newest first (`GET /v1/tasks`).
    pub async fn list(&self, filter: &ListFilter) -> Result<TaskPage> {
        self.call(self.request(Method::GET, "/v1/tasks").query(&filter.query())).await
    }

    /// Cancels a task (`POST /v1/tasks/{id}/cancel`). A queued or pending
    /// task is cancelled at once; a running one is marked for cancelling and
    /// ends `cancelled` once its worker hears of it; a finished one is a 409.
    pub async fn cancel(&self, id: Uuid) -> Result<Task> {
        self.call(self.request(Method::POST, &format!("/v1/tasks/{id}/cancel"))).await
    }

    /// Sends a failed, timed-out or cancelled task back to the queue for a new
    /// attempt (`POST /v1/tasks/{id}/retry`).
    pub async fn retry(&self, id: Uuid) -> Result<Task> {
        self.call(self.request(Method::POST, &format!("/v1/tasks/{id}/retry"))).await
    }

    /// Submits a workflow (`POST /v1/workflows`): every task, or none.
    /// Answers its id and each task's id by key.
    pub async fn submit_workflow(&self, workflow: &WorkflowRequest) -> Result<WorkflowSubmitted> {
        self.call(self.request(Method::POST, "/v1/workflows").json(workflow)).await
    }

    /// Submits a workflow written as JSON (a file read by hand, say), in the
    /// shape of [`WorkflowRequest`]; the server names any error in it.
    pub async fn submit_workflow_json(&self, workflow: &serde_json::Value) -> Result<WorkflowSubmitted> {
        self.call(self.request(Method::POST, "/v1/workflows").json(workflow)).await
    }

    /// A workflow with its status, counts and tasks (`GET /v1/workflows/{id}`);
    /// with `wait`, held until every task ended or the wait elapses.
    pub async fn workflow(&self, id: Uuid, wait: Option<Duration>) -> Result<WorkflowView> {
        let mut req = self.request(Method::GET, &format!("/v1/workflows/{id}"));
        if let Some(wait) = wait {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            req = req.query(&[("wait", ms.to_string())]).timeout(self.timeout.saturating_add(wait));
        }
        self.call(req).await
    }

    /// A workflow's graph as `json`, `dot` or `mermaid` text
    /// (`GET /v1/workflows/{id}/graph`).
    pub async fn workflow_graph(&self, id: Uuid, format: &str) -> Result<String> {
        let req = self.request(Method::GET, &format!("/v1/workflows/{id}/graph")).query(&[("format", format)]);
        let (_, body) = self.exchange(req).await?;
        String::from_utf8(body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The server's metrics in the Prometheus text format (`GET /metrics`).
    pub async fn metrics(&self) -> Result<String> {
        let (_, body) = self.exchange(self.request(Method::GET, "/metrics")).await?;
        String::from_utf8(body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Cancels every unfinished task of a workflow
    /// (`POST /v1/workflows/{id}/cancel`).
    pub async fn cancel_workflow(&self, id: Uuid) -> Result<WorkflowCancelled> {
        self.call(self.request(Method::POST, &format!("/v1/workflows/{id}/cancel"))).await
    }

    /// Decides an `approval` task (`POST /v1/tasks/{id}/approve`).
    pub async fn approve(&self, id: Uuid, approved: bool, by: Option<&str>, comment: Option<&str>) -> Result<Task> {
        let body = ApproveRequest { approved, by: by.map(str::to_owned), comment: comment.map(str::to_owned) };
        self.call(self.request(Method::POST, &format!("/v1/tasks/{id}/approve")).json(&body)).await
    }

    /// Creates or replaces schedule `name` (`PUT /v1/schedules/{name}`).
    /// Answers the stored schedule, with `outcome`: `created`, `updated` or
    /// `unchanged`.
    pub async fn put_schedule(&self, name: &str, schedule: &ScheduleSpec) -> Result<ScheduleView> {
        let path = format!("/v1/schedules/{}", path_segment(name));
        self.call(self.request(Method::PUT, &path).json(schedule)).await
    }

    /// Every schedule, with next and last fire times (`GET /v1/schedules`).
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        let answer: Schedules = self.call(self.request(Method::GET, "/v1/schedules")).await?;
        Ok(answer.schedules)
    }

    /// One schedule (`GET /v1/schedules/{name}`).
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.call(self.request(Method::GET, &format!("/v1/schedules/{}", path_segment(name)))).await
    }

    /// Deletes a schedule (`DELETE /v1/schedules/{name}`); the tasks it
    /// created stay. Answers the schedule as it was: a [`ScheduleView`], or
    /// only `{"name"}` for a schedule an older build stored that no longer
    /// validates.
    pub async fn delete_schedule(&self, name: &str) -> Result<serde_json::Value> {
        self.call(self.request(Method::DELETE, &format!("/v1/schedules/{}", path_segment(name)))).await
    }

    /// Enables (`true`) or disables a schedule
    /// (`POST /v1/schedules/{name}/enable|disable`).
    pub async fn set_schedule_enabled(&self, name: &str, enabled: bool) -> Result<ScheduleView> {
        let verb = if enabled { "enable" } else { "disable" };
        self.call(self.request(Method::POST, &format!("/v1/schedules/{}/{verb}", path_segment(name)))).await
    }

    /// Runs a schedule now (`POST /v1/schedules/{name}/trigger`): the task.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Task> {
        self.call(self.request(Method::POST, &format!("/v1/schedules/{}/trigger", path_segment(name)))).await
    }

    /// The tasks a schedule created, newest first
    /// (`GET /v1/schedules/{name}/runs`).
    pub async fn schedule_runs(&self, name: &str, limit: Option<u32>) -> Result<Vec<Task>> {
        let mut req = self.request(Method::GET, &format!("/v1/schedules/{}/runs", path_segment(name)));
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit.to_string())]);
        }
        let answer: SubmittedTasks = self.call(req).await?;
        Ok(answer.tasks)
    }

    /// Applies a schedules file, YAML or JSON as written
    /// (`POST /v1/schedules/apply`). Answers the names created, updated,
    /// deleted and unchanged.
    pub async fn apply_schedules(&self, file: &str, dry_run: bool, prune: bool) -> Result<ApplyReport> {
        let req = self
            .request(Method::POST, "/v1/schedules/apply")
            .query(&[("dry_run", dry_run), ("prune", prune)])
            .body(file.to_owned());
        self.call(req).await
    }

    /// Publishes one event (`POST /v1/events`). Answers the event with its
    /// offset.
    pub async fn publish_event(&self, event: &EventSpec) -> Result<Event> {
        self.call(self.request(Method::POST, "/v1/events").json(event)).await
    }

    /// Publishes events, all or none (`POST /v1/events`). Answers them with
    /// their offsets.
    pub async fn publish_events(&self, events: Vec<EventSpec>) -> Result<Vec<Event>> {
        let answer: Published =
            self.call(self.request(Method::POST, "/v1/events").json(&EventBatch { events })).await?;
        Ok(answer.events)
    }

    /// Reads the event log (`GET /v1/events`): the events after `after`
    /// (`None`: from the earliest kept; `Some("latest")`: only new ones)
    /// passing `filter` (`type`, `source`, `target`, `limit` pairs), parked up
    /// to `wait` when none is there yet; `group` and `member` in `filter` read
    /// as a consumer group's member. Answers the events and where to read on.
    pub async fn events(
        &self,
        after: Option<&str>,
        filter: &[(&str, &str)],
        wait: Option<Duration>,
    ) -> Result<EventList> {
        let mut req = self.request(Method::GET, "/v1/events").query(filter);
        if let Some(after) = after {
            req = req.query(&[("after", after)]);
        }
        if let Some(wait) = wait {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            req = req.query(&[("wait", ms.to_string())]).timeout(self.timeout.saturating_add(wait));
        }
        self.call(req).await
    }

    /// Acknowledges events a consumer group's member handled
    /// (`POST /v1/events/ack`). Answers how many were new, and the group's
    /// cursor.
    pub async fn ack_events(&self, group: &str, member: &str, offsets: &[u64]) -> Result<Acked> {
        let body = AckRequest { group: group.to_owned(), member: Some(member.to_owned()), offsets: offsets.to_vec() };
        self.call(self.request(Method::POST, "/v1/events/ack").json(&body)).await
    }

    /// A task's audit trail, oldest first (`GET /v1/tasks/{id}/history`).
    pub async fn history(&self, id: Uuid) -> Result<Vec<HistoryEntry>> {
        let answer: ListAnswer<HistoryEntry> =
            self.call(self.request(Method::GET, &format!("/v1/tasks/{id}/history"))).await?;
        answer.into_vec("history")
    }

    /// Every queue with its task counts (`GET /v1/queues`).
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let answer: ListAnswer<QueueInfo> = self.call(self.request(Method::GET, "/v1/queues")).await?;
        answer.into_vec("queues")
    }

    /// Stops workers from getting new tasks of queue `name`
    /// (`POST /v1/queues/{name}/pause`). Running tasks go on.
    pub async fn pause_queue(&self, name: &str) -> Result<()> {
        let path = format!("/v1/queues/{}/pause", path_segment(name));
        self.call_ignoring_body(self.request(Method::POST, &path)).await
    }

    /// Lets workers take tasks of queue `name` again
    /// (`POST /v1/queues/{name}/resume`).
    pub async fn resume_queue(&self, name: &str) -> Result<()> {
        let path = format!("/v1/queues/{}/resume", path_segment(name));
        self.call_ignoring_body(self.request(Method::POST, &path)).await
    }

    /// Makes a token (`POST /v1/tokens`, admins): the answer holds its
    /// secret, shown this once.
    pub async fn create_token(&self, request: &CreateToken) -> Result<TokenCreated> {
        self.call(self.request(Method::POST, "/v1/tokens").json(request)).await
    }

    /// Every token, revoked ones too (`GET /v1/tokens`, admins).
    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        let answer: Tokens = self.call(self.request(Method::GET, "/v1/tokens")).await?;
        Ok(answer.tokens)
    }

    /// Revokes a token (`DELETE /v1/tokens/{name}`, admins).
    pub async fn revoke_token(&self, name: &str) -> Result<TokenView> {
        self.call(self.request(Method::DELETE, &format!("/v1/tokens/{}", path_segment(name)))).await
    }

    /// Audit entries, newest first (`GET /v1/audit`, admins): of `actor`, of
    /// actions starting with `action`, before `before`.
    pub async fn audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<AuditList> {
        let mut q: Vec<(&str, String)> = Vec::new();
        q.extend(actor.map(|a| ("actor", a.to_owned())));
        q.extend(action.map(|a| ("action", a.to_owned())));
        q.extend(before.map(|b| ("before", b.to_string())));
        q.extend(limit.map(|l| ("limit", l.to_string())));
        self.call(self.request(Method::GET, "/v1/audit").query(&q)).await
    }

    /// The server's health report (`GET /v1/health`): version, uptime, store,
    /// queue depths, live workers.
    pub async fn health(&self) -> Result<Health> {
        self.call(self.request(Method::GET, "/v1/health")).await
    }

    /// Leases ready tasks for a worker (`POST /v1/lease`). Each task carries
    /// its [`lease`](Task::lease); the server parks the request up to
    /// `wait_ms` when nothing is ready, and may answer with no tasks.
    pub async fn lease(&self, request: &LeaseRequest) -> Result<Vec<Task>> {
        let wait = Duration::from_millis(request.wait_ms);
        let req = self.request(Method::POST, "/v1/lease").json(request).timeout(self.timeout.saturating_add(wait));
        let answer: Leased = self.call(req).await?;
        Ok(answer.tasks)
    }

    /// Registers a worker and the task types it serves
    /// (`POST /v1/workers/register`).
    pub async fn register(&self, request: &RegisterRequest) -> Result<()> {
        let _: Registered = self.call(self.request(Method::POST, "/v1/workers/register").json(request)).await?;
        Ok(())
    }

    /// Workers heard from recently (`GET /v1/workers`).
    pub async fn workers(&self) -> Result<Vec<WorkerView>> {
        let answer: Workers = self.call(self.request(Method::GET, "/v1/workers")).await?;
        Ok(answer.workers)
    }

    /// The task types live workers serve (`GET /v1/task-types`).
    pub async fn task_types(&self) -> Result<Vec<TaskTypeView>> {
        let answer: TaskTypes = self.call(self.request(Method::GET, "/v1/task-types")).await?;
        Ok(answer.task_types)
    }

    /// Extends a worker's leases and reports progress (`POST /v1/heartbeat`).
    /// An answer with `cancel: true` tells the worker to stop that task.
    pub async fn heartbeat(&self, request: &HeartbeatRequest) -> Result<Vec<HeartbeatAnswer>> {
        let answer: Heartbeats = self.call(self.request(Method::POST, "/v1/heartbeat").json(request)).await?;
        Ok(answer.leases)
    }

    /// The running tasks a worker should stop (`POST /v1/stops`), answered
    /// as soon as there are any or when `request.wait_ms` runs out.
    pub async fn stops(&self, request: &StopsRequest) -> Result<Vec<StopNotice>> {
        let wait = Duration::from_millis(request.wait_ms);
        let req = self.request(Method::POST, "/v1/stops").json(request).timeout(self.timeout.saturating_add(wait));
        let answer: Stops = self.call(req).await?;
        Ok(answer.stops)
    }

    /// Reports finished attempts (`POST /v1/complete`). A completion under a
    /// stale token answers `ok: false` and changes nothing.
    pub async fn complete(&self, request: &CompleteRequest) -> Result<Vec<CompleteAnswer>> {
        let answer: Completed = self.call(self.request(Method::POST, "/v1/complete").json(request)).await?;
        Ok(answer.results)
    }

    /// A request to `path` with the token and the default timeout.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base)).timeout(self.timeout);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `req` and reads a 2xx answer's body as `T`.
    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let (what, body) = self.exchange(req).await?;
        // Checked as UTF-8 once, so that the parser does not check each of
        // the many short strings of a batch of tasks again.
        let text = std::str::from_utf8(&body).map_err(|e| Error::Decode(format!("{what}: unexpected answer: {e}")))?;
        serde_json::from_str(text).map_err(|e| Error::Decode(format!("{what}: unexpected answer: {e}")))
    }

    /// Sends `req` and checks only that the answer is 2xx.
    async fn call_ignoring_body(&self, req: RequestBuilder) -> Result<()> {
        self.exchange(req).await.map(|_| ())
    }

    /// Sends `req`, turning a non-2xx answer into [`Error::Api`]. Gives the
    /// request's `METHOD path` (for messages) and the answer's body.
    async fn exchange(&self, req: RequestBuilder) -> Result<(String, Vec<u8>)> {
        let (client, req) = req.build_split();
        let req = req.map_err(|e| Error::transport(&self.base, &e))?;
        let url = req.url().to_string();
        if !matches!(req.url().scheme(), "http" | "https") {
            return Err(Error::Transport(format!("{url}: only http:// and https:// server URLs are supported")));
        }
        let what = format!("{} {}", req.method(), req.url().path());
        let answer = client.execute(req).await.map_err(|e| Error::transport(&url, &e))?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| Error::transport(&url, &e))?;
        if status.is_success() { Ok((what, body.to_vec())) } else { Err(Error::from_answer(status.as_u16(), &body)) }
    }
}

/// Percent-encodes `s` for use as one URL path segment, so a name with `/`,
/// `?` or spaces reaches the server as the name it is.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(String, String)]) -> Vec<(&str, &str)> {
        q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn an_empty_filter_sends_nothing() {
        assert!(ListFilter::default().query().is_empty());
    }

    #[test]
    fn filters_use_the_contract_spelling() {
        let filter = ListFilter {
            status: vec![Status::Failed, Status::TimedOut],
            queue: Some("emails".into()),
            name: Some("email.send".into()),
            workflow: Some(Uuid::from_u128(1)),
            metadata: [("team".to_owned(), "growth".to_owned()), ("env".to_owned(), "prod".to_owned())]
                .into_iter()
                .collect(),
            limit: Some(50),
            cursor: Some("abc".into()),
        };
        let q = filter.query();
        assert_eq!(
            pairs(&q),
            [
                ("status", "failed,timed_out"),
                ("queue", "emails"),
                ("name", "email.send"),
                ("workflow", "00000000-0000-0000-0000-000000000001"),
                ("metadata.env", "prod"),
                ("metadata.team", "growth"),
                ("limit", "50"),
                ("cursor", "abc"),
            ]
        );
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("emails:high-1.x_y~"), "emails:high-1.x_y~");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn base_urls_lose_their_trailing_slash() {
        let c = Client::new("http://localhost:7311/", None);
        assert_eq!(c.base_url(), "http://localhost:7311");
    }

    #[test]
    fn list_answers_read_bare_or_wrapped() {
        let bare: ListAnswer<QueueInfo> =
            serde_json::from_str(r#"[{"name":"default","counts":{"queued":2},"paused":false}]"#).expect("parses");
        let bare = bare.into_vec("queues").expect("a list");
        assert_eq!(bare[0].counts.get("queued"), Some(&2));
        let wrapped: ListAnswer<QueueInfo> =
            serde_json::from_str(r#"{"queues":[{"name":"a","counts":{},"paused":true}]}"#).expect("parses");
        assert!(wrapped.into_vec("queues").expect("a list")[0].paused);
        let other: ListAnswer<QueueInfo> = serde_json::from_str(r#"{"other":[]}"#).expect("parses");
        assert!(matches!(other.into_vec("queues"), Err(Error::Decode(_))));
    }

    #[test]
    fn a_task_page_reads_from_the_contract_shape() {
        let page: TaskPage = serde_json::from_str(r#"{"tasks":[],"next_cursor":null}"#).expect("parses");
        assert!(page.tasks.is_empty() && page.next_cursor.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transport_error() {
        // Port 9 (discard) on localhost is closed on any sane test machine.
        let client = Client::new("http://127.0.0.1:9", None);
        let err = client.health().await.err();
        assert!(matches!(err, Some(Error::Transport(_))), "{err:?}");
        let client = Client::new("not a url", None);
        let err = client.health().await.err();
        assert!(matches!(err, Some(Error::Transport(_))), "{err:?}");
        let client = Client::new("ftp://127.0.0.1:9", None);
        let err = client.health().await.err();
        assert!(err.as_ref().is_some_and(|e| e.message().contains("only http://")), "{err:?}");
        let client = Client::new("https://127.0.0.1:9", None);
        let err = client.health().await.err();
        assert!(matches!(err, Some(Error::Transport(_))), "TLS is there; the port is closed: {err:?}");
    }
}
