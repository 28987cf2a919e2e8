//! The servers of one scenario: one `quern server` on the embedded SQLite
//! store, or `N` servers (nodes) on one fresh PostgreSQL schema, which is
//! what multi-node mode is.
//!
//! Invariant: a scenario's schema is its own (`quern_bench_<pid>_<n>`, made
//! by the first server that starts on it) and is dropped, with everything in
//! it, when the [`Deployment`] is stopped or dropped, so runs never see each
//! other's tasks and leave nothing behind. The schema goes through the `psql`
//! client, so the harness needs no PostgreSQL driver.

use crate::Result;
use crate::server::Server;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the servers the harness starts keep their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The embedded SQLite store on a temporary data directory, with this
    /// durability (`normal` or `strict`).
    Sqlite {
        /// Passed as `--durability`.
        durability: String,
    },
    /// PostgreSQL: `nodes` servers with `--database url` on one schema.
    Postgres {
        /// The database URL, e.g. `postgres://root@127.0.0.1:5432/test`.
        url: String,
        /// Servers on the one schema (1 or more).
        nodes: usize,
    },
}

impl Storage {
    /// How the table and the JSON file name it: `sqlite (normal)`,
    /// `postgres, 2 nodes`.
    pub fn label(&self) -> String {
        match self {
            Self::Sqlite { durability } => format!("sqlite ({durability})"),
            Self::Postgres { nodes: 1, .. } => "postgres, 1 node".to_owned(),
            Self::Postgres { nodes, .. } => format!("postgres, {nodes} nodes"),
        }
    }
}

/// Schemas made by this process so far, for unique names.
static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// A scratch PostgreSQL schema, dropped on drop unless [`Schema::remove`]
/// dropped it already.
struct Schema {
    url: String,
    name: String,
    removed: bool,
}

impl Schema {
    /// A fresh name on `url`; a leftover of that name is dropped first.
    fn fresh(url: &str) -> Result<Self> {
        let n = SCHEMAS.fetch_add(1, Ordering::SeqCst);
        let schema =
            Self { url: url.to_owned(), name: format!("quern_bench_{}_{n}", std::process::id()), removed: false };
        schema.drop_it()?;
        Ok(schema)
    }

    /// Drops the schema now, reporting a failure.
    fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.drop_it()
    }

    fn drop_it(&self) -> Result<()> {
        let output = Command::new("psql")
            .arg(&self.url)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql (the PostgreSQL client, needed with --database): {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "psql could not drop schema {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Err(e) = self.drop_it() {
            eprintln!("quern-bench: {e}");
        }
    }
}

/// The running servers of one scenario.
pub struct Deployment {
    servers: Vec<Server>,
    // Declared after the servers: they stop before their schema is dropped.
    schema: Option<Schema>,
}

impl Deployment {
    /// Starts the servers `storage` describes, from `bin`, and waits until
    /// each has printed its address. Nodes on PostgreSQL start together:
    /// whichever takes the migration lock first creates the schema.
    pub async fn start(bin: &Path, storage: &Storage) -> Result<Self> {
        match storage {
            Storage::Sqlite { durability } => {
                let flags = ["--durability".to_owned(), durability.clone()];
                Ok(Self { servers: vec![Server::start(bin, &flags).await?], schema: None })
            }
            Storage::Postgres { url, nodes } => {
                let schema = Schema::fresh(url)?;
                let flags = ["--database".to_owned(), url.clone(), "--schema".to_owned(), schema.name.clone()];
                let mut starts = tokio::task::JoinSet::new();
                for _ in 0..(*nodes).max(1) {
                    let (bin, flags) = (bin.to_path_buf(), flags.clone());
                    starts.spawn(async move { Server::start(&bin, &flags).await });
                }
                let mut servers = Vec::with_capacity(starts.len());
                while let Some(started) = starts.join_next().await {
                    // On an error the servers started so far are killed on drop.
                    servers.push(started.map_err(|e| format!("a server start failed: {e}"))??);
                }
                Ok(Self { servers, schema: Some(schema) })
            }
        }
    }

    /// The servers; scenarios send their control requests to the first.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// An error if any server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.servers.iter_mut().try_for_each(Server::check_alive)
    }

    /// Stops every server (SIGTERM, then SIGKILL after a grace period), then
    /// drops the schema.
    pub async fn stop(self) -> Result<()> {
        let Self { servers, schema } = self;
        let mut first_error = None;
        for server in servers {
            if let Err(e) = server.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(schema) = schema {
            schema.remove()?;
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::Storage;

    #[test]
    fn labels() {
        assert_eq!(Storage::Sqlite { durability: "strict".into() }.label(), "sqlite (strict)");
        assert_eq!(Storage::Postgres { url: String::new(), nodes: 1 }.label(), "postgres, 1 node");
        assert_eq!(Storage::Postgres { url: String::new(), nodes: 3 }.label(), "postgres, 3 nodes");
    }
}
