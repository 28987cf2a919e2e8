//! The worker-level sandbox policy of the shell executor, and the resource
//! limits a task may ask for.
//!
//! Invariant: a task never gets more than the policy allows — its limits are
//! capped by the policy's maximums (which apply even when the task asks for
//! none), its working directory is under an allowed prefix, and it runs as
//! the policy's user.

use crate::runtime::WorkerError;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, rlim_t};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default time between SIGTERM and SIGKILL of a task's process group.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// The default size of the stdout and stderr tails kept in a result.
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// Resource limits (`setrlimit`) of a shell task's processes. `None` is no
/// limit. A task's `limits` and the policy's maximums both have this shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU seconds (`RLIMIT_CPU`): SIGXCPU when reached, SIGKILL a second later.
    pub cpu_s: Option<u64>,
    /// Address space in MiB (`RLIMIT_AS`): allocations beyond it fail.
    pub memory_mb: Option<u64>,
    /// Processes of the user (`RLIMIT_NPROC`; not enforced for root).
    pub processes: Option<u64>,
    /// The largest file the task may write, in MiB (`RLIMIT_FSIZE`).
    pub file_size_mb: Option<u64>,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

impl Limits {
    /// These limits, each lowered to `max`'s where `max` sets one.
    #[must_use]
    pub fn capped_by(&self, max: &Limits) -> Limits {
        let cap = |asked: Option<u64>, max: Option<u64>| match (asked, max) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        };
        Limits {
            cpu_s: cap(self.cpu_s, max.cpu_s),
            memory_mb: cap(self.memory_mb, max.memory_mb),
            processes: cap(self.processes, max.processes),
            file_size_mb: cap(self.file_size_mb, max.file_size_mb),
            open_files: cap(self.open_files, max.open_files),
        }
    }

    /// The first limit set to zero, by name: no process can run under it.
    pub(crate) fn zero_limit(&self) -> Option<&'static str> {
        [
            ("cpu_s", self.cpu_s),
            ("memory_mb", self.memory_mb),
            ("processes", self.processes),
            ("file_size_mb", self.file_size_mb),
            ("open_files", self.open_files),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0))
        .map(|(name, _)| name)
    }

    /// The `setrlimit` calls that apply these limits: `(resource, soft,
    /// hard)`, each no higher than the worker's own hard limit (a child may
    /// only lower it).
    pub(crate) fn rlimits(&self) -> Vec<(Resource, rlim_t, rlim_t)> {
        const MIB: u64 = 1024 * 1024;
        let mut out = Vec::new();
        let mut add = |resource: Resource, soft: u64, hard: u64| {
            let ceiling = getrlimit(resource).map_or(RLIM_INFINITY, |(_, hard)| hard);
            let clamp = |v: u64| if ceiling == RLIM_INFINITY { v } else { v.min(ceiling) };
            out.push((resource, clamp(soft), clamp(hard)));
        };
        if let Some(s) = self.cpu_s {
            // SIGXCPU at the soft limit says which limit ended the task; the
            // hard limit a second later ends a process that ignores it.
            add(Resource::RLIMIT_CPU, s, s.saturating_add(1));
        }
        if let Some(mb) = self.memory_mb {
            let bytes = mb.saturating_mul(MIB);
            add(Resource::RLIMIT_AS, bytes, bytes);
        }
        if let Some(n) = self.processes {
            add(Resource::RLIMIT_NPROC, n, n);
        }
        if let Some(mb) = self.file_size_mb {
            let bytes = mb.saturating_mul(MIB);
            add(Resource::RLIMIT_FSIZE, bytes, bytes);
        }
        if let Some(n) = self.open_files {
            add(Resource::RLIMIT_NOFILE, n, n);
        }
        out
    }
}

/// The user shell tasks run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// What every shell task of a worker is held to. Built once per worker:
///
/// ```no_run
/// use quern_worker::shell::{Limits, SandboxPolicy};
/// # fn demo() -> Result<(), quern_worker::WorkerError> {
/// let policy = SandboxPolicy::default()
///     .allow_cwd("/srv/jobs")?
///     .max_limits(Limits { memory_mb: Some(2048), ..Limits::default() })
///     .run_as("nobody")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    allowed_cwd: Vec<PathBuf>,
    /// The programs tasks may run (resolved); none: any.
    allowed_programs: Vec<PathBuf>,
    max: Limits,
    run_as: Option<RunAs>,
    kill_grace: Duration,
    die_with_worker: bool,
    work_root: PathBuf,
    tail_bytes: usize,
}

