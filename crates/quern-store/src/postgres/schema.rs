//! The PostgreSQL schema, as versioned migrations.
//!
//! Invariant: migrations run in order, each once, in one transaction under
//! an advisory lock, so that several nodes starting together neither race
//! nor half-apply one; a database migrated by a newer Quern is refused
//! rather than misread. The CHECK constraints restate the state machine's
//! storage rules, as in the SQLite schema.
//!
//! How it differs from the SQLite schema: leases live in the table
//! (`lease_token`, `expires_at`, `timeout_at`), not in a writer's memory,
//! because any node may lease or expire them; a workflow's edges are rows
//! (`edges`) and each waiting task counts its unjudged ones (`unmet`); a
//! queued approval carries its deadline (`approval_due`); the event log's
//! next offset is one row (`event_head`) whose lock orders whoever hands
//! out offsets (the nodes' sequencers, `publish`), and a segment waiting for
//! its offsets has a negative key.

use crate::error::backend;
use crate::{Result, StoreError};
use deadpool_postgres::Object;

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    queue            text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed',
                                                    'cancelled', 'timed_out', 'skipped')),
    priority         integer NOT NULL,
    input            text NOT NULL,
    metadata         jsonb,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    timeout_ms       bigint,
    retry            text NOT NULL,
    run_at           bigint NOT NULL,
    progress         text,
    result           text,
    error            text,
    created_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    updated_at       bigint NOT NULL,
    worker           text,
    workflow         uuid,
    depends_on       text,
    idempotency_key  text COLLATE "C",
    digest           text NOT NULL,
    lease_token      text,
    lease_ms         bigint,
    expires_at       bigint,
    timeout_at       bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    compact          boolean NOT NULL DEFAULT true,
    wf_key           text,
    unmet            integer NOT NULL DEFAULT 0,
    approval_due     bigint,
    CHECK ((status = 'running') = (lease_token IS NOT NULL)),
    CHECK ((status = 'running') = (expires_at IS NOT NULL)),
    CHECK ((finished_at IS NOT NULL) = (status NOT IN ('pending', 'queued', 'running')))
);
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_workflow ON tasks (workflow) WHERE workflow IS NOT NULL;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, run_at, id) WHERE status = 'queued' AND name <> 'approval';
CREATE INDEX tasks_delayed ON tasks (run_at) WHERE status = 'pending' AND unmet = 0;
CREATE INDEX tasks_lease_ends ON tasks (expires_at) WHERE status = 'running';
CREATE INDEX tasks_timeouts ON tasks (timeout_at) WHERE status = 'running' AND timeout_at IS NOT NULL;
CREATE INDEX tasks_approvals ON tasks (approval_due) WHERE approval_due IS NOT NULL;

CREATE TABLE workflows (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    created_at bigint NOT NULL,
    total      integer NOT NULL,
    open       integer NOT NULL
);

-- A workflow's edges, by parent: each is judged (and deleted) once, when
-- its parent ends.
CREATE TABLE edges (
    parent uuid NOT NULL,
    child  uuid NOT NULL,
    cond   text NOT NULL
);
CREATE INDEX edges_parent ON edges (parent);

CREATE TABLE history (
    seq         bigserial PRIMARY KEY,
    task        uuid NOT NULL,
    at          bigint NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    attempt     integer NOT NULL,
    worker      text,
    actor       text NOT NULL,
    note        text
);
CREATE INDEX history_task ON history (task, seq);

CREATE TABLE queues (
    name   text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);

CREATE TABLE schedules (
    name          text COLLATE "C" PRIMARY KEY,
    spec          text NOT NULL,
    timing        text NOT NULL,
    enabled       boolean NOT NULL,
    anchor        bigint NOT NULL,
    next_fire_at  bigint,
    last_fired_at bigint,
    last_task     uuid,
    version       bigint NOT NULL,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

-- The event log: one segment row per transaction, as in SQLite. The one
-- row of event_head holds the next offset; a transaction takes its offsets
-- by updating it just before it commits, and holds its lock until then, so
-- offsets become visible in order (see docs/deployment.md).
CREATE TABLE event_segments (
    first_offset bigint PRIMARY KEY,
    count        integer NOT NULL,
    first_at     bigint NOT NULL,
    last_at      bigint NOT NULL,
    events       text NOT NULL
);
CREATE TABLE event_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    next bigint NOT NULL
);
INSERT INTO event_head (next) VALUES (1);

