//! `quern audit`: who changed what, newest first (admins).

use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::Args;
use quern_client::{Client, Result};

/// Flags of `quern audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only this token's entries (or `anonymous`, `server`).
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// Only actions starting with this (`token.`, `queue.pause`).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Entries before this place (a previous page's `next_before`).
    #[arg(long, value_name = "SEQ")]
    before: Option<u64>,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// `quern audit [--actor NAME] [--action A] [--limit N]`.
pub(crate) async fn run(client: &Client, output: Output, args: AuditArgs) -> Result<Exit> {
    let list = client.audit(args.actor.as_deref(), args.action.as_deref(), args.before, Some(args.limit)).await?;
    if output == Output::Json {
        emit(&render::json(&list)?);
        return Ok(Exit::Success);
    }
    let mut table = render::table(&["seq", "at", "actor", "action", "target", "detail"]);
    for e in &list.entries {
        table.add_row(vec![
            e.seq.to_string(),
            quern_core::time::format_rfc3339(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.detail.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
        ]);
    }
    emit(&table.trim_fmt());
    Ok(Exit::Success)
}
