//! A task's process group, and the guarantee that it ends with the task.
//!
//! Invariant: once a [`GroupGuard`] exists, every process of its group is
//! stopped before the guard is gone — however the task ended, and also when
//! its future is dropped mid-run (a timeout abort, a worker shutdown): the
//! group gets SIGTERM, and SIGKILL once the grace since the first SIGTERM has
//! passed. A run that ends normally awaits this ([`GroupGuard::finish`]), so
//! its result (and the worker's next task) comes only after it; a dropped
//! guard leaves it to a [`Reaper`] thread. The task's temporary directory is
//! removed only after that, so nothing of the task writes into it again.

use super::workdir::TempWorkdir;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a stopping group is checked for survivors.
const POLL: Duration = Duration::from_millis(20);
/// How long survivors of SIGKILL are waited for (they die as soon as the
/// kernel gets to them; this only bounds a pathological wait).
const AFTER_KILL: Duration = Duration::from_secs(2);

/// The state of a group being stopped.
#[derive(Debug)]
enum Stopping {
    /// No process of the group is left.
    Gone,
    /// Wait (and look again) until the instant.
    WaitUntil(Instant),
    /// The grace ran out: send SIGKILL.
    Kill,
    /// Killed, and still not gone after [`AFTER_KILL`]: give up waiting.
    GiveUp,
}

/// What to do next for the terminated group `pgid`, due for SIGKILL at
/// `deadline`, killed at `killed` if it was.
fn next_step(pgid: Pid, deadline: Instant, killed: Option<Instant>) -> Stopping {
    if !alive(pgid) {
        return Stopping::Gone;
    }
    let now = Instant::now();
    match killed {
        None if now < deadline => Stopping::WaitUntil(deadline.min(now + POLL)),
        None => Stopping::Kill,
        Some(at) if now < at + AFTER_KILL => Stopping::WaitUntil(now + POLL),
        Some(_) => Stopping::GiveUp,
    }
}

/// Tracks the threads that finish stopping groups whose guards were dropped,
/// so that a worker can wait for them before it exits.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    pending: Mutex<usize>,
    done: Condvar,
}

impl Reaper {
    /// Runs `job` on its own thread, counted until it returns. When no
    /// thread can be started, runs it here.
    pub(super) fn spawn(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        if let Ok(mut n) = self.pending.lock() {
            *n += 1;
        }
        let me = self.clone();
        let job = Arc::new(Mutex::new(Some(job)));
        let job_here = job.clone();
        let started = std::thread::Builder::new().name("quern-reaper".into()).spawn(move || {
            if let Some(job) = job.lock().ok().and_then(|mut j| j.take()) {
                job();
            }
            me.finish_one();
        });
        if started.is_err() {
            if let Some(job) = job_here.lock().ok().and_then(|mut j| j.take()) {
                job();
            }
            self.finish_one();
        }
    }

    fn finish_one(&self) {
        if let Ok(mut n) = self.pending.lock() {
            *n = n.saturating_sub(1);
        }
        self.done.notify_all();
    }

    /// Blocks until every started job has finished or `limit` has passed;
    /// true when none is left.
    pub(crate) fn wait(&self, limit: Duration) -> bool {
        let Ok(n) = self.pending.lock() else { return false };
        match self.done.wait_timeout_while(n, limit, |n| *n > 0) {
            Ok((n, _)) => *n == 0,
            Err(_) => false,
        }
    }
}

/// The process group of one task, stopped on drop.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Pid,
    grace: Duration,
    /// When SIGTERM was first sent.
    term_at: Option<Instant>,
    workdir: Option<TempWorkdir>,
    reaper: Arc<Reaper>,
    /// [`GroupGuard::finish`] has done the stopping; the drop has nothing left.
    finished: bool,
}

impl GroupGuard {
    /// Guards the group `pgid` (the pid of its leader), which owns `workdir`.
    pub(crate) fn new(pgid: u32, grace: Duration, workdir: Option<TempWorkdir>, reaper: Arc<Reaper>) -> Self {
        let pgid = Pid::from_raw(i32::try_from(pgid).unwrap_or(i32::MAX));
        Self { pgid, grace, term_at: None, workdir, reaper, finished: false }
    }

    /// Sends SIGTERM to the group (once); the SIGKILL deadline starts now.
    pub(crate) fn terminate(&mut self) {
        if self.term_at.is_none() {
            self.term_at = Some(Instant::now());
            signal(self.pgid, Signal::SIGTERM);
        }
    }

    /// When the group is due for SIGKILL, once terminated.
    pub(crate) fn kill_deadline(&self) -> Option<Instant> {
        self.term_at.map(|t| t + self.grace)
    }

    /// Sends SIGKILL to the group.
    pub(crate) fn kill(&mut self) {
        self.term_at.get_or_insert_with(Instant::now);
        signal(self.pgid, Signal::SIGKILL);
    }

