//! What the integration tests share: the real `quern` binary started on port 0
//! in a temporary directory ([`Server`]), a fresh PostgreSQL schema for the
//! tests that keep their state there ([`PgSchema`]), a small HTTP client of
//! the public API ([`Api`]) and bounded waiting ([`eventually`]).
//!
//! Every test starts its own server (and PostgreSQL test its own schema), so
//! tests run in parallel. Nothing here sleeps blindly: waits poll a condition
//! every 20 ms up to a limit.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The listen address of a server on a port of its own choosing.
const EPHEMERAL: &str = "127.0.0.1:0";

/// A `quern server` child process on an ephemeral port.
///
/// Its stderr (the logs) goes to a file in the temporary directory; when a
/// test panics, dropping the server prints the end of that file.
pub(crate) struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) url: String,
    /// The `--listen` address: `127.0.0.1:0` unless the test chose a port.
    listen: String,
    data: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    dir: Option<TempDir>,
}

impl Server {
    /// A server on a fresh data directory with the default configuration.
    pub(crate) fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server on a fresh data directory, with extra command-line arguments.
    pub(crate) fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server on the given data directory (which the caller keeps), with
    /// extra command-line arguments.
    pub(crate) fn start_in(data: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let data = data.to_owned();
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server on `listen` (e.g. from [`free_port`]), on a fresh data
    /// directory, with extra command-line arguments. Unlike a server on port
    /// 0 it keeps its address across [`Server::restart`], so clients that
    /// outlive a crash find it again.
    pub(crate) fn start_at(listen: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server =
            Server { child: None, url: String::new(), listen: listen.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// A server whose `--config` file holds `yaml`.
    pub(crate) fn start_with_config(yaml: &str) -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write the config file");
        let config = config.to_str().expect("utf-8 temp path").to_owned();
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let args = vec!["--config".to_owned(), config];
        let mut server =
            Server { child: None, url: String::new(), listen: EPHEMERAL.to_owned(), data, args, log, dir: Some(dir) };
        server.spawn();
        server
    }

    /// The data directory (it outlives restarts).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A client of this server's API at its current address.
    pub(crate) fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// SIGKILL the server and reap it: no shutdown code runs.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on unix.
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
    }

    /// Ask the server to stop (SIGTERM), as a service manager would.
    pub(crate) fn terminate(&self) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The CPU time (user and system) the server has used so far.
    pub(crate) fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc/PID/stat");
        // The fields after the command name (which may hold spaces) in
        // parentheses; utime and stime are the 14th and 15th of the line.
        let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // Linux reports in USER_HZ, 100 on every platform it runs on.
        Duration::from_millis(ticks * 10)
    }

    /// The server's resident set size, in bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
        kb * 1024
    }

    /// Wait up to `limit` for the server to exit on its own; its exit status.
    pub(crate) fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("poll the server") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Start the server again on the same data directory and arguments (it
    /// gets a new port unless it was started with [`Server::start_at`]: use
    /// [`Server::api`] again afterwards). Kills the running one first, if
    /// any.
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        let stderr = OpenOptions::new().create(true).append(true).open(&self.log).expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_quern"))
            .arg("server")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn the quern binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut first = true;
            // Keep draining after the first line so the server never blocks
            // on a full pipe.
            while let Some(Ok(line)) = lines.next() {
                if first && let Some(url) = line.trim().strip_prefix("listening on ") {
                    first = false;
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_LIMIT) {
            Ok(url) => {
                assert!(
                    url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
                    "unexpected listen line: {url}"
                );
                self.url = url;
            }
            Err(_) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                self.kill9();
                panic!(
                    "the server printed no `listening on` line within {START_LIMIT:?} (exit: {status:?})\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// The last lines of the server's log, for failure messages.
    /// The file the server's stderr (its logs) goes to.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log) else {
            return String::from("(no server log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(8_000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!("--- end of the server log ({}) ---\n{text}", self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            // Keep the directory for a look after a failure.
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the server's directory: {}", dir.keep().display());
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 as `127.0.0.1:PORT`, for a server that must
/// keep its address across restarts ([`Server::start_at`]). The port is free
/// when this returns; nothing reserves it afterwards.
pub(crate) fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("the bound address");
    format!("127.0.0.1:{}", addr.port())
}

/// The environment variable naming the PostgreSQL database of the tests that
/// need one (`.ci/run` sets it).
pub(crate) const DATABASE_ENV: &str = "QUERN_TEST_DATABASE_URL";

/// Schemas made by this test process so far, for unique names.
static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// A PostgreSQL schema of one test, named `quern_t_<pid>_<n>`, on the
/// database of [`DATABASE_ENV`]. The servers create it (`--schema`); dropping
/// this drops it with everything in it, unless the test failed: then it is
/// kept for a look, and its name printed.
///
/// SQL goes through the `psql` client, so the tests need no PostgreSQL
/// driver of their own.
pub(crate) struct PgSchema {
    /// The database URL, as the servers get it.
    pub(crate) url: String,
    /// The schema's name.
    pub(crate) name: String,
}

impl PgSchema {
    /// A fresh schema name on the test database, or `None` when
    /// [`DATABASE_ENV`] is unset: then `test` is skipped, loudly, on stderr.
    pub(crate) fn fresh(test: &str) -> Option<PgSchema> {
        let Some(url) = std::env::var(DATABASE_ENV).ok().filter(|u| !u.trim().is_empty()) else {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {DATABASE_ENV} is not set ({test} needs PostgreSQL)");
            return None;
        };
        let n = SCHEMAS.fetch_add(1, Ordering::SeqCst);
        let name = format!("quern_t_{}_{n}", std::process::id());
        let schema = PgSchema { url, name };
        // A schema left by an earlier process with the same pid.
        schema.psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.name));
        Some(schema)
    }

    /// `--database URL --schema NAME`, the arguments of a server on it.
    pub(crate) fn server_args(&self) -> [&str; 4] {
        ["--database", &self.url, "--schema", &self.name]
    }

    /// Runs `sql` with `psql` (stopping at the first error) with this schema
    /// first on the search path; its output, unaligned and without headers.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let output = Command::new("psql")
            .arg(&self.url)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-c")
            .arg(format!("SET search_path TO {}, public; {sql}", self.name))
            .stdin(Stdio::null())
            .output()
            .expect("run psql (the PostgreSQL client)");
        assert!(output.status.success(), "psql {sql}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the PostgreSQL schema {} of {}", self.name, self.url);
            return;
        }
        self.psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

#[path = "../../../quern-server/tests/support/client.rs"]
mod client;
pub(crate) use client::*;
