//! How a shell task's process is started: a cleared environment with a small
//! allowlist, its working directory, its user, its rlimits, its parent-death
//! signal and its own process group; and how its exit is awaited.
//!
//! Invariant: nothing of the worker's own environment reaches the task, and
//! the rlimits are in force before the task's program runs (they are set
//! between clone and exec, so they bind the program and everything it
//! starts).
//!
//! The process is started the way `posix_spawn` starts one: a `clone` that
//! shares the worker's memory and suspends the calling thread until the
//! child has called `exec` (a vfork). A `fork` would copy the worker's page
//! tables and make every page the worker writes afterwards fault once; with
//! tasks starting by the thousand per second that cost the worker more CPU
//! than everything else it does for a task together. Sharing the memory
//! demands that the child, until `exec`, only make system calls on data the
//! parent prepared: no allocation, no lock, no Rust runtime. Its exit is
//! awaited through a pidfd, so each exit wakes only its own waiter.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::resource::{Resource, rlim_t};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};
use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::group::Reaper;

/// `PATH` of every task unless its `env` sets another.
pub(crate) const TASK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The child's stack until `exec`: it runs a few system calls only.
const CHILD_STACK: usize = 32 * 1024;
/// How often an exit is polled for where the kernel has no pidfds.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// Linux's glibc-internal signals (thread cancellation, set*id broadcast):
/// they keep glibc's handlers, as `posix_spawn` keeps them.
const GLIBC_INTERNAL_SIGNALS: [i32; 2] = [32, 33];

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

/// A started task process: its pipes, and its exit once seen.
pub(crate) struct Process {
    pid: Pid,
    /// Readable once the process has exited; `None` where pidfds are missing.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    reaper: Arc<Reaper>,
    pub(crate) stdin: Option<pipe::Sender>,
    pub(crate) stdout: Option<pipe::Receiver>,
    pub(crate) stderr: Option<pipe::Receiver>,
}

impl Process {
    /// The process id, which is also its process group's.
    pub(crate) fn id(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits for the process to exit and reaps it. Cancel-safe: the status is
    /// kept once seen.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            match &self.pidfd {
                Some(fd) => fd.readable().await?.clear_ready(),
                None => tokio::time::sleep(EXIT_POLL).await,
            }
        }
    }

    fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    Some(ExitStatus::from_raw(signal as i32 | if core { 0x80 } else { 0 }))
                }
                Ok(_) | Err(Errno::EINTR) => None,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(self.status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.try_reap(), Ok(Some(_))) {
            return;
        }
        // Still running (the run was dropped): its group guard stops it, and
        // a reaper thread collects its exit so that it leaves no zombie.
        let pid = self.pid;
        self.reaper.spawn(move || {
            let _ = waitpid(pid, None);
        });
    }
}

