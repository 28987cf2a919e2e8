//! The SQLite schema, as versioned migrations, and connection settings.
//!
//! Invariant: the file's `user_version` is the last migration applied;
//! migrations run in order, each once, each in one transaction with the
//! version it sets; a file migrated by a newer Quern is refused rather than
//! misread (as on PostgreSQL, see `postgres/schema.rs`).
//!
//! The CHECK constraints restate the state machine's storage rules: a status
//! is one of the eight, a running task (and only a running task) holds a lease
//! token, and a task has `finished_at` exactly when it is terminal.

use crate::error::backend;
use crate::{Result, StoreError};
use rusqlite::Connection;

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives `kill -9` of the server: a commit is in the WAL (in the OS's
    /// page cache) before the answer. `synchronous = NORMAL`.
    #[default]
    Normal,
    /// Also survives power loss: each group commit is fsynced before the
    /// answer. `synchronous = FULL`.
    Strict,
}

/// Version 1: the schema every data directory had before versions were
/// counted (up to build 3e97bdc, `user_version` 0). Its statements say `IF
/// NOT EXISTS`, so on such a file they add what an older build lacked.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id               BLOB PRIMARY KEY,
    name             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    -- OR chains rather than IN lists: SQLite evaluates an IN list through an
    -- ephemeral table built for every statement, which made each write
    -- several times dearer.
    status           TEXT NOT NULL CHECK (status = 'pending' OR status = 'queued' OR status = 'running'
                       OR status = 'succeeded' OR status = 'failed' OR status = 'cancelled'
                       OR status = 'timed_out' OR status = 'skipped'),
    priority         INTEGER NOT NULL,
    input            TEXT NOT NULL,
    metadata         TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER,
    retry            TEXT NOT NULL,
    run_at           INTEGER NOT NULL,
    progress         TEXT,
    result           TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    worker           TEXT,
    workflow         BLOB,
    depends_on       TEXT,
    idempotency_key  TEXT,
    digest           TEXT NOT NULL,
    lease_token      TEXT,
    lease_ms         INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    -- 1 while the task's history is fully told by this row (the common path:
    -- submitted, maybe delayed, leased once, ended by its worker); any other
    -- transition first writes that history out as rows and sets 0.
    compact          INTEGER NOT NULL DEFAULT 1,
    -- The task's key in its workflow.
    wf_key           TEXT,
    CHECK ((status = 'running') = (lease_token IS NOT NULL)),
    CHECK ((finished_at IS NOT NULL) = (status <> 'pending' AND status <> 'queued' AND status <> 'running'))
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency_key
    ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE INDEX IF NOT EXISTS tasks_workflow ON tasks (workflow) WHERE workflow IS NOT NULL;

CREATE TABLE IF NOT EXISTS workflows (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    total      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS history (
    seq         INTEGER PRIMARY KEY,
    task        BLOB NOT NULL,
    at          INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    actor       TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX IF NOT EXISTS history_task ON history (task, seq);

-- Schedules. The scheduler finds what is due through the index on
-- next_fire_at; a slot fires by a compare-and-set on next_fire_at in the
-- transaction that inserts its task.
CREATE TABLE IF NOT EXISTS schedules (
    name          TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    timing        TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    anchor        INTEGER NOT NULL,
    next_fire_at  INTEGER,
    last_fired_at INTEGER,
    last_task     BLOB,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_fire_at) WHERE enabled = 1;

-- The event log: one row per writer batch (a segment), holding that
-- batch's events as a JSON array; offsets first_offset .. first_offset +
-- count - 1, without gaps between segments.
CREATE TABLE IF NOT EXISTS event_segments (
    first_offset INTEGER PRIMARY KEY,
    count        INTEGER NOT NULL,
    first_at     INTEGER NOT NULL,
    last_at      INTEGER NOT NULL,
    events       TEXT NOT NULL
);

-- Consumer groups' committed cursors.
CREATE TABLE IF NOT EXISTS event_groups (
    name       TEXT PRIMARY KEY,
    cursor     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Webhooks and their latest delivery attempts.
CREATE TABLE IF NOT EXISTS webhooks (
    name         TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    filter       TEXT NOT NULL,
    secret       TEXT,
    max_attempts INTEGER NOT NULL,
    paused       INTEGER NOT NULL,
    cursor       INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq         INTEGER PRIMARY KEY,
    webhook     TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries (webhook, seq);

-- Task types as workers last declared them.
CREATE TABLE IF NOT EXISTS task_types (
    name         TEXT PRIMARY KEY,
    description  TEXT,
    input_schema TEXT,
    declared_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Leases whose task rows do not say `running` yet (see writer/leases.rs):
-- one row per lease call, 32 bytes a lease (task id, then the random part
-- of its token); a restart writes them out and empties the table.
CREATE TABLE IF NOT EXISTS lease_journal (
    seq      INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    worker   TEXT NOT NULL,
    lease_ms INTEGER NOT NULL,
    leases   BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Version 2: API tokens (only the hash of each secret).
const SCHEMA_V2: &str = "
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    queues     TEXT NOT NULL,
    approve    INTEGER NOT NULL,
    shell      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
";

/// Version 3: the audit log.
const SCHEMA_V3: &str = "
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_by_at ON audit (at);
";

/// Version 4: per-token limits.
const SCHEMA_V4: &str = "
ALTER TABLE tokens ADD COLUMN rate_per_s INTEGER;
ALTER TABLE tokens ADD COLUMN max_body_bytes INTEGER;
";

/// Version 5: who (which token) made a client's move of a task.
const SCHEMA_V5: &str = "ALTER TABLE history ADD COLUMN by_token TEXT;";

/// Version 6: per-task-type defaults.
const SCHEMA_V6: &str = "ALTER TABLE task_types ADD COLUMN defaults TEXT;";

/// Version 7: the W3C trace context a task continues.
const SCHEMA_V7: &str = "ALTER TABLE tasks ADD COLUMN traceparent TEXT;";

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7];

/// The schema version this build knows.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Runs the migrations the file lacks; answers the versions applied.
pub(crate) fn migrate(conn: &Connection) -> Result<Vec<i64>> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
    if current > VERSION {
        return Err(StoreError::Backend(format!(
            "the data directory's schema is at version {current}, newer than this quern knows ({VERSION}): \
             run the quern that wrote it, or a newer one"
        )));
    }
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let tx = conn.unchecked_transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.pragma_update(None, "user_version", version).map_err(backend)?;
        tx.commit().map_err(backend)?;
        applied.push(version);
    }
    Ok(applied)
}

/// Settings for every connection; `synchronous` follows the durability.
pub(crate) fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Strict => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The writer's own settings: a larger page cache (recent pages stay hot),
/// and no automatic checkpoints (the checkpointer thread does them).
pub(crate) fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}
