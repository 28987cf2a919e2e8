//! The task commands: `submit`, `status`, `wait`, `cancel`, `retry`,
//! `history` and `list`. Each parses its flags, makes one client call (or one
//! wait), and renders the answer.

use crate::flags;
use crate::render::{self, Output};
use crate::watch::{self, Waited};
use crate::{Exit, emit};
use clap::Args;
use quern_client::{Client, ListFilter, Result, Uuid};
use quern_core::{Status, Task, TaskSpec};
use serde_json::value::RawValue;
use std::time::Duration;

/// Flags of `quern submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The task type, which selects the handler (e.g. `email.send`).
    name: String,
    /// The task's input, as JSON: the value, `@FILE`, or `-` for standard input.
    #[arg(long, value_name = "JSON", value_parser = flags::json)]
    input: Option<Box<RawValue>>,
    /// The queue (default: the server's, usually `default`).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Higher runs first; may be negative.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Run no sooner than this from now ("5s", "2 minutes", milliseconds).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, conflicts_with = "run_at")]
    delay: Option<Duration>,
    /// Run no sooner than this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = flags::rfc3339)]
    run_at: Option<String>,
    /// The longest one attempt may run.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    timeout: Option<Duration>,
    /// How many times a failed attempt is retried (max_attempts = N + 1).
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// A metadata label; repeat for more. `5` is a number, `true`/`false` a
    /// boolean, `"5"` (quoted) the string.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = flags::key_value)]
    meta: Vec<(String, String)>,
    /// Submitting twice with one key yields one task.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Wait for a task submitted earlier: `ID` (until it succeeds) or
    /// `ID:failure`, `ID:completion`, `ID:<CEL expression>`; repeat for more.
    #[arg(long = "depends-on", value_name = "ID[:CONDITION]", value_parser = flags::dependency)]
    depends_on: Vec<quern_core::Dependency>,
    /// Wait for the task to end; exit 1 unless it succeeds.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, requires = "wait")]
    wait_timeout: Option<Duration>,
}

impl SubmitArgs {
    /// The submission these flags describe.
    fn spec(&self) -> TaskSpec {
        let mut spec = TaskSpec::named(self.name.clone());
        spec.input.clone_from(&self.input);
        spec.queue.clone_from(&self.queue);
        spec.priority = self.priority.unwrap_or(0);
        spec.metadata = self.meta.iter().map(|(k, v)| (k.clone(), quern_core::spec::metadata_value(v))).collect();
        spec.depends_on.clone_from(&self.depends_on);
        spec.delay_ms = self.delay.map(flags::millis);
        spec.run_at.clone_from(&self.run_at);
        spec.timeout_ms = self.timeout.map(flags::millis);
        spec.max_attempts = self.retries.map(|n| n.saturating_add(1));
        spec.idempotency_key.clone_from(&self.idempotency_key);
        spec
    }
}

/// Flags of the commands that take only a task id.
#[derive(Debug, Args)]
pub(crate) struct TaskId {
    /// The task's id.
    id: Uuid,
}

/// Flags of `quern wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// The task's id.
    id: Uuid,
    /// Give up (exit 1) after this long; without it, wait until the task ends.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    timeout: Option<Duration>,
}

/// Flags of `quern list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only tasks in these statuses (comma-separated).
    #[arg(long, value_name = "STATUS,...", value_delimiter = ',')]
    status: Vec<Status>,
    /// Only tasks of this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only tasks with this name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Only tasks of this workflow.
    #[arg(long, value_name = "ID")]
    workflow: Option<Uuid>,
    /// Only tasks with this metadata label; repeat for more (all must match).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = flags::key_value)]
    meta: Vec<(String, String)>,
    /// The most tasks to show (at most 1000).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Continue after a previous page (its "next cursor").
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
}

impl ListArgs {
    fn filter(self) -> ListFilter {
        ListFilter {
            status: self.status,
            queue: self.queue,
            name: self.name,
            workflow: self.workflow,
            metadata: self.meta.into_iter().collect(),
            limit: self.limit,
            cursor: self.cursor,
        }
    }
}

/// `quern submit`.
pub(crate) async fn submit(client: &Client, output: Output, args: SubmitArgs) -> Result<Exit> {
    let task = client.submit(&args.spec()).await?;
    if args.wait {
        let waited = watch::wait_for(client, task.id, args.wait_timeout, Some(task)).await?;
        return finish_wait(output, waited);
    }
    emit(&one_task(output, &task)?);
    Ok(Exit::Success)
}

/// `quern status`.
pub(crate) async fn status(client: &Client, output: Output, args: TaskId) -> Result<Exit> {
    emit(&one_task(output, &client.get(args.id, None).await?)?);
    Ok(Exit::Success)
}

/// `quern wait`.
pub(crate) async fn wait(client: &Client, output: Output, args: WaitArgs) -> Result<Exit> {
    let waited = watch::wait_for(client, args.id, args.timeout, None).await?;
    finish_wait(output, waited)
}

/// `quern cancel`.
pub(crate) async fn cancel(client: &Client, output: Output, args: TaskId) -> Result<Exit> {
    emit(&one_task(output, &client.cancel(args.id).await?)?);
    Ok(Exit::Success)
}

/// `quern retry`.
pub(crate) async fn retry(client: &Client, output: Output, args: TaskId) -> Result<Exit> {
    emit(&one_task(output, &client.retry(args.id).await?)?);
    Ok(Exit::Success)
}

