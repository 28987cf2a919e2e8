//! `quern`: the server, and the command line client of a running server.
//!
//! This binary only parses arguments and hands them on: `quern server` to
//! [`server_cmd`], `quern worker` to [`worker_cmd`], every other command to
//! one function of a `*_cmd` module, which makes one call through
//! `quern_client` and renders the answer.
//!
//! # Layout
//! - [`server_cmd`]: `quern server` and `quern migrate`.
//! - [`worker_cmd`]: `quern worker`, the built-in `shell` task's worker.
//! - [`run_cmd`]: `quern run`, which submits a `shell` task.
//! - [`task_cmd`]: `submit`, `status`, `wait`, `cancel`, `retry`, `history`,
//!   `list`.
//! - [`queue_cmd`]: `queues [pause|resume NAME]`, `workers`, `task-types`.
//! - [`workflow_cmd`]: `workflow submit|status|graph|cancel` and `approve`.
//! - [`events_cmd`]: `events publish|tail`.
//! - [`schedule_cmd`]: `schedule list|get|enable|disable|trigger|delete|runs|apply`.
//! - [`top_cmd`]: `quern top`, a live view of a server in the terminal.
//! - [`watch`]: waiting for a task to end, with progress on stderr.
//! - [`render`]: tables, `key: value` blocks and JSON on stdout.
//! - [`flags`]: parsers of flag values (durations, `KEY=VALUE`, JSON).
//! - [`service`]: what `server` and `worker` share: logging, runtime, stop signal.
//! - [`allocator`]: jemalloc, which returns memory freed after a burst.
//!
//! Exit codes (`api.md`): 0 success; 1 when an awaited task ended
//! unsuccessfully or the wait timed out; 2 on usage errors and on server or
//! transport errors, which print `error: <code>: <message>` on stderr.

mod allocator;
mod audit_cmd;
mod events_cmd;
mod flags;
mod queue_cmd;
mod render;
mod run_cmd;
mod schedule_cmd;
mod server_cmd;
mod service;
mod task_cmd;
mod token_cmd;
mod top_cmd;
mod watch;
mod worker_cmd;
mod workflow_cmd;

use clap::{Args, Parser, Subcommand};
use quern_client::Client;
use render::Output;
use std::io::Write;
use std::process::ExitCode;

/// Quern: a durable task queue and workflow engine.
#[derive(Debug, Parser)]
#[command(name = "quern", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after the command's name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct GlobalArgs {
    /// The server's URL.
    #[arg(long, global = true, value_name = "URL", env = "QUERN_URL", default_value = "http://127.0.0.1:7311")]
    server: String,
    /// A bearer token for the server.
    #[arg(long, global = true, value_name = "TOKEN", env = "QUERN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust the CA certificates in this PEM file too (a server with a
    /// private or self-signed certificate).
    #[arg(long, global = true, value_name = "FILE", env = "QUERN_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// How to print answers.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// How `server` and `worker` write their logs on stderr: `text`, or
    /// `json` (one object per line).
    #[arg(long, global = true, value_enum, env = "QUERN_LOG_FORMAT", default_value_t = service::LogFormat::Text)]
    log_format: service::LogFormat,
}

