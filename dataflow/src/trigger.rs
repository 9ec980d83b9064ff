//! Trigger nodes: wait in AWAITING_DATA, holding no task or thread, until data is delivered; the data
//! is validated against the trigger's schema and becomes the node's result. Data delivered before
//! the trigger is reached is kept until it is.

use serde_json::Value;
use walkoff_schema::NodeStatus;

use crate::compile::{Operator, Plan};
use crate::execution::{Effects, Execution};

pub(crate) fn activate(exec: &mut Execution, index: usize, fx: &mut Effects) {
    match exec.early_triggers.remove(&index) {
        Some(data) => {
            exec.mark_awaiting(index, fx);
            exec.resolve(index, NodeStatus::Success, Some(data), None, fx);
        }
        None => exec.mark_awaiting(index, fx),
    }
}

/// Check that `index` is a trigger and `data` satisfies its schema.
pub fn check(plan: &Plan, index: usize, data: &Value) -> Result<(), String> {
    let node = &plan.nodes[index];
    let Operator::Trigger(op) = &node.op else {
        return Err(format!("node '{}' is not a trigger", node.label));
    };
    let errors: Vec<String> = op
        .schema
        .iter_errors(data)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "data for trigger '{}' does not match its schema: {}",
            node.label,
            errors.join("; ")
        ))
    }
}

pub(crate) fn deliver(exec: &mut Execution, index: usize, data: Value, fx: &mut Effects) {
    if let Err(reason) = check(&exec.plan, index, &data) {
        tracing::warn!(execution = %exec.id, %reason, "trigger data rejected");
        return;
    }
    match exec.node(index).status {
        NodeStatus::AwaitingData => exec.resolve(index, NodeStatus::Success, Some(data), None, fx),
        NodeStatus::Pending => {
            exec.early_triggers.entry(index).or_insert(data);
        }
        _ => {}
    }
}
