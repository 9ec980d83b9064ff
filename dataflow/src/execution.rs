//! The state of one execution and the rules that move it forward.
//!
//! An [`Execution`] is a plain state machine: the runtime feeds it control messages and it answers
//! with [`Effects`] (events to publish, actions to dispatch, scripts to run, timers to arm). It never
//! waits, sleeps or polls, which keeps it testable and lets a later issue keep its state in Redis.
//!
//! Rules: a node is ready when every parent is resolved; it runs if at least one parent succeeded
//! along the edge to it (a condition succeeds only along the edges it selected), otherwise it is
//! SKIPPED, which propagates. Every node ends SUCCESS, FAILURE, SKIPPED or ABORTED.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use walkoff_schema::{
    ActionRequest, ControlMessage, Event, EventKind, ExecutionId, NodeEvent, NodeResult,
    NodeStatus, Outcome, StartExecution, WorkflowStatus,
};

use crate::compile::{Operator, Plan};
use crate::parallel::ParallelRun;
use crate::{action, condition, parallel, transform, trigger};

/// What applying a message asks the runtime to do, in order.
#[derive(Debug, Default)]
pub struct Effects {
    pub events: Vec<Event>,
    pub actions: Vec<ActionRequest>,
    pub scripts: Vec<ScriptJob>,
    /// Messages to deliver back to the execution after a delay (retry back-off, trigger
    /// timeouts); dropped when the execution ends first.
    pub timers: Vec<(Duration, ControlMessage)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.actions.is_empty()
            && self.scripts.is_empty()
            && self.timers.is_empty()
    }
}

/// A condition or transform to evaluate off the control loop.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScriptJob {
    pub execution_id: ExecutionId,
    pub node_id: String,
    pub attempt: u32,
    pub kind: ScriptKind,
    pub code: Arc<str>,
    /// Direct parents: (label, result).
    pub parents: Vec<(String, Value)>,
    /// A condition's children: (label, id).
    pub children: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScriptKind {
    Condition,
    Transform,
}

impl ScriptJob {
    /// Evaluate the script; the outcome comes back to the execution as a [`NodeResult`].
    pub fn run(self, limits: &crate::script::ScriptLimits) -> NodeResult {
        let started_at = Utc::now();
        let outcome = match self.kind {
            ScriptKind::Condition => condition::evaluate(&self, limits),
            ScriptKind::Transform => transform::evaluate(&self, limits),
        };
        NodeResult {
            execution_id: self.execution_id,
            node_id: self.node_id,
            shard: None,
            attempt: self.attempt,
            outcome,
            started_at,
            finished_at: Utc::now(),
        }
    }
}

/// The state of one node within an execution.
#[derive(Debug, Clone)]
pub struct NodeRun {
    pub status: NodeStatus,
    pub attempt: u32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub(crate) pending_parents: usize,
    pub(crate) succeeded_parents: usize,
    /// For a condition that succeeded: the children it selected.
    pub(crate) selected: Option<Vec<usize>>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    #[error("unknown workflow variable '{0}'")]
    UnknownVariable(String),
}

pub struct Execution {
    pub id: ExecutionId,
    pub plan: Arc<Plan>,
    pub(crate) variables: HashMap<String, Value>,
    pub(crate) globals: BTreeMap<String, Value>,
    pub(crate) nodes: Vec<NodeRun>,
    pub(crate) parallel: HashMap<usize, ParallelRun>,
    /// Trigger data delivered before its trigger was reached.
    pub(crate) early_triggers: HashMap<usize, Value>,
    ready: VecDeque<usize>,
    status: WorkflowStatus,
    seq: u64,
    unresolved: usize,
    failed: usize,
}

