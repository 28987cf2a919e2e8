//! The conformance suite against the PostgreSQL backend, on the database
//! named by `QUERN_TEST_DATABASE_URL` (`.ci/run` sets it). Each store of the
//! suite gets a schema of its own, dropped at the end, so runs never
//! collide. Without the variable the test says loudly that it skipped.

#![allow(clippy::unwrap_used)]

mod conformance;

use quern_core::Millis;
use quern_store::Store;
use quern_store::postgres::{PgOptions, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Postgres {
    opts: PgOptions,
}

impl Postgres {
    /// A factory on a schema of its own, or `None` (and a loud notice) when
    /// no database is named.
    fn new() -> Option<Self> {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let url = database_url()?;
        let schema = format!("quern_conf_{}_{}", std::process::id(), MADE.fetch_add(1, Ordering::SeqCst));
        Some(Postgres { opts: PgOptions { schema, ..PgOptions::new(url) } })
    }
}

impl conformance::Factory for Postgres {
    fn open(&mut self, now: Millis) -> Arc<dyn Store> {
        let opts = self.opts.clone();
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move { PgStore::open(&opts, now).await })
        });
        Arc::new(store.unwrap())
    }

    fn reopen(&mut self, now: Millis) -> Arc<dyn Store> {
        self.open(now)
    }

    fn done(self) {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(drop_schemas(&self.opts.url, std::slice::from_ref(&self.opts.schema)));
        });
    }
}

/// The database URL, or `None` (and a loud notice) when none is set.
fn database_url() -> Option<String> {
    match std::env::var("QUERN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the process's stderr: libtest captures eprintln!.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: QUERN_TEST_DATABASE_URL is not set; the PostgreSQL store tests did not run"
            );
            None
        }
    }
}

async fn drop_schemas(url: &str, schemas: &[String]) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for s in schemas {
        // A node still numbering events may deadlock with the drop: again.
        let mut tries = 0;
        while let Err(e) = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")).await {
            tries += 1;
            assert!(tries < 5, "cannot drop schema {s}: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The suite, each behaviour on a schema of its own, dropped when it passed.
mod conforms {
    use super::*;
    conformance::suite!(match Postgres::new() {
        Some(factory) => factory,
        None => return,
    });
}

/// Several stores on one schema, as several server nodes would be.
async fn nodes(url: &str, schema: &str, n: usize) -> Vec<Arc<PgStore>> {
    let opts = PgOptions { schema: schema.to_owned(), ..PgOptions::new(url) };
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(PgStore::open(&opts, quern_core::Clock::now(&quern_core::SystemClock)).await.unwrap()));
    }
    out
}

/// A success for each of `leased`, with its lease token.
fn successes(leased: &[quern_core::Task]) -> Vec<quern_store::Completion> {
    leased
        .iter()
        .map(|t| quern_store::Completion {
            task: t.id,
            token: t.lease.as_ref().unwrap().token.clone(),
            outcome: quern_core::Outcome::Succeeded {
                result: serde_json::value::RawValue::from_string("1".into()).unwrap(),
            },
        })
        .collect()
}

/// A lease of up to `max` tasks of the default queue by `worker`, for 30 s.
fn lease_params(worker: impl Into<String>, max: usize) -> quern_store::LeaseParams {
    quern_store::LeaseParams {
        worker: worker.into(),
        queues: vec!["default".into()],
        names: None,
        max,
        lease_ms: 30_000,
        now: now(),
    }
}

