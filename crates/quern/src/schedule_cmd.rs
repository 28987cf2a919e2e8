//! `quern schedule list|get|enable|disable|trigger|delete|runs|apply`: each
//! makes one client call and renders it, with next fire times in each
//! schedule's own time zone.

use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::{Args, Subcommand};
use quern_client::{Client, Error, Result};
use serde_json::Value;
use std::path::PathBuf;

/// `quern schedule …`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Every schedule, with its next fire time in its time zone.
    List,
    /// One schedule.
    Get {
        /// Its name.
        name: String,
    },
    /// Let a schedule fire again, from its next slot.
    Enable {
        /// Its name.
        name: String,
    },
    /// Stop a schedule from firing.
    Disable {
        /// Its name.
        name: String,
    },
    /// Run a schedule now (its slots stay as they are).
    Trigger {
        /// Its name.
        name: String,
    },
    /// Delete a schedule; the tasks it created stay.
    Delete {
        /// Its name.
        name: String,
    },
    /// The tasks a schedule created, newest first.
    Runs {
        /// Its name.
        name: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Make the server's schedules match a YAML or JSON file (`-` reads
    /// standard input): create and update what it names.
    Apply {
        /// The schedules file.
        file: PathBuf,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
        /// Also delete the schedules the file does not name.
        #[arg(long)]
        prune: bool,
    },
}

/// How a schedule's slots fall, as written.
fn timing(s: &Value) -> String {
    if let Some(cron) = s["cron"].as_str() {
        return format!("cron {cron}");
    }
    match &s["every"] {
        Value::String(every) => return format!("every {every}"),
        Value::Number(n) => return format!("every {n}s"),
        _ => {}
    }
    s["at"].as_str().map_or_else(String::new, |at| format!("at {at}"))
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| if v.is_null() { "-".into() } else { v.to_string() }, str::to_owned)
}

fn schedule_table(all: &[Value]) -> String {
    let mut table = render::table(&["name", "timing", "timezone", "enabled", "next (local)", "last fired", "task"]);
    for s in all {
        table.add_row(vec![
            text(&s["name"]),
            timing(s),
            text(&s["timezone"]),
            text(&s["enabled"]),
            text(&s["next_fire_local"]),
            text(&s["last_fired_at"]),
            text(&s["task"]["name"]),
        ]);
    }
    table.trim_fmt()
}

fn schedule_block(s: &Value) -> String {
    let rows = [
        ("name", text(&s["name"])),
        ("timing", timing(s)),
        ("timezone", text(&s["timezone"])),
        ("enabled", text(&s["enabled"])),
        ("overlap", text(&s["overlap"])),
        ("next (local)", text(&s["next_fire_local"])),
        ("next_fire_at", text(&s["next_fire_at"])),
        ("last_fired_at", text(&s["last_fired_at"])),
        ("last_task", text(&s["last_task"])),
        ("description", text(&s["description"])),
        ("task", s["task"].to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    rows.iter().map(|(k, v)| format!("{:<width$}{v}", format!("{k}:"))).collect::<Vec<_>>().join("\n")
}

fn render_one(output: Output, s: &Value) -> Result<String> {
    if output == Output::Json { render::json(s) } else { Ok(schedule_block(s)) }
}

fn report(output: Output, r: &Value) -> Result<String> {
    if output == Output::Json {
        return render::json(r);
    }
    let line = |key: &str| {
        let names: Vec<String> = r[key].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
        format!("{key:<10}{} {}", names.len(), names.join(", ")).trim_end().to_owned()
    };
    let head = if r["dry_run"] == true { "dry run: nothing was changed\n" } else { "" };
    Ok(format!("{head}{}\n{}\n{}\n{}", line("created"), line("updated"), line("deleted"), line("unchanged")))
}

fn read_file(path: &PathBuf) -> Result<String> {
    if path.as_os_str() == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) }
        .map_err(|e| Error::Api { status: 0, code: "usage".into(), message: format!("{}: {e}", path.display()) })
}

pub(crate) async fn run(client: &Client, output: Output, args: ScheduleArgs) -> Result<Exit> {
    let out = match args.command {
        ScheduleCommand::List => {
            let all: Vec<Value> = client.schedules().await?.iter().map(render::value).collect::<Result<_>>()?;
            if output == Output::Json { render::json(&all)? } else { schedule_table(&all) }
        }
        ScheduleCommand::Get { name } => render_one(output, &render::value(&client.schedule(&name).await?)?)?,
        ScheduleCommand::Enable { name } => {
            render_one(output, &render::value(&client.set_schedule_enabled(&name, true).await?)?)?
        }
        ScheduleCommand::Disable { name } => {
            render_one(output, &render::value(&client.set_schedule_enabled(&name, false).await?)?)?
        }
        ScheduleCommand::Delete { name } => render_one(output, &client.delete_schedule(&name).await?)?,
        ScheduleCommand::Trigger { name } => {
            let task = client.trigger_schedule(&name).await?;
            if output == Output::Json { render::json(&task)? } else { render::task_block(&task) }
        }
        ScheduleCommand::Runs { name, limit } => {
            let tasks = client.schedule_runs(&name, Some(limit)).await?;
            if output == Output::Json { render::json(&tasks)? } else { render::task_table(&tasks, None) }
        }
        ScheduleCommand::Apply { file, dry_run, prune } => {
            report(output, &render::value(&client.apply_schedules(&read_file(&file)?, dry_run, prune).await?)?)?
        }
    };
    emit(&out);
    Ok(Exit::Success)
}