impl Execution {
    /// Create the execution and take its first steps: the start node runs, nodes that can never run
    /// are skipped.
    pub fn start(
        plan: Arc<Plan>,
        start: StartExecution,
        fx: &mut Effects,
    ) -> Result<Execution, ExecutionError> {
        let mut variables = plan.variables.clone();
        for (key, value) in start.variables {
            let variable = plan
                .workflow
                .variables
                .iter()
                .find(|v| v.id == key || v.name == key)
                .ok_or_else(|| ExecutionError::UnknownVariable(key.clone()))?;
            variables.insert(variable.id.clone(), value.clone());
            variables.insert(variable.name.clone(), value);
        }
        let nodes = plan
            .nodes
            .iter()
            .map(|n| NodeRun {
                status: NodeStatus::Pending,
                attempt: 0,
                result: None,
                error: None,
                started_at: None,
                finished_at: None,
                pending_parents: n.parents.len(),
                succeeded_parents: 0,
                selected: None,
            })
            .collect::<Vec<_>>();
        let mut execution = Execution {
            id: start.execution_id,
            unresolved: nodes.len(),
            nodes,
            variables,
            globals: start.globals,
            parallel: HashMap::new(),
            early_triggers: HashMap::new(),
            ready: VecDeque::new(),
            status: WorkflowStatus::Executing,
            seq: 0,
            failed: 0,
            plan,
        };
        execution.emit_workflow(WorkflowStatus::Executing, fx);
        execution.ready.push_back(execution.plan.start);
        // Nodes without parents other than the start can never become ready: skip them now.
        let plan = Arc::clone(&execution.plan);
        for (i, node) in plan.nodes.iter().enumerate() {
            if i != plan.start && node.parents.is_empty() {
                execution.resolve(i, NodeStatus::Skipped, None, None, fx);
            }
        }
        execution.run_ready(fx);
        Ok(execution)
    }

    pub fn status(&self) -> WorkflowStatus {
        self.status
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_terminal()
    }

    pub fn node(&self, index: usize) -> &NodeRun {
        &self.nodes[index]
    }

    /// Apply one control message (other than `Start`).
    pub fn apply(&mut self, message: ControlMessage, fx: &mut Effects) {
        if self.is_finished() {
            return;
        }
        match message {
            ControlMessage::Start(_) => {}
            ControlMessage::Result(result) => self.on_result(result, fx),
            ControlMessage::Results { results } => {
                for result in results {
                    if result.execution_id == self.id {
                        self.on_result(result, fx);
                    }
                }
            }
            ControlMessage::Trigger { node, data, .. } => {
                if let Some(index) = self.plan.find(&node) {
                    trigger::deliver(self, index, data, fx);
                }
            }
            ControlMessage::Abort { .. } => self.abort(fx),
            ControlMessage::Retry {
                node_id,
                shard,
                attempt,
                ..
            } => {
                if let Some(&index) = self.plan.by_id.get(&node_id) {
                    match shard {
                        Some(shard) => parallel::retry_shard(self, index, shard, attempt, fx),
                        None => action::retry(self, index, attempt, fx),
                    }
                }
            }
            ControlMessage::TriggerTimeout { node_id, .. } => {
                if let Some(&index) = self.plan.by_id.get(&node_id) {
                    trigger::expire(self, index, fx);
                }
            }
        }
        self.run_ready(fx);
    }

    fn on_result(&mut self, result: NodeResult, fx: &mut Effects) {
        let Some(&index) = self.plan.by_id.get(&result.node_id) else {
            return;
        };
        let run = &self.nodes[index];
        // Results of earlier attempts and redeliveries of settled ones change nothing.
        if run.status != NodeStatus::Executing {
            return;
        }
        if let Some(shard) = result.shard {
            parallel::on_shard_result(self, index, shard, result, fx);
            return;
        }
        if run.attempt != result.attempt {
            return;
        }
        match &self.plan.nodes[index].op {
            Operator::Condition(_) => condition::on_result(self, index, result.outcome, fx),
            Operator::Action(_) => action::on_result(self, index, result, fx),
            Operator::Transform(_) => match result.outcome {
                Outcome::Success { result } => {
                    self.resolve(index, NodeStatus::Success, Some(result), None, fx)
                }
                Outcome::Failure { error, .. } => {
                    self.resolve(index, NodeStatus::Failure, None, Some(error), fx)
                }
            },
            Operator::Parallel(_) | Operator::Trigger(_) => {}
        }
    }

    fn abort(&mut self, fx: &mut Effects) {
        let now = Utc::now();
        for index in 0..self.nodes.len() {
            if !self.nodes[index].status.is_terminal() {
                let run = &mut self.nodes[index];
                run.status = NodeStatus::Aborted;
                run.finished_at = Some(now);
                self.emit_node(index, NodeStatus::Aborted, None, None, None, fx);
            }
        }
        self.ready.clear();
        self.parallel.clear();
        self.unresolved = 0;
        self.status = WorkflowStatus::Aborted;
        self.emit_workflow(WorkflowStatus::Aborted, fx);
    }

    /// Start every node that became ready.
    fn run_ready(&mut self, fx: &mut Effects) {
        while let Some(index) = self.ready.pop_front() {
            if self.is_finished() {
                return;
            }
            self.activate(index, fx);
        }
        if self.unresolved == 0 && !self.is_finished() {
            self.status = if self.failed > 0 {
                WorkflowStatus::Failed
            } else {
                WorkflowStatus::Completed
            };
            self.emit_workflow(self.status, fx);
        }
    }