    /// Stops whatever of the group still runs (SIGTERM, SIGKILL after the
    /// grace) and removes its directory, waiting for both: when this
    /// returns, no process of the group is left and the directory is gone.
    /// Dropped before it returns, the guard's drop takes over.
    pub(crate) async fn finish(mut self) {
        if alive(self.pgid) {
            self.terminate();
            let (pgid, deadline) = (self.pgid, self.kill_deadline().unwrap_or_else(Instant::now));
            // `stop` sleeps between looks: off the async runtime.
            let _ = tokio::task::spawn_blocking(move || stop(pgid, deadline)).await;
        }
        self.finished = true;
        if let Some(mut workdir) = self.workdir.take()
            && !workdir.remove_if_empty()
        {
            // What the task left in it is removed off the async runtime; a
            // failed join means the closure (and with it the directory) was
            // dropped, which removes it too.
            let _ = tokio::task::spawn_blocking(move || drop(workdir)).await;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let workdir = self.workdir.take();
        if self.finished || !alive(self.pgid) {
            drop(workdir);
            return;
        }
        // Something of the task still runs: the command left a background
        // process behind, or the future was dropped mid-run.
        self.terminate();
        let pgid = self.pgid;
        let deadline = self.kill_deadline().unwrap_or_else(Instant::now);
        self.reaper.spawn(move || {
            stop(pgid, deadline);
            drop(workdir);
        });
    }
}

/// Waits for the (already terminated) group to empty until `deadline`, then
/// kills what is left and waits for that to die. Blocking: runs on a reaper
/// thread, never on the async runtime.
fn stop(pgid: Pid, deadline: Instant) {
    let mut killed = None;
    loop {
        match next_step(pgid, deadline, killed) {
            Stopping::Gone => return,
            Stopping::GiveUp => {
                tracing::warn!(pgid = pgid.as_raw(), "a task's process outlived SIGKILL");
                return;
            }
            Stopping::WaitUntil(at) => {
                #[allow(clippy::disallowed_methods, reason = "a dedicated reaper thread, not async code")]
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
            Stopping::Kill => {
                tracing::debug!(pgid = pgid.as_raw(), "killing what is left of a task's process group");
                signal(pgid, Signal::SIGKILL);
                killed = Some(Instant::now());
            }
        }
    }
}

fn signal(pgid: Pid, sig: Signal) {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = pgid.as_raw(), signal = %sig, error = %e, "cannot signal a task's processes"),
    }
}

/// Does the group still have a live (not zombie) member?
pub(crate) fn alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH) => false,
        // Some member exists, but it may be a zombie waiting to be reaped
        // (by us or by init): look closer where /proc says.
        _ => live_members(pgid).unwrap_or(true),
    }
}

/// Whether `/proc` lists a process of group `pgid` that is not a zombie;
/// `None` when `/proc` cannot be read.
fn live_members(pgid: Pid) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid.as_raw()) && !matches!(state, Some("Z" | "X")) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::workdir::TempWorkdir;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn a_dropped_guard_kills_a_group_that_ignores_sigterm() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; sleep 30 & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        // Wait until sh has set its trap and started both sleeps.
        let limit = Instant::now() + Duration::from_secs(10);
        while members(pgid) < 3 {
            assert!(Instant::now() < limit, "the group never had three processes");
            std::thread::sleep(POLL);
        }
        let reaper = Arc::new(Reaper::default());
        let dir = TempWorkdir::create(&std::env::temp_dir(), None).expect("temp dir");
        let path = dir.path().to_owned();
        let started = Instant::now();
        drop(GroupGuard::new(child.id(), Duration::from_millis(300), Some(dir), reaper.clone()));
        assert!(alive(pgid), "SIGTERM is ignored: the group lives on through the grace");
        // Reap our direct child so that it does not linger as a zombie.
        let status = child.wait().expect("wait for sh");
        assert!(reaper.wait(Duration::from_secs(5)), "the reaper did not finish");
        assert!(started.elapsed() >= Duration::from_millis(300), "SIGKILL came before the grace");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        assert!(!alive(pgid));
        assert!(!path.exists(), "the working directory outlived the group");
    }

    /// How many live processes the group has.
    fn members(pgid: Pid) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((_, rest)) = stat.rsplit_once(')') else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2) == Some(&pgid.as_raw().to_string().as_str()) && fields.first() != Some(&"Z") {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_guard_of_an_ended_group_only_removes_the_directory() {
        let mut child = Command::new("true").process_group(0).spawn().expect("spawn true");
        child.wait().expect("wait");
        let reaper = Arc::new(Reaper::default());
        let dir = TempWorkdir::create(&std::env::temp_dir(), None).expect("temp dir");
        let path = dir.path().to_owned();
        drop(GroupGuard::new(child.id(), Duration::from_secs(5), Some(dir), reaper.clone()));
        assert!(!path.exists());
        assert!(reaper.wait(Duration::ZERO));
    }
}
