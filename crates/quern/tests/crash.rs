//! Invariants 1 and 2 under `kill -9`: an acknowledged submit survives the
//! crash, an acknowledged outcome is never lost or written twice, and tasks
//! whose leases died with the server are held back for a lease period, then
//! run again.

mod support;

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Api, Server, bounded, id_of, token_of};
use tokio::task::JoinHandle;

/// Tasks the crash test submits in all (before and after the crash).
const TOTAL: usize = 10_000;
/// Acknowledged submits after which the server is killed.
const KILL_AFTER: usize = 4_000;
const BATCH: usize = 20;
const LEASE_MS: u64 = 2_000;

/// What one phase (before or after the crash) saw acknowledged.
#[derive(Default)]
struct Phase {
    /// Ids whose submit got a 2xx.
    acked: Mutex<Vec<String>>,
    acked_count: AtomicUsize,
    /// Ids leased by the workers.
    leased: Mutex<Vec<String>>,
    /// Ids whose succeeded completion was answered `ok: true`.
    completed: Mutex<Vec<String>>,
    /// Answers no correct server gives (a non-2xx to a valid request).
    unexpected: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("no test thread panicked holding the lock")
}

fn spec(n: usize) -> Value {
    json!({"name": "crash.work", "input": {"n": n}, "max_attempts": 10})
}

/// Submits task numbers claimed from `next` until `TOTAL` or the first
/// transport error (the server died).
async fn submitter(api: Api, phase: Arc<Phase>, next: Arc<AtomicUsize>, batch: bool) {
    loop {
        let claim = if batch { BATCH } else { 1 };
        let first = next.fetch_add(claim, Ordering::SeqCst);
        if first >= TOTAL {
            return;
        }
        let last = (first + claim).min(TOTAL);
        let answer = if batch {
            let tasks: Vec<Value> = (first..last).map(spec).collect();
            api.try_post("/v1/tasks/batch", &json!({ "tasks": tasks })).await
        } else {
            api.try_post("/v1/tasks", &spec(first)).await
        };
        let Ok(reply) = answer else { return };
        if reply.status != 201 {
            lock(&phase.unexpected).push(format!("submit {first}..{last}: {reply:?}"));
            return;
        }
        let ids: Vec<String> = if batch {
            reply.body["tasks"].as_array().map(|t| t.iter().map(id_of).collect()).unwrap_or_default()
        } else {
            vec![id_of(&reply.body)]
        };
        assert_eq!(ids.len(), last - first, "one task per spec: {reply:?}");
        let count = ids.len();
        lock(&phase.acked).extend(ids);
        phase.acked_count.fetch_add(count, Ordering::SeqCst);
    }
}

/// Leases up to 50 at a time and completes them all as succeeded, until told
/// to stop or the first transport error.
async fn worker(api: Api, phase: Arc<Phase>, name: String) {
    while !phase.stop.load(Ordering::SeqCst) {
        let body = json!({"worker": name, "queues": ["default"], "max": 50, "wait_ms": 500, "lease_ms": LEASE_MS});
        let Ok(reply) = api.try_post("/v1/lease", &body).await else {
            return;
        };
        if reply.status != 200 {
            lock(&phase.unexpected).push(format!("lease: {reply:?}"));
            return;
        }
        let tasks = reply.body["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.is_empty() {
            continue;
        }
        lock(&phase.leased).extend(tasks.iter().map(id_of));
        // A little work, so that some leases are outstanding when the server dies.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let results: Vec<Value> = tasks
            .iter()
            .map(|t| {
                json!({
                    "task": id_of(t), "token": token_of(t), "outcome": "succeeded",
                    "result": {"n": t["input"]["n"]},
                })
            })
            .collect();
        let Ok(reply) = api.try_post("/v1/complete", &json!({"worker": name, "results": results})).await else {
            return;
        };
        if reply.status != 200 {
            lock(&phase.unexpected).push(format!("complete: {reply:?}"));
            return;
        }
        let ok: Vec<String> = reply.body["results"]
            .as_array()
            .map(|rs| {
                rs.iter().filter(|r| r["ok"] == true).filter_map(|r| r["task"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default();
        lock(&phase.completed).extend(ok);
    }
}

fn start_phase(api: &Api, phase: &Arc<Phase>, next: &Arc<AtomicUsize>) -> (Vec<JoinHandle<()>>, Vec<JoinHandle<()>>) {
    let submitters =
        (0..4).map(|i| tokio::spawn(submitter(api.clone(), phase.clone(), next.clone(), i % 2 == 1))).collect();
    let workers = (0..3).map(|i| tokio::spawn(worker(api.clone(), phase.clone(), format!("crash-w{i}")))).collect();
    (submitters, workers)
}

async fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.await.expect("a submitter or worker panicked");
    }
}

/// GETs every id (8 at a time) and returns each id's task, or the failing
/// status for ids that did not answer 200.
async fn fetch_all(api: &Api, ids: &[String]) -> HashMap<String, Result<Value, u16>> {
    let mut set = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
        let api = api.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let reply = api.get(&format!("/v1/tasks/{id}")).await;
                let entry = if reply.status == 200 { Ok(reply.body) } else { Err(reply.status) };
                out.push((id, entry));
            }
            out
        });
    }
    let mut all = HashMap::new();
    while let Some(part) = set.join_next().await {
        all.extend(part.expect("fetch task"));
    }
    all
}