CREATE TABLE event_groups (
    name       text PRIMARY KEY,
    cursor     bigint NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE webhooks (
    name         text COLLATE "C" PRIMARY KEY,
    url          text NOT NULL,
    filter       text NOT NULL,
    secret       text,
    max_attempts integer NOT NULL,
    paused       boolean NOT NULL,
    cursor       bigint NOT NULL,
    failures     integer NOT NULL,
    last_error   text,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq         bigserial PRIMARY KEY,
    webhook     text NOT NULL,
    "offset"    bigint NOT NULL,
    attempt     integer NOT NULL,
    at          bigint NOT NULL,
    status      integer,
    error       text,
    duration_ms bigint NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, seq);

-- Which node runs a service that must run on one node at a time.
CREATE TABLE leaders (
    role  text PRIMARY KEY,
    node  text NOT NULL,
    until bigint NOT NULL
);
"#,
    r#"
-- Task types as workers last declared them, so that every node checks
-- inputs against the schemas declared through any node.
CREATE TABLE task_types (
    name         text PRIMARY KEY,
    description  text,
    input_schema text,
    declared_at  bigint NOT NULL
);
"#,
    // A segment holds a transaction's events (tens of kilobytes for a batch),
    // which PostgreSQL compresses when it stores it: lz4 costs a fraction of
    // the default pglz's CPU. A server built without lz4 keeps pglz.
    r#"
DO $$ BEGIN
    ALTER TABLE event_segments ALTER COLUMN events SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error THEN NULL;
END $$;
"#,
    // Workers as the nodes last heard from them, so that every node lists
    // all of them; `queues` and `task_types` are JSON arrays.
    r#"
CREATE TABLE workers (
    id         text PRIMARY KEY,
    queues     text NOT NULL,
    task_types text NOT NULL,
    in_flight  bigint NOT NULL,
    last_seen  bigint NOT NULL
);
"#,
    // Consumer groups' delivery state (read position, handed-out events),
    // replaced by version, so that nodes serving one group hand each event
    // to one member.
    r#"
CREATE TABLE group_states (
    name    text PRIMARY KEY,
    version bigint NOT NULL,
    state   text NOT NULL
);
"#,
    // Tasks by queue and status without a scan of `tasks`: each commit adds
    // one delta row per (queue, status) it changed, and the nodes fold the
    // deltas into the totals now and then.
    r#"
CREATE TABLE queue_counts (
    queue  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (queue, status)
);
CREATE TABLE queue_count_deltas (
    queue  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL
);
INSERT INTO queue_counts (queue, status, n) SELECT queue, status, count(*) FROM tasks GROUP BY queue, status;
"#,
    // API tokens (only the hash of each secret).
    r#"
CREATE TABLE tokens (
    name       text PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    role       text NOT NULL,
    queues     text NOT NULL,
    approve    boolean NOT NULL,
    shell      boolean NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint
);
"#,
    // The audit log.
    r#"
CREATE TABLE audit (
    seq    bigserial PRIMARY KEY,
    at     bigint NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail text
);
CREATE INDEX audit_by_at ON audit (at);
"#,
    // Per-token limits.
    r#"
ALTER TABLE tokens ADD COLUMN rate_per_s integer;
ALTER TABLE tokens ADD COLUMN max_body_bytes bigint;
"#,
    // Who (which token) made a client's move of a task.
    "ALTER TABLE history ADD COLUMN by_token text;",
    // The names a worker leases (a JSON array; NULL: every name), so that
    // every node can tell when no live worker serves a task.
    "ALTER TABLE workers ADD COLUMN leases text;",
    // Per-task-type defaults (timeout, attempts, retry), as JSON.
    "ALTER TABLE task_types ADD COLUMN defaults text;",
    // A task outside a workflow that later submissions wait for: its end
    // judges their edges.
    "ALTER TABLE tasks ADD COLUMN awaited boolean NOT NULL DEFAULT false;",
    // A transaction's events wait for their offsets under a negative key
    // from this sequence; the node's sequencer numbers them after the
    // commit, so that writers never hold the lock of event_head.
    "CREATE SEQUENCE event_pending_keys;",
    // The W3C trace context a task continues.
    "ALTER TABLE tasks ADD COLUMN traceparent text;",
];

/// The schema version this build knows.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Is `name` a schema name Quern accepts (lowercase letters, digits and
/// `_`, not starting with a digit, at most 63 bytes)? It is spliced into
/// statements, so nothing else is allowed.
pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Creates the schema if needed and runs the migrations it lacks; answers
/// the versions applied.
pub(super) async fn migrate(client: &mut Object, schema: &str, now: i64) -> Result<Vec<i64>> {
    let tx = client.transaction().await.map_err(backend)?;
    // One lock per schema: nodes starting together take turns.
    tx.execute("SELECT pg_advisory_xact_lock(7311, hashtext($1))", &[&schema]).await.map_err(backend)?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages TO warning; CREATE SCHEMA IF NOT EXISTS {schema}; \
         SET LOCAL search_path TO {schema}; \
         CREATE TABLE IF NOT EXISTS quern_migrations (version bigint PRIMARY KEY, applied_at bigint NOT NULL);"
    ))
    .await
    .map_err(backend)?;
    let row = tx.query_one("SELECT coalesce(max(version), 0) FROM quern_migrations", &[]).await.map_err(backend)?;
    let current: i64 = row.get(0);
    if current > VERSION {
        return Err(StoreError::Backend(format!(
            "the database schema {schema} is at version {current}, newer than this quern knows ({VERSION}): \
             upgrade quern"
        )));
    }
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
        let version = i as i64 + 1;
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute("INSERT INTO quern_migrations (version, applied_at) VALUES ($1, $2)", &[&version, &now])
            .await
            .map_err(backend)?;
        applied.push(version);
    }
    tx.commit().await.map_err(backend)?;
    Ok(applied)
}
