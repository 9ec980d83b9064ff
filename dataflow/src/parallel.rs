//! Parallel actions: split the parallelized list into shards, run them with bounded concurrency and
//! join their results in input order.
//!
//! Each shard receives a one-element list, as WALKOFF apps expect. The joined result concatenates
//! shard results that are lists and appends the others, so `echo_array` over `[1, 2, 3]` yields
//! `[1, 2, 3]` (WALKOFF 1.0 did the same but in random order, and split strings into characters).
//! A failed shard (after its retries) fails the node once every shard has finished, with every
//! shard's error listed.

use serde_json::{Map, Value};
use walkoff_schema::{NodeResult, NodeStatus, Outcome};

use crate::action::{self, AfterFailure};
use crate::compile::{Operator, ParallelOp};
use crate::execution::{Effects, Execution};

#[derive(Debug)]
pub(crate) struct ParallelRun {
    items: Vec<Value>,
    /// Resolved parameters other than the split one.
    base: Map<String, Value>,
    results: Vec<Option<Result<Value, String>>>,
    attempts: Vec<u32>,
    next: usize,
    in_flight: usize,
    done: usize,
}

impl ParallelRun {
    pub(crate) fn attempt_of(&self, shard: usize) -> u32 {
        self.attempts.get(shard).copied().unwrap_or(0)
    }
}

pub(crate) fn activate(exec: &mut Execution, index: usize, op: &ParallelOp, fx: &mut Effects) {
    let mut parameters = match action::resolve_parameters(exec, &op.action) {
        Ok(p) => p,
        Err(error) => return exec.resolve(index, NodeStatus::Failure, None, Some(error), fx),
    };
    exec.mark_executing(index, 1, Some(parameters.clone()), None, fx);
    let items = match parameters.remove(&op.split) {
        Some(Value::Array(items)) => items,
        other => {
            let found = other.map_or_else(|| "nothing".to_string(), |v| v.to_string());
            let error = format!(
                "parameter '{}' of a parallel action must be a list, found {found}",
                op.split
            );
            return exec.resolve(index, NodeStatus::Failure, None, Some(error), fx);
        }
    };
    if items.is_empty() {
        return exec.resolve(
            index,
            NodeStatus::Success,
            Some(Value::Array(Vec::new())),
            None,
            fx,
        );
    }
    let shards = items.len();
    exec.parallel.insert(
        index,
        ParallelRun {
            items,
            base: parameters,
            results: vec![None; shards],
            attempts: vec![0; shards],
            next: 0,
            in_flight: 0,
            done: 0,
        },
    );
    fill(exec, index, op, fx);
}

/// Dispatch queued shards until `concurrency` are in flight.
fn fill(exec: &mut Execution, index: usize, op: &ParallelOp, fx: &mut Effects) {
    loop {
        let Some(run) = exec.parallel.get_mut(&index) else {
            return;
        };
        if run.in_flight >= op.concurrency || run.next >= run.items.len() {
            return;
        }
        let shard = run.next;
        run.next += 1;
        run.in_flight += 1;
        run.attempts[shard] = 1;
        dispatch_shard(exec, index, op, shard, 1, fx);
    }
}

fn dispatch_shard(
    exec: &mut Execution,
    index: usize,
    op: &ParallelOp,
    shard: usize,
    attempt: u32,
    fx: &mut Effects,
) {
    let Some(run) = exec.parallel.get(&index) else {
        return;
    };
    let mut parameters = run.base.clone();
    parameters.insert(
        op.split.clone(),
        Value::Array(vec![run.items[shard].clone()]),
    );
    let request = action::request(
        exec,
        index,
        &op.action,
        parameters,
        attempt,
        Some(shard as u32),
    );
    fx.actions.push(request);
}

