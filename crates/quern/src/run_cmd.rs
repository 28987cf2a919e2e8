//! `quern run`: submits a `shell` task (a command, or a script with
//! `--script`) and, with `--wait`, waits for it and prints its output.
//!
//! With `--wait`, the task's stdout tail goes to stdout and its stderr tail
//! to stderr, as if the command had run here; the exit code is the
//! command's own (0 when the task succeeded), and 1 when the task ended
//! without one (timed out, cancelled, lost) or the wait gave up (`--output
//! json` prints the task instead).

use crate::flags;
use crate::render::{self, Output};
use crate::watch::{self, Waited};
use crate::{Exit, emit};
use clap::Args;
use quern_client::{Client, Result};
use quern_core::{Status, Task, TaskSpec};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::time::Duration;

/// Flags of `quern run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The program and its arguments, run without a shell (put them after `--`).
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "script",
        conflicts_with = "script"
    )]
    command: Vec<String>,
    /// A script for `/bin/sh -c`, instead of a command.
    #[arg(long, value_name = "SCRIPT")]
    script: Option<String>,
    /// The queue (default: the server's, usually `default`).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Higher runs first; may be negative.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// The longest one attempt may run.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    timeout: Option<Duration>,
    /// How many times a failed attempt is retried (max_attempts = N + 1).
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// The working directory (the worker must allow it with --allow-cwd).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// An environment variable for the task; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = flags::key_value)]
    env: Vec<(String, String)>,
    /// Text written to the task's stdin.
    #[arg(long, value_name = "TEXT")]
    stdin: Option<String>,
    /// CPU seconds limit.
    #[arg(long, value_name = "N")]
    cpu_s: Option<u64>,
    /// Address space limit in MiB.
    #[arg(long, value_name = "N")]
    memory_mb: Option<u64>,
    /// Process limit (of the task's user).
    #[arg(long, value_name = "N")]
    processes: Option<u64>,
    /// Largest file the task may write, in MiB.
    #[arg(long, value_name = "N")]
    file_size_mb: Option<u64>,
    /// Open files limit.
    #[arg(long, value_name = "N")]
    open_files: Option<u64>,
    /// A metadata label; repeat for more. `5` is a number, `true`/`false` a
    /// boolean, `"5"` (quoted) the string.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = flags::key_value)]
    meta: Vec<(String, String)>,
    /// Wait for the task, print its output, and exit 1 unless it succeeds.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, requires = "wait")]
    wait_timeout: Option<Duration>,
}

impl RunArgs {
    /// The `shell` task's input.
    fn input(&self) -> Value {
        let mut input = Map::new();
        match &self.script {
            Some(script) => input.insert("script".into(), json!(script)),
            None => input.insert("command".into(), json!(self.command)),
        };
        if !self.env.is_empty() {
            let env: Map<String, Value> = self.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            input.insert("env".into(), Value::Object(env));
        }
        if let Some(cwd) = &self.cwd {
            input.insert("cwd".into(), json!(cwd));
        }
        if let Some(stdin) = &self.stdin {
            input.insert("stdin".into(), json!(stdin));
        }
        let limits: Map<String, Value> = [
            ("cpu_s", self.cpu_s),
            ("memory_mb", self.memory_mb),
            ("processes", self.processes),
            ("file_size_mb", self.file_size_mb),
            ("open_files", self.open_files),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), json!(v))))
        .collect();
        if !limits.is_empty() {
            input.insert("limits".into(), Value::Object(limits));
        }
        Value::Object(input)
    }

    /// The submission these flags describe.
    fn spec(&self) -> TaskSpec {
        let mut spec = TaskSpec::named("shell");
        spec.input = RawValue::from_string(self.input().to_string()).ok();
        spec.queue.clone_from(&self.queue);
        spec.priority = self.priority.unwrap_or(0);
        spec.metadata = self.meta.iter().map(|(k, v)| (k.clone(), quern_core::spec::metadata_value(v))).collect();
        spec.timeout_ms = self.timeout.map(flags::millis);
        spec.max_attempts = self.retries.map(|n| n.saturating_add(1));
        spec
    }
}

