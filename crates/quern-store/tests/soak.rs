//! A seeded soak test: random operations against the real SQLite backend
//! and, when `QUERN_TEST_DATABASE_URL` names a database, the real PostgreSQL
//! one, checking after every step the invariants a model of the state
//! machine demands. Replay a failure with `QUERN_SOAK_SEED=<seed> cargo test
//! -p quern-store --test soak`; `QUERN_SOAK_STEPS` makes it longer.
//!
//! Checked: terminal statuses never change (but by a manual retry); every
//! history walks the transition table and ends at the task's status; queue
//! counts equal the tasks' statuses; a reopened store (a restart) loses
//! nothing; and in the end every task finishes — nothing is ever stuck.

#![allow(clippy::unwrap_used)]

use quern_core::{ErrorKind, ExecutionDefaults, Millis, Outcome, Status, Task, TaskError, TaskSpec};
use quern_store::postgres::{PgOptions, PgStore};
use quern_store::sqlite::{Durability, SqliteOptions, SqliteStore};
use quern_store::{CompleteParams, Completion, HeartbeatLease, HeartbeatParams, LeaseParams, ListQuery, Store};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(usize::try_from(self.below(items.len() as u64)).unwrap()) }
    }
}

/// Where the soak's store lives; opened again for a restart.
enum Backend {
    /// The data directory, and the store open on it: closed before the
    /// next opens, as a process's end releases the directory's lock.
    Sqlite(tempfile::TempDir, std::sync::Mutex<Option<Arc<SqliteStore>>>),
    Postgres(PgOptions),
}

impl Backend {
    async fn open(&self, now: Millis) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(dir, open) => {
                let mut open = open.lock().unwrap();
                if let Some(previous) = open.take() {
                    previous.close();
                }
                let opts = SqliteOptions { dir: dir.path().to_owned(), durability: Durability::Normal };
                let store = Arc::new(SqliteStore::open(&opts, now).unwrap());
                *open = Some(store.clone());
                store
            }
            Backend::Postgres(opts) => Arc::new(PgStore::open(opts, now).await.unwrap()),
        }
    }
}

struct Soak {
    backend: Backend,
    store: Arc<dyn Store>,
    now: Millis,
    rng: Rng,
    ids: Vec<Uuid>,
    /// Leases handed out: task → tokens, newest last.
    tokens: HashMap<Uuid, Vec<String>>,
    /// The status each task last ended in, if it did.
    ended: HashMap<Uuid, Status>,
}

impl Soak {
    async fn step(&mut self) {
        match self.rng.below(100) {
            0..=19 => self.submit().await,
            20..=39 => self.lease().await,
            40..=59 => self.complete().await,
            60..=64 => self.heartbeat().await,
            65..=69 => {
                if let Some(&id) = self.rng.pick(&self.ids) {
                    let _ = self.store.cancel(id, self.now, None).await;
                }
            }
            70..=72 => {
                if let Some(&id) = self.rng.pick(&self.ids)
                    && self.store.retry(id, self.now, None).await.is_ok()
                {
                    self.ended.remove(&id);
                }
            }
            73 => {
                self.store = self.backend.open(self.now).await;
            }
            _ => {
                self.now += i64::try_from(self.rng.below(400)).unwrap();
                self.store.tick(self.now).await.unwrap();
            }
        }
    }

    async fn submit(&mut self) {
        let n = 1 + self.rng.below(5);
        let mut specs = Vec::new();
        for _ in 0..n {
            let mut s = TaskSpec::named(format!("job{}", self.rng.below(3)));
            s.priority = i32::try_from(self.rng.below(3)).unwrap();
            s.max_attempts = Some(1 + u32::try_from(self.rng.below(3)).unwrap());
            s.retry = Some(quern_core::RetryPolicy { initial_ms: 50, max_ms: 200, ..Default::default() });
            if self.rng.below(4) == 0 {
                s.delay_ms = Some(self.rng.below(500));
            }
            if self.rng.below(4) == 0 {
                s.timeout_ms = Some(200 + self.rng.below(800));
            }
            let q = if self.rng.below(2) == 0 { "a" } else { "b" };
            s.queue = Some(q.into());
            specs.push(s.validate(&ExecutionDefaults::default(), Uuid::now_v7(), self.now).unwrap());
        }
        for s in self.store.submit(specs).await.unwrap() {
            self.ids.push(s.task.id);
        }
    }

