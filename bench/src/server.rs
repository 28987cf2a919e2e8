//! A `quern server` process the harness owns: started on port 0 with a
//! temporary data directory (unused on PostgreSQL), its URL read from the line it prints once
//! bound, its memory read from `/proc/PID/status`, stopped with SIGTERM.
//!
//! Invariant: the process never outlives the harness (kill on drop) and its
//! data directory is deleted when the [`Server`] is dropped.

use crate::Result;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a server may take to print its address (and a worker to register).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `quern` binary next to this one (same target directory and profile).
pub fn default_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or("the harness's own path has no directory")?;
    let bin = dir.join("quern");
    if !bin.is_file() {
        return Err(format!(
            "no quern binary at {}; build it (cargo build --release -p quern) or pass --server-bin",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// Resident and peak memory of a process, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_mb: f64,
    /// `VmHWM`: the most it has been resident.
    pub peak_mb: f64,
}

/// A running server.
pub struct Server {
    child: Child,
    pid: u32,
    url: String,
    // Held so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    _data: tempfile::TempDir,
    // Last: removed once the process is gone.
    _quota: Option<crate::quota::Group>,
}

/// The admin token every started server requires, when the run asks for
/// tokens (`--auth`).
static REQUIRED_TOKEN: OnceLock<String> = OnceLock::new();

/// Makes every server this process starts require tokens, with `secret` as
/// its admin token (given as a bootstrap file); requests send it.
pub fn require_token(secret: &str) -> Result<()> {
    crate::client::use_token(secret)?;
    REQUIRED_TOKEN.set(secret.to_owned()).map_err(|_| "tokens are required already")?;
    Ok(())
}

/// The admin token the started servers require, if they do.
pub fn required_token() -> Option<&'static str> {
    REQUIRED_TOKEN.get().map(String::as_str)
}

impl Server {
    /// Starts `bin server` on 127.0.0.1:0 with a fresh data directory and
    /// `flags` (its storage: `--durability` or `--database`); with
    /// [`require_token`], with tokens required.
    pub async fn start(bin: &Path, flags: &[String]) -> Result<Self> {
        let data = tempfile::Builder::new().prefix("quern-bench-").tempdir()?;
        let mut auth = Vec::new();
        if let Some(secret) = REQUIRED_TOKEN.get() {
            let file = data.path().join("admin.token");
            std::fs::write(&file, secret)?;
            auth = vec!["--auth".into(), "required".into(), "--bootstrap-token-file".into(), file.into_os_string()];
        }
        let mut child = quern_command(bin, "server")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data.path().join("data"))
            .args(flags)
            .args(auth)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let quota = crate::quota::Group::place(pid)?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut stdout = BufReader::new(stdout);
        let url = tokio::time::timeout(START_TIMEOUT, read_url(&mut stdout))
            .await
            .map_err(|_| format!("the server did not print its address within {START_TIMEOUT:?}"))??;
        Ok(Self { child, pid, url, _stdout: stdout, _data: data, _quota: quota })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        check_running(&mut self.child, "server")
    }

    /// Its memory now.
    pub fn memory(&self) -> Result<Memory> {
        memory_of(self.pid)
    }

    /// SIGTERM, then SIGKILL if it has not exited after a grace period.
    pub async fn stop(mut self) -> Result<()> {
        terminate(&mut self.child, self.pid, "server").await
    }
}

/// `bin command` as the harness starts it: logging at `warn` unless
/// `QUERN_LOG` says otherwise, no stdin, stderr shared with the harness,
/// killed if the harness drops it.
pub(crate) fn quern_command(bin: &Path, command: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(command)
        .env("QUERN_LOG", std::env::var("QUERN_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// An error if `child` (the harness's `what`, e.g. "server") has exited.
pub(crate) fn check_running(child: &mut Child, what: &str) -> Result<()> {
    match child.try_wait()? {
        None => Ok(()),
        Some(status) => Err(format!("the {what} died during the run ({status})").into()),
    }
}

/// Stops a child that should still be running: SIGTERM, then SIGKILL if it
/// has not exited after [`STOP_TIMEOUT`].
pub(crate) async fn terminate(child: &mut Child, pid: u32, what: &str) -> Result<()> {
    check_running(child, what)?;
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => {
            status?;
        }
        Err(_) => {
            eprintln!("quern-bench: the {what} did not stop within {STOP_TIMEOUT:?}; killing it");
            child.kill().await?;
        }
    }
    Ok(())
}

async fn read_url(stdout: &mut BufReader<ChildStdout>) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).await? == 0 {
            return Err("the server exited before printing its address".into());
        }
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            return Ok(url.to_owned());
        }
    }
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory_of(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib / 1024.0)
    };
    Ok(Memory { rss_mb: field("VmRSS:")?, peak_mb: field("VmHWM:")? })
}

