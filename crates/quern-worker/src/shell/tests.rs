//! The shell executor run directly on real processes, without a server.

use super::*;
use crate::runtime::testing;
use quern_core::{ErrorKind, Task};
use std::future::Future;

/// A leased `shell` task with `input`.
fn task(input: Value) -> Task {
    serde_json::from_value(json!({
        "id": uuid::Uuid::now_v7(), "name": "shell", "queue": "default", "input": input,
        "status": "running", "priority": 0, "metadata": {}, "attempt": 1, "max_attempts": 1,
        "timeout_ms": null,
        "retry": {"backoff": "exponential", "initial_ms": 1000, "max_ms": 300000, "jitter": 0.0},
        "run_at": "2026-01-01T00:00:00.000Z", "progress": null, "result": null, "error": null,
        "created_at": "2026-01-01T00:00:00.000Z", "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": null, "updated_at": "2026-01-01T00:00:00.000Z", "worker": "w1",
        "workflow": null, "depends_on": [], "idempotency_key": null, "digest": "sha256:00"
    }))
    .expect("a valid task")
}

/// Runs `input` under `policy` to its end (within 30 s).
async fn run_with(policy: SandboxPolicy, input: Value) -> HandlerResult {
    let (ctx, _cancel, _shared) = testing::context(task(input));
    bounded(ShellExecutor::new(policy).run(ctx)).await
}

async fn run(input: Value) -> HandlerResult {
    run_with(SandboxPolicy::default(), input).await
}

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut).await.expect("the run ended within 30 s")
}

fn failure(result: HandlerResult) -> TaskFailure {
    match result {
        Ok(v) => panic!("expected a failure, got {v}"),
        Err(f) => f,
    }
}

/// A marker to find a test's processes by their environment.
fn marker() -> String {
    format!("m{}", uuid::Uuid::new_v4().simple())
}

/// How many live processes carry `QUERN_TEST_MARK=<mark>` in their
/// environment.
fn marked(mark: &str) -> usize {
    let needle = format!("QUERN_TEST_MARK={mark}");
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc is readable").flatten() {
        let path = entry.path();
        let Ok(environ) = std::fs::read(path.join("environ")) else { continue };
        if !environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            continue;
        }
        let zombie = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if !zombie {
            n += 1;
        }
    }
    n
}

/// Polls `check` every 20 ms for up to `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn echo_round_trips_with_exit_code_and_duration() {
    let result = run(json!({"command": ["echo", "hello", "world"]})).await.expect("echo succeeds");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "hello world\n");
    assert_eq!(result["stderr"], "");
    assert!(result["duration_ms"].is_u64(), "{result}");
    assert_eq!(result["truncated"], json!({"stdout": false, "stderr": false}));
}

#[tokio::test]
async fn scripts_run_under_sh_and_read_stdin() {
    let result = run(json!({"script": "tr a-z A-Z; echo err >&2", "stdin": "abc\n"})).await.expect("succeeds");
    assert_eq!(result["stdout"], "ABC\n");
    assert_eq!(result["stderr"], "err\n");
}

#[tokio::test]
async fn output_is_kept_as_a_bounded_tail() {
    let policy = SandboxPolicy::default().output_tail_bytes(1000);
    let result = run_with(policy, json!({"script": "seq 1 100000"})).await.expect("succeeds");
    let stdout = result["stdout"].as_str().expect("text");
    assert_eq!(stdout.len(), 1000);
    assert!(stdout.ends_with("99999\n100000\n"), "{stdout}");
    assert_eq!(result["truncated"]["stdout"], true);
}

#[tokio::test]
async fn progress_lines_report_progress_and_stay_in_stdout() {
    let t = task(json!({"script": "echo '::progress 42 halfway there'; echo done"}));
    let id = t.id;
    let (ctx, _cancel, shared) = testing::context(t);
    let result = bounded(ShellExecutor::new(SandboxPolicy::default()).run(ctx)).await.expect("succeeds");
    assert_eq!(result["stdout"], "::progress 42 halfway there\ndone\n");
    let progress = testing::progress(&shared, id).expect("progress was reported");
    assert_eq!((progress.percent, progress.message.as_deref()), (42.0, Some("halfway there")));
}

#[tokio::test]
async fn a_non_zero_exit_fails_retryably_with_the_last_stderr_line() {
    let f = failure(run(json!({"script": "echo out; echo first >&2; echo 'it broke' >&2; exit 3"})).await);
    assert_eq!((f.kind, f.retry), (ErrorKind::Exception, true));
    assert_eq!(f.message, "exit code 3: it broke");
    let details = f.details.expect("details");
    assert_eq!(details["exit_code"], 3);
    assert_eq!(details["stdout"], "out\n");
    assert_eq!(details["stderr"], "first\nit broke\n");
    assert_eq!(details["signal"], Value::Null);
}

