//! `quern events publish TYPE` and `quern events tail`: publish one event,
//! or follow the log (long-polls, never a sleep loop), one line per event.

use crate::flags;
use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::{Args, Subcommand};
use quern_client::{Client, Result};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest single long-poll of `tail`.
const POLL: Duration = Duration::from_secs(30);

/// `quern events …`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Publish an event.
    Publish {
        /// Its type, dotted: `email.processed`.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Its payload, as JSON.
        #[arg(long, value_name = "JSON", value_parser = flags::json)]
        payload: Option<Box<serde_json::value::RawValue>>,
        /// Who publishes.
        #[arg(long, value_name = "NAME", default_value = "cli")]
        source: String,
        /// The one subscriber it is for (default: everyone).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Print events as they are published (until interrupted, or `--count`).
    Tail {
        /// Only types matching these globs (`task.*`, comma-separated).
        #[arg(long = "type", value_name = "GLOB")]
        kind: Option<String>,
        /// Only events from this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Read as this subscriber: broadcasts and events for it only.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Start after this offset (0: from the earliest kept) [default: only
        /// new events; for a group, where the group stands].
        #[arg(long, value_name = "OFFSET")]
        after: Option<u64>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Read as a member of this consumer group: each event goes to one
        /// member, and is acknowledged once printed.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// This member's name in the group.
        #[arg(long, value_name = "NAME", requires = "group", default_value = "cli")]
        member: String,
    },
}

fn line(e: &Value) -> String {
    format!(
        "{:>8}  {}  {}  {}{}  {}",
        e["offset"].as_u64().unwrap_or_default(),
        e["at"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or(""),
        e["source"].as_str().unwrap_or(""),
        e["target"].as_str().map(|t| format!(" -> {t}")).unwrap_or_default(),
        e["payload"]
    )
}

pub(crate) async fn run(client: &Client, output: Output, args: EventsArgs) -> Result<Exit> {
    match args.command {
        EventsCommand::Publish { kind, payload, source, target } => {
            let spec =
                serde_json::from_value(json!({"type": kind, "source": source, "target": target, "payload": payload}))
                    .map_err(|e| quern_client::Error::Decode(format!("not an event: {e}")))?;
            let event = render::value(&client.publish_event(&spec).await?)?;
            emit(&if output == Output::Json { render::json(&event)? } else { line(&event) });
        }
        EventsCommand::Tail { kind, source, target, after, count, group, member } => {
            let mut filter: Vec<(&str, &str)> = Vec::new();
            for (key, value) in [("type", &kind), ("source", &source), ("target", &target), ("group", &group)] {
                if let Some(v) = value {
                    filter.push((key, v.as_str()));
                }
            }
            if group.is_some() {
                filter.push(("member", member.as_str()));
            }
            let mut after = after.map_or_else(|| "latest".to_owned(), |a| a.to_string());
            let mut seen = 0;
            loop {
                let page = render::value(&client.events(Some(&after), &filter, Some(POLL)).await?)?;
                let mut printed = Vec::new();
                let mut done = false;
                for e in page["events"].as_array().into_iter().flatten() {
                    emit(&if output == Output::Json { e.to_string() } else { line(e) });
                    printed.extend(e["offset"].as_u64());
                    seen += 1;
                    if count.is_some_and(|n| seen >= n) {
                        done = true;
                        break;
                    }
                }
                if let Some(group) = &group
                    && !printed.is_empty()
                {
                    client.ack_events(group, &member, &printed).await?;
                }
                if done {
                    return Ok(Exit::Success);
                }
                if let Some(next) = page["next_after"].as_u64() {
                    after = next.to_string();
                }
            }
        }
    }
    Ok(Exit::Success)
}
