//! `quern worker`: runs the built-in `shell` task for a server until SIGINT
//! or SIGTERM, then shuts down gracefully.
//!
//! The flags describe the worker (queues, concurrency, lease, grace) and its
//! sandbox policy (allowed `cwd` prefixes, maximum limits, user); each also
//! reads a `QUERN_WORKER_*` environment variable. The work itself is
//! `quern_worker`'s: this module only assembles it.

use crate::flags;
use clap::Args;
use quern_client::Client;
use quern_core::integrity::LeaseKeys;
use quern_worker::shell::{Limits, SandboxPolicy, ShellExecutor, shell_task_type};
use quern_worker::{Worker, WorkerError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The user a worker run as root runs tasks as, unless `--run-as` says.
const DEFAULT_RUN_AS: &str = "nobody";

/// Flags of `quern worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Run the built-in `shell` task: whatever command a submitter with the
    /// `shell` permission sends. Required: without it the worker does not start.
    #[arg(long, env = "QUERN_WORKER_SHELL")]
    shell: bool,
    /// The queues to take tasks from (comma-separated).
    #[arg(long, value_name = "Q,...", value_delimiter = ',', default_value = "default", env = "QUERN_WORKER_QUEUES")]
    queues: Vec<String>,
    /// How many tasks run at once.
    #[arg(long, value_name = "N", default_value_t = 16, env = "QUERN_WORKER_CONCURRENCY")]
    concurrency: usize,
    /// The worker's id [default: <host>-<pid>].
    #[arg(long, value_name = "ID", env = "QUERN_WORKER_ID")]
    id: Option<String>,
    /// The lease length (1s to 10 minutes); heartbeats go every third of it,
    /// so it also bounds how soon a cancel reaches a running task.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, default_value = "30s", env = "QUERN_WORKER_LEASE")]
    lease: Duration,
    /// At shutdown, how long running tasks may finish before they are
    /// stopped and handed back.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, default_value = "30s", env = "QUERN_WORKER_GRACE")]
    grace: Duration,
    /// The time between SIGTERM and SIGKILL of a stopped task's processes.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, default_value = "2s", env = "QUERN_WORKER_KILL_GRACE")]
    kill_grace: Duration,
    /// Let tasks run only this program (a path; repeat for more; a `script`
    /// needs /bin/sh allowed). Without it, tasks may run any program.
    #[arg(long = "allow-program", value_name = "PATH", env = "QUERN_WORKER_ALLOW_PROGRAM", value_delimiter = ',')]
    allow_program: Vec<PathBuf>,
    /// Let tasks set a `cwd` under this directory; repeat for more (the
    /// environment variable takes a comma-separated list).
    #[arg(long = "allow-cwd", value_name = "PREFIX", env = "QUERN_WORKER_ALLOW_CWD", value_delimiter = ',')]
    allow_cwd: Vec<PathBuf>,
    /// The most CPU seconds a task may use.
    #[arg(long, value_name = "N", env = "QUERN_WORKER_MAX_CPU_S")]
    max_cpu_s: Option<u64>,
    /// The most address space a task's process may have, in MiB.
    #[arg(long, value_name = "N", env = "QUERN_WORKER_MAX_MEMORY_MB")]
    max_memory_mb: Option<u64>,
    /// The most processes the tasks' user may have (not enforced for root).
    #[arg(long, value_name = "N", env = "QUERN_WORKER_MAX_PROCESSES")]
    max_processes: Option<u64>,
    /// The largest file a task may write, in MiB.
    #[arg(long, value_name = "N", env = "QUERN_WORKER_MAX_FILE_SIZE_MB")]
    max_file_size_mb: Option<u64>,
    /// The most open files per task process.
    #[arg(long, value_name = "N", env = "QUERN_WORKER_MAX_OPEN_FILES")]
    max_open_files: Option<u64>,
    /// Start tasks without limits without the parent-death signal, so that
    /// their processes outlive a worker killed with `kill -9` (by default every
    /// task's main process dies with its worker). Kept for compatibility: it
    /// no longer makes a task cheaper to start.
    #[arg(long, env = "QUERN_WORKER_FAST_SPAWN")]
    fast_spawn: bool,
    /// Run tasks as this user (the worker must run as root) [default, when
    /// the worker runs as root: nobody; `--run-as root` keeps root].
    #[arg(long, value_name = "USER", env = "QUERN_WORKER_RUN_AS")]
    run_as: Option<String>,
    /// Run only tasks whose lease is signed by a key in this file (the
    /// server's `--lease-key-file`): a task changed on the way is refused.
    #[arg(long, value_name = "FILE", env = "QUERN_LEASE_KEY_FILE")]
    lease_key_file: Option<PathBuf>,
    /// Where per-task temporary directories are made [default: the system's
    /// temporary directory].
    #[arg(long, value_name = "DIR", env = "QUERN_WORKER_WORK_ROOT")]
    work_root: Option<PathBuf>,
}

impl WorkerArgs {
    /// The sandbox policy these flags describe.
    fn policy(&self) -> Result<SandboxPolicy, WorkerError> {
        let max = Limits {
            cpu_s: self.max_cpu_s,
            memory_mb: self.max_memory_mb,
            processes: self.max_processes,
            file_size_mb: self.max_file_size_mb,
            open_files: self.max_open_files,
        };
        let mut policy =
            SandboxPolicy::default().max_limits(max).kill_grace(self.kill_grace).die_with_worker(!self.fast_spawn);
        for prefix in &self.allow_cwd {
            policy = policy.allow_cwd(prefix)?;
        }
        for program in &self.allow_program {
            policy = policy.allow_program(program)?;
        }
        // A worker run as root runs tasks as nobody unless told otherwise.
        let root = nix::unistd::geteuid().is_root();
        let user = self.run_as.clone().or_else(|| root.then(|| DEFAULT_RUN_AS.to_owned()));
        if let Some(user) = user.filter(|u| !(root && u == "root")) {
            policy = policy.run_as(&user)?;
        }
        if let Some(root) = &self.work_root {
            policy = policy.work_root(root.clone());
        }
        Ok(policy)
    }

