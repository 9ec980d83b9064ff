//! Action nodes: resolve parameters, dispatch one request per attempt, retry with back-off.

use serde_json::{Map, Value};
use walkoff_schema::{ActionRequest, ControlMessage, NodeResult, NodeStatus, Outcome};

use crate::compile::{ActionOp, Operator, Source};
use crate::execution::{Effects, Execution};

pub(crate) fn activate(exec: &mut Execution, index: usize, op: &ActionOp, fx: &mut Effects) {
    match resolve_parameters(exec, op) {
        Ok(parameters) => {
            exec.mark_executing(index, 1, Some(parameters.clone()), None, fx);
            fx.actions
                .push(request(exec, index, op, parameters, 1, None));
        }
        Err(error) => exec.resolve(index, NodeStatus::Failure, None, Some(error), fx),
    }
}

/// Resolve every parameter of `op` to a value. Results of ancestors that were skipped or failed
/// resolve to `null`, as WALKOFF 1.0 passed `None` for cancelled nodes.
pub(crate) fn resolve_parameters(
    exec: &Execution,
    op: &ActionOp,
) -> Result<Map<String, Value>, String> {
    let mut parameters = Map::new();
    for p in &op.parameters {
        let value = match &p.source {
            Source::Static(v) => v.clone(),
            Source::NodeResult { node, pointer } => {
                let run = exec.node(*node);
                let label = &exec.plan.nodes[*node].label;
                match (&run.result, pointer) {
                    (None, _) => Value::Null,
                    (Some(result), None) => result.clone(),
                    (Some(result), Some(pointer)) => {
                        result.pointer(pointer).cloned().ok_or_else(|| {
                            format!(
                                "parameter '{}': the result of '{label}' has nothing at {pointer}",
                                p.name
                            )
                        })?
                    }
                }
            }
            Source::Variable(key) => exec.variables.get(key).cloned().ok_or_else(|| {
                format!("parameter '{}': unknown workflow variable '{key}'", p.name)
            })?,
            Source::Global(key) => exec.globals.get(key).cloned().ok_or_else(|| {
                format!(
                    "parameter '{}': the global '{key}' has no value in this execution",
                    p.name
                )
            })?,
        };
        parameters.insert(p.name.clone(), value);
    }
    Ok(parameters)
}

pub(crate) fn request(
    exec: &Execution,
    index: usize,
    op: &ActionOp,
    parameters: Map<String, Value>,
    attempt: u32,
    shard: Option<u32>,
) -> ActionRequest {
    let node = &exec.plan.nodes[index];
    ActionRequest {
        execution_id: exec.id.clone(),
        workflow_id: exec.plan.workflow.id.clone(),
        node_id: node.id.clone(),
        label: node.label.clone(),
        app: op.app.clone(),
        action: op.action.clone(),
        priority: op.priority,
        parameters,
        attempt,
        shard,
        timeout_ms: op.timeout.as_millis() as u64,
        delivery: 1,
        max_deliveries: max_deliveries(op.retry.attempts, attempt),
        reply_to: None,
    }
}

/// Deliveries a request may have. Every hand-out to an executor counts against the retry policy, so a
/// request is delivered at most as often as the policy has attempts left; and at least twice, so
/// that one executor dying mid-action never fails a node by itself.
fn max_deliveries(attempts: u32, attempt: u32) -> u32 {
    (attempts.saturating_sub(attempt) + 1).max(2)
}

/// What to do after a failed attempt.
pub(crate) enum AfterFailure {
    /// Dispatch attempt `n` now.
    RetryNow(u32),
    /// Attempt `n` is scheduled after its back-off.
    RetryLater(u32),
    GiveUp,
}

/// Decide whether a failed attempt is retried, and arm the back-off timer when it must wait.
pub(crate) fn after_failure(
    exec: &Execution,
    index: usize,
    op: &ActionOp,
    attempt: u32,
    retryable: bool,
    shard: Option<u32>,
    fx: &mut Effects,
) -> AfterFailure {
    if !retryable || attempt >= op.retry.attempts {
        return AfterFailure::GiveUp;
    }
    let next = attempt + 1;
    let backoff = op.retry.backoff_before(next);
    if backoff.is_zero() {
        return AfterFailure::RetryNow(next);
    }
    fx.timers.push((
        backoff,
        ControlMessage::Retry {
            execution_id: exec.id.clone(),
            node_id: exec.plan.nodes[index].id.clone(),
            shard,
            attempt: next,
        },
    ));
    AfterFailure::RetryLater(next)
}

pub(crate) fn on_result(exec: &mut Execution, index: usize, result: NodeResult, fx: &mut Effects) {
    let plan = std::sync::Arc::clone(&exec.plan);
    let Operator::Action(op) = &plan.nodes[index].op else {
        return;
    };
    match result.outcome {
        Outcome::Success { result } => {
            exec.resolve(index, NodeStatus::Success, Some(result), None, fx)
        }
        Outcome::Failure { error, retryable } => {
            match after_failure(exec, index, op, result.attempt, retryable, None, fx) {
                AfterFailure::GiveUp => {
                    let error = if result.attempt > 1 {
                        format!("{error} (after {} attempts)", result.attempt)
                    } else {
                        error
                    };
                    exec.resolve(index, NodeStatus::Failure, None, Some(error), fx)
                }
                AfterFailure::RetryNow(next) => {
                    dispatch_attempt(exec, index, op, next, Some(error), fx)
                }
                AfterFailure::RetryLater(next) => {
                    // Announce the failed attempt; the node stays EXECUTING until the retry.
                    exec.mark_executing(
                        index,
                        result.attempt,
                        None,
                        Some(format!(
                            "attempt {} failed: {error}; attempt {next} follows after back-off",
                            result.attempt
                        )),
                        fx,
                    );
                    exec.nodes[index].attempt = next;
                    exec.nodes[index].result = None;
                }
            }
        }
    }
}

/// A back-off timer fired: dispatch the attempt if it is still the current one.
pub(crate) fn retry(exec: &mut Execution, index: usize, attempt: u32, fx: &mut Effects) {
    let plan = std::sync::Arc::clone(&exec.plan);
    let Operator::Action(op) = &plan.nodes[index].op else {
        return;
    };
    let run = exec.node(index);
    if run.status == NodeStatus::Executing && run.attempt == attempt {
        dispatch_attempt(exec, index, op, attempt, None, fx);
    }
}

fn dispatch_attempt(
    exec: &mut Execution,
    index: usize,
    op: &ActionOp,
    attempt: u32,
    previous_error: Option<String>,
    fx: &mut Effects,
) {
    match resolve_parameters(exec, op) {
        Ok(parameters) => {
            exec.mark_executing(index, attempt, Some(parameters.clone()), previous_error, fx);
            fx.actions
                .push(request(exec, index, op, parameters, attempt, None));
        }
        Err(error) => exec.resolve(index, NodeStatus::Failure, None, Some(error), fx),
    }
}
