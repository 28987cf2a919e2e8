//! Workflows as graphs: the checks a workflow must pass before anything is
//! stored (unique keys, known parents, no cycles), and the rule that decides,
//! from its parents' outcomes, whether a task may run, must wait, or can
//! never run.
//!
//! Invariant: a cyclic workflow is refused, and the refusal names one cycle
//! (`a -> b -> a`), so that no task can wait forever on itself.

use crate::error::{ValidationError, ValidationResult};
use crate::status::Status;
use crate::task::{Condition, OutcomeCondition};
use std::collections::HashMap;

/// The most tasks one workflow may hold.
pub const MAX_WORKFLOW_TASKS: usize = 50_000;

/// One node of a workflow as submitted: its key and its parents' keys with
/// the condition on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    /// The task's key, unique in the workflow.
    pub key: &'a str,
    /// Its parents (by key) and the condition on each.
    pub parents: Vec<(&'a str, &'a Condition)>,
}

/// Checks keys and edges, and finds cycles. Answers the nodes in an order
/// where every parent comes before its children.
pub fn check_graph<'a>(nodes: &[Node<'a>]) -> ValidationResult<Vec<usize>> {
    if nodes.is_empty() {
        return Err(ValidationError::new("tasks", "a workflow needs at least one task"));
    }
    if nodes.len() > MAX_WORKFLOW_TASKS {
        return Err(ValidationError::new("tasks", format!("at most {MAX_WORKFLOW_TASKS} tasks per workflow")));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        crate::spec::check_task_name(n.key)
            .map_err(|e| ValidationError::new(format!("tasks[{i}].key"), e.message.replacen("name", "key", 1)))?;
        if index.insert(n.key, i).is_some() {
            return Err(ValidationError::new(format!("tasks[{i}].key"), format!("duplicate key {:?}", n.key)));
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for (j, (parent, _)) in n.parents.iter().enumerate() {
            let Some(&p) = index.get(parent) else {
                return Err(ValidationError::new(
                    format!("tasks[{i}].depends_on[{j}].key"),
                    format!("no task with key {parent:?} in this workflow"),
                ));
            };
            children[p].push(i);
        }
    }
    // Depth-first search with colours; a grey node met again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        if colour[start] != Colour::White {
            continue;
        }
        // (node, next child to visit)
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = Colour::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&child) = children[node].get(*next) {
                *next += 1;
                match colour[child] {
                    Colour::White => {
                        colour[child] = Colour::Grey;
                        stack.push((child, 0));
                    }
                    Colour::Grey => {
                        let from = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| nodes[*n].key).collect();
                        cycle.push(nodes[child].key);
                        return Err(ValidationError::new(
                            "tasks",
                            format!("the workflow has a cycle: {}", cycle.join(" -> ")),
                        ));
                    }
                    Colour::Black => {}
                }
            } else {
                colour[node] = Colour::Black;
                order.push(node);
                stack.pop();
            }
        }
    }
    // Post-order visits children first; parents must come first.
    order.reverse();
    Ok(order)
}

/// What a task's dependencies allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every condition holds: the task may run.
    Ready,
    /// Some parent has not finished yet.
    Waiting,
    /// A condition can no longer hold: the task will be skipped.
    Never,
}

/// Does `condition` hold for a parent that ended (or not yet) in `status`?
/// Expressions are judged by the caller ([`OutcomeCondition`]s only here).
pub fn outcome_holds(condition: OutcomeCondition, status: Status) -> Readiness {
    if !status.is_terminal() {
        return Readiness::Waiting;
    }
    let holds = match condition {
        OutcomeCondition::Success => status == Status::Succeeded,
        OutcomeCondition::Failure => matches!(status, Status::Failed | Status::TimedOut),
        OutcomeCondition::Completion => true,
    };
    if holds { Readiness::Ready } else { Readiness::Never }
}

/// A compiled `{"expr": …}` condition.
pub struct Expr(cel::Program);

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expr")
    }
}

/// Compiles a CEL condition; the error says what does not parse.
pub fn compile_expr(source: &str) -> Result<Expr, String> {
    if source.len() > MAX_EXPR_LEN {
        return Err(format!("expressions are at most {MAX_EXPR_LEN} bytes"));
    }
    cel::Program::compile(source).map(Expr).map_err(|e| e.to_string())
}

/// The longest condition expression, in bytes.
pub const MAX_EXPR_LEN: usize = 4_096;

/// Does the expression hold for a parent in `status`, with its `result` and
/// `error` (JSON, `null` when absent)? It is judged once the parent has
/// finished; an expression that is not `true` — `false`, another type, or an
/// evaluation error such as a missing field — can no longer hold.
pub fn expr_holds(expr: &Expr, status: Status, result: &serde_json::Value, error: &serde_json::Value) -> Readiness {
    if !status.is_terminal() {
        return Readiness::Waiting;
    }
    let mut context = cel::Context::default();
    let bound = context
        .add_variable("status", status.as_str())
        .and_then(|()| context.add_variable("result", result))
        .and_then(|()| context.add_variable("error", error));
    if bound.is_err() {
        return Readiness::Never;
    }
    match expr.0.execute(&context) {
        Ok(cel::Value::Bool(true)) => Readiness::Ready,
        _ => Readiness::Never,
    }
}

/// Combines the answers for each parent: never if any is never, waiting if
/// any waits, else ready.
pub fn combine(answers: impl IntoIterator<Item = Readiness>) -> Readiness {
    let mut out = Readiness::Ready;
    for a in answers {
        match a {
            Readiness::Never => return Readiness::Never,
            Readiness::Waiting => out = Readiness::Waiting,
            Readiness::Ready => {}
        }
    }
    out
}

