//! Condition nodes: Starlark that assigns `selected_node` to one child, a list of children, or
//! `None` for no branch. Children it does not select are skipped unless another parent runs them.

use std::sync::Arc;

use serde_json::Value;
use walkoff_schema::{NodeStatus, Outcome};

use crate::execution::{Effects, Execution, ScriptJob, ScriptKind};
use crate::script::{self, ScriptInputs, ScriptLimits, ScriptValue};

pub(crate) fn activate(exec: &mut Execution, index: usize, code: &Arc<str>, fx: &mut Effects) {
    exec.mark_executing(index, 1, None, None, fx);
    let job = script_job(exec, index, code, ScriptKind::Condition);
    fx.scripts.push(job);
}

/// The job for a condition or transform: its direct parents' results and, for a condition, its
/// children.
pub(crate) fn script_job(
    exec: &Execution,
    index: usize,
    code: &Arc<str>,
    kind: ScriptKind,
) -> ScriptJob {
    let node = &exec.plan.nodes[index];
    let parents = node
        .parents
        .iter()
        .map(|&p| {
            (
                exec.plan.nodes[p].label.clone(),
                exec.node(p).result.clone().unwrap_or(Value::Null),
            )
        })
        .collect();
    let children = match kind {
        ScriptKind::Condition => node
            .children
            .iter()
            .map(|&c| {
                (
                    exec.plan.nodes[c].label.clone(),
                    exec.plan.nodes[c].id.clone(),
                )
            })
            .collect(),
        ScriptKind::Transform => Vec::new(),
    };
    ScriptJob {
        execution_id: exec.id.clone(),
        node_id: node.id.clone(),
        attempt: exec.node(index).attempt,
        kind,
        code: Arc::clone(code),
        parents,
        children,
    }
}

pub(crate) fn evaluate(job: &ScriptJob, limits: &ScriptLimits) -> Outcome {
    let inputs = ScriptInputs {
        parents: &job.parents,
        children: &job.children,
    };
    let failure = |error: String| Outcome::Failure {
        error,
        retryable: false,
    };
    let children: Vec<&str> = job.children.iter().map(|(l, _)| l.as_str()).collect();
    let selected = match script::evaluate(&job.code, &inputs, &["selected_node"], limits) {
        Err(e) => return failure(e),
        Ok(mut values) => values.pop().flatten(),
    };
    let labels: Vec<String> = match selected {
        None => {
            return failure(format!(
                "the condition did not assign selected_node; assign one of its children ({}), a list of them, or None",
                children.join(", ")
            ))
        }
        Some(ScriptValue::Children(labels)) => labels,
        Some(ScriptValue::Json(Value::Null)) => return Outcome::Success { result: Value::Null },
        Some(ScriptValue::Json(Value::String(label))) => vec![label],
        Some(ScriptValue::Json(Value::Array(items))) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(ScriptValue::Json(other)) => {
            return failure(format!(
                "selected_node must be a child of the condition ({}), a list of them, or None; found {other}",
                children.join(", ")
            ))
        }
    };
    if let Some(unknown) = labels.iter().find(|l| !children.contains(&l.as_str())) {
        return failure(format!(
            "selected_node is '{unknown}', which is not a child of this condition (children: {})",
            children.join(", ")
        ));
    }
    let result = match <[String; 1]>::try_from(labels) {
        Ok([one]) => Value::String(one),
        Err(many) => Value::Array(many.into_iter().map(Value::String).collect()),
    };
    Outcome::Success { result }
}

pub(crate) fn on_result(exec: &mut Execution, index: usize, outcome: Outcome, fx: &mut Effects) {
    match outcome {
        Outcome::Success { result } => {
            let labels: Vec<&str> = match &result {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let plan = Arc::clone(&exec.plan);
            let children = &plan.nodes[index].children;
            let selected: Option<Vec<usize>> = labels
                .iter()
                .map(|label| {
                    children
                        .iter()
                        .copied()
                        .find(|&c| plan.nodes[c].label == *label)
                })
                .collect();
            match selected {
                Some(selected) => {
                    exec.nodes[index].selected = Some(selected);
                    exec.resolve(index, NodeStatus::Success, Some(result), None, fx);
                }
                None => exec.resolve(
                    index,
                    NodeStatus::Failure,
                    None,
                    Some(format!(
                        "selected {result}, which is not a child of this condition"
                    )),
                    fx,
                ),
            }
        }
        Outcome::Failure { error, .. } => {
            exec.resolve(index, NodeStatus::Failure, None, Some(error), fx)
        }
    }
}