impl Default for SandboxPolicy {
    /// No `cwd` allowed, no maximums, the worker's own user, a 2 s kill
    /// grace, every task's main process dying with the worker, temporary
    /// directories under the system's temporary directory, 64 KiB output
    /// tails.
    fn default() -> Self {
        Self {
            allowed_cwd: Vec::new(),
            allowed_programs: Vec::new(),
            max: Limits::default(),
            run_as: None,
            kill_grace: DEFAULT_KILL_GRACE,
            die_with_worker: true,
            work_root: std::env::temp_dir(),
            tail_bytes: DEFAULT_TAIL_BYTES,
        }
    }
}

impl SandboxPolicy {
    /// Also lets tasks name a `cwd` under `prefix` (an existing directory;
    /// symbolic links in it are resolved once, here).
    pub fn allow_cwd(mut self, prefix: impl AsRef<Path>) -> Result<Self, WorkerError> {
        let prefix = prefix.as_ref();
        let resolved = prefix
            .canonicalize()
            .map_err(|e| WorkerError::Sandbox(format!("allowed cwd prefix {}: {e}", prefix.display())))?;
        if !resolved.is_dir() {
            return Err(WorkerError::Sandbox(format!("allowed cwd prefix {} is not a directory", prefix.display())));
        }
        self.allowed_cwd.push(resolved);
        Ok(self)
    }

    /// Lets tasks run only the programs allowed so (each an existing file;
    /// symbolic links resolved once, here). A `script` runs `/bin/sh`, which
    /// must then be allowed too. Without any, tasks may run any program.
    pub fn allow_program(mut self, program: impl AsRef<Path>) -> Result<Self, WorkerError> {
        let program = program.as_ref();
        let resolved = program
            .canonicalize()
            .map_err(|e| WorkerError::Sandbox(format!("allowed program {}: {e}", program.display())))?;
        if !resolved.is_file() {
            return Err(WorkerError::Sandbox(format!("allowed program {} is not a file", program.display())));
        }
        self.allowed_programs.push(resolved);
        Ok(self)
    }

    /// Caps every task's limits by `max` (and applies them to tasks that ask
    /// for none).
    #[must_use]
    pub fn max_limits(mut self, max: Limits) -> Self {
        self.max = max;
        self
    }

