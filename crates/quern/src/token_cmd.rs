//! `quern token`: make, list and revoke API tokens, over HTTP (with an admin
//! token) or offline against the store (`--data DIR` or `--database URL`),
//! which is how the first admin token is made.

use crate::render::{self, Output};
use crate::{Exit, emit};
use clap::{Args, Subcommand};
use quern_client::{Client, CreateToken, Error, Result, TokenCreated, TokenView};
use quern_core::auth::Role;
use quern_engine::{Caller, Config, Engine};
use std::path::PathBuf;

/// Flags of `quern token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// Work on this data directory directly, with no server (stop the server
    /// first): how the first admin token is made.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "database")]
    data: Option<PathBuf>,
    /// Work on this PostgreSQL database directly, with no server.
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    /// The PostgreSQL schema of Quern's tables, with `--database`.
    #[arg(long, global = true, value_name = "NAME", default_value = "public")]
    schema: String,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token and print its secret, once (the last line).
    Create {
        /// Its name, unique for ever.
        name: String,
        /// What it may do: viewer, producer, worker or admin.
        #[arg(long)]
        role: String,
        /// Confine it to these queues (globs, comma-separated: billing.*,ops).
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// It stops working after this long (30d, 12h).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// It may also approve `approval` tasks.
        #[arg(long)]
        approve: bool,
        /// It may also submit `shell` tasks.
        #[arg(long)]
        shell: bool,
        /// The most requests a second it may send (over it: 429).
        #[arg(long, value_name = "N")]
        rate: Option<u32>,
        /// The largest request body it may send, in bytes (over it: 413).
        #[arg(long, value_name = "BYTES")]
        max_body: Option<u64>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token: every server refuses it within a second or two.
    Revoke {
        /// The token.
        name: String,
    },
}

/// `quern token …`.
pub(crate) async fn run(client: &Client, output: Output, args: TokenArgs) -> Result<Exit> {
    let offline = args.data.is_some() || args.database.is_some();
    let store = if offline { Some(open(&args).await?) } else { None };
    let outcome = match (args.command, &store) {
        (TokenCommand::Create { name, role, queues, expires, approve, shell, rate, max_body }, store) => {
            let role: Role = role.parse().map_err(|e: quern_core::ValidationError| usage(e.to_string()))?;
            let expires_in_ms = match expires {
                Some(text) => Some(
                    quern_core::time::parse_duration_ms(&text)
                        .ok_or_else(|| usage(format!("--expires: not a duration: {text:?} (try 30d)")))?,
                ),
                None => None,
            };
            let request = CreateToken {
                name,
                role,
                queues,
                approve,
                shell,
                expires_in_ms,
                rate_per_s: rate,
                max_body_bytes: max_body,
            };
            let created = match store {
                Some((engine, _)) => engine.create_token(&Caller::Server, request).await.map_err(engine_error)?,
                None => client.create_token(&request).await?,
            };
            emit(&created_text(output, &created)?);
            Ok(Exit::Success)
        }
        (TokenCommand::List, store) => {
            let tokens = match store {
                Some((engine, _)) => engine.tokens(&Caller::Server).await.map_err(engine_error)?,
                None => client.tokens().await?,
            };
            emit(&if output == Output::Json { render::json(&tokens)? } else { table(&tokens) });
            Ok(Exit::Success)
        }
        (TokenCommand::Revoke { name }, store) => {
            let token = match store {
                Some((engine, _)) => engine.revoke_token(&Caller::Server, &name).await.map_err(engine_error)?,
                None => client.revoke_token(&name).await?,
            };
            emit(&if output == Output::Json { render::json(&token)? } else { format!("revoked token {}", token.name) });
            Ok(Exit::Success)
        }
    };
    if let Some((_, storage)) = store {
        storage.close();
    }
    outcome
}

/// The engine over the store the flags name.
async fn open(args: &TokenArgs) -> Result<(std::sync::Arc<Engine>, quern_engine::Storage)> {
    let mut config = Config::default();
    if let Some(data) = &args.data {
        config.storage.data.clone_from(data);
    }
    config.storage.url.clone_from(&args.database);
    config.storage.schema.clone_from(&args.schema);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let clock = std::sync::Arc::new(quern_core::SystemClock);
    Engine::open(&config, clock, stopped).await.map_err(|e| Error::Api {
        status: 0,
        code: "store".into(),
        message: format!("cannot open the store: {e}"),
    })
}

fn usage(message: String) -> Error {
    Error::Api { status: 0, code: "usage".into(), message }
}

fn engine_error(e: quern_engine::EngineError) -> Error {
    let failure = quern_engine::Failure::from(e);
    Error::Api { status: 0, code: failure.code.as_str().into(), message: failure.message }
}

fn created_text(output: Output, created: &TokenCreated) -> Result<String> {
    if output == Output::Json {
        return render::json(created);
    }
    Ok(format!(
        "token {} ({}, {}); the secret is shown this once:\n{}",
        created.view.name,
        created.view.role,
        scope(&created.view),
        created.token
    ))
}

fn scope(t: &TokenView) -> String {
    if t.queues.is_empty() { "every queue".into() } else { format!("queues {}", t.queues.join(",")) }
}

fn table(tokens: &[TokenView]) -> String {
    let mut table = render::table(&["name", "role", "scope", "approve", "shell", "created", "expires", "revoked"]);
    let at = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), quern_core::time::format_rfc3339);
    for t in tokens {
        table.add_row(vec![
            t.name.clone(),
            t.role.to_string(),
            scope(t),
            t.approve.to_string(),
            t.shell.to_string(),
            at(Some(t.created_at)),
            at(t.expires_at),
            at(t.revoked_at),
        ]);
    }
    table.trim_fmt()
}