pub(crate) fn on_shard_result(
    exec: &mut Execution,
    index: usize,
    shard: u32,
    result: NodeResult,
    fx: &mut Effects,
) {
    let plan = std::sync::Arc::clone(&exec.plan);
    let Operator::Parallel(op) = &plan.nodes[index].op else {
        return;
    };
    let shard_index = shard as usize;
    {
        let Some(run) = exec.parallel.get(&index) else {
            return;
        };
        // Only shards already dispatched, at their current attempt, take a result.
        if shard_index >= run.next
            || run.results[shard_index].is_some()
            || result.attempt == 0
            || run.attempts[shard_index] != result.attempt
        {
            return;
        }
    }
    match result.outcome {
        Outcome::Success { result } => {
            settle_shard(exec, index, shard_index, Ok(result));
            exec.emit_node_event(
                index,
                NodeStatus::Success,
                Some(shard),
                None,
                None,
                None,
                fx,
            );
        }
        Outcome::Failure { error, retryable } => {
            match action::after_failure(
                exec,
                index,
                &op.action,
                result.attempt,
                retryable,
                Some(shard),
                fx,
            ) {
                AfterFailure::RetryNow(next) => {
                    set_attempt(exec, index, shard_index, next);
                    exec.emit_node_event(
                        index,
                        NodeStatus::Executing,
                        Some(shard),
                        None,
                        None,
                        Some(format!("attempt {} failed: {error}", result.attempt)),
                        fx,
                    );
                    dispatch_shard(exec, index, op, shard_index, next, fx);
                }
                AfterFailure::RetryLater(next) => {
                    exec.emit_node_event(
                        index,
                        NodeStatus::Executing,
                        Some(shard),
                        None,
                        None,
                        Some(format!(
                            "attempt {} failed: {error}; attempt {next} follows after back-off",
                            result.attempt
                        )),
                        fx,
                    );
                    set_attempt(exec, index, shard_index, next);
                }
                AfterFailure::GiveUp => {
                    settle_shard(exec, index, shard_index, Err(error.clone()));
                    exec.emit_node_event(
                        index,
                        NodeStatus::Failure,
                        Some(shard),
                        None,
                        None,
                        Some(error),
                        fx,
                    );
                }
            }
        }
    }
    fill(exec, index, op, fx);
    join_if_done(exec, index, fx);
}

fn set_attempt(exec: &mut Execution, index: usize, shard: usize, attempt: u32) {
    if let Some(run) = exec.parallel.get_mut(&index) {
        run.attempts[shard] = attempt;
    }
}

fn settle_shard(exec: &mut Execution, index: usize, shard: usize, outcome: Result<Value, String>) {
    if let Some(run) = exec.parallel.get_mut(&index) {
        run.results[shard] = Some(outcome);
        run.in_flight -= 1;
        run.done += 1;
    }
}

/// A back-off timer fired for a shard.
pub(crate) fn retry_shard(
    exec: &mut Execution,
    index: usize,
    shard: u32,
    attempt: u32,
    fx: &mut Effects,
) {
    let plan = std::sync::Arc::clone(&exec.plan);
    let Operator::Parallel(op) = &plan.nodes[index].op else {
        return;
    };
    let due = exec.parallel.get(&index).is_some_and(|run| {
        let s = shard as usize;
        s < run.next && attempt > 0 && run.results[s].is_none() && run.attempts[s] == attempt
    });
    if due {
        dispatch_shard(exec, index, op, shard as usize, attempt, fx);
    }
}

fn join_if_done(exec: &mut Execution, index: usize, fx: &mut Effects) {
    let finished = exec
        .parallel
        .get(&index)
        .is_some_and(|run| run.done == run.items.len());
    if !finished {
        return;
    }
    let Some(run) = exec.parallel.remove(&index) else {
        return;
    };
    let shards = run.items.len();
    let mut joined = Vec::with_capacity(shards);
    let mut errors = Vec::new();
    for (shard, (outcome, item)) in run.results.into_iter().zip(&run.items).enumerate() {
        match outcome {
            Some(Ok(Value::Array(values))) => joined.extend(values),
            Some(Ok(value)) => joined.push(value),
            Some(Err(error)) => errors.push(format!("shard {shard} ({item}): {error}")),
            None => errors.push(format!("shard {shard} ({item}): no result")),
        }
    }
    if errors.is_empty() {
        exec.resolve(
            index,
            NodeStatus::Success,
            Some(Value::Array(joined)),
            None,
            fx,
        );
    } else {
        let error = format!(
            "{} of {shards} shards failed: {}",
            errors.len(),
            errors.join("; ")
        );
        exec.resolve(index, NodeStatus::Failure, None, Some(error), fx);
    }
}
