//! Workers and the task types they serve, as they last told the server.
//!
//! Kept in memory and in the store: a worker registers when it starts and every lease,
//! heartbeat and completion refreshes it, so after a server restart the
//! registry fills again as workers reconnect. A worker counts as live for a
//! minute after it was last heard from. When a task type declares an input
//! schema, submissions of that type must match it.
//!
//! Declarations are also written to the store, and each node adopts the
//! ones declared through other nodes ([`Registry::adopt`]), so that a schema
//! is enforced by every node sharing the store; the latest declaration of a
//! type wins. Workers are shared the same way: each node writes what changed
//! of its own ([`Registry::take_changed`]) and takes in what other nodes
//! heard ([`Registry::adopt_workers`]); the most recent word of a worker
//! wins, so a worker that moves between nodes is listed once.

use quern_core::spec::lease_name_matches;
use quern_core::{Millis, TaskSpec};
pub use quern_wire::{TaskDefaults, TaskTypeDecl, TaskTypeView, WorkerView};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// How long a worker counts as live after it was last heard from.
pub const LIVE_MS: Millis = 60_000;
/// How long a silent worker is still listed.
pub const FORGET_MS: Millis = 3_600_000;

#[derive(Default)]
struct WorkerEntry {
    queues: Vec<String>,
    task_types: Vec<String>,
    /// The names its last lease asked for; `None`: every name.
    leases: Option<Vec<String>>,
    last_seen: Millis,
    in_flight: u64,
    /// Heard from here since the store was last told.
    changed: bool,
}

struct TypeEntry {
    description: Option<String>,
    input_schema: Option<Value>,
    validator: Option<Arc<jsonschema::Validator>>,
    defaults: Option<TaskDefaults>,
    /// When this declaration was made (here or through another node).
    declared_at: Millis,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<String, WorkerEntry>,
    types: BTreeMap<String, TypeEntry>,
}

impl Inner {
    /// Changes `id`'s entry, made empty if it has none (without allocating
    /// the key when it has one: this runs on every lease and completion).
    fn heard(&mut self, id: &str, now: Millis, change: impl FnOnce(&mut WorkerEntry)) {
        let w = match self.workers.get_mut(id) {
            Some(w) => w,
            None => self.workers.entry(id.to_owned()).or_default(),
        };
        change(w);
        w.last_seen = now;
        w.changed = true;
    }
}

/// The registry.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// A registration that cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RegisterError {
    /// The offending field.
    pub field: String,
    /// Why.
    pub message: String,
    /// It clashes with what a live worker declared (409), rather than being
    /// invalid in itself (400).
    pub conflict: bool,
}

