//! A `quern worker` process the harness owns, for the `shell` scenario: the
//! same `quern` binary as the server, started against the scenario's server
//! with the flags the scenario names, ready once the server lists it among
//! its live workers, stopped with SIGTERM.
//!
//! Invariant: the process never outlives the harness (kill on drop), and it
//! counts as ready only when the server has its registration, so no task
//! waits for a worker that is still starting.

use crate::Result;
use crate::client::Conn;
use crate::server::{START_TIMEOUT, check_running, quern_command, terminate};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;

/// How often the harness asks whether the worker has registered.
const READY_POLL: Duration = Duration::from_millis(20);

/// A running worker.
pub struct Worker {
    child: Child,
    pid: u32,
    id: String,
}

impl Worker {
    /// Starts `bin worker --server URL --id ID` with `flags` and waits,
    /// asking over `conn`, until the server lists it as live.
    pub async fn start(bin: &Path, url: &str, id: &str, flags: &[String], conn: &mut Conn) -> Result<Self> {
        let mut command = quern_command(bin, "worker");
        if let Some(token) = crate::server::required_token() {
            command.env("QUERN_TOKEN", token);
        }
        let child = command
            .arg("--server")
            .arg(url)
            .arg("--id")
            .arg(id)
            .args(flags)
            // Opting in to the shell task by the environment, which builds
            // from before the opt-in ignore.
            .env("QUERN_WORKER_SHELL", "true")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} worker: {e}", bin.display()))?;
        let pid = child.id().ok_or("the worker exited at once")?;
        let mut worker = Self { child, pid, id: id.to_owned() };
        tokio::time::timeout(START_TIMEOUT, worker.ready(conn))
            .await
            .map_err(|_| format!("the worker did not register within {START_TIMEOUT:?}"))??;
        Ok(worker)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        check_running(&mut self.child, "worker")
    }

    /// SIGTERM (the worker then finishes gracefully), SIGKILL after a grace period.
    pub async fn stop(mut self) -> Result<()> {
        terminate(&mut self.child, self.pid, "worker").await
    }

    async fn ready(&mut self, conn: &mut Conn) -> Result<()> {
        loop {
            self.check_alive()?;
            if is_live(&conn.get("/v1/workers").await?, &self.id)? {
                return Ok(());
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// Does a `GET /v1/workers` answer list worker `id` as live?
fn is_live(answer: &[u8], id: &str) -> Result<bool> {
    let v: serde_json::Value = serde_json::from_slice(answer)?;
    // A bare array, or one wrapped in {"workers": …} as `GET /v1/queues` does.
    let list = v.get("workers").unwrap_or(&v).as_array().ok_or("GET /v1/workers: not a list of workers")?;
    Ok(list.iter().any(|w| {
        w.get("id").and_then(serde_json::Value::as_str) == Some(id)
            && w.get("live").and_then(serde_json::Value::as_bool).unwrap_or(true)
    }))
}

#[cfg(test)]
mod tests {
    use super::is_live;

    #[test]
    fn live_workers_are_found() {
        let answer = br#"{"workers":[{"id":"a","live":false},{"id":"b","live":true}]}"#;
        assert!(!is_live(answer, "a").expect("a list"));
        assert!(is_live(answer, "b").expect("a list"));
        assert!(!is_live(br#"[]"#, "b").expect("a list"));
        assert!(is_live(br#"{"x":1}"#, "b").is_err());
    }
}
