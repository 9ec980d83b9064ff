//! Taking over executions: a worker that gains a partition (its owner died or left) rebuilds the
//! partition's running executions from their logs and restarts the local work the previous owner
//! had in hand, which no stream holds: scripts without a result in the log and timers.

use std::sync::Arc;
use std::time::Duration;

use walkoff_schema::ControlMessage;

use crate::bus::{BusError, Partition};
use crate::execution::{Effects, Execution, ScriptJob};
use crate::runtime::{carry_out, lock, Inner};

/// Load the running executions of a partition this worker just gained, and restart the local work
/// (scripts, timers) the previous owner may not have finished.
pub(crate) async fn restore_partition(
    inner: &Arc<Inner>,
    partition: Partition,
) -> Result<(), BusError> {
    let loaded = inner.bus.load_partition(partition).await?;
    if loaded.is_empty() {
        return Ok(());
    }
    let mut local = Effects::default();
    let count = loaded.len();
    {
        let mut executions = lock(&inner.executions);
        for (id, log) in loaded {
            if let Some((execution, outstanding)) = restore(inner, log) {
                local.scripts.extend(outstanding.scripts);
                local.timers.extend(outstanding.timers);
                executions.insert(id, execution);
            }
        }
    }
    tracing::info!(partition, executions = count, "partition loaded");
    carry_out(inner, local).await
}

/// Rebuild an execution from its log: the start, then every message applied, in order. Replaying
/// is deterministic; events and action requests it produces were committed the first time and are
/// dropped. Scripts and timers without an answer in the log are returned, to run again (a timer
/// runs its whole delay again: its first arming is not in the log).
pub(crate) fn restore(inner: &Inner, log: Vec<ControlMessage>) -> Option<(Execution, Effects)> {
    let mut messages = log.into_iter();
    let Some(ControlMessage::Start(start)) = messages.next() else {
        tracing::error!("an execution log does not open with its start");
        return None;
    };
    let id = start.execution_id.clone();
    // Executions of one workflow share its plan: a takeover of many is not many compilations.
    let plan = match inner.plans.compiled(&start.workflow) {
        Ok(plan) => plan,
        Err(problems) => {
            tracing::error!(execution = %id, %problems, "a logged execution no longer compiles");
            return None;
        }
    };
    let mut fx = Effects::default();
    let mut execution = match Execution::start(plan, *start, &mut fx) {
        Ok(execution) => execution,
        Err(e) => {
            tracing::error!(execution = %id, error = %e, "a logged execution cannot start");
            return None;
        }
    };
    let mut outstanding = Outstanding::default();
    outstanding.add(fx);
    for message in messages {
        outstanding.settle(&message);
        let mut fx = Effects::default();
        execution.apply(message, &mut fx);
        outstanding.add(fx);
    }
    if execution.is_finished() {
        lock(&inner.finished).insert(id);
        return None;
    }
    Some((execution, outstanding.into_effects()))
}

/// Local work asked for during a replay and not yet answered in the log.
#[derive(Default)]
struct Outstanding {
    scripts: Vec<ScriptJob>,
    timers: Vec<(Duration, ControlMessage)>,
}

impl Outstanding {
    fn add(&mut self, fx: Effects) {
        self.scripts.extend(fx.scripts);
        self.timers.extend(fx.timers);
    }

    fn settle(&mut self, message: &ControlMessage) {
        match message {
            ControlMessage::Result(r) if r.shard.is_none() => self
                .scripts
                .retain(|job| !(job.node_id == r.node_id && job.attempt == r.attempt)),
            ControlMessage::Retry { .. } | ControlMessage::TriggerTimeout { .. } => {
                self.timers.retain(|(_, timer)| timer != message)
            }
            _ => {}
        }
    }

    fn into_effects(self) -> Effects {
        Effects {
            scripts: self.scripts,
            timers: self.timers,
            ..Effects::default()
        }
    }
}