    fn check(&self) -> Result<(), String> {
        if !self.shell {
            return Err("the built-in `shell` task runs whatever command a submitter sends: start the worker \
                        with --shell to accept that (see docs/security.md and docs/shell.md)"
                .to_owned());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.lease) {
            return Err("--lease must be between 1s and 10 minutes".to_owned());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".to_owned());
        }
        if self.queues.iter().any(String::is_empty) {
            return Err("--queues has an empty name".to_owned());
        }
        Ok(())
    }
}

/// Runs the worker until SIGINT or SIGTERM; exit code 2 when it cannot start.
pub(crate) fn run(client: Client, args: WorkerArgs) -> ExitCode {
    if let Err(e) = args.check() {
        eprintln!("quern worker: {e}");
        return ExitCode::from(2);
    }
    let policy = match args.policy() {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("quern worker: {e}");
            return ExitCode::from(2);
        }
    };
    let lease_keys = match &args.lease_key_file {
        Some(path) => match LeaseKeys::load(path) {
            Ok(keys) => Some(keys),
            Err(e) => {
                eprintln!("quern worker: lease key file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // Tasks of the worker's own user cannot read its memory or its
    // environment (`/proc/<worker>/environ`, with the token in it).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("quern worker: cannot close /proc/self to tasks: {e}");
        return ExitCode::from(2);
    }
    let Some(runtime) = crate::service::start("quern worker", None) else {
        return ExitCode::from(2);
    };
    tracing::info!(
        server = %client.base_url(),
        max = ?policy.max(),
        run_as = policy.user().map(|u| u.name.as_str()),
        kill_grace = ?policy.grace(),
        "shell sandbox"
    );
    let shell = ShellExecutor::new(policy);
    let mut builder = Worker::builder(client)
        .queues(args.queues)
        .concurrency(args.concurrency)
        .lease_ms(flags::millis(args.lease))
        .grace(args.grace);
    if let Some(id) = args.id {
        builder = builder.id(id);
    }
    if let Some(keys) = lease_keys {
        builder = builder.lease_keys(keys);
    }
    let runner = shell.clone();
    let worker = builder
        .handler(shell_task_type(), move |ctx| {
            let runner = runner.clone();
            async move { runner.run(ctx).await }
        })
        .build();
    // Enough for handed-back tasks to go through SIGTERM, the grace and SIGKILL.
    let stopping = args.kill_grace + Duration::from_secs(2);
    let outcome = runtime.block_on(async {
        let outcome = worker.run(crate::service::shutdown()).await;
        // Handed-back tasks were aborted: their processes got SIGTERM and
        // get SIGKILL after the kill grace from reaper threads. Wait for
        // that while the runtime's threads live, for a task's process gets
        // SIGKILL at once when the thread that started it ends.
        if tokio::time::timeout(stopping, shell.idle()).await.is_err() {
            tracing::warn!("some shell tasks were still stopping at exit");
        }
        let reaped = shell.clone();
        let _ = tokio::task::spawn_blocking(move || reaped.wait_for_cleanup(stopping)).await;
        outcome
    });
    // Dropping the runtime drops any run still going; its processes are
    // stopped by reaper threads, which are waited for here.
    drop(runtime);
    if !shell.wait_for_cleanup(stopping) {
        tracing::warn!("some task processes may have outlived the worker");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quern worker: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        args: WorkerArgs,
    }

    fn parse(argv: &[&str]) -> Result<WorkerArgs, clap::Error> {
        W::try_parse_from(std::iter::once("worker").chain(argv.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn flags_become_a_worker_and_a_policy() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().expect("utf-8 temp dir");
        let args = parse(&[
            "--shell",
            "--run-as",
            "root",
            "--queues",
            "a,b",
            "--concurrency",
            "4",
            "--lease",
            "5s",
            "--allow-cwd",
            dir,
            "--max-cpu-s",
            "10",
            "--max-memory-mb",
            "512",
            "--kill-grace",
            "500ms",
            "--fast-spawn",
        ])
        .expect("parses");
        assert_eq!(args.queues, ["a", "b"]);
        assert_eq!((args.concurrency, args.lease), (4, Duration::from_secs(5)));
        assert!(args.check().is_ok());
        let policy = args.policy().expect("a policy");
        assert_eq!(policy.max(), &Limits { cpu_s: Some(10), memory_mb: Some(512), ..Limits::default() });
        assert_eq!(policy.grace(), Duration::from_millis(500));
        assert!(!policy.dies_with_worker(), "--fast-spawn turns the parent-death signal off");
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--queues", "a"]).expect("parses").check().is_err(), "no --shell, no worker");
        assert!(parse(&["--lease", "soon"]).is_err());
        assert!(parse(&["--max-cpu-s", "-1"]).is_err());
        assert!(parse(&["--shell", "--lease", "500ms"]).expect("parses").check().is_err());
        assert!(parse(&["--shell", "--concurrency", "0"]).expect("parses").check().is_err());
        assert!(parse(&["--allow-cwd", "/no/such/dir/quern"]).expect("parses").policy().is_err());
        assert!(parse(&["--run-as", "no-such-user-quern"]).expect("parses").policy().is_err());
    }
}