impl GlobalArgs {
    /// A client of the server these options name.
    fn client(&self) -> Result<Client, quern_client::Error> {
        let token = self.token.clone().filter(|t| !t.is_empty());
        let client = Client::new(self.server.clone(), token);
        match &self.ca_file {
            None => Ok(client),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| quern_client::Error::Api {
                    status: 0,
                    code: "usage".into(),
                    message: format!("--ca-file {}: {e}", path.display()),
                })?;
                client.with_ca_pem(&pem)
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Server(server_cmd::ServerArgs),
    /// Run a worker of the built-in `shell` task until SIGINT or SIGTERM.
    Worker(worker_cmd::WorkerArgs),
    /// Create or upgrade Quern's tables in PostgreSQL, and exit.
    Migrate(server_cmd::MigrateArgs),
    /// Watch a server live: queues (depth, in and out per second, wait p50
    /// and p95), workers, running tasks with their progress, the latest
    /// failures. `q` quits.
    Top(top_cmd::TopArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// The commands that talk to a running server.
#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Submit a task.
    Submit(task_cmd::SubmitArgs),
    /// Submit a `shell` task: `quern run [--wait] -- CMD ARGS...`.
    Run(run_cmd::RunArgs),
    /// Show a task.
    Status(task_cmd::TaskId),
    /// Wait for a task to end; exit 1 unless it succeeded.
    Wait(task_cmd::WaitArgs),
    /// Cancel a task.
    Cancel(task_cmd::TaskId),
    /// Send a failed, timed-out or cancelled task back to its queue.
    Retry(task_cmd::TaskId),
    /// Show a task's audit trail.
    History(task_cmd::TaskId),
    /// List tasks, newest first.
    List(task_cmd::ListArgs),
    /// List queues with their task counts, or pause or resume one.
    Queues(queue_cmd::QueuesArgs),
    /// List the workers the server heard from, live ones first.
    Workers,
    /// List the task types live workers serve, with their schemas.
    TaskTypes,
    /// Submit, watch, draw or cancel a workflow.
    Workflow(workflow_cmd::WorkflowArgs),
    /// Approve (or `--reject`) an `approval` task of a workflow.
    Approve(workflow_cmd::ApproveArgs),
    /// Cron, interval and one-time schedules: list them, apply a file, run one now.
    Schedule(schedule_cmd::ScheduleArgs),
    /// Publish events, or follow the event log.
    Events(events_cmd::EventsArgs),
    /// Make, list or revoke API tokens (over HTTP, or offline with --data/--database).
    Token(token_cmd::TokenArgs),
    /// Who changed what: tokens, queues, schedules, webhooks, cancels, retries, approvals.
    Audit(audit_cmd::AuditArgs),
}

/// How a client command ended, as the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done; an awaited task succeeded.
    Success,
    /// 1: an awaited task ended unsuccessfully, or the wait gave up.
    Unsuccessful,
    /// 2: a usage, server or transport error.
    Error,
    /// `quern run --wait`: the exit code the task's command ended with.
    Code(u8),
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Unsuccessful => ExitCode::from(1),
            Exit::Error => ExitCode::from(2),
            Exit::Code(code) => ExitCode::from(code),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service::set_log_format(cli.global.log_format);
    match cli.command {
        // The server builds its own (multi-threaded) runtime.
        Command::Server(args) => server_cmd::run(args),
        Command::Migrate(args) => server_cmd::migrate(args),
        // So does the worker, which runs many tasks at once.
        Command::Worker(args) => match cli.global.client() {
            Ok(client) => worker_cmd::run(client, args),
            Err(e) => {
                eprintln!("quern worker: {}", e.message());
                ExitCode::from(2)
            }
        },
        Command::Top(args) => match cli.global.client() {
            Ok(client) => top_cmd::run(&client, &args),
            Err(e) => {
                eprintln!("quern top: {}", e.message());
                ExitCode::from(2)
            }
        },
        Command::Client(command) => run_client(cli.global, command).into(),
    }
}

/// Runs one client command on a single-threaded runtime: a command is one
/// request (or one wait) at a time.
fn run_client(global: GlobalArgs, command: ClientCommand) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return Exit::Error;
        }
    };
    let client = match global.client() {
        Ok(client) => client,
        Err(e) => {
            report(&e, &global.server);
            return Exit::Error;
        }
    };
    let output = global.output;
    let done = runtime.block_on(async {
        match command {
            ClientCommand::Submit(args) => task_cmd::submit(&client, output, args).await,
            ClientCommand::Run(args) => run_cmd::run(&client, output, args).await,
            ClientCommand::Status(args) => task_cmd::status(&client, output, args).await,
            ClientCommand::Wait(args) => task_cmd::wait(&client, output, args).await,
            ClientCommand::Cancel(args) => task_cmd::cancel(&client, output, args).await,
            ClientCommand::Retry(args) => task_cmd::retry(&client, output, args).await,
            ClientCommand::History(args) => task_cmd::history(&client, output, args).await,
            ClientCommand::List(args) => task_cmd::list(&client, output, args).await,
            ClientCommand::Queues(args) => queue_cmd::run(&client, output, args).await,
            ClientCommand::Workers => queue_cmd::workers(&client, output).await,
            ClientCommand::TaskTypes => queue_cmd::task_types(&client, output).await,
            ClientCommand::Workflow(args) => workflow_cmd::run(&client, output, args).await,
            ClientCommand::Approve(args) => workflow_cmd::approve(&client, output, args).await,
            ClientCommand::Schedule(args) => schedule_cmd::run(&client, output, args).await,
            ClientCommand::Events(args) => events_cmd::run(&client, output, args).await,
            ClientCommand::Token(args) => token_cmd::run(&client, output, args).await,
            ClientCommand::Audit(args) => audit_cmd::run(&client, output, args).await,
        }
    });
    done.unwrap_or_else(|e| {
        report(&e, client.base_url());
        Exit::Error
    })
}

/// Prints a failed command's error on stderr; one the server never answered
/// says where the CLI looked and how to point it elsewhere.
fn report(e: &quern_client::Error, server: &str) {
    match e {
        quern_client::Error::Transport(why) => eprintln!(
            "error: cannot reach the Quern server at {server}: {why}\n\
             hint: is `quern server` running there? Point the CLI at a server with --server URL or QUERN_URL"
        ),
        e => eprintln!("error: {}: {}", e.code(), e.message()),
    }
}

/// Prints `text` and a newline on stdout. A closed stdout (`quern list |
/// head`) is not an error worth a panic: the reader has what it wanted.
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["quern", "--output", "json", "list", "--server", "http://h:1"]).expect("parses");
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.server, "http://h:1");
        assert!(matches!(cli.command, Command::Client(ClientCommand::List(_))));
    }

    #[test]
    fn commands_parse() {
        let id = "01900000-0000-7000-8000-000000000001";
        for argv in [
            &["quern", "status", id][..],
            &["quern", "wait", id, "--timeout", "60s"],
            &["quern", "cancel", id],
            &["quern", "retry", id],
            &["quern", "history", id],
            &["quern", "queues"],
            &["quern", "queues", "pause", "emails"],
            &["quern", "queues", "resume", "emails"],
            &["quern", "workers"],
            &["quern", "task-types", "--output", "json"],
            &["quern", "server"],
            &["quern", "worker", "--queues", "a,b", "--concurrency", "2"],
            &["quern", "run", "--wait", "--", "echo", "hi"],
            &["quern", "run", "--script", "echo hi | wc -c"],
        ] {
            assert!(Cli::try_parse_from(argv).is_ok(), "{argv:?}");
        }
    }

    #[test]
    fn usage_errors_exit_two() {
        for argv in [
            &["quern"][..],
            &["quern", "status", "not-a-uuid"],
            &["quern", "list", "--output", "yaml"],
            &["quern", "wait", "01900000-0000-7000-8000-000000000001", "--timeout", "soon"],
            &["quern", "--log-format", "yaml", "server"],
            &["quern", "top", "--interval", "500ms"],
        ] {
            let err = Cli::try_parse_from(argv).err();
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{argv:?}");
        }
    }
}