impl Registry {
    /// Records a worker and the task types it serves; the latest declaration
    /// of a type (description, schema) wins.
    pub fn register(
        &self,
        worker: &str,
        queues: Vec<String>,
        types: Vec<TaskTypeDecl>,
        now: Millis,
    ) -> Result<Vec<quern_store::TaskTypeRecord>, RegisterError> {
        let mut compiled = Vec::with_capacity(types.len());
        for (i, t) in types.into_iter().enumerate() {
            quern_core::spec::check_task_name(&t.name).map_err(|e| RegisterError {
                field: format!("task_types[{i}].name"),
                message: e.message,
                conflict: false,
            })?;
            if let Some(defaults) = &t.defaults {
                check_defaults(defaults).map_err(|e| RegisterError {
                    field: format!("task_types[{i}].defaults.{}", e.field),
                    message: e.message,
                    conflict: false,
                })?;
            }
            if let Some(schema) = &t.input_schema {
                let field = format!("task_types[{i}].input_schema");
                quern_core::spec::check_json_depth(&field, &schema.to_string()).map_err(|e| RegisterError {
                    field,
                    message: e.message,
                    conflict: false,
                })?;
            }
            let validator = match &t.input_schema {
                Some(schema) => Some(Arc::new(jsonschema::validator_for(schema).map_err(|e| RegisterError {
                    field: format!("task_types[{i}].input_schema"),
                    message: format!("not a valid JSON Schema: {e}"),
                    conflict: false,
                })?)),
                None => None,
            };
            compiled.push((t, validator));
        }
        let records = compiled
            .iter()
            .map(|(t, _)| quern_store::TaskTypeRecord {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.as_ref().map(Value::to_string),
                defaults: t.defaults.as_ref().and_then(|d| serde_json::to_string(d).ok()),
                declared_at: now,
            })
            .collect();
        let Ok(mut inner) = self.inner.lock() else { return Ok(records) };
        // A schema another live worker serves is not swapped from under it.
        for (i, (t, _)) in compiled.iter().enumerate() {
            let Some(current) = inner.types.get(&t.name) else { continue };
            if current.input_schema == t.input_schema {
                continue;
            }
            let live = inner
                .workers
                .iter()
                .find(|(id, w)| id.as_str() != worker && now - w.last_seen < LIVE_MS && w.task_types.contains(&t.name));
            if let Some((other, _)) = live {
                return Err(RegisterError {
                    field: format!("task_types[{i}].input_schema"),
                    message: format!(
                        "differs from the schema live worker {other} declared for {}: declare the same one, \
                         or stop that worker first",
                        t.name
                    ),
                    conflict: true,
                });
            }
        }
        let names: Vec<String> = compiled.iter().map(|(t, _)| t.name.clone()).collect();
        for (t, validator) in compiled {
            let entry = inner.types.entry(t.name).or_insert_with(|| TypeEntry {
                description: None,
                input_schema: None,
                validator: None,
                defaults: None,
                declared_at: now,
            });
            entry.description = t.description;
            entry.input_schema = t.input_schema;
            entry.validator = validator;
            entry.defaults = t.defaults;
            entry.declared_at = now;
        }
        let w = inner.workers.entry(worker.to_owned()).or_default();
        w.queues = queues;
        w.task_types = names;
        w.last_seen = now;
        w.changed = true;
        Ok(records)
    }

    /// Takes the declarations stored by any node that are newer than what
    /// this node knows of their types. A stored schema that does not compile
    /// is left out (it was checked when declared).
    pub fn adopt(&self, records: Vec<quern_store::TaskTypeRecord>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        for r in records {
            if inner.types.get(&r.name).is_some_and(|e| e.declared_at >= r.declared_at) {
                continue;
            }
            let schema: Option<Value> = r.input_schema.as_deref().and_then(|s| serde_json::from_str(s).ok());
            let validator = schema.as_ref().and_then(|s| jsonschema::validator_for(s).ok()).map(Arc::new);
            let entry = inner.types.entry(r.name).or_insert_with(|| TypeEntry {
                description: None,
                input_schema: None,
                validator: None,
                defaults: None,
                declared_at: r.declared_at,
            });
            entry.description = r.description;
            entry.input_schema = schema;
            entry.validator = validator;
            entry.defaults = r.defaults.as_deref().and_then(|d| serde_json::from_str(d).ok());
            entry.declared_at = r.declared_at;
        }
    }

    /// Records that `worker` was heard from; `delta` changes its in-flight
    /// count.
    pub fn seen(&self, worker: &str, now: Millis, delta: i64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.heard(worker, now, |w| w.in_flight = w.in_flight.saturating_add_signed(delta));
    }

    /// Records a lease call of `worker`: it is live, and takes `names` (all
    /// names when `None`) from `queues`.
    pub fn leasing(&self, worker: &str, queues: &[String], names: Option<&[String]>, now: Millis) {
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.heard(worker, now, |w| {
            if w.queues != queues {
                w.queues = queues.to_vec();
            }
            if w.leases.as_deref() != names {
                w.leases = names.map(<[String]>::to_vec);
            }
        });
    }

    /// Whether a live worker takes tasks named `name` from `queue`.
    pub fn serves(&self, queue: &str, name: &str, now: Millis) -> bool {
        let Ok(inner) = self.inner.lock() else { return true };
        inner.workers.values().any(|w| {
            now - w.last_seen < LIVE_MS
                && w.queues.iter().any(|q| q == queue)
                && w.leases.as_ref().is_none_or(|names| names.iter().any(|p| lease_name_matches(p, name)))
        })
    }

    /// The workers heard from here since the last call, for the store.
    pub fn take_changed(&self) -> Vec<quern_store::WorkerRecord> {
        let Ok(mut inner) = self.inner.lock() else { return Vec::new() };
        inner
            .workers
            .iter_mut()
            .filter(|(_, w)| w.changed)
            .map(|(id, w)| {
                w.changed = false;
                quern_store::WorkerRecord {
                    id: id.clone(),
                    queues: w.queues.clone(),
                    task_types: w.task_types.clone(),
                    leases: w.leases.clone(),
                    in_flight: w.in_flight,
                    last_seen: w.last_seen,
                }
            })
            .collect()
    }

