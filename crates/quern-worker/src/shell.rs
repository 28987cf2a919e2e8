//! The built-in `shell` task: runs a program (`command`, an argv, no shell)
//! or a script (`/bin/sh -c`) in a sandbox, and answers with its exit code
//! and the tails of its output. `docs/shell.md` is the user's guide.
//!
//! Invariants: the worker's own environment never reaches a task; a task
//! never gets more resources than the worker's [`SandboxPolicy`] allows;
//! and no process of a task outlives it — its process group is stopped
//! (SIGTERM, then SIGKILL after the policy's grace) when the task is
//! cancelled, times out, is handed back at shutdown, when its future is
//! dropped, and when the command exits leaving background processes behind;
//! and a task's temporary working directory is its own — created new and
//! empty for it, never handed to another task, and removed with its contents
//! once its process group is gone. A run that ends normally waits for both
//! before it answers, so the worker's next task starts after them.
//!
//! # Layout
//! - this module: the input, the [`ShellExecutor`] and how a run ends.
//! - [`policy`]: the [`SandboxPolicy`] and [`Limits`].
//! - `sandbox`: how the process is started (environment, user, rlimits).
//! - `group`: the process-group guard that stops a task's processes.
//! - `workdir`: the per-task temporary directories.
//! - `output`: bounded output tails and `::progress` lines.

mod group;
mod output;
pub mod policy;
mod sandbox;
mod workdir;

pub use policy::{DEFAULT_KILL_GRACE, DEFAULT_TAIL_BYTES, Limits, RunAs, SandboxPolicy};

use crate::context::{HandlerResult, TaskContext, TaskFailure};
use crate::runtime::TaskType;
use group::{GroupGuard, Reaper};
use nix::sys::signal::Signal;
use output::{Lines, Tail, last_line, parse_progress};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use workdir::TempWorkdir;

/// The task name the shell executor serves.
pub const TASK_NAME: &str = "shell";

/// How long output is still read after the command exited, for what it left
/// in the pipes. A background process that keeps a pipe open does not hold
/// the result back longer than this.
const DRAIN: Duration = Duration::from_millis(200);

/// The read buffer per stream.
const READ_CHUNK: usize = 16 * 1024;

/// The `shell` task type: its name, description and input schema.
pub fn shell_task_type() -> TaskType {
    TaskType::new(TASK_NAME)
        .description(
            "Runs a command (argv, no shell) or a /bin/sh script in a sandbox: clean environment, \
             temporary working directory, rlimits, own process group. Result: exit_code, stdout and \
             stderr tails, duration_ms.",
        )
        .input_schema(input_schema())
}

/// The JSON Schema of the `shell` task's input.
pub fn input_schema() -> Value {
    let count = json!({"type": "integer", "minimum": 1});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "command": {
                "description": "the program and its arguments, run without a shell",
                "type": "array", "items": {"type": "string"}, "minItems": 1
            },
            "script": {"description": "a script for /bin/sh -c", "type": "string"},
            "env": {
                "description": "environment variables, set over PATH, LANG, HOME and TMPDIR",
                "type": "object", "additionalProperties": {"type": "string"}
            },
            "cwd": {
                "description": "the working directory; must lie under a prefix the worker allows",
                "type": "string"
            },
            "stdin": {"description": "text written to the process's stdin", "type": "string"},
            "limits": {
                "description": "resource limits, each capped by the worker's maximums",
                "type": "object",
                "properties": {
                    "cpu_s": count, "memory_mb": count, "processes": count,
                    "file_size_mb": count, "open_files": count
                },
                "additionalProperties": false
            }
        },
        "oneOf": [{"required": ["command"]}, {"required": ["script"]}],
        "additionalProperties": false
    })
}

/// The input of a `shell` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellInput {
    command: Option<Vec<String>>,
    script: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    stdin: Option<String>,
    #[serde(default)]
    limits: Limits,
}