    /// Runs tasks as the user `name` (the worker must be root to switch).
    pub fn run_as(mut self, name: &str) -> Result<Self, WorkerError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| WorkerError::Sandbox(format!("looking up user {name}: {e}")))?
            .ok_or_else(|| WorkerError::Sandbox(format!("no user named {name}")))?;
        self.run_as = Some(RunAs { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw() });
        Ok(self)
    }

    /// The time between SIGTERM and SIGKILL of a task's process group.
    #[must_use]
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Gives every task's main process SIGKILL when the worker dies (the
    /// parent-death signal), so that `kill -9` of a worker does not leave it
    /// running (on by default). Tasks with limits or another user always get
    /// it. It costs nothing measurable: every task is started the same way.
    #[must_use]
    pub fn die_with_worker(mut self, on: bool) -> Self {
        self.die_with_worker = on;
        self
    }

    /// Where the per-task temporary directories are made.
    #[must_use]
    pub fn work_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_root = dir.into();
        self
    }

    /// How many bytes of stdout and of stderr a result keeps (the last ones).
    #[must_use]
    pub fn output_tail_bytes(mut self, bytes: usize) -> Self {
        self.tail_bytes = bytes.max(1);
        self
    }

    /// The worker-level maximums.
    pub fn max(&self) -> &Limits {
        &self.max
    }

    /// The user tasks run as, if not the worker's.
    pub fn user(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// The kill grace.
    pub fn grace(&self) -> Duration {
        self.kill_grace
    }

    /// Whether every task gets the parent-death signal.
    pub fn dies_with_worker(&self) -> bool {
        self.die_with_worker
    }

    pub(crate) fn root(&self) -> &Path {
        &self.work_root
    }

    pub(crate) fn tail_bytes(&self) -> usize {
        self.tail_bytes
    }

    /// Why a task may not run `program` (looked up in `path` as the task
    /// would, relative to `dir` when it is), if it may not.
    pub(crate) fn program_problem(&self, program: &str, path: &str, dir: &Path) -> Option<String> {
        if self.allowed_programs.is_empty() {
            return None;
        }
        let found = super::sandbox::find_program(program, path).map(|p| dir.join(p));
        let resolved = found.and_then(|p| p.canonicalize().ok());
        match resolved {
            Some(p) if self.allowed_programs.contains(&p) => None,
            _ => {
                let allowed: Vec<String> = self.allowed_programs.iter().map(|p| p.display().to_string()).collect();
                Some(format!("program {program} is not one this worker allows ({})", allowed.join(", ")))
            }
        }
    }

    /// The directory a task asked for, resolved, when it lies under an
    /// allowed prefix; otherwise why not.
    pub(crate) fn resolve_cwd(&self, asked: &str) -> Result<PathBuf, String> {
        let path = Path::new(asked);
        if !path.is_absolute() {
            return Err(format!("cwd {asked} is not an absolute path"));
        }
        if self.allowed_cwd.is_empty() {
            return Err("this worker allows no cwd (start it with --allow-cwd PREFIX)".to_owned());
        }
        let resolved = path.canonicalize().map_err(|e| format!("cwd {asked}: {e}"))?;
        if !self.allowed_cwd.iter().any(|prefix| resolved.starts_with(prefix)) {
            let allowed: Vec<String> = self.allowed_cwd.iter().map(|p| p.display().to_string()).collect();
            return Err(format!("cwd {asked} is not under an allowed prefix ({})", allowed.join(", ")));
        }
        if !resolved.is_dir() {
            return Err(format!("cwd {asked} is not a directory"));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_limits_are_capped_and_maximums_apply_to_every_task() {
        let max = Limits { cpu_s: Some(10), memory_mb: Some(512), ..Limits::default() };
        let asked = Limits { cpu_s: Some(60), memory_mb: Some(100), open_files: Some(64), ..Limits::default() };
        let got = asked.capped_by(&max);
        assert_eq!(got, Limits { cpu_s: Some(10), memory_mb: Some(100), open_files: Some(64), ..Limits::default() });
        assert_eq!(Limits::default().capped_by(&max), max);
        assert_eq!(asked.capped_by(&Limits::default()), asked);
    }

    #[test]
    fn rlimits_are_computed_in_bytes_and_cpu_gets_a_second_of_slack() {
        let limits = Limits { cpu_s: Some(3), memory_mb: Some(2), file_size_mb: Some(1), ..Limits::default() };
        let r = limits.rlimits();
        assert_eq!(
            r,
            [
                (Resource::RLIMIT_CPU, 3, 4),
                (Resource::RLIMIT_AS, 2 * 1024 * 1024, 2 * 1024 * 1024),
                (Resource::RLIMIT_FSIZE, 1024 * 1024, 1024 * 1024)
            ]
        );
        assert!(Limits::default().rlimits().is_empty());
        assert_eq!(Limits { open_files: Some(0), ..Limits::default() }.zero_limit(), Some("open_files"));
    }

    #[test]
    fn cwd_must_lie_under_an_allowed_prefix() {
        let dir = std::env::temp_dir().join(format!("quern-policy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("jobs/a")).expect("mkdir");
        std::fs::create_dir_all(dir.join("other")).expect("mkdir");
        let policy = SandboxPolicy::default().allow_cwd(dir.join("jobs")).expect("prefix exists");
        let jobs = dir.join("jobs").canonicalize().expect("canonical");
        assert_eq!(policy.resolve_cwd(&dir.join("jobs/a").display().to_string()), Ok(jobs.join("a")));
        for bad in [
            dir.join("other").display().to_string(),
            dir.join("jobs/../other").display().to_string(),
            dir.join("jobs/missing").display().to_string(),
            "relative/path".to_owned(),
        ] {
            assert!(policy.resolve_cwd(&bad).is_err(), "{bad}");
        }
        assert!(SandboxPolicy::default().resolve_cwd(&jobs.display().to_string()).is_err());
        assert!(SandboxPolicy::default().allow_cwd(dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_as_looks_the_user_up() {
        let policy = SandboxPolicy::default().run_as("root").expect("root exists");
        assert_eq!(policy.user().map(|u| u.uid), Some(0));
        assert!(SandboxPolicy::default().run_as("no-such-user-quern").is_err());
    }
}
