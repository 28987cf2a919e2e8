//! What the store shares between server nodes about workers: the task types
//! they declared and when each worker was last heard from.
//!
//! Invariant: a record older than the stored one of the same name changes
//! nothing, so the newest declaration or sighting wins whatever order nodes
//! write in.

use quern_core::Millis;

/// A task type as the store shares it between nodes: its latest
/// declaration by any worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTypeRecord {
    /// The task name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// The JSON Schema inputs must match, as JSON text.
    pub input_schema: Option<String>,
    /// What a task of the type gets when its submission leaves it out
    /// (`timeout_ms`, `max_attempts`, `retry`), as JSON text.
    pub defaults: Option<String>,
    /// When it was declared.
    pub declared_at: Millis,
}

/// A worker as a node last heard from it, shared so that every node lists
/// the workers of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The worker's id.
    pub id: String,
    /// The queues it takes from.
    pub queues: Vec<String>,
    /// The task types it declared.
    pub task_types: Vec<String>,
    /// The names (or `prefix.*` patterns) its last lease asked for; `None`
    /// when it takes every name on its queues.
    pub leases: Option<Vec<String>>,
    /// Tasks it held, as of its last call.
    pub in_flight: u64,
    /// When it was last heard from.
    pub last_seen: Millis,
}
