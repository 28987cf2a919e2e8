//! Quern's worker runtime, for Rust programs that run tasks: register a
//! handler per task name, and the runtime leases, heartbeats, cancels,
//! enforces timeouts, delivers results and shuts down gracefully.
//!
//! ```no_run
//! use quern_worker::{TaskContext, TaskFailure, TaskType, Worker};
//! # async fn example() {
//! let client = quern_client::Client::new("http://127.0.0.1:7311", None);
//! let worker = Worker::builder(client)
//!     .concurrency(32)
//!     .handler(TaskType::new("add").description("adds two numbers"), |ctx: TaskContext| async move {
//!         let (a, b): (i64, i64) = ctx.input()?;
//!         ctx.progress(100.0, "done");
//!         Ok::<_, TaskFailure>(serde_json::json!(a + b))
//!     })
//!     .build();
//! worker.run(async { let _ = tokio::signal::ctrl_c().await; }).await.expect("handlers registered");
//! # }
//! ```
//!
//! # Layout
//! - [`context`]: the [`TaskContext`] a handler gets (input, progress,
//!   cancellation) and [`TaskFailure`], the typed ways to fail.
//! - [`runtime`]: the [`Worker`] and its loops (lease, heartbeat, deliver).
//! - [`shell`]: the built-in sandboxed `shell` task ([`ShellExecutor`]).

pub mod context;
mod flight;
pub mod runtime;
pub mod shell;

pub use context::{HandlerResult, TaskContext, TaskFailure};
pub use runtime::{TaskType, Worker, WorkerBuilder, WorkerError};
pub use shell::{SandboxPolicy, ShellExecutor, shell_task_type};