#[tokio::test]
async fn the_environment_is_cleared_to_an_allowlist_plus_the_tasks_own() {
    // cargo runs this test with CARGO_* variables set: none may leak.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
    let result = run(json!({"command": ["env"], "env": {"GREETING": "hi"}})).await.expect("env succeeds");
    let stdout = result["stdout"].as_str().expect("text");
    let mut names: Vec<&str> = stdout.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    names.sort_unstable();
    assert_eq!(names, ["GREETING", "HOME", "LANG", "PATH", "TMPDIR"], "{stdout}");
    assert!(stdout.contains("PATH=/usr/local/bin:/usr/bin:/bin\n"), "{stdout}");
    assert!(stdout.contains("GREETING=hi\n"), "{stdout}");
}

#[tokio::test]
async fn a_task_starts_in_its_own_group_with_no_signal_blocked_and_sigpipe_at_its_default() {
    let result = run(json!({"command": ["cat", "/proc/self/status", "/proc/self/stat"]})).await.expect("cat succeeds");
    let stdout = result["stdout"].as_str().expect("text");
    let field = |name: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    assert_eq!(field("SigBlk:"), "0000000000000000", "{stdout}");
    let ignored = u64::from_str_radix(field("SigIgn:"), 16).expect("a hex mask");
    assert_eq!(ignored & (1 << (nix::libc::SIGPIPE - 1)), 0, "SIGPIPE is ignored: {stdout}");
    // `pid (comm) state ppid pgrp …`: the process leads its own group.
    let stat = stdout.lines().last().and_then(|l| l.rsplit_once(')')).map(|(head, rest)| (head, rest.to_owned()));
    let (head, rest) = stat.expect("a stat line");
    let pid = head.split_whitespace().next().expect("a pid");
    assert_eq!(rest.split_whitespace().nth(2), Some(pid), "{stdout}");
}

