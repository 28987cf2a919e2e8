//! The queue commands: `queues` lists them, `queues pause|resume NAME` stops
//! and restarts the handing out of their tasks; and who serves them:
//! `workers` and `task-types`.

use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::{Args, Subcommand};
use quern_client::{Client, Result};

/// Flags of `quern queues`.
#[derive(Debug, Args)]
pub(crate) struct QueuesArgs {
    /// Without an action, list the queues.
    #[command(subcommand)]
    action: Option<QueueAction>,
}

/// What to do to one queue.
#[derive(Debug, Subcommand)]
enum QueueAction {
    /// Stop handing out the queue's tasks (running ones go on).
    Pause {
        /// The queue.
        name: String,
    },
    /// Hand out the queue's tasks again.
    Resume {
        /// The queue.
        name: String,
    },
}

/// `quern workers`: the workers the server heard from, live ones first.
pub(crate) async fn workers(client: &Client, output: Output) -> Result<Exit> {
    let workers = client.workers().await?;
    emit(&match output {
        Output::Json => render::json(&workers)?,
        Output::Table => render::worker_table(&workers),
    });
    Ok(Exit::Success)
}

/// `quern task-types`: the task types live workers serve.
pub(crate) async fn task_types(client: &Client, output: Output) -> Result<Exit> {
    let types = client.task_types().await?;
    emit(&match output {
        Output::Json => render::json(&types)?,
        Output::Table => render::task_type_table(&types),
    });
    Ok(Exit::Success)
}

/// `quern queues [pause|resume NAME]`.
pub(crate) async fn run(client: &Client, output: Output, args: QueuesArgs) -> Result<Exit> {
    let text = match args.action {
        None => {
            let queues = client.queues().await?;
            match output {
                Output::Json => render::json(&queues)?,
                Output::Table => render::queue_table(&queues),
            }
        }
        Some(QueueAction::Pause { name }) => {
            client.pause_queue(&name).await?;
            render::queue_state(output, &name, true)?
        }
        Some(QueueAction::Resume { name }) => {
            client.resume_queue(&name).await?;
            render::queue_state(output, &name, false)?
        }
    };
    emit(&text);
    Ok(Exit::Success)
}