/// Clock ticks per second of /proc's CPU times.
fn ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Busy time (everything but idle and iowait) of all CPUs since boot.
pub fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<std::result::Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Ok(Duration::from_millis(busy * 1_000 / ticks()))
}

/// CPU time (user + system, all threads) process `pid` has used so far.
pub fn cpu_of(pid: u32) -> Result<Duration> {
    cpu_in(&format!("/proc/{pid}/stat"), false)
}

/// [`cpu_of`] plus the CPU time of the children `pid` has waited for: for a
/// worker, the task processes it started and reaped.
pub fn cpu_with_children_of(pid: u32) -> Result<Duration> {
    cpu_in(&format!("/proc/{pid}/stat"), true)
}

/// CPU time of each thread of process `pid`: (thread id, name, time).
pub fn threads_of(pid: u32) -> Result<Vec<(u32, String, Duration)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        // A thread may end between the listing and the read.
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        let Ok(cpu) = cpu_in(&format!("/proc/{pid}/task/{tid}/stat"), false) else { continue };
        out.push((tid, name.trim().to_owned(), cpu));
    }
    Ok(out)
}

/// What PostgreSQL has used so far: the CPU of all its processes, and
/// the position of its write-ahead log.
#[derive(Debug, Clone, Copy)]
pub struct PgUse {
    /// User + system time of every `postgres` process (the postmaster's
    /// count includes the backends it reaped).
    pub cpu: Duration,
    /// Bytes of write-ahead log written since the cluster began.
    pub wal: u64,
}

/// [`PgUse`] now, of the PostgreSQL server on this machine that `url`
/// names (the WAL position through `psql`).
pub fn postgres_use(url: &str) -> Result<PgUse> {
    let mut cpu = Duration::ZERO;
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        if comm.trim() == "postgres"
            && let Ok(used) = cpu_in(&format!("/proc/{pid}/stat"), true)
        {
            cpu += used;
        }
    }
    let output = std::process::Command::new("psql")
        .arg(url)
        .args(["-X", "-A", "-t", "-c", "SELECT pg_current_wal_lsn() - '0/0'"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let wal = text
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .parse::<u64>()
        .map_err(|e| format!("WAL position {text:?}: {e}"))?;
    Ok(PgUse { cpu, wal })
}

fn cpu_in(path: &str, children: bool) -> Result<Duration> {
    let ticks = ticks();
    let stat = std::fs::read_to_string(path)?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> { Ok(fields.get(i).ok_or("short /proc stat")?.parse::<u64>()?) };
    // utime, stime, cutime and cstime are fields 14 to 17 of the whole line:
    // 11 to 14 after the name.
    let mut total = field(11)? + field(12)?;
    if children {
        total += field(13)? + field(14)?;
    }
    Ok(Duration::from_millis(total * 1_000 / ticks))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_of_self() {
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(super::cpu_of(std::process::id()).expect("own /proc stat") > std::time::Duration::ZERO);
    }

    #[test]
    fn threads_of_self() {
        let threads = super::threads_of(std::process::id()).expect("own /proc task");
        assert!(threads.iter().any(|(tid, _, _)| *tid == std::process::id()));
    }

    #[test]
    fn machine_is_busy() {
        assert!(super::machine_busy().expect("/proc/stat") > std::time::Duration::ZERO);
    }

    #[test]
    fn memory_of_self() {
        let m = super::memory_of(std::process::id()).expect("own /proc status");
        assert!(m.rss_mb > 0.0 && m.peak_mb >= m.rss_mb);
    }
}