/// For every id (8 at a time), how many times its history says it reached
/// `succeeded`, and what is wrong with the history if anything.
async fn succeeded_counts(api: &Api, ids: &[String]) -> Vec<(String, usize, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
        let api = api.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let history = api.history(&id).await;
                let succeeded = history.iter().filter(|e| e["to"] == "succeeded").count();
                out.push((id, succeeded, support::history_problem(&history)));
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(part) = set.join_next().await {
        all.extend(part.expect("history task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_loses_no_acknowledged_submit_or_outcome() {
    let mut server = Server::start();
    let next = Arc::new(AtomicUsize::new(0));
    bounded(Duration::from_secs(150), async {
        // Phase 1: load, then kill -9 in the middle of it.
        let api = server.api();
        let before = Arc::new(Phase::default());
        let (submitters, workers) = start_phase(&api, &before, &next);
        let start = Instant::now();
        while before.acked_count.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(
                !submitters.iter().all(JoinHandle::is_finished),
                "the submitters stopped before {KILL_AFTER} acknowledged submits: {:?}",
                lock(&before.unexpected)
            );
            assert!(start.elapsed() < Duration::from_secs(60), "{KILL_AFTER} submits took over 60 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill9();
        let killed_at = before.acked_count.load(Ordering::SeqCst);
        before.stop.store(true, Ordering::SeqCst);
        join_all(submitters).await;
        join_all(workers).await;
        assert!(lock(&before.unexpected).is_empty(), "before the crash: {:?}", lock(&before.unexpected));
        let acked_before = lock(&before.acked).clone();
        let completed_before = lock(&before.completed).clone();
        eprintln!(
            "killed after {killed_at} acknowledged submits ({} in all), {} acknowledged completions, {} leases",
            acked_before.len(),
            completed_before.len(),
            lock(&before.leased).len()
        );
        assert!(!completed_before.is_empty(), "the workers completed nothing before the crash");

        // Right after the restart, before any worker runs: invariant 1 and 2.
        server.restart();
        let api = server.api();
        let seen = fetch_all(&api, &acked_before).await;
        let missing: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged tasks lost by the crash, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let completed_set: HashSet<&String> = completed_before.iter().collect();
        for id in &completed_set {
            let task = seen[*id].as_ref().expect("present");
            assert_eq!(task["status"], "succeeded", "an acknowledged completion was lost: {task}");
            assert_eq!(task["result"]["n"], task["input"]["n"], "{task}");
        }

        // Phase 2: the rest of the submits, and workers until all is done.
        let after = Arc::new(Phase::default());
        let (submitters, workers) = start_phase(&api, &after, &next);
        let start = Instant::now();
        loop {
            if submitters.iter().all(JoinHandle::is_finished) {
                let open = api.get("/v1/tasks?status=pending,queued,running&limit=1").await;
                assert_eq!(open.status, 200, "{open:?}");
                if open.body["tasks"].as_array().is_some_and(Vec::is_empty) {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "tasks still unfinished 90 s after the restart: {:?}",
                api.get("/v1/tasks?status=pending,queued,running&limit=5").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        after.stop.store(true, Ordering::SeqCst);
        join_all(submitters).await;
        join_all(workers).await;
        assert!(lock(&after.unexpected).is_empty(), "after the restart: {:?}", lock(&after.unexpected));

        // A task whose outcome was acknowledged before the crash never ran again.
        let rerun: Vec<_> = lock(&after.leased).iter().filter(|id| completed_set.contains(id)).cloned().collect();
        assert!(
            rerun.is_empty(),
            "{} tasks with an acknowledged outcome ran again, e.g. {:?}",
            rerun.len(),
            rerun.first()
        );
        // No task had two completions acknowledged.
        let mut acks: HashMap<&String, usize> = HashMap::new();
        let completed_after = lock(&after.completed).clone();
        for id in completed_before.iter().chain(completed_after.iter()) {
            *acks.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = acks.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "completions acknowledged twice: {twice:?}");

        // The end state: every acknowledged task is there and succeeded.
        let all = api.list_all("").await;
        let by_id: HashMap<String, &Value> = all.iter().map(|t| (id_of(t), t)).collect();
        assert_eq!(by_id.len(), all.len(), "the listing repeats a task");
        let acked_after = lock(&after.acked).clone();
        for id in acked_before.iter().chain(acked_after.iter()) {
            let task = by_id.get(id).unwrap_or_else(|| panic!("acknowledged task {id} missing at the end"));
            assert_eq!(task["status"], "succeeded", "{task}");
        }
        for task in &all {
            assert_eq!(support::task_problem(task), None, "{task}");
        }
        let not_done: Vec<_> = all.iter().filter(|t| t["status"] != "succeeded").collect();
        assert!(not_done.is_empty(), "{} tasks did not succeed, e.g. {}", not_done.len(), not_done[0]);
        // Each submitted spec was stored at most once.
        let mut numbers: Vec<u64> = all.iter().filter_map(|t| t["input"]["n"].as_u64()).collect();
        numbers.sort_unstable();
        let stored = numbers.len();
        numbers.dedup();
        assert_eq!(numbers.len(), stored, "a submit was stored twice");
        assert!(all.len() >= acked_before.len() + acked_after.len() && all.len() <= TOTAL);

        // Exactly-once state: history shows one `succeeded` per task.
        let ids: Vec<String> = all.iter().map(id_of).collect();
        for (id, succeeded, problem) in succeeded_counts(&api, &ids).await {
            assert_eq!(succeeded, 1, "task {id} reached succeeded {succeeded} times");
            assert_eq!(problem, None, "task {id}'s history: {:?}", api.history(&id).await);
        }
        let rerun = all.iter().filter(|t| t["attempt"].as_u64() > Some(1)).count();
        eprintln!(
            "{} tasks, all succeeded once ({rerun} on a later attempt), {:?} after the restart",
            all.len(),
            start.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn running_tasks_are_held_back_after_a_restart_then_requeued() {
    let mut server = Server::start();
    bounded(Duration::from_secs(40), async {
        let api = server.api();
        let a = id_of(&api.submit(json!({"name": "a", "max_attempts": 3})).await);
        let b = id_of(&api.submit(json!({"name": "b", "max_attempts": 3})).await);
        let c = id_of(&api.submit(json!({"name": "c"})).await);
        let leased = api.lease("w", 2, 0, LEASE_MS).await;
        assert_eq!(leased.len(), 2);
        let token_a = token_of(leased.iter().find(|t| id_of(t) == a).expect("a leased"));
        let token_b = token_of(leased.iter().find(|t| id_of(t) == b).expect("b leased"));

        server.kill9();
        server.restart();
        let restarted = Instant::now();
        let api = server.api();
        assert_eq!(api.status_of(&a).await, "running");
        assert_eq!(api.status_of(&b).await, "running");
        assert_eq!(api.status_of(&c).await, "queued");

        // Only the queued task is leasable while the others are held back.
        let now = api.lease("w2", 10, 0, 30_000).await;
        assert_eq!(now.iter().map(id_of).collect::<Vec<_>>(), std::slice::from_ref(&c), "held-back tasks were leased");
        // A completion with the pre-restart token still lands in time.
        let done = api.succeed("w", &a, &token_a, json!("made it")).await;
        assert_eq!(done["ok"], true, "pre-restart token within the hold-back: {done}");
        assert_eq!(api.status_of(&a).await, "succeeded");

        // `b` comes back after the hold-back, as a new attempt.
        let again = api.lease("w2", 10, 10_000, 30_000).await;
        assert_eq!(again.len(), 1, "b came back");
        assert_eq!(id_of(&again[0]), b);
        assert_eq!(again[0]["attempt"], 2);
        assert_eq!(again[0]["error"]["kind"], "lost", "{}", again[0]);
        let held = restarted.elapsed();
        assert!(held >= Duration::from_millis(1500), "held back only {held:?} for a {LEASE_MS} ms lease");
        let stale = api.succeed("w", &b, &token_b, json!("zombie")).await;
        assert_eq!(stale["ok"], false, "the pre-restart token of a re-leased task: {stale}");
        assert_eq!(api.succeed("w2", &b, &token_of(&again[0]), json!("fresh")).await["ok"], true);
        let task = api.task(&b).await;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["result"], "fresh");
        let history = support::moves(&api.history(&b).await);
        assert!(history.contains(&("running".to_owned(), "queued".to_owned())), "{history:?}");
    })
    .await;
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_state() {
    let mut server = Server::start();
    bounded(Duration::from_secs(40), async {
        let api = server.api();
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(id_of(&api.submit(json!({"name": "keep", "input": i, "priority": i % 3})).await));
        }
        let delayed = id_of(&api.submit(json!({"name": "later", "delay_ms": 60_000})).await);
        let keyed = id_of(&api.submit(json!({"name": "keyed", "idempotency_key": "once"})).await);
        ids.push(keyed.clone());
        let leased = api.lease("w", 5, 0, 30_000).await;
        let mut results = HashMap::new();
        for t in &leased {
            let id = id_of(t);
            assert_eq!(api.succeed("w", &id, &token_of(t), json!({"done": id})).await["ok"], true);
            results.insert(id.clone(), json!({"done": id}));
        }
        let cancelled = ids[ids.len() - 1].clone();
        assert_eq!(api.post(&format!("/v1/tasks/{cancelled}/cancel"), &json!({})).await.status, 200);
        let history_before: HashMap<String, Vec<Value>> = {
            let mut h = HashMap::new();
            for id in ids.iter().chain([&delayed]) {
                h.insert(id.clone(), api.history(id).await);
            }
            h
        };

        server.kill9();
        server.restart();
        let api = server.api();
        for id in ids.iter().chain([&delayed]) {
            let task = api.task(id).await;
            if let Some(result) = results.get(id) {
                assert_eq!(task["status"], "succeeded");
                assert_eq!(&task["result"], result);
            } else if *id == cancelled {
                assert_eq!(task["status"], "cancelled");
            } else if *id == delayed {
                assert_eq!(task["status"], "pending");
            } else {
                assert_eq!(task["status"], "queued");
            }
            assert_eq!(api.history(id).await, history_before[id], "history of {id} survives the restart");
        }
        assert_eq!(api.count_tasks().await, 52);
        // The idempotency key is remembered across the restart.
        let again = api.post("/v1/tasks", &json!({"name": "keyed", "idempotency_key": "once"})).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(id_of(&again.body), keyed);
        let conflict = api.post("/v1/tasks", &json!({"name": "other", "idempotency_key": "once"})).await;
        assert_eq!(conflict.status, 409, "{conflict:?}");
    })
    .await;
}

#[tokio::test]
async fn timers_run_again_after_a_restart() {
    let mut server = Server::start();
    bounded(Duration::from_secs(40), async {
        let api = server.api();
        let delayed = id_of(&api.submit(json!({"name": "delayed", "delay_ms": 1500})).await);
        let backoff = id_of(
            &api.submit(json!({
                "name": "backoff", "max_attempts": 2,
                "retry": {"backoff": "fixed", "initial_ms": 1500, "max_ms": 1500, "jitter": 0.0},
            }))
            .await,
        );
        let leased = api.lease_one("w", 30_000).await;
        assert_eq!(id_of(&leased), backoff);
        assert_eq!(api.fail("w", &backoff, &token_of(&leased), "once", true).await["ok"], true);
        assert_eq!(api.status_of(&backoff).await, "pending");

        server.kill9();
        server.restart();
        let api = server.api();
        // Both come due while the new server runs (or already were, if the
        // restart was slow) and are leased by a parked worker.
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "timers lost in the restart: got {got:?}");
            got.extend(api.lease("w", 2, 1000, 30_000).await.iter().map(|t| (id_of(t), t["attempt"].as_u64())));
        }
        got.sort();
        let mut want = vec![(delayed, Some(1)), (backoff, Some(2))];
        want.sort();
        assert_eq!(got, want);
    })
    .await;
}