fn now() -> Millis {
    quern_core::Clock::now(&quern_core::SystemClock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_leasing_at_once_never_share_a_task() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_lease_{}", std::process::id());
    let stores = nodes(&url, &schema, 3).await;
    let spec = |i: usize| {
        let s: quern_core::TaskSpec = serde_json::from_str(&format!(r#"{{"name":"n","input":{{"i":{i}}}}}"#)).unwrap();
        s.validate(&quern_core::ExecutionDefaults::default(), uuid::Uuid::now_v7(), now()).unwrap()
    };
    let total = 2_000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        stores[0].submit(chunk.iter().map(|i| spec(*i)).collect()).await.unwrap();
    }
    let mut leasers = Vec::new();
    for w in 0..6 {
        let store = stores[w % 3].clone();
        leasers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let params = lease_params(format!("w{w}"), 50);
                let leased = store.lease(params).await.unwrap();
                if leased.is_empty() {
                    return mine;
                }
                let results = successes(&leased);
                let done = store
                    .complete(quern_store::CompleteParams { worker: format!("w{w}"), results, now: now() })
                    .await
                    .unwrap();
                assert!(done.iter().all(|d| d.ok), "every completion of a live lease counts");
                mine.extend(leased.iter().map(|t| t.id));
            }
        }));
    }
    let mut all = Vec::new();
    for l in leasers {
        all.extend(l.await.unwrap());
    }
    let leased = all.len();
    all.sort();
    all.dedup();
    assert_eq!((leased, all.len()), (total, total), "each task leased exactly once across the nodes");
    drop(stores);
    drop_schemas(&url, &[schema]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_skips_an_offset_that_commits_late() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_offsets_{}", std::process::id());
    let stores = nodes(&url, &schema, 4).await;
    let (writers, each) = (4, 150);
    let mut jobs = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        jobs.push(tokio::spawn(async move {
            for i in 0..each {
                let e = quern_core::NewEvent {
                    kind: "t.e".into(),
                    source: format!("w{w}"),
                    target: None,
                    payload: format!("{{\"i\":{i}}}"),
                };
                store.publish(vec![e], now()).await.unwrap();
            }
        }));
    }
    // Read while they write: every offset seen, in order, none skipped.
    let seen = read_offsets(&stores[0], writers * each).await;
    for j in jobs {
        j.await.unwrap();
    }
    let expected: Vec<u64> = (1..=(writers * each) as u64).collect();
    assert_eq!(seen, expected, "offsets are dense and read in order");
    drop(stores);
    drop_schemas(&url, &[schema]).await;
}

