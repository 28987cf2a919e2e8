//! The built-in `shell` task end to end: a real `quern server`, real `quern
//! worker` processes and real task processes. Round trips, progress, exit
//! codes, cancellation and timeouts that kill whole process groups, resource
//! limits, the clean environment, a fresh working directory per task,
//! graceful shutdown and `kill -9` of a worker, and `quern run`.
//!
//! A test finds its task's processes by a marker variable in their
//! environment (`/proc/PID/environ`), so it sees every descendant.

mod support;

use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::{Api, Server, bounded, eventually, history_problem, id_of};
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(60);

/// A `quern worker` child process; its log goes to a file that a failing
/// test prints.
struct WorkerProc {
    child: Option<Child>,
    log: PathBuf,
    dir: Option<TempDir>,
}

impl WorkerProc {
    /// A worker of `server` with id `id` and extra flags.
    fn start(server: &Server, id: &str, extra: &[&str]) -> WorkerProc {
        WorkerProc::start_with_env(server, id, extra, &[])
    }

    /// The same, with extra environment variables for the worker process.
    fn start_with_env(server: &Server, id: &str, extra: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        WorkerProc::start_at(&server.url, id, extra, env)
    }

    /// A worker of the server at `url` (a proxy in front of one).
    fn start_at(url: &str, id: &str, extra: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = dir.path().join("worker.log");
        let stderr = OpenOptions::new().create(true).append(true).open(&log).expect("open the worker log");
        // A short shutdown grace unless the test sets one, so that a test
        // ending with a task still running does not wait for it long.
        let grace: &[&str] = if extra.contains(&"--grace") { &[] } else { &["--grace", "5s"] };
        // The tests run as root: tasks do too unless a test says otherwise
        // (a worker run as root runs them as `nobody` by default).
        let user: &[&str] = if extra.contains(&"--run-as") { &[] } else { &["--run-as", "root"] };
        // Task directories go beside the log, so that those of a killed
        // worker are removed with the test's directory.
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("create the work root");
        let child = Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(["worker", "--shell", "--server", url, "--id", id])
            .arg("--work-root")
            .arg(&work)
            .args(grace)
            .args(user)
            .args(extra)
            .env("QUERN_LOG", "info,quern_worker=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn quern worker");
        WorkerProc { child: Some(child), log, dir: Some(dir) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the worker is running").id()
    }

    /// SIGTERM, as a service manager stops it.
    fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the worker");
            child.wait().expect("reap the worker");
        }
    }

    /// Waits up to `limit` for the worker to exit on its own.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("poll the worker") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log) else { return "(no worker log)".to_owned() };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(6_000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!("--- end of the worker log ({}) ---\n{text}", self.log.display())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // A graceful stop first, so that the worker stops its tasks'
        // process groups; SIGKILL if it does not exit soon.
        if self.child.is_some() {
            let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
            if self.wait_for_exit(Duration::from_secs(15)).is_none() {
                self.kill9();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the worker's directory: {}", dir.keep().display());
            }
        }
    }
}

/// Submits a `shell` task with `input` and extra task fields; its id.
async fn submit_shell(api: &Api, input: Value, fields: Value) -> String {
    let mut spec = json!({"name": "shell", "input": input});
    if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
        spec.extend(fields.clone());
    }
    id_of(&api.submit(spec).await)
}