    fn activate(&mut self, index: usize, fx: &mut Effects) {
        let plan = Arc::clone(&self.plan);
        match &plan.nodes[index].op {
            Operator::Action(op) => action::activate(self, index, op, fx),
            Operator::Parallel(op) => parallel::activate(self, index, op, fx),
            Operator::Condition(op) => {
                condition::activate(self, index, &op.code, fx);
            }
            Operator::Transform(op) => {
                transform::activate(self, index, &op.code, fx);
            }
            Operator::Trigger(op) => trigger::activate(self, index, op.timeout, fx),
        }
    }

    /// Mark a node EXECUTING for `attempt` and announce it.
    pub(crate) fn mark_executing(
        &mut self,
        index: usize,
        attempt: u32,
        parameters: Option<Map<String, Value>>,
        previous_error: Option<String>,
        fx: &mut Effects,
    ) {
        let run = &mut self.nodes[index];
        run.status = NodeStatus::Executing;
        run.attempt = attempt;
        run.started_at.get_or_insert_with(Utc::now);
        self.emit_node(
            index,
            NodeStatus::Executing,
            parameters,
            None,
            previous_error,
            fx,
        );
    }

    /// Mark a node AWAITING_DATA and announce it.
    pub(crate) fn mark_awaiting(&mut self, index: usize, fx: &mut Effects) {
        let run = &mut self.nodes[index];
        run.status = NodeStatus::AwaitingData;
        run.attempt = 1;
        run.started_at = Some(Utc::now());
        self.emit_node(index, NodeStatus::AwaitingData, None, None, None, fx);
    }

    /// Settle a node and propagate to its children: ready ones are queued, unreachable ones skipped.
    pub(crate) fn resolve(
        &mut self,
        index: usize,
        status: NodeStatus,
        result: Option<Value>,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        let plan = Arc::clone(&self.plan);
        let mut settle = vec![(index, status, result, error)];
        while let Some((index, status, result, error)) = settle.pop() {
            let run = &mut self.nodes[index];
            if run.status.is_terminal() {
                continue;
            }
            run.status = status;
            run.finished_at = Some(Utc::now());
            run.result.clone_from(&result);
            run.error.clone_from(&error);
            self.unresolved -= 1;
            if status == NodeStatus::Failure {
                self.failed += 1;
            }
            self.emit_node(index, status, None, result, error, fx);

            for &child in &plan.nodes[index].children {
                let along_edge = status == NodeStatus::Success
                    && self.nodes[index]
                        .selected
                        .as_ref()
                        .is_none_or(|selected| selected.contains(&child));
                let child_run = &mut self.nodes[child];
                child_run.pending_parents -= 1;
                if along_edge {
                    child_run.succeeded_parents += 1;
                }
                if child_run.pending_parents == 0 && child_run.status == NodeStatus::Pending {
                    if child_run.succeeded_parents > 0 {
                        self.ready.push_back(child);
                    } else {
                        settle.push((child, NodeStatus::Skipped, None, None));
                    }
                }
            }
        }
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn emit_workflow(&mut self, status: WorkflowStatus, fx: &mut Effects) {
        let seq = self.next_seq();
        fx.events.push(Event {
            execution_id: self.id.clone(),
            seq,
            at: Utc::now(),
            kind: EventKind::Workflow {
                workflow_id: self.plan.workflow.id.clone(),
                status,
                error: None,
            },
        });
    }

    pub(crate) fn emit_node(
        &mut self,
        index: usize,
        status: NodeStatus,
        parameters: Option<Map<String, Value>>,
        result: Option<Value>,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        self.emit_node_event(index, status, None, parameters, result, error, fx);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit_node_event(
        &mut self,
        index: usize,
        status: NodeStatus,
        shard: Option<u32>,
        parameters: Option<Map<String, Value>>,
        result: Option<Value>,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        let seq = self.next_seq();
        let node = &self.plan.nodes[index];
        // A global's value never reaches an event, even sealed.
        let parameters = parameters.map(|mut p| {
            walkoff_schema::sealed::redact_sealed(&mut p);
            p
        });
        let attempt = match shard {
            Some(s) => self
                .parallel
                .get(&index)
                .map_or(0, |p| p.attempt_of(s as usize)),
            None => self.nodes[index].attempt,
        };
        fx.events.push(Event {
            execution_id: self.id.clone(),
            seq,
            at: Utc::now(),
            kind: EventKind::Node(NodeEvent {
                node_id: node.id.clone(),
                label: node.label.clone(),
                status,
                attempt,
                shard,
                parameters,
                result,
                error,
            }),
        });
    }
}