impl ShellInput {
    /// The argv to run, or why the input is refused.
    fn argv(&self) -> Result<Vec<String>, String> {
        let argv = match (&self.command, &self.script) {
            (Some(command), None) => command.clone(),
            (None, Some(script)) => vec!["/bin/sh".to_owned(), "-c".to_owned(), script.clone()],
            (Some(_), Some(_)) => return Err("give either command or script, not both".to_owned()),
            (None, None) => return Err("give command (an argv) or script".to_owned()),
        };
        match argv.first() {
            None => return Err("command is empty".to_owned()),
            Some(program) if program.is_empty() => return Err("command names no program".to_owned()),
            _ => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("command and script may not contain NUL characters".to_owned());
        }
        Ok(argv)
    }

    /// Why the task's environment cannot be set, if it cannot.
    fn env_problem(&self) -> Option<String> {
        self.env.iter().find_map(|(key, value)| {
            if key.is_empty() || key.contains(['=', '\0']) {
                Some(format!("env: `{key}` is not a variable name"))
            } else if value.contains('\0') {
                Some(format!("env: the value of {key} contains a NUL character"))
            } else {
                None
            }
        })
    }
}

/// Runs `shell` tasks under a [`SandboxPolicy`]. Cheap to clone; clones
/// share the policy and the bookkeeping of running tasks.
///
/// ```no_run
/// use quern_worker::shell::{SandboxPolicy, ShellExecutor, shell_task_type};
/// # fn demo(client: quern_client::Client) {
/// let shell = ShellExecutor::new(SandboxPolicy::default());
/// let runner = shell.clone();
/// let worker = quern_worker::Worker::builder(client)
///     .handler(shell_task_type(), move |ctx| {
///         let runner = runner.clone();
///         async move { runner.run(ctx).await }
///     })
///     .build();
/// # }
/// ```
#[derive(Clone)]
pub struct ShellExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    policy: SandboxPolicy,
    reaper: Arc<Reaper>,
    running: AtomicUsize,
    idle: Notify,
}

/// Counts a run for [`ShellExecutor::idle`] while it lives.
struct Running<'a>(&'a Inner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How a run's process ended, before it is judged.
struct Ended {
    status: ExitStatus,
    ran: Duration,
    stdout: (String, bool),
    stderr: (String, bool),
}

impl Ended {
    fn result(&self) -> Value {
        json!({
            "exit_code": self.status.code(),
            "stdout": self.stdout.0,
            "stderr": self.stderr.0,
            "duration_ms": u64::try_from(self.ran.as_millis()).unwrap_or(u64::MAX),
            "truncated": {"stdout": self.stdout.1, "stderr": self.stderr.1},
        })
    }
}

impl ShellExecutor {
    /// An executor holding every task to `policy`.
    pub fn new(policy: SandboxPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                reaper: Arc::new(Reaper::default()),
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.inner.policy
    }

    /// Resolves when no task is running (at once if none is). A worker that
    /// stops waits for this, so that handed-back tasks finish stopping their
    /// processes with the full grace.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Blocks until the processes of every task whose run was dropped have
    /// been stopped (those get their SIGKILL from a background thread), or
    /// until `limit` passes; true when none is left. Call it before the
    /// process exits, after the async runtime is gone.
    pub fn wait_for_cleanup(&self, limit: Duration) -> bool {
        self.inner.reaper.wait(limit)
    }