/// `quern history`.
pub(crate) async fn history(client: &Client, output: Output, args: TaskId) -> Result<Exit> {
    let entries = client.history(args.id).await?;
    emit(&match output {
        Output::Json => render::json(&entries)?,
        Output::Table => render::history_table(&entries),
    });
    Ok(Exit::Success)
}

/// `quern list`.
pub(crate) async fn list(client: &Client, output: Output, args: ListArgs) -> Result<Exit> {
    let page = client.list(&args.filter()).await?;
    emit(&match output {
        Output::Json => render::json(&page)?,
        Output::Table => render::task_table(&page.tasks, page.next_cursor.as_deref()),
    });
    Ok(Exit::Success)
}

/// Prints the task a wait ended with and says how it ended.
fn finish_wait(output: Output, waited: Waited) -> Result<Exit> {
    match waited {
        Waited::Ended(task) => {
            emit(&one_task(output, &task)?);
            Ok(if watch::exit_code(task.status) == 0 { Exit::Success } else { Exit::Unsuccessful })
        }
        Waited::GaveUp(task) => {
            emit(&one_task(output, &task)?);
            eprintln!("quern: gave up waiting: task {} is still {}", task.id, task.status);
            Ok(Exit::Unsuccessful)
        }
    }
}

fn one_task(output: Output, task: &Task) -> Result<String> {
    match output {
        Output::Json => render::json(task),
        Output::Table => Ok(render::task_block(task)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Submit {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn spec_of(argv: &[&str]) -> TaskSpec {
        let argv = std::iter::once("submit").chain(argv.iter().copied());
        Submit::try_parse_from(argv).expect("flags parse").args.spec()
    }

    #[test]
    fn a_bare_submit_is_a_named_spec() {
        let spec = serde_json::to_value(spec_of(&["email.send"])).expect("serializes");
        assert_eq!(spec, serde_json::json!({"name": "email.send", "priority": 0}));
    }

    #[test]
    fn submit_flags_fill_the_spec() {
        let spec = spec_of(&[
            "email.send",
            "--input",
            r#"{"to": "a@example.com"}"#,
            "--queue",
            "emails",
            "--priority",
            "-3",
            "--delay",
            "5s",
            "--timeout",
            "2 minutes",
            "--retries",
            "2",
            "--meta",
            "env=prod",
            "--meta",
            "team=growth",
            "--idempotency-key",
            "k1",
        ]);
        let v = serde_json::to_value(spec).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({
                "name": "email.send", "input": {"to": "a@example.com"}, "queue": "emails",
                "priority": -3, "metadata": {"env": "prod", "team": "growth"},
                "delay_ms": 5000, "timeout_ms": 120000, "max_attempts": 3, "idempotency_key": "k1",
            })
        );
        let spec = spec_of(&["a", "--run-at", "2030-01-01T00:00:00Z"]);
        assert_eq!(spec.run_at.as_deref(), Some("2030-01-01T00:00:00Z"));
        let id = "01a250f2-05f1-709c-9f28-f929e25d4d12";
        let (failure, expr) = (format!("{id}:failure"), format!("{id}:result.rows > 2"));
        let spec = spec_of(&["a", "--depends-on", id, "--depends-on", &failure, "--depends-on", &expr]);
        let edges = serde_json::to_value(&spec.depends_on).expect("serializes");
        assert_eq!(
            edges,
            serde_json::json!([{"task": id, "on": "success"}, {"task": id, "on": "failure"},
                {"task": id, "on": {"expr": "result.rows > 2"}}])
        );
        let spec = spec_of(&["a", "--meta", "n=5", "--meta", "s=\"5\"", "--meta", "ok=true"]);
        assert_eq!(serde_json::to_value(&spec.metadata).ok(), Some(serde_json::json!({"n": 5, "s": "5", "ok": true})));
    }

    #[test]
    fn bad_submit_flags_are_usage_errors() {
        for argv in [
            &["submit", "a", "--input", "{nope"][..],
            &["submit", "a", "--delay", "soon"],
            &["submit", "a", "--delay", "5s", "--run-at", "2030-01-01T00:00:00Z"],
            &["submit", "a", "--run-at", "tomorrow"],
            &["submit", "a", "--meta", "novalue"],
            &["submit", "a", "--wait-timeout", "5s"],
            &["submit", "a", "--retries", "-1"],
            &["submit", "a", "--depends-on", "not-an-id"],
        ] {
            let err = Submit::try_parse_from(argv).err();
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{argv:?}");
        }
    }

    #[derive(Parser)]
    struct List {
        #[command(flatten)]
        args: ListArgs,
    }

    #[test]
    fn list_flags_become_a_filter() {
        let argv = ["list", "--status", "failed,timed_out", "--meta", "env=prod", "--limit", "10", "--queue", "q"];
        let filter = List::try_parse_from(argv).expect("flags parse").args.filter();
        assert_eq!(filter.status, [Status::Failed, Status::TimedOut]);
        assert_eq!(filter.metadata.get("env").map(String::as_str), Some("prod"));
        assert_eq!((filter.limit, filter.queue.as_deref()), (Some(10), Some("q")));
        assert!(List::try_parse_from(["list", "--status", "done"]).is_err());
    }
}
