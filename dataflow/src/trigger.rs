//! Trigger nodes: wait in AWAITING_DATA, holding no task or thread, until data is delivered; the data
//! is validated against the trigger's schema and becomes the node's result. Data delivered before
//! the trigger is reached is kept until it is. A trigger whose data does not come within its
//! timeout fails (a timer sends `TriggerTimeout`), so no execution waits for ever.

use std::time::Duration;

use serde_json::Value;
use walkoff_schema::{ControlMessage, NodeStatus};

use crate::compile::{Operator, Plan};
use crate::execution::{Effects, Execution};

pub(crate) fn activate(exec: &mut Execution, index: usize, timeout: Duration, fx: &mut Effects) {
    exec.mark_awaiting(index, fx);
    match exec.early_triggers.remove(&index) {
        Some(data) => exec.resolve(index, NodeStatus::Success, Some(data), None, fx),
        None => fx.timers.push((
            timeout,
            ControlMessage::TriggerTimeout {
                execution_id: exec.id.clone(),
                node_id: exec.plan.nodes[index].id.clone(),
            },
        )),
    }
}

/// The trigger's wait is over: it fails unless its data came first.
pub(crate) fn expire(exec: &mut Execution, index: usize, fx: &mut Effects) {
    let Operator::Trigger(op) = &exec.plan.nodes[index].op else {
        return;
    };
    if exec.node(index).status != NodeStatus::AwaitingData {
        return;
    }
    let error = format!(
        "trigger '{}' received no data within {}",
        exec.plan.nodes[index].label,
        humanize(op.timeout)
    );
    exec.resolve(index, NodeStatus::Failure, None, Some(error), fx);
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

/// `7 days`, `90 seconds`, `1500 milliseconds`: the largest unit that states it exactly.
fn humanize(duration: Duration) -> String {
    let ms = duration.as_millis();
    let units = [
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1000, "second"),
        (1, "millisecond"),
    ];
    let (unit, name) = units
        .into_iter()
        .find(|(unit, _)| ms.is_multiple_of(*unit) && ms >= *unit)
        .unwrap_or((1, "millisecond"));
    let count = ms / unit;
    format!("{count} {name}{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::humanize;
    use std::time::Duration;

    #[test]
    fn timeouts_are_stated_in_the_largest_exact_unit() {
        assert_eq!(humanize(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(humanize(Duration::from_secs(3600)), "1 hour");
        assert_eq!(humanize(Duration::from_secs(90)), "90 seconds");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500 milliseconds");
    }
}