/// Starts `launch`; `Ok(None)` when the program is not found in the task's
/// `PATH`.
pub(crate) fn spawn(launch: Launch<'_>, reaper: Arc<Reaper>) -> std::io::Result<Option<Process>> {
    let Some((program, args)) = launch.argv.split_first() else { return Ok(None) };
    let path = launch.env.get("PATH").map_or(TASK_PATH, String::as_str);
    let Some(program) = find_program(program, path) else { return Ok(None) };
    let mut env: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
    let dir = launch.dir.as_os_str().as_bytes();
    env.extend([(&b"PATH"[..], TASK_PATH.as_bytes()), (b"LANG", b"C.UTF-8"), (b"HOME", dir), (b"TMPDIR", dir)]);
    env.extend(launch.env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let child = Child {
        program: cstring(program.as_os_str().as_bytes())?,
        argv: std::iter::once(program.as_os_str().as_bytes())
            .chain(args.iter().map(String::as_bytes))
            .map(cstring)
            .collect::<std::io::Result<_>>()?,
        envp: env.iter().map(|(k, v)| cstring(&[*k, b"=", *v].concat())).collect::<std::io::Result<_>>()?,
        dir: cstring(dir)?,
        user: launch.user,
        // Tasks with limits or another user have always had it.
        die_with_worker: launch.die_with_worker || !launch.rlimits.is_empty() || launch.user.is_some(),
        rlimits: launch.rlimits,
    };
    let (stdin_read, stdin_write) = if launch.stdin {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        (r, Some(w))
    } else {
        (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
    };
    let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (pid, pidfd) = start(&child, [&stdin_read, &stdout_write, &stderr_write])?;
    drop((stdin_read, stdout_write, stderr_write));
    let mut process = Process { pid, pidfd, status: None, reaper, stdin: None, stdout: None, stderr: None };
    process.stdin = stdin_write.map(pipe::Sender::from_owned_fd).transpose()?;
    process.stdout = Some(pipe::Receiver::from_owned_fd(stdout_read)?);
    process.stderr = Some(pipe::Receiver::from_owned_fd(stderr_read)?);
    Ok(Some(process))
}

/// What the child needs until `exec`, prepared by the parent.
struct Child {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    dir: CString,
    user: Option<(u32, u32)>,
    rlimits: Vec<(Resource, rlim_t, rlim_t)>,
    die_with_worker: bool,
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("a NUL character in the command, its environment or its directory"))
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// Starts the child with `stdio` as its fds 0, 1 and 2 and returns its pid
/// and a pidfd for it, registered with the runtime (`None` on kernels
/// without pidfds). The error is the
/// child's own when it could not get to `exec` (no such program, a limit it
/// could not set), or the clone's.
#[allow(unsafe_code)]
fn start(child: &Child, stdio: [&OwnedFd; 3]) -> std::io::Result<(Pid, Option<AsyncFd<OwnedFd>>)> {
    let argv: Vec<*const c_char> = child.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const c_char> = child.envp.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
    let fds = stdio.map(AsRawFd::as_raw_fd);
    let parent = getpid();
    let last_signal = libc::SIGRTMAX();
    // The child's errno when it fails before `exec`; 0 while it has not.
    let failed = AtomicI32::new(0);
    let mut stack = vec![0u8; CHILD_STACK];
    // No signal handler of the worker's may run in the child (it would act
    // on the worker's memory as if it were the worker): every signal stays
    // blocked from here until the child has reset the handlers to default.
    let mask = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK)?;
    let run = || -> isize {
        // SAFETY (for each call below): the child shares the parent's memory
        // while the parent's thread waits, so it only reads what the parent
        // prepared (`child`, `argv`, `envp`, `fds`, `mask`), writes only
        // `failed` and its own stack, and calls only async-signal-safe
        // system-call wrappers, which neither allocate nor lock.
        let fail = |e: Errno| -> isize {
            failed.store(if e as i32 == 0 { libc::EINVAL } else { e as i32 }, Ordering::SeqCst);
            127
        };
        for signal in 1..=last_signal {
            if GLIBC_INTERNAL_SIGNALS.contains(&signal) {
                continue;
            }
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &raw mut old) != 0 {
                    continue;
                }
                // Handled signals and an ignored SIGPIPE (Rust ignores it in
                // the worker) go back to their defaults; other ignored ones
                // stay ignored, as across any exec.
                let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
                if handled || (signal == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN) {
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(signal, &raw const default, std::ptr::null_mut());
                }
            }
        }
        if unsafe { libc::setpgid(0, 0) } != 0 {
            return fail(Errno::last());
        }
        for (target, &fd) in fds.iter().enumerate() {
            let target = i32::try_from(target).unwrap_or(i32::MAX);
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let ok = if fd == target {
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
            } else {
                unsafe { libc::dup2(fd, target) }
            };
            if ok < 0 {
                return fail(Errno::last());
            }
        }
        if unsafe { libc::chdir(child.dir.as_ptr()) } != 0 {
            return fail(Errno::last());
        }
        if let Some((uid, gid)) = child.user {
            // As std does when root switches user: no supplementary groups.
            // Raw system calls: glibc's wrappers would broadcast the change
            // to every thread glibc knows of, which here are the worker's.
            let dropped = unsafe {
                libc::syscall(libc::SYS_setgid, gid) == 0
                    && (libc::getuid() != 0
                        || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0)
                    && libc::syscall(libc::SYS_setuid, uid) == 0
            };
            if !dropped {
                return fail(Errno::last());
            }
        }
        for &(resource, soft, hard) in &child.rlimits {
            if let Err(e) = nix::sys::resource::setrlimit(resource, soft, hard) {
                return fail(e);
            }
        }
        // After the user switch, which would clear it.
        if child.die_with_worker {
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return fail(Errno::last());
            }
            // The worker died before prctl: do not run orphaned.
            if nix::unistd::getppid() != parent {
                return fail(Errno::ESRCH);
            }
        }
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, mask.as_ref(), std::ptr::null_mut());
            libc::execve(child.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        fail(Errno::last())
    };
    // SAFETY: CLONE_VM | CLONE_VFORK is what `posix_spawn` does: the child
    // runs `run` on `stack` in this address space while this thread is
    // suspended until the child calls `exec` or exits, so nothing here is
    // freed or changed under it; `run` keeps to the rules written above.
    let cloned = unsafe {
        nix::sched::clone(
            Box::new(run),
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    let _ = mask.thread_set_mask();
    let pid = cloned?;
    let errno = failed.load(Ordering::SeqCst);
    if errno != 0 {
        // The child has exited already: reap it at once.
        let _ = waitpid(pid, None);
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    // SAFETY: pidfd_open takes two integers and returns a new descriptor
    // (or -1), which the OwnedFd then owns alone. The child is not reaped
    // yet, so its pid cannot have been reused.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let pidfd = i32::try_from(pidfd).ok().filter(|fd| *fd >= 0).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: an OwnedFd's descriptor stays open and the same until it is
    // dropped, and the AsyncFd owns it until then.
    let pidfd = pidfd.and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
    Ok((pid, pidfd))
}

/// `program` as a path: as given when it holds a `/`, else the first
/// executable file of that name in the absolute directories of `path`.
pub(crate) fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':').filter(|dir| dir.starts_with('/')).map(|dir| Path::new(dir).join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
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
