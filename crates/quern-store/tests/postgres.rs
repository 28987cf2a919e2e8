//! The conformance suite against the PostgreSQL backend, on the database
//! named by `QUERN_TEST_DATABASE_URL` (`.ci/run` sets it). Each store of the
//! suite gets a schema of its own, dropped at the end, so runs never
//! collide. Without the variable the test says loudly that it skipped.

#![allow(clippy::unwrap_used)]

mod conformance;

use quern_core::Millis;
use quern_store::Store;
use quern_store::postgres::{PgOptions, PgStore};
use std::sync::{Arc, Mutex};

struct Postgres {
    opts: PgOptions,
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
}

/// The database URL, or `None` (and a loud notice) when none is set.
fn database_url() -> Option<String> {
    match std::env::var("QUERN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: QUERN_TEST_DATABASE_URL is not set; the PostgreSQL conformance suite did not run");
            None
        }
    }
}

async fn drop_schemas(url: &str, schemas: &[String]) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for s in schemas {
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let Some(url) = database_url() else { return };
    let made: Arc<Mutex<Vec<String>>> = Arc::default();
    let names = made.clone();
    let run = std::process::id();
    conformance::run_all(move || {
        let mut names = names.lock().unwrap();
        let schema = format!("quern_conf_{run}_{}", names.len());
        names.push(schema.clone());
        Postgres { opts: PgOptions { schema, ..PgOptions::new(url.clone()) } }
    })
    .await;
    let schemas = made.lock().unwrap().clone();
    drop_schemas(&std::env::var("QUERN_TEST_DATABASE_URL").unwrap(), &schemas).await;
}