    /// Takes what other nodes heard of workers, where it is more recent
    /// than what this node heard.
    pub fn adopt_workers(&self, records: Vec<quern_store::WorkerRecord>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        for r in records {
            let w = inner.workers.entry(r.id).or_default();
            if w.last_seen < r.last_seen {
                *w = WorkerEntry {
                    queues: r.queues,
                    task_types: r.task_types,
                    leases: r.leases,
                    last_seen: r.last_seen,
                    in_flight: r.in_flight,
                    changed: false,
                };
            }
        }
    }

    /// Sets a worker's in-flight count (from a heartbeat, which lists every
    /// lease it holds).
    pub fn set_in_flight(&self, worker: &str, now: Millis, in_flight: u64) {
        self.seen(worker, now, 0);
        if let Ok(mut inner) = self.inner.lock()
            && let Some(w) = inner.workers.get_mut(worker)
        {
            w.in_flight = in_flight;
        }
    }

    /// Fills what `spec` leaves out (timeout, attempts, retry) from its
    /// type's declared defaults.
    pub fn with_defaults(&self, spec: &mut TaskSpec) {
        if spec.timeout_ms.is_some() && spec.max_attempts.is_some() && spec.retry.is_some() {
            return;
        }
        let Ok(inner) = self.inner.lock() else { return };
        let Some(defaults) = inner.types.get(&spec.name).and_then(|t| t.defaults.as_ref()) else { return };
        spec.timeout_ms = spec.timeout_ms.or(defaults.timeout_ms);
        spec.max_attempts = spec.max_attempts.or(defaults.max_attempts);
        spec.retry = spec.retry.or(defaults.retry);
    }

    /// Checks `input` against the schema of task type `name`, if it has one.
    /// The error names what does not match.
    pub fn check_input(&self, name: &str, input: &str) -> Result<(), String> {
        let validator = {
            let Ok(inner) = self.inner.lock() else { return Ok(()) };
            if inner.types.is_empty() {
                return Ok(());
            }
            match inner.types.get(name).and_then(|t| t.validator.clone()) {
                Some(v) => v,
                None => return Ok(()),
            }
        };
        let value: Value = serde_json::from_str(input).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Workers heard from within the last hour, most recent first.
    pub fn workers(&self, now: Millis) -> Vec<WorkerView> {
        let Ok(mut inner) = self.inner.lock() else { return Vec::new() };
        inner.workers.retain(|_, w| now - w.last_seen < FORGET_MS);
        let mut out: Vec<WorkerView> = inner
            .workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: id.clone(),
                queues: w.queues.clone(),
                task_types: w.task_types.clone(),
                leases: w.leases.clone(),
                in_flight: w.in_flight,
                last_seen: w.last_seen,
                live: now - w.last_seen < LIVE_MS,
            })
            .collect();
        out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Task types, with the number of live workers serving each.
    pub fn task_types(&self, now: Millis) -> Vec<TaskTypeView> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        inner
            .types
            .iter()
            .map(|(name, t)| {
                let seen: Vec<Millis> = inner
                    .workers
                    .values()
                    .filter(|w| w.task_types.iter().any(|n| n == name))
                    .map(|w| w.last_seen)
                    .collect();
                TaskTypeView {
                    name: name.clone(),
                    description: t.description.clone(),
                    input_schema: t.input_schema.clone(),
                    defaults: t.defaults.clone(),
                    workers: seen.iter().filter(|s| now - **s < LIVE_MS).count(),
                    last_seen: seen.into_iter().max(),
                }
            })
            .collect()
    }

    /// How many workers are live.
    pub fn live(&self, now: Millis) -> usize {
        self.inner.lock().map(|i| i.workers.values().filter(|w| now - w.last_seen < LIVE_MS).count()).unwrap_or(0)
    }
}