/// A unique marker for a test's processes.
fn marker() -> String {
    format!("m{}", uuid_like())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{}x{nanos}", std::process::id())
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

/// The task's `error.message`.
fn message(task: &Value) -> &str {
    task["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {task}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_and_the_shell_type_is_registered_with_its_schema() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-echo", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let id = submit_shell(&api, json!({"command": ["echo", "hello", "world"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"]["stdout"], "hello world\n");
        assert_eq!(task["result"]["exit_code"], 0);
        assert_eq!(task["worker"], "shell-echo");

        let types = api.get("/v1/task-types").await;
        let shell = types.body["task_types"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == "shell"))
            .unwrap_or_else(|| panic!("no shell type: {}", types.body))
            .clone();
        assert!(shell["input_schema"]["properties"]["command"].is_object(), "{shell}");
        // The schema is checked at submit: neither command nor script.
        let reply = api.post("/v1/tasks", &json!({"name": "shell", "input": {"stdin": "x"}})).await;
        assert_eq!(reply.status, 422, "{reply:?}");
    })
    .await;
}

/// `--log-format json` (here through `QUERN_LOG_FORMAT`): every line the
/// worker writes is one JSON object, and what a task's handler logs names
/// the task, and the trace it continues, in its `span`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_task_a_line_is_about() {
    let server = Server::start_with(&["--log-format", "json"]);
    let worker = WorkerProc::start_with_env(&server, "shell-json", &[], &[("QUERN_LOG_FORMAT", "json")]);
    bounded(LIMIT, async {
        let api = server.api();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let id = submit_shell(&api, json!({"command": ["true"]}), json!({"traceparent": traceparent})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        let line = eventually("the task's start is logged", LIMIT, async || {
            let text = std::fs::read_to_string(&worker.log).ok()?;
            text.lines().find(|l| l.contains("shell task started")).map(str::to_owned)
        })
        .await;
        let line: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(line["message"], "shell task started", "{line}");
        assert_eq!(line["span"]["name"], "task", "{line}");
        assert_eq!(line["span"]["task"], id.as_str(), "{line}");
        assert_eq!(line["span"]["queue"], "default", "{line}");
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
        let text = std::fs::read_to_string(&worker.log).expect("the worker log");
        for line in text.lines() {
            assert!(serde_json::from_str::<Value>(line).is_ok(), "a worker line that is not JSON: {line}");
        }
        let text = std::fs::read_to_string(server.log_path()).expect("the server log");
        assert!(text.lines().count() > 0);
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(line["level"].is_string() && line["message"].is_string(), "{line}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_are_visible_while_the_task_runs() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-progress", &["--lease", "3s"]);
    let flag_dir = tempfile::tempdir().expect("temp dir");
    let go = flag_dir.path().join("go");
    bounded(LIMIT, async {
        let api = server.api();
        let script = format!(
            "echo '::progress 42 halfway there'; while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
            go.display()
        );
        let id = submit_shell(&api, json!({"script": script}), json!({})).await;
        let seen = eventually("progress 42 while running", LIMIT, async || {
            let t = api.task(&id).await;
            (t["status"] == "running" && t["progress"]["percent"] == 42.0).then_some(t)
        })
        .await;
        assert_eq!(seen["progress"]["message"], "halfway there");
        std::fs::write(&go, b"").expect("release the task");
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"]["stdout"], "::progress 42 halfway there\ndone\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_fails_with_the_stderr_tail() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-fail", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let script = "echo some output; echo 'first problem' >&2; echo 'it went wrong' >&2; exit 3";
        let id = submit_shell(&api, json!({"script": script}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["error"]["kind"], "exception");
        assert_eq!(message(&task), "exit code 3: it went wrong");
        let details = &task["error"]["details"];
        assert_eq!(details["exit_code"], 3);
        assert_eq!(details["stderr"], "first problem\nit went wrong\n");
        assert_eq!(details["stdout"], "some output\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_kills_its_whole_group_within_the_kill_grace() {
    let server = Server::start();
    // The default lease (30 s): heartbeats every 10 s, so the cancel that
    // ends the task within 4 s can only have come through the worker's
    // watch for stops.
    let _worker = WorkerProc::start(&server, "shell-cancel", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let mark = marker();
        // The outer sh, a child sh that ignores SIGTERM, and a sleep each.
        let script = "sh -c 'trap \"\" TERM; sleep 60' & sleep 60";
        let id = submit_shell(&api, json!({"script": script, "env": {"QUERN_TEST_MARK": mark}}), json!({})).await;
        api.wait_status(&id, &["running"], LIMIT).await;
        eventually("the task's four processes", LIMIT, async || (marked(&mark) == 4).then_some(())).await;

        let asked = Instant::now();
        let reply = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let task = api.wait_status(&id, &["cancelled", "succeeded", "failed"], LIMIT).await;
        let ended = asked.elapsed();
        assert_eq!(task["status"], "cancelled", "{task}");
        // What ignores SIGTERM gets SIGKILL after the 2 s kill grace, and the
        // task ends only once none of its processes is left: within the
        // pushed cancel, the 2 s grace and some slack.
        assert_eq!(marked(&mark), 0, "a process outlived the cancelled task");
        assert!(ended < Duration::from_secs(4), "the task took {ended:?} to end after the cancel");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_the_task_timed_out_and_kills_its_processes() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-timeout", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let mark = marker();
        let input = json!({"script": "sleep 60 & sleep 60", "env": {"QUERN_TEST_MARK": mark}});
        let id = submit_shell(&api, input, json!({"timeout_ms": 1000})).await;
        let task = api.wait_status(&id, &["timed_out", "succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "timed_out", "{task}");
        eventually("every process of the task to die", Duration::from_secs(5), async || {
            (marked(&mark) == 0).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_fails_with_a_message_naming_it() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-memory", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let input = json!({
            "command": ["python3", "-c", "x = bytearray(200 * 1024 * 1024)"],
            "limits": {"memory_mb": 50},
        });
        let id = submit_shell(&api, input, json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "{task}");
        let msg = message(&task);
        assert!(msg.starts_with("memory limit of 50 MB exceeded (the process could not allocate)"), "{msg}");
        assert!(task["error"]["details"]["stderr"].as_str().is_some_and(|s| s.contains("MemoryError")), "{task}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_cpu_limit_fails_with_a_message_naming_it() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-cpu", &[]);
    bounded(LIMIT, async {
        let api = server.api();
        let input = json!({"script": "while :; do :; done", "limits": {"cpu_s": 1}});
        let id = submit_shell(&api, input, json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(message(&task), "CPU time limit of 1 s exceeded (killed by SIGXCPU)");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_left_behind_cannot_write_into_the_next_tasks_directory() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-workdirs", &["--concurrency", "1", "--kill-grace", "300ms"]);
    bounded(LIMIT, async {
        let api = server.api();
        let mark = marker();
        // The writer outlives the command, ignores SIGTERM (so lives through
        // the kill grace) and writes into its directory until it is killed.
        let script = "pwd; (trap '' TERM; while :; do date > late; sleep 0.01; done) >/dev/null 2>&1 &";
        let first = submit_shell(&api, json!({"script": script, "env": {"QUERN_TEST_MARK": mark}}), json!({})).await;
        api.wait_status(&first, &["running", "succeeded", "failed"], LIMIT).await;
        // Queued while the first runs: the worker's one slot takes it next.
        let second = submit_shell(&api, json!({"script": "pwd; ls -A"}), json!({})).await;

        let first = api.wait_status(&first, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        // No waiting: once the task has ended, its processes and directory are gone.
        assert_eq!(marked(&mark), 0, "a process of the first task outlived it");
        let first_dir = first["result"]["stdout"].as_str().unwrap_or_else(|| panic!("no stdout: {first}")).trim();
        assert!(first_dir.contains("quern-task-"), "{first}");
        assert!(std::fs::symlink_metadata(first_dir).is_err(), "the first task's directory outlived it");

        let second = api.wait_status(&second, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(second["status"], "succeeded", "{second}");
        let listed = second["result"]["stdout"].as_str().unwrap_or_else(|| panic!("no stdout: {second}"));
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), 1, "the second task's directory is not empty: {lines:?}");
        assert_ne!(lines[0], first_dir, "the second task got the first one's directory");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_read_the_workers_environment() {
    let server = Server::start();
    let _worker = WorkerProc::start_with_env(&server, "shell-env", &[], &[("QUERN_SECRET_TEST", "xyz")]);
    bounded(LIMIT, async {
        let api = server.api();
        let id = submit_shell(&api, json!({"command": ["printenv", "QUERN_SECRET_TEST"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "printenv found the variable: {task}");
        assert_eq!(task["error"]["details"]["exit_code"], 1);
        assert!(!task.to_string().contains("xyz"), "{task}");

        let id = submit_shell(&api, json!({"command": ["env"], "env": {"MINE": "1"}}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        let stdout = task["result"]["stdout"].as_str().unwrap_or_else(|| panic!("no stdout: {task}"));
        assert!(!stdout.contains("xyz") && !stdout.contains("QUERN_"), "{stdout}");
        assert!(stdout.contains("MINE=1\n"), "{stdout}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_read_the_workers_environment_through_proc() {
    let server = Server::start();
    let env = [("QUERN_SECRET_TEST", "xyz-proc")];
    // Tasks as nobody: what a worker started as root does by default (the
    // other tests here keep root, for their own checks).
    let _worker = WorkerProc::start_with_env(&server, "shell-proc", &["--run-as", "nobody"], &env);
    bounded(LIMIT, async {
        let api = server.api();
        // Every environment a task can read, the worker's (its parent) first:
        // how many hold the secret's name.
        let script = "cat /proc/$PPID/environ /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '^QUERN_SECRET_'";
        let id = submit_shell(&api, json!({"script": script}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        let stdout = task["result"]["stdout"].as_str().or(task["error"]["details"]["stdout"].as_str());
        assert_eq!(stdout, Some("0\n"), "a task read the worker's environment: {task}");
        // The probe in the issue: a task printing the system's password hashes.
        let id = submit_shell(&api, json!({"command": ["cat", "/etc/shadow"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "a task of a root-started worker read /etc/shadow: {task}");
        assert!(task["error"]["details"]["stderr"].as_str().is_some_and(|e| e.contains("Permission denied")), "{task}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_allowed_programs_runs_those_only() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-allow", &["--allow-program", "/bin/echo"]);
    bounded(LIMIT, async {
        let api = server.api();
        let id = submit_shell(&api, json!({"command": ["echo", "allowed"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(
            (task["status"].as_str(), task["result"]["stdout"].as_str()),
            (Some("succeeded"), Some("allowed\n"))
        );
        for input in [json!({"command": ["cat", "/etc/passwd"]}), json!({"script": "echo sneaky"})] {
            let id = submit_shell(&api, input.clone(), json!({})).await;
            let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
            assert_eq!(task["status"], "failed", "{input}: {task}");
            assert!(message(&task).contains("not one this worker allows"), "{input}: {task}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_tasks_finish_and_leaves_the_rest_to_another_worker() {
    let server = Server::start();
    let mut first = WorkerProc::start(&server, "shell-term-a", &["--concurrency", "2", "--grace", "30s"]);
    bounded(LIMIT, async {
        let api = server.api();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(submit_shell(&api, json!({"command": ["sleep", "2"]}), json!({})).await);
        }
        let running = eventually("two tasks running", LIMIT, async || {
            let running = api.list_all("status=running").await;
            (running.len() == 2).then_some(running)
        })
        .await;
        first.terminate();
        let status = tokio::task::block_in_place(|| first.wait_for_exit(Duration::from_secs(20)));
        assert!(status.expect("the worker exits after its in-flight tasks").success());

        let in_flight: Vec<String> = running.iter().map(id_of).collect();
        for id in &in_flight {
            let task = api.task(id).await;
            assert_eq!(task["status"], "succeeded", "an in-flight task did not finish: {task}");
            assert_eq!(task["worker"], "shell-term-a");
        }
        let rest: Vec<&String> = ids.iter().filter(|id| !in_flight.contains(id)).collect();
        for id in &rest {
            let task = api.task(id).await;
            assert_eq!((task["status"].as_str(), task["attempt"].as_u64()), (Some("queued"), Some(0)), "{task}");
        }

        let _second = WorkerProc::start(&server, "shell-term-b", &["--concurrency", "4"]);
        for id in rest {
            let task = api.wait_status(id, &["succeeded", "failed"], LIMIT).await;
            assert_eq!(task["status"], "succeeded", "{task}");
            assert_eq!(task["worker"], "shell-term-b");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_after_the_shutdown_grace_is_handed_back_and_its_processes_killed() {
    let server = Server::start();
    let mut worker = WorkerProc::start(&server, "shell-handback", &["--grace", "1s", "--kill-grace", "1s"]);
    bounded(LIMIT, async {
        let api = server.api();
        let mark = marker();
        let input = json!({"script": "trap '' TERM; sleep 60 & sleep 60", "env": {"QUERN_TEST_MARK": mark}});
        let id = submit_shell(&api, input, json!({})).await;
        api.wait_status(&id, &["running"], LIMIT).await;
        eventually("the task's processes", LIMIT, async || (marked(&mark) == 3).then_some(())).await;

        worker.terminate();
        let status = tokio::task::block_in_place(|| worker.wait_for_exit(Duration::from_secs(20)));
        assert!(status.expect("the worker exits").success());
        // Nothing of the task outlives its worker, SIGTERM-proof sh included.
        assert_eq!(marked(&mark), 0, "task processes outlived the worker");
        let task = api.task(&id).await;
        assert_eq!(task["status"], "queued", "a handed-back task re-queues at once: {task}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_runs_again_on_another_after_its_lease_expires() {
    let server = Server::start();
    let mut first = WorkerProc::start(&server, "shell-dead", &["--lease", "2s"]);
    bounded(LIMIT, async {
        let api = server.api();
        let mark = marker();
        let input = json!({"command": ["sleep", "30"], "env": {"QUERN_TEST_MARK": mark}});
        let id = submit_shell(&api, input, json!({"max_attempts": 2})).await;
        let task = api.wait_status(&id, &["running"], LIMIT).await;
        assert_eq!(task["worker"], "shell-dead");
        eventually("the task's process", LIMIT, async || (marked(&mark) == 1).then_some(())).await;

        first.kill9();
        // The task's process dies with its worker (the parent-death signal
        // every task gets by default).
        eventually("the dead worker's task process to die", Duration::from_secs(5), async || {
            (marked(&mark) == 0).then_some(())
        })
        .await;

        let _second = WorkerProc::start(&server, "shell-alive", &["--lease", "2s"]);
        let task = eventually("the second attempt on the other worker", LIMIT, async || {
            let t = api.task(&id).await;
            (t["status"] == "running" && t["attempt"] == 2 && t["worker"] == "shell-alive").then_some(t)
        })
        .await;
        assert_eq!(task["max_attempts"], 2);
        let history = api.history(&id).await;
        assert_eq!(history_problem(&history), None, "{history:?}");
        let started: Vec<(u64, String)> = history
            .iter()
            .filter(|e| e["to"] == "running")
            .map(|e| (e["attempt"].as_u64().unwrap_or(0), e["worker"].as_str().unwrap_or("").to_owned()))
            .collect();
        assert_eq!(started, [(1, "shell-dead".to_owned()), (2, "shell-alive".to_owned())], "{history:?}");

        let reply = api.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        api.wait_status(&id, &["cancelled"], LIMIT).await;
    })
    .await;
}

/// Runs the `quern` binary with `args`; (exit code, stdout, stderr).
async fn quern(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run the quern binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quern_run_waits_and_prints_the_output_like_the_command() {
    let server = Server::start();
    let _worker = WorkerProc::start(&server, "shell-cli", &[]);
    bounded(LIMIT, async {
        let url = server.url.clone();
        let args = |rest: &[&str]| -> Vec<String> {
            ["run", "--server", &url].iter().chain(rest).map(|s| (*s).to_owned()).collect()
        };
        let (code, stdout, _) = quern(args(&["--wait", "--", "echo", "-n", "hello there"])).await;
        assert_eq!((code, stdout.as_str()), (Some(0), "hello there"));

        let (code, stdout, _) = quern(args(&["--wait", "--stdin", "abc", "--script", "wc -c"])).await;
        assert_eq!((code, stdout.trim()), (Some(0), "3"));

        let (code, stdout, stderr) = quern(args(&["--wait", "--script", "echo out; echo bad >&2; exit 4"])).await;
        assert_eq!(code, Some(4), "the command's own exit code");
        assert_eq!(stdout, "out\n");
        assert!(stderr.contains("bad\n") && stderr.contains("failed: exit code 4: bad"), "{stderr}");

        // A server given without a scheme is taken as http; the input of a
        // submit may come from a file or from standard input.
        let bare = url.trim_start_matches("http://").to_owned();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("input.json");
        std::fs::write(&file, r#"{"command": ["echo", "from a file"]}"#).expect("write the input");
        let from_file = format!("@{}", file.display());
        let submit = ["submit", "shell", "--server", bare.as_str(), "--input", from_file.as_str(), "--wait"];
        let (code, _, stderr) = quern(submit.iter().map(|s| (*s).to_owned()).collect()).await;
        assert_eq!(code, Some(0), "{stderr}");
        let (code, stdout, _) = quern(["workers", "--server", &url].map(str::to_owned).to_vec()).await;
        assert!(code == Some(0) && stdout.contains("shell-cli"), "{stdout}");
        let (code, stdout, _) = quern(["task-types", "--server", &url].map(str::to_owned).to_vec()).await;
        assert!(code == Some(0) && stdout.contains("shell"), "{stdout}");

        // A task no live worker serves says so: to a waiting CLI, in its
        // status, and in the API's answer. Once a worker serves it, it runs.
        let submit = ["submit", "thumbnail", "--server", &url, "--wait", "--wait-timeout", "3s", "--output", "json"];
        let (code, stdout, stderr) = quern(submit.map(str::to_owned).to_vec()).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("no live worker serves `thumbnail` on queue `default`"), "{stderr}");
        let waited: Value = serde_json::from_str(&stdout).expect("the task as JSON");
        let id = waited["id"].as_str().unwrap_or_default().to_owned();
        let (_, stdout, _) = quern(["status", &id, "--server", &url].map(str::to_owned).to_vec()).await;
        assert!(stdout.contains("notice") && stdout.contains("no live worker serves `thumbnail`"), "{stdout}");
        let api = server.api();
        let shell = id_of(&api.submit(json!({"name": "shell", "input": {"command": ["true"]}})).await);
        let shell = api.get(&format!("/v1/tasks/{shell}")).await;
        assert!(shell.body.get("notice").is_none(), "a task a live worker serves: {}", shell.body);

        // A server that is not there: the error says where the CLI looked.
        let (code, _, stderr) = quern(["list", "--server", "127.0.0.1:9"].map(str::to_owned).to_vec()).await;
        assert_eq!(code, Some(2));
        assert!(stderr.contains("cannot reach the Quern server at http://127.0.0.1:9"), "{stderr}");
        assert!(stderr.contains("QUERN_URL"), "{stderr}");

        // Without --wait, the submitted task is printed.
        let (code, stdout, _) = quern(args(&["--output", "json", "--", "true"])).await;
        assert_eq!(code, Some(0));
        let task: Value = serde_json::from_str(&stdout).expect("a task as JSON");
        assert_eq!(task["name"], "shell");
        assert_eq!(task["input"], json!({"command": ["true"]}));
    })
    .await;
}

/// A TCP proxy in front of `upstream` that rewrites `from` to `to` (of the
/// same length, so no header changes) in everything the server answers: a
/// hostile hop on the way between the server and its workers. Its address.
async fn rewriting_proxy(upstream: String, from: &'static [u8], to: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    assert_eq!(from.len(), to.len());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let addr = listener.local_addr().expect("the proxy's address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let chunk = &mut buf[..n];
                    let mut i = 0;
                    while i + from.len() <= chunk.len() {
                        if &chunk[i..i + from.len()] == from {
                            chunk[i..i + from.len()].copy_from_slice(to);
                            i += from.len();
                        } else {
                            i += 1;
                        }
                    }
                    if client_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holding_the_lease_key_refuses_a_task_rewritten_on_the_way() {
    const OLD: &str = "old-lease-key-5f2c0e8a9b7d4c1e8f3a6b9d2c5e8f1a";
    const NEW: &str = "new-lease-key-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";
    let keys = tempfile::tempdir().expect("temp dir");
    let server_keys = keys.path().join("server.keys");
    let worker_keys = keys.path().join("worker.keys");
    std::fs::write(&server_keys, format!("{OLD}\n")).expect("write the server's key file");
    std::fs::write(&worker_keys, format!("# the lease key\n{OLD}\n")).expect("write the worker's key file");
    let server = Server::start_with(&["--lease-key-file", server_keys.to_str().expect("UTF-8 path")]);
    let upstream = server.url.trim_start_matches("http://").to_owned();
    let proxy = rewriting_proxy(upstream, b"pay-alice", b"pay-mally").await;
    let worker_flags = ["--lease-key-file", worker_keys.to_str().expect("UTF-8 path")];
    bounded(LIMIT, async {
        let api = server.api();
        let worker = WorkerProc::start_at(&proxy, "integrity-keyed", &worker_flags, &[]);
        // Signed and untouched: it runs.
        let id = submit_shell(&api, json!({"command": ["echo", "pay-bob"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"]["stdout"], "pay-bob\n");

        // Rewritten on the way: refused, not run.
        let id = submit_shell(&api, json!({"command": ["echo", "pay-alice"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["error"]["kind"], "rejected", "{task}");
        assert_eq!(task["error"]["details"]["reason"], "integrity", "{task}");
        let message = task["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("changed on the way"), "{message}");
        assert_eq!(task["input"]["command"][1], "pay-alice", "the stored input is the one submitted");

        // The server's key is rotated (SIGHUP reloads the file): a worker
        // that holds only the old key refuses what the new one signs.
        std::fs::write(&server_keys, format!("{NEW}\n")).expect("rotate the server's key");
        let hup = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status();
        assert!(hup.is_ok_and(|s| s.success()), "SIGHUP sent");
        eventually("the keys are reloaded", LIMIT, async || {
            server.log_tail().contains("lease keys reloaded").then_some(())
        })
        .await;
        let id = submit_shell(&api, json!({"command": ["echo", "pay-bob"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "failed", "{task}");
        let message = task["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("which this worker does not hold"), "{message}");
        drop(worker);

        // During the rotation the workers hold both keys: the new one verifies.
        std::fs::write(&worker_keys, format!("{NEW}\n{OLD}\n")).expect("give the worker both keys");
        let worker = WorkerProc::start_at(&proxy, "integrity-rotated", &worker_flags, &[]);
        let id = submit_shell(&api, json!({"command": ["echo", "pay-bob"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        drop(worker);

        // What the key prevents: a worker without it runs the rewritten task.
        let _keyless = WorkerProc::start_at(&proxy, "integrity-keyless", &[], &[]);
        let id = submit_shell(&api, json!({"command": ["echo", "pay-alice"]}), json!({})).await;
        let task = api.wait_status(&id, &["succeeded", "failed"], LIMIT).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"]["stdout"], "pay-mally\n", "the proxy rewrote the input on the way");
    })
    .await;
}