    /// Runs one `shell` task. See the module docs for what it guarantees.
    pub async fn run(&self, ctx: TaskContext) -> HandlerResult {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let _running = Running(&self.inner);
        let policy = &self.inner.policy;
        let input: ShellInput = ctx.input()?;
        let argv = input.argv().map_err(TaskFailure::rejected)?;
        if let Some(problem) = input.env_problem() {
            return Err(TaskFailure::rejected(problem));
        }
        let limits = input.limits.capped_by(policy.max());
        if let Some(name) = limits.zero_limit() {
            return Err(TaskFailure::rejected(format!("limits: {name} must be at least 1")));
        }
        let user = policy.user().map(|u| (u.uid, u.gid));
        let (dir, temp): (PathBuf, Option<TempWorkdir>) = match &input.cwd {
            Some(cwd) => (policy.resolve_cwd(cwd).map_err(TaskFailure::rejected)?, None),
            None => {
                let temp = TempWorkdir::create(policy.root(), user).map_err(|e| {
                    TaskFailure::retryable(format!(
                        "cannot create a working directory under {}: {e}",
                        policy.root().display()
                    ))
                })?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let path = input.env.get("PATH").map_or(sandbox::TASK_PATH, String::as_str);
        if let Some(problem) = policy.program_problem(&argv[0], path, &dir) {
            return Err(TaskFailure::rejected(problem));
        }
        let launch = sandbox::Launch {
            argv: &argv,
            env: &input.env,
            dir: &dir,
            user,
            rlimits: limits.rlimits(),
            die_with_worker: policy.dies_with_worker(),
            stdin: input.stdin.is_some(),
        };
        let started = Instant::now();
        let mut child = match sandbox::spawn(launch, self.inner.reaper.clone()) {
            Ok(Some(child)) => child,
            Ok(None) => return Err(spawn_failure(&argv[0], &limits, &std::io::ErrorKind::NotFound.into())),
            Err(e) => return Err(spawn_failure(&argv[0], &limits, &e)),
        };
        let pid = child.id();
        let mut group = GroupGuard::new(pid, policy.grace(), temp, self.inner.reaper.clone());
        tracing::debug!(task = %ctx.id(), pid, program = %argv[0], "shell task started");
        if let (Some(text), Some(mut pipe)) = (input.stdin, child.stdin.take()) {
            // Its own task: a process that never reads must not block the
            // run; the write ends when the pipe closes.
            tokio::spawn(async move {
                let _ = pipe.write_all(text.as_bytes()).await;
            });
        }
        let watched = supervise(&ctx, &mut child, &mut group, policy.tail_bytes(), started).await;
        // Stops whatever the command left running and removes its directory.
        group.finish().await;
        let status =
            watched.exit.map_err(|e| TaskFailure::retryable(format!("waiting for the process failed: {e}")))?;
        let ended =
            Ended { status, ran: watched.ran, stdout: watched.stdout.finish(), stderr: watched.stderr.finish() };
        judge(&ended, &limits, watched.stopped)
    }
}

/// What [`supervise`] saw of a process.
struct Watched {
    exit: std::io::Result<ExitStatus>,
    ran: Duration,
    /// The task was told to stop and its group was signalled.
    stopped: bool,
    stdout: Tail,
    stderr: Tail,
}

/// Reads the process's output (reporting progress lines) until it exits and
/// its pipes are drained; when the task is told to stop, sends the group
/// SIGTERM, and SIGKILL after the grace if the process still runs.
async fn supervise(
    ctx: &TaskContext,
    child: &mut sandbox::Process,
    group: &mut GroupGuard,
    tail: usize,
    started: Instant,
) -> Watched {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_tail, mut err_tail, mut lines) = (Tail::new(tail), Tail::new(tail), Lines::default());
    let (mut out_buf, mut err_buf) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
    let mut exit: Option<(std::io::Result<ExitStatus>, Duration)> = None;
    let mut drain_until: Option<Instant> = None;
    let (mut stopping, mut killed) = (false, false);
    let cancelled = ctx.cancelled();
    tokio::pin!(cancelled);
    loop {
        if exit.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        let kill_at = group.kill_deadline().filter(|_| exit.is_none() && !killed);
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => match n {
                Some(n) => {
                    let bytes = &out_buf[..n];
                    out_tail.push(bytes);
                    lines.feed(bytes, |line| {
                        if let Some((percent, message)) = parse_progress(line) {
                            ctx.progress(percent, message);
                        }
                    });
                }
                None => stdout = None,
            },
            n = read_some(&mut stderr, &mut err_buf) => match n {
                Some(n) => err_tail.push(&err_buf[..n]),
                None => stderr = None,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some((status, started.elapsed()));
                drain_until = Some(Instant::now() + DRAIN);
            }
            () = &mut cancelled, if !stopping => {
                stopping = true;
                tracing::info!(task = %ctx.id(), "stopping a shell task's processes");
                group.terminate();
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                killed = true;
                group.kill();
            }
            () = sleep_until(drain_until), if drain_until.is_some() => break,
        }
    }
    // The loop ends only once the exit was seen.
    let (exit, ran) = exit.unwrap_or_else(|| (Err(std::io::Error::other("the exit was not seen")), started.elapsed()));
    Watched { exit, ran, stopped: stopping, stdout: out_tail, stderr: err_tail }
}