/// A task spec `name` with input `{"i": i}`, ready to submit.
fn spec(name: &str, i: usize) -> quern_core::NewTask {
    let s: quern_core::TaskSpec = serde_json::from_str(&format!(r#"{{"name":"{name}","input":{{"i":{i}}}}}"#)).unwrap();
    s.validate(&quern_core::ExecutionDefaults::default(), uuid::Uuid::now_v7(), now()).unwrap()
}

/// Reads from offset 0 until `count` events are seen (or a minute passed);
/// answers their offsets in the order read.
async fn read_offsets(reader: &PgStore, count: usize) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut after = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < count {
        assert!(std::time::Instant::now() < deadline, "the reader saw only {} events", seen.len());
        let page = reader
            .read_events(quern_store::EventQuery { after: Some(after), filter: Default::default(), limit: 1000 })
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.offset));
        after = page.next_after;
        if page.events.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_commit_side_by_side_and_readers_still_see_offsets_in_order() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_sequenced_{}", std::process::id());
    let stores = nodes(&url, &schema, 4).await;
    let (writers, each) = (16, 40);
    let mut jobs = Vec::new();
    for w in 0..writers {
        let store = stores[w % stores.len()].clone();
        jobs.push(tokio::spawn(async move {
            for i in 0..each {
                store.submit(vec![spec("n", w * each + i)]).await.unwrap();
            }
        }));
    }
    // Read through another node while they write: every offset, in order,
    // none skipped, though the writers' commits interleave freely.
    let seen = read_offsets(&stores[1], writers * each).await;
    for j in jobs {
        j.await.unwrap();
    }
    let expected: Vec<u64> = (1..=(writers * each) as u64).collect();
    assert_eq!(seen, expected, "offsets are dense and read in order");
    // A read on the node that wrote sees its own writes at once.
    let last = stores[2].submit(vec![spec("n", 0)]).await.unwrap();
    let page = stores[2]
        .read_events(quern_store::EventQuery {
            after: Some(expected.len() as u64),
            filter: Default::default(),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1, "the writer's own event is readable when its submit answers: {last:?}");
    drop(stores);
    drop_schemas(&url, &[schema]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_a_stopped_node_left_unnumbered_are_numbered_by_another() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_orphans_{}", std::process::id());
    let stores = nodes(&url, &schema, 1).await;
    stores[0].submit(vec![spec("n", 1)]).await.unwrap();
    assert_eq!(read_offsets(&stores[0], 1).await, vec![1]);
    // What a node leaves when it stops between its commit and its pass: a
    // committed segment with a pending key, that no live node was told of.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let text: String = client
        .query_one(&format!("SELECT events FROM {schema}.event_segments WHERE first_offset = 1"), &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.event_segments (first_offset, count, first_at, last_at, events) \
                 SELECT -nextval('{schema}.event_pending_keys'), count, first_at, last_at, $1 \
                 FROM {schema}.event_segments WHERE first_offset = 1"
            ),
            &[&text],
        )
        .await
        .unwrap();
    assert_eq!(read_offsets(&stores[0], 2).await, vec![1, 2], "the sweep numbers the orphan");
    drop(stores);
    drop_schemas(&url, &[schema]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_merged_into_shared_transactions_each_get_their_own_answers() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_merged_{}", std::process::id());
    let stores = nodes(&url, &schema, 1).await;
    let store = stores[0].clone();
    // Single submits at once: they share transactions, each gets its task.
    let mut submits = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        submits.push(tokio::spawn(async move { store.submit(vec![spec("n", i)]).await.unwrap() }));
    }
    for s in submits {
        let out = s.await.unwrap();
        assert_eq!((out.len(), out[0].created), (1, true));
    }
    // Twelve workers leasing two each at once: merged leases, each task
    // given to the worker that asked, none twice.
    let mut leasers = Vec::new();
    for w in 0..12 {
        let store = store.clone();
        leasers.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            while mine.len() < 2 {
                let params = lease_params(worker.as_str(), 2 - mine.len());
                mine.extend(store.lease(params).await.unwrap());
            }
            (worker, mine)
        }));
    }
    let mut all = Vec::new();
    for l in leasers {
        let (worker, mine) = l.await.unwrap();
        for t in &mine {
            assert_eq!(t.worker.as_deref(), Some(worker.as_str()), "the task names its worker");
            assert_eq!(store.get(t.id).await.unwrap().worker.as_deref(), Some(worker.as_str()));
        }
        // Their completions, merged too: each counts for its own task.
        let results = successes(&mine);
        let done = store.complete(quern_store::CompleteParams { worker, results, now: now() }).await.unwrap();
        assert_eq!(
            done.iter().map(|d| (d.task, d.ok)).collect::<Vec<_>>(),
            mine.iter().map(|t| (t.id, true)).collect::<Vec<_>>()
        );
        all.extend(mine.iter().map(|t| t.id));
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 24, "every task leased once");
    drop(stores);
    drop_schemas(&url, &[schema]).await;
}

