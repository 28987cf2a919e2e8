//! The conformance suite against the embedded SQLite backend, on real files.

#![allow(clippy::unwrap_used)]

mod conformance;

use conformance::{T0, complete, lease, ok, spec, submit_one, token};
use quern_core::{Millis, Status};
use quern_store::Store;
use quern_store::sqlite::{DB_FILE, Durability, SqliteOptions, SqliteStore};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Sqlite {
    dir: tempfile::TempDir,
    durability: Durability,
}

impl conformance::Factory for Sqlite {
    fn open(&mut self, now: Millis) -> Arc<dyn Store> {
        let opts = SqliteOptions { dir: self.dir.path().to_owned(), durability: self.durability };
        Arc::new(SqliteStore::open(&opts, now).unwrap())
    }

    fn reopen(&mut self, now: Millis) -> Arc<dyn Store> {
        self.open(now)
    }
}

/// The suite at the default durability.
mod conforms {
    use super::*;
    conformance::suite!(Sqlite { dir: tempfile::tempdir().unwrap(), durability: Durability::Normal });
}

/// The suite with every group commit fsynced.
mod conforms_strict {
    use super::*;
    conformance::suite!(Sqlite { dir: tempfile::tempdir().unwrap(), durability: Durability::Strict });
}

/// A task's status and lease token as its row in the file says, and how
/// many journal rows there are: read on a connection of its own, past the
/// store's readers (which would have the writer settle leases first).
fn row_in_file(dir: &Path, id: Uuid) -> (String, Option<String>, i64) {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row(
        "SELECT status, lease_token, (SELECT count(*) FROM lease_journal) FROM tasks WHERE id = ?1",
        [id.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// A fresh store in a directory of its own, with one task `a` submitted
/// and leased (at T0 + 1, for 30 s) and that lease.
async fn one_lease() -> (tempfile::TempDir, SqliteStore, Uuid, Vec<quern_core::Task>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions { dir: dir.path().to_owned(), durability: Durability::Normal };
    let s = SqliteStore::open(&opts, T0).unwrap();
    let a = submit_one(&s, r#"{"name":"a"}"#).await;
    let leased = s.lease(lease(1, 30_000, T0 + 1)).await.unwrap();
    (dir, s, a, leased)
}

/// A lease whose task is still running after the write delay gets its row
/// written without any reader asking (wall time: the delay is 50 ms; the
/// wait here is bounded at 5 s).
#[tokio::test]
async fn a_lease_still_running_is_written_to_its_row() {
    let (dir, _store, a, leased) = one_lease().await;
    let expected = ("running".to_owned(), Some(token(&leased[0])), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while row_in_file(dir.path(), a) != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(row_in_file(dir.path(), a), expected, "the row shows the lease and the journal is empty");
}

/// A write batch that fails (here: a trigger planted by another connection
/// refuses one insert) is rolled back and the writer's memory reloaded from
/// the file; leases answered before it, still only in the journal, come
/// back as running with their tokens, and the store goes on working.
#[tokio::test]
async fn a_failed_batch_keeps_the_leases_before_it() {
    let (dir, s, a, leased) = one_lease().await;
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON tasks WHEN NEW.name = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
    assert!(s.submit(vec![spec(r#"{"name":"poison"}"#)]).await.is_err(), "the poisoned batch fails");
    other.execute_batch("DROP TRIGGER poison").unwrap();
    assert!(s.lease(lease(10, 30_000, T0 + 2)).await.unwrap().is_empty(), "the lease is still held");
    let held = s.get(a).await.unwrap();
    assert_eq!((held.status, held.attempt, held.started_at), (Status::Running, 1, Some(T0 + 1)));
    assert!(complete(&s, a, &token(&leased[0]), ok("1"), T0 + 3).await, "its token still completes");
    assert_eq!(s.get(a).await.unwrap().status, Status::Succeeded);
    let b = submit_one(&s, r#"{"name":"b"}"#).await;
    assert_eq!(s.lease(lease(10, 30_000, T0 + 4)).await.unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), [b]);
}