/// Reads what the pipe has; `None` at its end (or on an error). A closed
/// pipe (`None`) never resolves, so `select!` waits on the others.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The task's outcome from how its process ended.
fn judge(ended: &Ended, limits: &Limits, stopped: bool) -> HandlerResult {
    let mut details = ended.result();
    let signal = ended.status.signal();
    details["signal"] = json!(signal.map(signal_name));
    if stopped {
        let message = "stopped: the task was cancelled, timed out or handed back; its processes were killed";
        return Err(TaskFailure::retryable(message).with_details(details));
    }
    if ended.status.success() {
        return Ok(ended.result());
    }
    let message = describe_failure(limits, ended.status.code(), signal, &ended.stderr.0, ended.ran);
    Err(TaskFailure::retryable(message).with_details(details))
}

/// Says why a process failed, naming the limit that ended it when one did.
fn describe_failure(limits: &Limits, code: Option<i32>, signal: Option<i32>, stderr: &str, ran: Duration) -> String {
    let lower = stderr.to_lowercase();
    let says_memory = lower.contains("memory") || lower.contains("alloc");
    let says_file_size = lower.contains("file too large") || lower.contains("file size limit");
    let cpu = limits.cpu_s.map(|s| format!("CPU time limit of {s} s exceeded"));
    let memory =
        limits.memory_mb.map(|mb| format!("memory limit of {mb} MB exceeded (the process could not allocate)"));
    let file_size = limits.file_size_mb.map(|mb| format!("file size limit of {mb} MB exceeded"));
    let Some(signal) = signal else {
        let code = code.unwrap_or(-1);
        let exit = match last_line(stderr) {
            Some(line) => format!("exit code {code}: {line}"),
            None => format!("exit code {code}"),
        };
        let limit = memory.filter(|_| says_memory).or(file_size.filter(|_| says_file_size));
        return match limit {
            Some(limit) => format!("{limit}; {exit}"),
            None => exit,
        };
    };
    let name = signal_name(signal);
    let sig = Signal::try_from(signal).ok();
    // A SIGKILL is the CPU hard limit when only that limit is set, or when
    // the task ran for at least its CPU time.
    let cpu_kill = limits.cpu_s.is_some_and(|s| limits.memory_mb.is_none() || ran >= Duration::from_secs(s));
    let limit = match sig {
        Some(Signal::SIGXCPU) => cpu,
        Some(Signal::SIGKILL) if cpu_kill => cpu,
        Some(Signal::SIGSEGV | Signal::SIGABRT | Signal::SIGKILL | Signal::SIGBUS) => memory,
        Some(Signal::SIGXFSZ) => file_size,
        _ => memory.filter(|_| says_memory),
    };
    match limit {
        Some(limit) => format!("{limit} (killed by {name})"),
        None => format!("killed by signal {name}"),
    }
}

/// `SIGKILL` for 9; the number for a signal nix does not know.
fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// Why a process could not be started.
fn spawn_failure(program: &str, limits: &Limits, e: &std::io::Error) -> TaskFailure {
    if let (Some(n), Some(nix::libc::EAGAIN)) = (limits.processes, e.raw_os_error()) {
        return TaskFailure::retryable(format!("process limit of {n} exceeded: cannot start {program}"));
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => TaskFailure::fatal(format!(
            "cannot run {program}: no such program (PATH is {} unless the task's env sets one)",
            sandbox::TASK_PATH
        )),
        std::io::ErrorKind::PermissionDenied => TaskFailure::fatal(format!("cannot run {program}: permission denied")),
        _ => TaskFailure::retryable(format!("cannot start {program}: {e}")),
    }
}

#[cfg(test)]
mod tests;
