//! `quern workflow submit|status|graph|cancel` and `quern approve`: each
//! reads its flags, makes one client call (or one wait), and renders.

use crate::flags;
use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use quern_client::{Client, Error, Result, Uuid};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest single long-poll; longer waits loop.
const POLL: Duration = Duration::from_secs(30);
/// The long-poll while a progress bar is shown, so that it moves.
const BAR_POLL: Duration = Duration::from_secs(1);

/// `quern workflow …`.
#[derive(Debug, Args)]
pub(crate) struct WorkflowArgs {
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Submit a workflow from a YAML or JSON file (`-` reads standard input).
    Submit {
        /// The workflow file.
        file: PathBuf,
        /// Wait for it to end; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long ("10m", milliseconds).
        #[arg(long, value_name = "DURATION", value_parser = flags::duration, requires = "wait")]
        timeout: Option<Duration>,
    },
    /// Show a workflow: its status, counts and tasks.
    Status {
        /// The workflow's id.
        id: Uuid,
        /// Wait for it to end; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, value_name = "DURATION", value_parser = flags::duration, requires = "wait")]
        timeout: Option<Duration>,
    },
    /// Print a workflow's graph, each node with its status.
    Graph {
        /// The workflow's id.
        id: Uuid,
        /// `dot` (Graphviz), `mermaid` or `json`.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Cancel every unfinished task of a workflow.
    Cancel {
        /// The workflow's id.
        id: Uuid,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

/// `quern approve ID [--reject] [--by NAME] [--comment TEXT]`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The `approval` task's id.
    id: Uuid,
    /// Reject instead of approve (the task fails; `on: failure` branches run).
    #[arg(long)]
    reject: bool,
    /// Who decides.
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Why.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

fn read_file(path: &PathBuf) -> Result<Value> {
    let text =
        if path.as_os_str() == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) }
            .map_err(|e| Error::Api { status: 0, code: "usage".into(), message: format!("{}: {e}", path.display()) })?;
    // YAML is a superset of JSON: one parser reads both.
    serde_saphyr::from_str::<Value>(&text).map_err(|e| Error::Api {
        status: 0,
        code: "usage".into(),
        message: format!("{}: not a workflow file: {e}", path.display()),
    })
}

/// Exit 0 when the workflow succeeded, 1 otherwise.
fn exit_of(wf: &Value) -> Exit {
    if wf["status"] == "succeeded" { Exit::Success } else { Exit::Unsuccessful }
}

fn render_workflow(output: Output, wf: &Value) -> Result<String> {
    if output == Output::Json {
        return render::json(wf);
    }
    let mut out = format!(
        "id:     {}\nname:   {}\nstatus: {}\ncounts: {}\n\n",
        wf["id"].as_str().unwrap_or(""),
        wf["name"].as_str().unwrap_or(""),
        wf["status"].as_str().unwrap_or(""),
        wf["counts"].as_object().map_or(String::new(), |c| c
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")),
    );
    let mut table = render::table(&["key", "name", "status", "attempt", "id"]);
    for t in wf["tasks"].as_array().into_iter().flatten() {
        table.add_row([
            t["key"].as_str().unwrap_or("-").to_owned(),
            t["name"].as_str().unwrap_or("").to_owned(),
            t["status"].as_str().unwrap_or("").to_owned(),
            t["attempt"].to_string(),
            t["id"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    out.push_str(&table.to_string());
    let shown = wf["tasks"].as_array().map_or(0, Vec::len);
    if wf["next_cursor"].is_string() {
        let total = wf["total"].as_u64().unwrap_or(0);
        let id = wf["id"].as_str().unwrap_or("");
        out.push_str(&format!("\n(the first {shown} of {total} tasks; all of them: quern list --workflow {id})\n"));
    }
    Ok(out)
}

/// Waits until the workflow ends or `timeout` passes, in long-polls. On a
/// terminal, a bar shows finished tasks out of the total, refreshed every
/// second.
async fn wait_for(client: &Client, id: Uuid, timeout: Option<Duration>) -> Result<(Value, bool)> {
    let start = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} tasks finished [{bar:30}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let poll = if bar.is_some() { BAR_POLL } else { POLL };
    let answer = loop {
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let wait = left.map_or(poll, |l| l.min(poll));
        let wf = render::value(&client.workflow(id, Some(wait)).await?)?;
        if let Some(bar) = &bar {
            let total = wf["total"].as_u64().unwrap_or(0);
            let open: u64 = ["pending", "queued", "running"].iter().filter_map(|s| wf["counts"][*s].as_u64()).sum();
            bar.set_length(total);
            bar.set_position(total.saturating_sub(open));
            bar.set_message(wf["status"].as_str().unwrap_or("").to_owned());
        }
        if wf["status"] != "running" {
            break (wf, true);
        }
        if left.is_some_and(|l| l <= wait) {
            break (wf, false);
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(answer)
}

pub(crate) async fn run(client: &Client, output: Output, args: WorkflowArgs) -> Result<Exit> {
    match args.command {
        WorkflowCommand::Submit { file, wait, timeout } => {
            let body = read_file(&file)?;
            let created = render::value(&client.submit_workflow_json(&body).await?)?;
            if !wait {
                emit(&if output == Output::Json { render::json(&created)? } else { created_text(&created) });
                return Ok(Exit::Success);
            }
            let id = created["id"].as_str().and_then(|s| Uuid::try_parse(s).ok());
            let id = id.ok_or_else(|| Error::Decode("the server answered no workflow id".into()))?;
            eprintln!("workflow {id} submitted; waiting");
            finish(client, output, id, timeout).await
        }
        WorkflowCommand::Status { id, wait, timeout } => {
            if wait {
                return finish(client, output, id, timeout).await;
            }
            let wf = render::value(&client.workflow(id, None).await?)?;
            emit(&render_workflow(output, &wf)?);
            Ok(Exit::Success)
        }
        WorkflowCommand::Graph { id, format } => {
            let format = match format {
                GraphFormat::Dot => "dot",
                GraphFormat::Mermaid => "mermaid",
                GraphFormat::Json => "json",
            };
            emit(client.workflow_graph(id, format).await?.trim_end());
            Ok(Exit::Success)
        }
        WorkflowCommand::Cancel { id } => {
            let answer = render::value(&client.cancel_workflow(id).await?)?;
            emit(&if output == Output::Json {
                render::json(&answer)?
            } else {
                format!("cancelled {} unfinished task(s) of workflow {id}", answer["cancelled"])
            });
            Ok(Exit::Success)
        }
    }
}

async fn finish(client: &Client, output: Output, id: Uuid, timeout: Option<Duration>) -> Result<Exit> {
    let (wf, ended) = wait_for(client, id, timeout).await?;
    emit(&render_workflow(output, &wf)?);
    if !ended {
        eprintln!("quern: gave up waiting: workflow {id} is still running");
        return Ok(Exit::Unsuccessful);
    }
    Ok(exit_of(&wf))
}

fn created_text(created: &Value) -> String {
    let mut out = format!("workflow {}\n", created["id"].as_str().unwrap_or(""));
    for (key, id) in created["tasks"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {key}: {}\n", id.as_str().unwrap_or("")));
    }
    out.trim_end().to_owned()
}

pub(crate) async fn approve(client: &Client, output: Output, args: ApproveArgs) -> Result<Exit> {
    let task = client.approve(args.id, !args.reject, args.by.as_deref(), args.comment.as_deref()).await?;
    emit(&if output == Output::Json { render::json(&task)? } else { render::task_block(&task) });
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_files_read_alike() {
        let dir = std::env::temp_dir().join(format!("quern-wf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let yaml = dir.join("wf.yaml");
        std::fs::write(&yaml, "name: etl\ntasks:\n  - key: a\n    name: extract\n  - key: b\n    name: load\n    depends_on: [{key: a, on: failure}]\n")
            .expect("write");
        let json_file = dir.join("wf.json");
        std::fs::write(&json_file, r#"{"name":"etl","tasks":[{"key":"a","name":"extract"},{"key":"b","name":"load","depends_on":[{"key":"a","on":"failure"}]}]}"#)
            .expect("write");
        assert_eq!(read_file(&yaml).expect("yaml"), read_file(&json_file).expect("json"));
        assert!(read_file(&dir.join("missing.yaml")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_exit_code_follows_the_status() {
        assert_eq!(exit_of(&json!({"status": "succeeded"})), Exit::Success);
        assert_eq!(exit_of(&json!({"status": "failed"})), Exit::Unsuccessful);
    }
}
