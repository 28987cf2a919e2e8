//! How a shell task's process is started: a cleared environment with a small
//! allowlist, its working directory, its user, its rlimits and its own
//! process group.
//!
//! Invariant: nothing of the worker's own environment reaches the task, and
//! the rlimits are in force before the task's program runs (they are set
//! between fork and exec, so they bind the program and everything it starts).
//!
//! A task with no rlimits, no other user and no parent-death signal is
//! started with `posix_spawn` (a vfork: no copy of the worker's memory),
//! which std uses only when the program is given as a path and no code runs
//! between fork and exec — so the program is looked up in the task's `PATH`
//! here. Any other task is forked, and the child sets its limits and its
//! parent-death signal before exec; a fork costs the worker about 0.3 ms more
//! per task.

use nix::sys::resource::{Resource, rlim_t, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// `PATH` of every task unless its `env` sets another.
pub(crate) const TASK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything a task's process is started with.
pub(crate) struct Launch<'a> {
    /// The program and its arguments.
    pub(crate) argv: &'a [String],
    /// The task's own variables, set over the allowlist.
    pub(crate) env: &'a BTreeMap<String, String>,
    /// The working directory, also `HOME` and `TMPDIR`.
    pub(crate) dir: &'a Path,
    /// `(uid, gid)` to run as, if not the worker's.
    pub(crate) user: Option<(u32, u32)>,
    /// `setrlimit` calls to make before exec.
    pub(crate) rlimits: Vec<(Resource, rlim_t, rlim_t)>,
    /// Whether the process gets SIGKILL when the worker dies.
    pub(crate) die_with_worker: bool,
    /// Whether stdin gets a pipe (else /dev/null).
    pub(crate) stdin: bool,
}

/// The command for `launch`, ready to spawn; `None` when the program is not
/// found in the task's `PATH`.
pub(crate) fn command(launch: Launch<'_>) -> Option<Command> {
    let (program, args) = launch.argv.split_first()?;
    let path = launch.env.get("PATH").map_or(TASK_PATH, String::as_str);
    let program = find_program(program, path)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", TASK_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", launch.dir)
        .env("TMPDIR", launch.dir)
        .envs(launch.env)
        .current_dir(launch.dir)
        .process_group(0)
        .stdin(if launch.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The group guard stops the processes, the whole group at once.
        .kill_on_drop(false);
    if let Some((uid, gid)) = launch.user {
        // std also drops supplementary groups when root switches user.
        cmd.uid(uid).gid(gid);
    }
    if !launch.rlimits.is_empty() || launch.user.is_some() || launch.die_with_worker {
        before_exec(&mut cmd, launch.rlimits, getpid());
    }
    Some(cmd)
}

/// `program` as a path: as given when it holds a `/`, else the first
/// executable file of that name in the absolute directories of `path`.
fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':').filter(|dir| dir.starts_with('/')).map(|dir| Path::new(dir).join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Arranges for the child, between fork and exec, to apply `rlimits` and to
/// get SIGKILL if the worker dies (`kill -9` of the worker must not leave the
/// task's program running).
#[allow(unsafe_code)]
fn before_exec(cmd: &mut Command, rlimits: Vec<(Resource, rlim_t, rlim_t)>, parent: Pid) {
    // SAFETY: `pre_exec` runs the closure in the forked child before exec,
    // where only async-signal-safe functions may be called (another thread of
    // the parent may have held the allocator's lock at fork time). The
    // closure allocates nothing — `rlimits` was built in the parent and is
    // only iterated — and calls only `setrlimit`, `prctl(PR_SET_PDEATHSIG)`
    // and `getppid`, which are plain system calls and async-signal-safe.
    // Errors become `io::Error::from_raw_os_error`, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, soft, hard) in &rlimits {
                setrlimit(resource, soft, hard)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The worker died between fork and prctl: do not run orphaned.
            if getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_the_tasks_path() {
        assert_eq!(find_program("sh", TASK_PATH).map(|p| p.is_absolute()), Some(true));
        assert_eq!(find_program("./run.sh", TASK_PATH), Some(PathBuf::from("./run.sh")));
        assert_eq!(find_program("no-such-program-quern", TASK_PATH), None);
        // Relative PATH entries are ignored: they would depend on the cwd.
        assert_eq!(find_program("sh", "bin:.:"), None);
        // A directory is not a program.
        assert_eq!(find_program("tmp", "/"), None);
    }
}