    async fn lease(&mut self) {
        let params = LeaseParams {
            worker: format!("w{}", self.rng.below(3)),
            queues: vec!["a".into(), "b".into()],
            names: None,
            max: usize::try_from(1 + self.rng.below(8)).unwrap(),
            lease_ms: 1_000,
            now: self.now,
        };
        for t in self.store.lease(params).await.unwrap() {
            assert_eq!(t.status, Status::Running);
            self.tokens.entry(t.id).or_default().push(t.lease.unwrap().token);
        }
    }

    fn any_token(&mut self) -> Option<(Uuid, String)> {
        let keys: Vec<Uuid> = self.tokens.keys().copied().collect();
        let id = *self.rng.pick(&keys)?;
        let tokens = &self.tokens[&id];
        // Mostly the newest token; sometimes a stale one.
        let i = if self.rng.below(5) == 0 { self.rng.below(tokens.len() as u64) } else { tokens.len() as u64 - 1 };
        Some((id, tokens[usize::try_from(i).unwrap()].clone()))
    }

    async fn complete(&mut self) {
        let Some((id, token)) = self.any_token() else { return };
        let outcome = match self.rng.below(3) {
            0 => Outcome::Succeeded { result: RawValue::from_string("1".into()).unwrap() },
            1 => Outcome::Failed { error: TaskError::new(ErrorKind::Exception, "x"), retry: true },
            _ => Outcome::Failed { error: TaskError::new(ErrorKind::Rejected, "y"), retry: false },
        };
        let before = self.store.get(id).await.unwrap();
        let answer = self
            .store
            .complete(CompleteParams {
                worker: "w".into(),
                results: vec![Completion { task: id, token, outcome }],
                now: self.now,
            })
            .await
            .unwrap();
        if !answer[0].ok {
            let after = self.store.get(id).await.unwrap();
            assert_eq!(
                (before.status, before.attempt),
                (after.status, after.attempt),
                "a refused completion changed {id}"
            );
        }
    }

    async fn heartbeat(&mut self) {
        let Some((id, token)) = self.any_token() else { return };
        self.store
            .heartbeat(HeartbeatParams {
                worker: "w".into(),
                leases: vec![HeartbeatLease { task: id, token, progress: None }],
                now: self.now,
            })
            .await
            .unwrap();
    }