/// The counts of the default queue, by status name.
async fn default_counts(store: &PgStore) -> std::collections::BTreeMap<&'static str, u64> {
    let queues = store.queues().await.unwrap();
    let q = queues.into_iter().find(|q| q.name == "default").unwrap();
    q.counts.into_iter().filter(|(_, n)| *n > 0).map(|(s, n)| (s.as_str(), n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_survive_folds_on_two_nodes_and_a_migration_from_before_them() {
    let Some(url) = database_url() else { return };
    let schema = format!("quern_counts_{}", std::process::id());
    let stores = nodes(&url, &schema, 2).await;
    let spec = || {
        let s: quern_core::TaskSpec = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
        s.validate(&quern_core::ExecutionDefaults::default(), uuid::Uuid::now_v7(), now()).unwrap()
    };
    stores[0].submit((0..30).map(|_| spec()).collect()).await.unwrap();
    let params = lease_params("w", 10);
    let leased = stores[1].lease(params).await.unwrap();
    let results = successes(&leased);
    stores[1].complete(quern_store::CompleteParams { worker: "w".into(), results, now: now() }).await.unwrap();
    let expected = std::collections::BTreeMap::from([("queued", 20), ("succeeded", 10)]);
    assert_eq!(default_counts(&stores[0]).await, expected, "from the deltas alone");
    // Both nodes fold at once: each delta lands in the totals once.
    let (a, b) = tokio::join!(stores[0].fold_counts(), stores[1].fold_counts());
    a.unwrap();
    b.unwrap();
    assert_eq!(default_counts(&stores[1]).await, expected, "from the totals");
    stores[0].submit((0..5).map(|_| spec()).collect()).await.unwrap();
    let expected = std::collections::BTreeMap::from([("queued", 25), ("succeeded", 10)]);
    assert_eq!(default_counts(&stores[0]).await, expected, "totals and new deltas");
    // A schema from before the counts (at version 5): migration 6 counts
    // what is there.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE {schema}.queue_counts, {schema}.queue_count_deltas, {schema}.tokens, {schema}.audit; \
             ALTER TABLE {schema}.history DROP COLUMN by_token; \
             ALTER TABLE {schema}.workers DROP COLUMN leases; \
             ALTER TABLE {schema}.task_types DROP COLUMN defaults; \
             ALTER TABLE {schema}.tasks DROP COLUMN awaited; \
             DROP SEQUENCE {schema}.event_pending_keys; \
             ALTER TABLE {schema}.tasks DROP COLUMN traceparent; \
             DELETE FROM {schema}.quern_migrations WHERE version >= 6"
        ))
        .await
        .unwrap();
    drop(stores);
    let reopened = nodes(&url, &schema, 1).await;
    assert_eq!(default_counts(&reopened[0]).await, expected, "counted once by the migration");
    drop(reopened);
    drop_schemas(&url, &[schema]).await;
}

/// Whether the connections named `app` are encrypted, by the database's own
/// account (`pg_stat_ssl`).
async fn encrypted(url: &str, app: &str) -> Vec<bool> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgresql_as_the_url_asks() {
    let Some(url) = database_url() else { return };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: this PostgreSQL does not serve TLS (ssl = {ssl})");
        return;
    }
    let cert_file: String = client.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = format!("quern_tls_{}", std::process::id());
    let open = |query: String| {
        let opts = PgOptions { schema: schema.clone(), ..PgOptions::new(format!("{url}{sep}{query}")) };
        async move { PgStore::open(&opts, 0).await }
    };

    let plain = open("application_name=quern-tls-plain".into()).await.unwrap();
    plain.ready().await.unwrap();
    assert_eq!(encrypted(&url, "quern-tls-plain").await.first(), Some(&false), "plain unless asked");
    let required = open("application_name=quern-tls-require&sslmode=require".into()).await.unwrap();
    required.ready().await.unwrap();
    let seen = encrypted(&url, "quern-tls-require").await;
    assert!(!seen.is_empty() && seen.iter().all(|s| *s), "sslmode=require encrypts every connection: {seen:?}");

    if std::fs::metadata(&cert_file).is_ok() {
        // The server's own certificate (self-signed) as the root: the chain
        // checks out, whatever name it was issued for.
        let verified = open(format!("application_name=quern-tls-ca&sslmode=verify-ca&sslrootcert={cert_file}")).await;
        assert!(verified.is_ok(), "verify-ca with the server's CA: {:?}", verified.err());
    }
    // A CA that signed nothing of the server's: refused, in both modes.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let refused = open(format!("sslmode={mode}&sslrootcert={}", other.display())).await;
        assert!(refused.is_err(), "{mode} with a CA that did not sign the server's certificate");
    }
    assert!(open("sslmode=sometimes".into()).await.is_err());
    drop((plain, required));
    drop_schemas(&url, &[schema]).await;
}