/// `quern run`.
pub(crate) async fn run(client: &Client, output: Output, args: RunArgs) -> Result<Exit> {
    let task = client.submit(&args.spec()).await?;
    if !args.wait {
        emit(&match output {
            Output::Json => render::json(&task)?,
            Output::Table => render::task_block(&task),
        });
        return Ok(Exit::Success);
    }
    let waited = watch::wait_for(client, task.id, args.wait_timeout, Some(task)).await?;
    let (task, gave_up) = match waited {
        Waited::Ended(task) => (task, false),
        Waited::GaveUp(task) => (task, true),
    };
    if output == Output::Json {
        emit(&render::json(&task)?);
    } else {
        print_outcome(&task);
    }
    if gave_up {
        eprintln!("quern: gave up waiting: task {} is still {}", task.id, task.status);
        return Ok(Exit::Unsuccessful);
    }
    Ok(exit_of(&task))
}

/// The command's exit code when the task ran it to the end; 1 when it did
/// not end with one.
fn exit_of(task: &Task) -> Exit {
    if task.status == Status::Succeeded {
        return Exit::Success;
    }
    let code = task.error.as_ref().and_then(|e| e.details.as_ref()).and_then(|d| d["exit_code"].as_u64());
    match code.and_then(|c| u8::try_from(c).ok()) {
        Some(code) if code > 0 => Exit::Code(code),
        _ => Exit::Unsuccessful,
    }
}

/// Prints the output tails of an ended task, and what went wrong if it
/// failed. A closed stdout or stderr is not an error worth a panic.
fn print_outcome(task: &Task) {
    let tails = if task.status == Status::Succeeded {
        task.result.as_ref().and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    } else {
        task.error.as_ref().and_then(|e| e.details.clone())
    };
    if let Some(tails) = tails {
        if let Some(out) = tails["stdout"].as_str() {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush());
        }
        if let Some(err) = tails["stderr"].as_str() {
            let _ = std::io::stderr().write_all(err.as_bytes());
        }
    }
    if task.status.is_terminal() && task.status != Status::Succeeded {
        let why = task.error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default();
        eprintln!("quern: task {} {}{why}", task.id, task.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        Run::try_parse_from(std::iter::once("run").chain(argv.iter().copied())).map(|r| r.args)
    }

    #[test]
    fn the_command_after_the_separator_is_the_argv() {
        let args =
            parse(&["--wait", "--env", "A=1", "--cpu-s", "2", "--", "ls", "-la", "--color", "/tmp"]).expect("parses");
        assert!(args.wait);
        assert_eq!(
            args.input(),
            json!({"command": ["ls", "-la", "--color", "/tmp"], "env": {"A": "1"}, "limits": {"cpu_s": 2}})
        );
        let spec = serde_json::to_value(args.spec()).expect("serializes");
        assert_eq!(spec["name"], "shell");
        assert_eq!(spec["input"]["command"][0], "ls");
    }

    #[test]
    fn a_script_replaces_the_command() {
        let args = parse(&["--script", "echo hi | wc -c", "--stdin", "x", "--timeout", "5s", "--retries", "2"])
            .expect("parses");
        assert_eq!(args.input(), json!({"script": "echo hi | wc -c", "stdin": "x"}));
        let spec = args.spec();
        assert_eq!((spec.timeout_ms, spec.max_attempts), (Some(5000), Some(3)));
    }

    #[test]
    fn a_command_or_a_script_is_required_and_not_both() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--script", "true", "--", "true"]).is_err());
        assert!(parse(&["--wait-timeout", "5s", "--", "true"]).is_err());
        assert!(parse(&["--env", "novalue", "--", "true"]).is_err());
    }
}