/// Checks a type's defaults by the rules a submission's own fields obey.
fn check_defaults(defaults: &TaskDefaults) -> Result<(), quern_core::ValidationError> {
    let spec = TaskSpec {
        timeout_ms: defaults.timeout_ms,
        max_attempts: defaults.max_attempts,
        retry: defaults.retry,
        ..TaskSpec::named("defaults")
    };
    spec.validate(&quern_core::ExecutionDefaults::default(), uuid::Uuid::nil(), 0).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(name: &str, schema: Option<Value>) -> TaskTypeDecl {
        TaskTypeDecl {
            name: name.into(),
            description: Some(format!("does {name}")),
            input_schema: schema,
            defaults: None,
        }
    }

    #[test]
    fn schemas_check_inputs() {
        let r = Registry::default();
        let schema = json!({"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}});
        r.register("w1", vec!["default".into()], vec![decl("email", Some(schema)), decl("free", None)], 0)
            .expect("valid");
        assert!(r.check_input("email", r#"{"to":"a@b"}"#).is_ok());
        let err = r.check_input("email", r#"{"to":5}"#).expect_err("wrong type");
        assert!(err.contains("/to"), "{err}");
        assert!(r.check_input("email", "{}").is_err());
        assert!(r.check_input("free", "[1,2]").is_ok());
        assert!(r.check_input("unknown", "1").is_ok());
    }

    #[test]
    fn a_live_workers_schema_is_not_swapped_from_under_it() {
        let r = Registry::default();
        let schema = |t: &str| Some(json!({"type": "object", "properties": {"to": {"type": t}}}));
        r.register("w1", vec![], vec![decl("email", schema("string"))], 0).expect("the first declaration");
        let swapped = r.register("w2", vec![], vec![decl("email", schema("number"))], 1_000);
        assert!(swapped.is_err_and(|e| e.message.contains("w1")), "another live worker's schema stays");
        assert!(r.check_input("email", r#"{"to":"a@b"}"#).is_ok());
        r.register("w2", vec![], vec![decl("email", schema("string"))], 1_000).expect("the same schema is fine");
        r.register("w1", vec![], vec![decl("email", schema("number"))], 2_000).err();
        r.register("w3", vec![], vec![decl("email", schema("number"))], LIVE_MS + 10_000)
            .expect("once no worker serving it is live, a new schema is taken");
    }

    #[test]
    fn bad_schemas_and_names_are_refused() {
        let r = Registry::default();
        let bad = decl("x", Some(json!({"type": 12})));
        assert!(r.register("w1", vec![], vec![bad], 0).is_err());
        assert!(r.register("w1", vec![], vec![decl("bad name", None)], 0).is_err());
    }

    #[test]
    fn liveness_and_counts() {
        let r = Registry::default();
        r.register("w1", vec!["q".into()], vec![decl("a", None)], 0).expect("valid");
        r.register("w2", vec!["q".into()], vec![decl("a", None)], 0).expect("valid");
        r.seen("w1", 50_000, 3);
        assert_eq!(r.task_types(70_000)[0].workers, 1);
        assert_eq!(r.live(70_000), 1);
        let w = r.workers(70_000);
        assert_eq!((w[0].id.as_str(), w[0].in_flight, w[0].live), ("w1", 3, true));
        r.set_in_flight("w1", 70_000, 1);
        assert_eq!(r.workers(70_000)[0].in_flight, 1);
    }

    #[test]
    fn a_task_is_served_by_a_live_worker_on_its_queue_that_leases_its_name() {
        let r = Registry::default();
        assert!(!r.serves("default", "thumbnail", 0), "no worker at all");
        r.leasing("py", &["default".into()], Some(&["reports.*".into(), "add".into()]), 0);
        assert!(r.serves("default", "reports.monthly", 1));
        assert!(r.serves("default", "add", 1));
        assert!(!r.serves("default", "thumbnail", 1), "a name it does not lease");
        assert!(!r.serves("media", "add", 1), "a queue it does not take from");
        r.leasing("sh", &["default".into(), "media".into()], None, 10);
        assert!(r.serves("media", "thumbnail", 20), "a worker that takes every name");
        assert!(!r.serves("media", "thumbnail", 10 + LIVE_MS), "not once it has gone quiet");
        let shared = r.take_changed();
        let other = Registry::default();
        other.adopt_workers(shared);
        assert!(
            other.serves("default", "reports.x", 20) && !other.serves("elsewhere", "reports.x", 20),
            "as another node sees it"
        );
    }
}