/// The default condition: the parent succeeded.
pub const fn default_condition() -> Condition {
    Condition::Outcome(OutcomeCondition::Success)
}

/// Where a workflow stands, from its tasks' statuses: `running` while any is
/// unfinished; then `failed` if any failed or timed out, `cancelled` if any
/// was cancelled, else `succeeded` (skipped tasks do not fail it).
pub fn overall_status(statuses: impl IntoIterator<Item = Status>) -> &'static str {
    let (mut open, mut failed, mut cancelled) = (false, false, false);
    for s in statuses {
        open |= !s.is_terminal();
        failed |= matches!(s, Status::Failed | Status::TimedOut);
        cancelled |= s == Status::Cancelled;
    }
    match (open, failed, cancelled) {
        (true, _, _) => "running",
        (false, true, _) => "failed",
        (false, false, true) => "cancelled",
        (false, false, false) => "succeeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(edges: &'a [(&'a str, &'a [&'a str])], cond: &'a Condition) -> Vec<Node<'a>> {
        edges.iter().map(|(k, ps)| Node { key: k, parents: ps.iter().map(|p| (*p, cond)).collect() }).collect()
    }

    #[test]
    fn a_dag_is_ordered_parents_first() {
        let c = default_condition();
        let nodes = graph(&[("report", &["fetch", "clean"]), ("clean", &["fetch"]), ("fetch", &[])], &c);
        let order = check_graph(&nodes).expect("a dag");
        let pos = |k: &str| order.iter().position(|i| nodes[*i].key == k).expect("present");
        assert!(pos("fetch") < pos("clean") && pos("clean") < pos("report"));
    }

    #[test]
    fn cycles_are_named() {
        let c = default_condition();
        let nodes = graph(&[("a", &["b"]), ("b", &["a"])], &c);
        let err = check_graph(&nodes).expect_err("a cycle");
        assert!(err.message.ends_with("a -> b -> a") || err.message.ends_with("b -> a -> b"), "{}", err.message);
        let nodes = graph(&[("x", &[]), ("a", &["x", "c"]), ("b", &["a"]), ("c", &["b"])], &c);
        let err = check_graph(&nodes).expect_err("a longer cycle");
        assert!(err.message.ends_with(": a -> b -> c -> a"), "{}", err.message);
        let nodes = graph(&[("self", &["self"])], &c);
        assert!(check_graph(&nodes).expect_err("self loop").message.ends_with("self -> self"));
    }

    #[test]
    fn keys_and_edges_are_checked() {
        let c = default_condition();
        assert_eq!(check_graph(&[]).map_err(|e| e.field), Err("tasks".into()));
        let dup = graph(&[("a", &[]), ("a", &[])], &c);
        assert_eq!(check_graph(&dup).map_err(|e| e.field), Err("tasks[1].key".into()));
        let unknown = graph(&[("a", &["ghost"])], &c);
        assert_eq!(check_graph(&unknown).map_err(|e| e.field), Err("tasks[0].depends_on[0].key".into()));
        let bad = graph(&[("has space", &[])], &c);
        assert!(check_graph(&bad).is_err());
    }

    #[test]
    fn expressions_see_status_result_and_error() {
        use serde_json::json;
        let e = compile_expr("status == 'succeeded' && result.score > 0.5").expect("compiles");
        assert_eq!(expr_holds(&e, Status::Succeeded, &json!({"score": 0.9}), &json!(null)), Readiness::Ready);
        assert_eq!(expr_holds(&e, Status::Succeeded, &json!({"score": 0.1}), &json!(null)), Readiness::Never);
        assert_eq!(expr_holds(&e, Status::Running, &json!(null), &json!(null)), Readiness::Waiting);
        assert_eq!(expr_holds(&e, Status::Succeeded, &json!({}), &json!(null)), Readiness::Never, "missing field");
        let on_kind = compile_expr("error.kind == 'timeout'").expect("compiles");
        let err = json!({"kind": "timeout", "message": "slow"});
        assert_eq!(expr_holds(&on_kind, Status::TimedOut, &json!(null), &err), Readiness::Ready);
        let not_bool = compile_expr("1 + 1").expect("compiles");
        assert_eq!(expr_holds(&not_bool, Status::Succeeded, &json!(null), &json!(null)), Readiness::Never);
        assert!(compile_expr("status ==").is_err());
        assert!(compile_expr(&"a".repeat(5_000)).is_err());
    }

    #[test]
    fn conditions_decide_readiness() {
        use OutcomeCondition::*;
        use Readiness::*;
        assert_eq!(outcome_holds(Success, Status::Running), Waiting);
        assert_eq!(outcome_holds(Success, Status::Succeeded), Ready);
        assert_eq!(outcome_holds(Success, Status::Failed), Never);
        assert_eq!(outcome_holds(Failure, Status::Failed), Ready);
        assert_eq!(outcome_holds(Failure, Status::TimedOut), Ready);
        assert_eq!(outcome_holds(Failure, Status::Succeeded), Never);
        assert_eq!(outcome_holds(Failure, Status::Cancelled), Never);
        assert_eq!(outcome_holds(Completion, Status::Skipped), Ready);
        assert_eq!(outcome_holds(Completion, Status::Pending), Waiting);
        assert_eq!(combine([Ready, Waiting, Ready]), Waiting);
        assert_eq!(combine([Ready, Waiting, Never]), Never);
        assert_eq!(combine([]), Ready);
    }
}