#[tokio::test]
async fn a_program_that_is_not_executable_fails_without_retry() {
    let dir = std::env::temp_dir().join(format!("quern-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).expect("mkdir");
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let f = failure(run(json!({"command": [script.to_str().expect("utf-8")]})).await);
    std::fs::remove_dir_all(&dir).expect("rmdir");
    assert!(!f.retry);
    assert!(f.message.contains("permission denied"), "{}", f.message);
}

#[tokio::test]
async fn each_task_gets_an_empty_private_directory_as_home_and_tmpdir() {
    let shell = ShellExecutor::new(SandboxPolicy::default());
    let run_here = |input: Value| {
        let (ctx, cancel, _shared) = testing::context(task(input));
        let shell = shell.clone();
        async move {
            let result = bounded(shell.run(ctx)).await;
            // A dropped sender would read as a cancel.
            drop(cancel);
            result
        }
    };
    let script = "pwd; echo \"$HOME\"; echo \"$TMPDIR\"; stat -c %a .; ls -A; mkdir -p sub; touch left-behind sub/too";
    let first = run_here(json!({"script": script})).await.expect("succeeds");
    let lines: Vec<String> = first["stdout"].as_str().expect("text").lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "an empty directory lists nothing: {lines:?}");
    assert!(lines[0].contains("quern-task-"), "{lines:?}");
    assert!(lines[..3].iter().all(|l| *l == lines[0]), "HOME and TMPDIR are the working directory: {lines:?}");
    assert_eq!(lines[3], "700");
    assert!(!std::path::Path::new(&lines[0]).exists(), "the directory outlived its task");
    // The next task sees nothing of the first one's files.
    let second = run_here(json!({"script": script})).await.expect("succeeds");
    let second: Vec<&str> = second["stdout"].as_str().expect("text").lines().collect();
    assert_eq!(second.len(), 4, "{second:?}");
    assert_ne!(second[0], lines[0], "a directory is never handed out twice");
    assert!(!std::path::Path::new(second[0]).exists(), "the directory outlived its task");
}

#[tokio::test]
async fn a_process_left_behind_is_gone_with_its_directory_before_the_next_task_starts() {
    let mark = marker();
    let shell = ShellExecutor::new(SandboxPolicy::default().kill_grace(Duration::from_millis(300)));
    // The writer outlives the command, ignores SIGTERM (so lives through the
    // grace) and writes into the directory it started in until it is killed.
    let script = "pwd; (trap '' TERM; while :; do date > late; sleep 0.01; done) >/dev/null 2>&1 &";
    let (ctx, _cancel, _shared) = testing::context(task(json!({"script": script, "env": {"QUERN_TEST_MARK": mark}})));
    let first = bounded(shell.run(ctx)).await.expect("succeeds");
    // No waiting: by the time a run answers, its processes and directory are gone.
    assert_eq!(marked(&mark), 0, "a process of the first task outlived its run");
    let first_dir = first["stdout"].as_str().expect("text").trim().to_owned();
    assert!(first_dir.contains("quern-task-"), "{first}");
    assert!(std::fs::symlink_metadata(&first_dir).is_err(), "the first task's directory outlived its run");

    let (ctx, _cancel, _shared) = testing::context(task(json!({"script": "pwd; ls -A"})));
    let second = bounded(shell.run(ctx)).await.expect("succeeds");
    let lines: Vec<&str> = second["stdout"].as_str().expect("text").lines().collect();
    assert_eq!(lines.len(), 1, "the second task's directory is not empty: {lines:?}");
    assert_ne!(lines[0], first_dir, "the second task got the first one's directory");
}

#[tokio::test]
async fn cwd_is_allowed_only_under_a_policy_prefix() {
    let f = failure(run(json!({"command": ["pwd"], "cwd": "/"})).await);
    assert_eq!((f.kind, f.retry), (ErrorKind::Rejected, false));
    assert!(f.message.contains("allows no cwd"), "{}", f.message);

    let root = std::env::temp_dir().join(format!("quern-cwd-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(root.join("job")).expect("mkdir");
    let policy = SandboxPolicy::default().allow_cwd(&root).expect("prefix exists");
    let job = root.join("job").canonicalize().expect("canonical");
    let result = run_with(policy.clone(), json!({"command": ["pwd"], "cwd": job})).await.expect("allowed");
    assert_eq!(result["stdout"], format!("{}\n", job.display()));
    assert!(job.exists(), "a given cwd is the task's, not removed");

    let f = failure(run_with(policy, json!({"command": ["pwd"], "cwd": "/tmp/.."})).await);
    assert_eq!(f.kind, ErrorKind::Rejected);
    assert!(f.message.contains("not under an allowed prefix"), "{}", f.message);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn malformed_input_is_rejected() {
    for input in [
        json!({"command": ["echo"], "script": "echo"}),
        json!({}),
        json!({"command": []}),
        json!({"command": [""]}),
        json!({"command": ["echo"], "limit": {"cpu_s": 1}}),
        json!({"command": ["echo"], "limits": {"cpu": 1}}),
        json!({"command": ["echo"], "limits": {"cpu_s": 0}}),
        json!({"command": ["echo"], "env": {"A=B": "c"}}),
        json!({"command": "echo hi"}),
    ] {
        let f = failure(run(input.clone()).await);
        assert_eq!((f.kind, f.retry), (ErrorKind::Rejected, false), "{input}: {}", f.message);
    }
}

#[tokio::test]
async fn an_unknown_program_fails_without_retry() {
    let f = failure(run(json!({"command": ["no-such-program-quern"]})).await);
    assert!(!f.retry);
    assert!(f.message.contains("no such program"), "{}", f.message);
}

#[tokio::test]
async fn the_memory_limit_is_named_when_allocation_fails() {
    let input = json!({
        "command": ["python3", "-c", "x = bytearray(200 * 1024 * 1024)"],
        "limits": {"memory_mb": 50},
    });
    let f = failure(run(input).await);
    assert!(f.message.starts_with("memory limit of 50 MB exceeded (the process could not allocate)"), "{}", f.message);
}

#[tokio::test]
async fn worker_maximums_cap_what_a_task_asks_for() {
    let policy = SandboxPolicy::default().max_limits(Limits { memory_mb: Some(50), ..Limits::default() });
    let alloc = json!(["python3", "-c", "x = bytearray(200 * 1024 * 1024)"]);
    let f = failure(run_with(policy.clone(), json!({"command": alloc, "limits": {"memory_mb": 4096}})).await);
    assert!(f.message.starts_with("memory limit of 50 MB exceeded"), "{}", f.message);
    // The maximum binds tasks that ask for nothing.
    let f = failure(run_with(policy, json!({"command": alloc})).await);
    assert!(f.message.starts_with("memory limit of 50 MB exceeded"), "{}", f.message);
}

#[tokio::test]
async fn the_cpu_limit_is_named_when_it_ends_the_task() {
    let f = failure(run(json!({"script": "while :; do :; done", "limits": {"cpu_s": 1}})).await);
    assert_eq!(f.message, "CPU time limit of 1 s exceeded (killed by SIGXCPU)");
    assert_eq!(f.details.expect("details")["signal"], "SIGXCPU");
}

#[tokio::test]
async fn the_file_size_limit_is_named_when_it_ends_the_task() {
    let input = json!({
        "command": ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=3"],
        "limits": {"file_size_mb": 1},
    });
    let f = failure(run(input).await);
    assert_eq!(f.message, "file size limit of 1 MB exceeded (killed by SIGXFSZ)");
}

#[tokio::test]
async fn other_signals_are_named() {
    let f = failure(run(json!({"script": "kill -USR1 $$"})).await);
    assert_eq!(f.message, "killed by signal SIGUSR1");
}

#[tokio::test]
async fn run_as_switches_user_and_owns_the_working_directory() {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let policy = SandboxPolicy::default().run_as("nobody").expect("nobody exists");
    let uid = policy.user().map(|u| u.uid).expect("a user");
    let result = run_with(policy, json!({"script": "id -u; touch ./mine && echo wrote"})).await.expect("runs");
    assert_eq!(result["stdout"], format!("{uid}\nwrote\n"));
}

#[tokio::test]
async fn run_as_leaves_only_the_users_group() {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let policy = SandboxPolicy::default().run_as("nobody").expect("nobody exists");
    let (uid, gid) = policy.user().map(|u| (u.uid, u.gid)).expect("a user");
    let result = run_with(policy, json!({"command": ["id"]})).await.expect("runs");
    let stdout = result["stdout"].as_str().expect("text");
    assert!(stdout.starts_with(&format!("uid={uid}(")), "{stdout}");
    assert!(stdout.contains(&format!(" gid={gid}(")), "{stdout}");
    let groups = stdout.split_once("groups=").map(|(_, g)| g.trim()).expect("groups");
    assert!(groups.starts_with(&format!("{gid}(")) && !groups.contains(','), "{stdout}");
}

#[tokio::test]
async fn cancelling_kills_the_whole_group_even_what_ignores_sigterm() {
    let mark = marker();
    let input = json!({
        "script": "sh -c 'trap \"\" TERM; sleep 60' & sleep 60",
        "env": {"QUERN_TEST_MARK": mark},
    });
    let (ctx, cancel, _shared) = testing::context(task(input));
    let shell = ShellExecutor::new(SandboxPolicy::default().kill_grace(Duration::from_millis(500)));
    let running = tokio::spawn({
        let shell = shell.clone();
        async move { shell.run(ctx).await }
    });
    // sh, the inner sh and two sleeps.
    eventually("the processes to start", Duration::from_secs(10), || marked(&mark) == 4).await;
    let asked = Instant::now();
    cancel.cancel();
    let result = bounded(running).await.expect("the run did not panic");
    assert!(asked.elapsed() < Duration::from_secs(2), "the run took {:?} to stop", asked.elapsed());
    let f = failure(result);
    assert!(f.message.starts_with("stopped"), "{}", f.message);
    eventually("every process of the task to die", Duration::from_secs(3), || marked(&mark) == 0).await;
    assert!(shell.wait_for_cleanup(Duration::from_secs(3)));
}

#[tokio::test]
async fn a_main_process_that_ignores_sigterm_is_killed_after_the_grace() {
    let mark = marker();
    let input = json!({"command": ["sh", "-c", "trap '' TERM; sleep 60"], "env": {"QUERN_TEST_MARK": mark}});
    let (ctx, cancel, _shared) = testing::context(task(input));
    let shell = ShellExecutor::new(SandboxPolicy::default());
    let running = tokio::spawn({
        let shell = shell.clone();
        async move { shell.run(ctx).await }
    });
    eventually("the processes to start", Duration::from_secs(10), || marked(&mark) == 2).await;
    let asked = Instant::now();
    cancel.cancel();
    let f = failure(bounded(running).await.expect("no panic"));
    let took = asked.elapsed();
    assert!(took >= DEFAULT_KILL_GRACE && took < DEFAULT_KILL_GRACE + Duration::from_secs(1), "took {took:?}");
    assert_eq!(f.details.expect("details")["signal"], "SIGKILL");
    eventually("every process of the task to die", Duration::from_secs(3), || marked(&mark) == 0).await;
}

#[tokio::test]
async fn dropping_a_run_still_kills_its_processes() {
    let mark = marker();
    let input = json!({"script": "trap '' TERM; sleep 60 & sleep 60", "env": {"QUERN_TEST_MARK": mark}});
    let (ctx, _cancel, _shared) = testing::context(task(input));
    let shell = ShellExecutor::new(SandboxPolicy::default().kill_grace(Duration::from_millis(300)));
    let running = tokio::spawn({
        let shell = shell.clone();
        async move { shell.run(ctx).await }
    });
    eventually("the processes to start", Duration::from_secs(10), || marked(&mark) == 3).await;
    running.abort();
    assert!(running.await.is_err_and(|e| e.is_cancelled()));
    tokio::task::spawn_blocking({
        let shell = shell.clone();
        move || assert!(shell.wait_for_cleanup(Duration::from_secs(5)), "the reaper did not finish")
    })
    .await
    .expect("no panic");
    assert_eq!(marked(&mark), 0, "a process outlived the dropped run");
    bounded(shell.idle()).await;
}

#[tokio::test]
async fn background_processes_left_behind_are_stopped_and_do_not_hold_the_result() {
    let mark = marker();
    let input = json!({"script": "sleep 60 & echo started", "env": {"QUERN_TEST_MARK": mark}});
    let started = Instant::now();
    let shell = ShellExecutor::new(SandboxPolicy::default());
    let (ctx, _cancel, _shared) = testing::context(task(input));
    let result = bounded(shell.run(ctx)).await.expect("succeeds");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(result["stdout"], "started\n");
    eventually("the background sleep to die", Duration::from_secs(5), || marked(&mark) == 0).await;
}

#[test]
fn failures_name_the_limit_that_ended_them() {
    let none = Limits::default();
    let cpu = Limits { cpu_s: Some(2), ..Limits::default() };
    let mem = Limits { memory_mb: Some(64), ..Limits::default() };
    let both = Limits { cpu_s: Some(5), memory_mb: Some(64), ..Limits::default() };
    let fsize = Limits { file_size_mb: Some(1), ..Limits::default() };
    let short = Duration::from_millis(100);
    let mem_msg = "memory limit of 64 MB exceeded (the process could not allocate)";
    let cases = [
        (&none, Some(2), None, "boom\n", "exit code 2: boom".to_owned()),
        (&none, Some(1), None, "", "exit code 1".to_owned()),
        (&mem, Some(1), None, "MemoryError\n", format!("{mem_msg}; exit code 1: MemoryError")),
        (&mem, Some(1), None, "plain failure\n", "exit code 1: plain failure".to_owned()),
        (&none, Some(1), None, "MemoryError\n", "exit code 1: MemoryError".to_owned()),
        (&cpu, None, Some(24), "", "CPU time limit of 2 s exceeded (killed by SIGXCPU)".to_owned()),
        (&cpu, None, Some(9), "", "CPU time limit of 2 s exceeded (killed by SIGKILL)".to_owned()),
        (&none, None, Some(24), "", "killed by signal SIGXCPU".to_owned()),
        (&mem, None, Some(11), "", format!("{mem_msg} (killed by SIGSEGV)")),
        (&mem, None, Some(6), "", format!("{mem_msg} (killed by SIGABRT)")),
        (&both, None, Some(9), "", format!("{mem_msg} (killed by SIGKILL)")),
        (&fsize, None, Some(25), "", "file size limit of 1 MB exceeded (killed by SIGXFSZ)".to_owned()),
        (&fsize, Some(1), None, "dd: error writing 'f': File too large\n", {
            "file size limit of 1 MB exceeded; exit code 1: dd: error writing 'f': File too large".to_owned()
        }),
        (&none, None, Some(11), "", "killed by signal SIGSEGV".to_owned()),
    ];
    for (limits, code, signal, stderr, want) in cases {
        assert_eq!(describe_failure(limits, code, signal, stderr, short), want, "{limits:?} {code:?} {signal:?}");
    }
    // With both limits, a SIGKILL after the CPU time has passed is the CPU's.
    assert_eq!(
        describe_failure(&both, None, Some(9), "", Duration::from_secs(6)),
        "CPU time limit of 5 s exceeded (killed by SIGKILL)"
    );
}

#[test]
fn the_task_type_carries_a_schema_that_requires_command_or_script() {
    let schema = input_schema();
    assert_eq!(schema["oneOf"], json!([{"required": ["command"]}, {"required": ["script"]}]));
    assert_eq!(schema["additionalProperties"], false);
    let limits: Vec<&String> =
        schema["properties"]["limits"]["properties"].as_object().expect("object").keys().collect();
    assert_eq!(limits.len(), 5);
}