    async fn all_tasks(&self) -> Vec<Task> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.store.list(ListQuery { limit: 1000, cursor, ..Default::default() }).await.unwrap();
            out.extend(page.tasks);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    async fn check(&mut self, seed: u64, step: usize) {
        let tasks = self.all_tasks().await;
        assert_eq!(tasks.len(), self.ids.len(), "seed {seed} step {step}: tasks lost");
        let mut counts: BTreeMap<(String, Status), u64> = BTreeMap::new();
        for t in &tasks {
            *counts.entry((t.queue.clone(), t.status)).or_default() += 1;
            if let Some(prev) = self.ended.get(&t.id) {
                assert_eq!(*prev, t.status, "seed {seed} step {step}: terminal task {} changed", t.id);
            }
            if t.status.is_terminal() {
                self.ended.insert(t.id, t.status);
            }
            let h = self.store.history(t.id).await.unwrap();
            assert_eq!(h[0].from, None);
            for pair in h.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert_eq!(b.from, Some(a.to), "seed {seed} step {step}: history of {} skips", t.id);
                let from = a.to;
                assert!(
                    from.can_move(b.to) || (from.can_manual_retry() && b.to == Status::Queued),
                    "seed {seed} step {step}: {} moved {from} -> {}",
                    t.id,
                    b.to
                );
            }
            assert_eq!(
                h.last().map(|e| e.to),
                Some(t.status),
                "seed {seed} step {step}: history of {} ends elsewhere",
                t.id
            );
        }
        let mut reported: BTreeMap<(String, Status), u64> = BTreeMap::new();
        for q in self.store.queues().await.unwrap() {
            for (s, n) in q.counts {
                reported.insert((q.name.clone(), s), n);
            }
        }
        assert_eq!(reported, counts, "seed {seed} step {step}: queue counts drifted");
    }

    /// Runs every task to its end: time passes, everything leased completes.
    async fn drain(&mut self, seed: u64) {
        for round in 0..200 {
            self.now += 1_000;
            self.store.tick(self.now).await.unwrap();
            let leased = self
                .store
                .lease(LeaseParams {
                    worker: "drain".into(),
                    queues: vec!["a".into(), "b".into()],
                    names: None,
                    max: 1000,
                    lease_ms: 1_000,
                    now: self.now,
                })
                .await
                .unwrap();
            let results = leased
                .iter()
                .map(|t| Completion {
                    task: t.id,
                    token: t.lease.clone().unwrap().token,
                    outcome: Outcome::Succeeded { result: RawValue::from_string("0".into()).unwrap() },
                })
                .collect();
            self.store.complete(CompleteParams { worker: "drain".into(), results, now: self.now }).await.unwrap();
            let tasks = self.all_tasks().await;
            if tasks.iter().all(|t| t.status.is_terminal()) {
                return;
            }
            assert!(
                round < 199,
                "seed {seed}: tasks stuck: {:?}",
                tasks.iter().filter(|t| !t.status.is_terminal()).map(|t| (t.id, t.status)).collect::<Vec<_>>()
            );
        }
    }
}

/// The seeds to run, and the steps of each.
fn seeds_and_steps() -> (Vec<u64>, usize) {
    let seeds: Vec<u64> = match std::env::var("QUERN_SOAK_SEED") {
        Ok(s) => vec![s.parse().expect("QUERN_SOAK_SEED is a number")],
        Err(_) => vec![1, 2, 3, 0x5EED],
    };
    let steps: usize = std::env::var("QUERN_SOAK_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    (seeds, steps)
}

async fn soak(seed: u64, steps: usize, backend: Backend) {
    let now = 1_800_000_000_000;
    let store = backend.open(now).await;
    let mut soak = Soak {
        backend,
        store,
        now,
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        ids: Vec::new(),
        tokens: HashMap::new(),
        ended: HashMap::new(),
    };
    for step in 0..steps {
        soak.step().await;
        if step % 20 == 19 {
            soak.check(seed, step).await;
        }
    }
    soak.check(seed, steps).await;
    soak.drain(seed).await;
    soak.check(seed, steps + 1).await;
}

#[tokio::test]
async fn random_operations_keep_every_invariant() {
    let (seeds, steps) = seeds_and_steps();
    for seed in seeds {
        soak(seed, steps, Backend::Sqlite(tempfile::tempdir().unwrap(), std::sync::Mutex::default())).await;
    }
}

#[tokio::test]
async fn random_operations_keep_every_invariant_on_postgres() {
    let url = match std::env::var("QUERN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: QUERN_TEST_DATABASE_URL is not set; the PostgreSQL soak did not run"
            );
            return;
        }
    };
    let (seeds, steps) = seeds_and_steps();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for seed in seeds {
        let schema = format!("quern_soak_{}_{seed}", std::process::id());
        soak(seed, steps, Backend::Postgres(PgOptions { schema: schema.clone(), ..PgOptions::new(url.clone()) })).await;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    }
}
