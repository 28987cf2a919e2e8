//! Workflows as the engine sees them: turning a submitted graph into tasks,
//! the status a workflow's tasks add up to, and its graph rendered as JSON,
//! Graphviz dot or Mermaid.

use indexmap::IndexMap;
use quern_core::workflow::{Node, check_graph, compile_expr};
use quern_core::{Condition, Dependency, ExecutionDefaults, Millis, NewTask, Status, Task, TaskSpec, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

pub use quern_wire::workflows::DependsOn;

/// One task of a submitted workflow: its key, its edges, and the task.
#[derive(Debug, Clone)]
pub struct WorkflowTask {
    /// Its key, unique in the workflow.
    pub key: String,
    /// Its parents.
    pub depends_on: Vec<DependsOn>,
    /// The task itself.
    pub spec: TaskSpec,
}

/// A workflow as a client submits it.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    /// Its name.
    pub name: String,
    /// Its tasks.
    pub tasks: Vec<WorkflowTask>,
}

/// What can be wrong with a workflow: a task's own fields (400, with its
/// index) or the graph (422).
#[derive(Debug)]
pub enum WorkflowError {
    /// A task breaks a rule.
    Task {
        /// Its position.
        index: usize,
        /// The rule.
        error: ValidationError,
    },
    /// The graph cannot run.
    Graph(ValidationError),
}

/// Checks the graph and every task, giving the tasks to insert (with their
/// workflow, key and parents' ids) and the ids by key.
pub fn build(
    spec: WorkflowSpec,
    workflow: Uuid,
    defaults: &ExecutionDefaults,
    now: Millis,
) -> Result<(Vec<NewTask>, IndexMap<String, Uuid>), WorkflowError> {
    if spec.name.is_empty() || spec.name.len() > 200 {
        return Err(WorkflowError::Graph(ValidationError::new("name", "must be 1 to 200 bytes")));
    }
    let nodes: Vec<Node<'_>> = spec
        .tasks
        .iter()
        .map(|t| Node { key: &t.key, parents: t.depends_on.iter().map(|d| (d.key.as_str(), &d.on)).collect() })
        .collect();
    check_graph(&nodes).map_err(WorkflowError::Graph)?;
    for (i, t) in spec.tasks.iter().enumerate() {
        for (j, d) in t.depends_on.iter().enumerate() {
            if let Condition::Expr { expr } = &d.on {
                compile_expr(expr).map_err(|e| {
                    WorkflowError::Graph(ValidationError::new(
                        format!("tasks[{i}].depends_on[{j}].on.expr"),
                        format!("not a valid CEL expression: {e}"),
                    ))
                })?;
            }
        }
    }
    let ids: HashMap<&str, Uuid> = spec.tasks.iter().map(|t| (t.key.as_str(), Uuid::now_v7())).collect();
    let mut out = Vec::with_capacity(spec.tasks.len());
    for (index, t) in spec.tasks.iter().enumerate() {
        let id = ids[t.key.as_str()];
        let mut task =
            t.spec.clone().validate(defaults, id, now).map_err(|error| WorkflowError::Task { index, error })?;
        task.workflow = Some(workflow);
        task.key = Some(t.key.clone());
        task.depends_on =
            t.depends_on.iter().map(|d| Dependency { task: ids[d.key.as_str()], on: d.on.clone() }).collect();
        if !task.depends_on.is_empty() {
            task.status = Status::Pending;
        }
        out.push(task);
    }
    let by_key = spec.tasks.iter().map(|t| (t.key.clone(), ids[t.key.as_str()])).collect();
    Ok((out, by_key))
}

/// A rendering of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphFormat {
    /// `{"nodes": [...], "edges": [...]}`.
    Json,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn condition_label(on: &Condition) -> String {
    match on {
        Condition::Outcome(o) => {
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
        Condition::Expr { expr } => expr.clone(),
    }
}

fn key_of(t: &Task) -> String {
    t.key.clone().unwrap_or_else(|| t.id.to_string())
}

/// The graph with each node's status, as JSON.
pub fn graph_json(tasks: &[Task]) -> Value {
    let keys: HashMap<Uuid, String> = tasks.iter().map(|t| (t.id, key_of(t))).collect();
    let nodes: Vec<Value> =
        tasks.iter().map(|t| json!({"key": key_of(t), "task": t.id, "name": t.name, "status": t.status})).collect();
    let edges: Vec<Value> = tasks
        .iter()
        .flat_map(|t| {
            let keys = &keys;
            t.depends_on.iter().map(
                move |d| json!({"from": keys.get(&d.task).cloned().unwrap_or_default(), "to": key_of(t), "on": d.on}),
            )
        })
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph in Graphviz dot, nodes labelled with key and status.
pub fn graph_dot(name: &str, tasks: &[Task]) -> String {
    let keys: HashMap<Uuid, String> = tasks.iter().map(|t| (t.id, key_of(t))).collect();
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", quote(name));
    for t in tasks {
        let k = quote(&key_of(t));
        out.push_str(&format!("  \"{k}\" [label=\"{k}\\n{}\\n{}\"];\n", quote(&t.name), t.status));
    }
    for t in tasks {
        for d in &t.depends_on {
            let from = quote(keys.get(&d.task).map_or("?", String::as_str));
            out.push_str(&format!(
                "  \"{from}\" -> \"{}\" [label=\"{}\"];\n",
                quote(&key_of(t)),
                quote(&condition_label(&d.on))
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// The graph as a Mermaid flowchart, nodes labelled with key and status.
pub fn graph_mermaid(tasks: &[Task]) -> String {
    let index: HashMap<Uuid, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut out = String::from("flowchart LR\n");
    for (i, t) in tasks.iter().enumerate() {
        out.push_str(&format!(
            "  n{i}[\"{}: {} ({})\"]\n",
            key_of(t).replace('"', "'"),
            t.name.replace('"', "'"),
            t.status
        ));
    }
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.depends_on {
            if let Some(p) = index.get(&d.task) {
                out.push_str(&format!("  n{p} -->|{}| n{i}\n", condition_label(&d.on).replace('|', "/")));
            }
        }
    }
    out
}
