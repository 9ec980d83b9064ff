//! Following an execution's events, and folding them into a summary of every node.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use walkoff_schema::{Event, EventKind, NodeStatus, WorkflowStatus};

use crate::bus::{Bus, BusError};

/// How long one read waits before asking again; only bounds each bus call.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// Every event of `execution_id` from `from_seq` on, ending after the final workflow event.
pub fn follow(
    bus: Arc<dyn Bus>,
    execution_id: String,
    from_seq: u64,
) -> impl Stream<Item = Result<Event, BusError>> + Send + 'static {
    let state = (
        bus,
        execution_id,
        from_seq.max(1),
        VecDeque::<Event>::new(),
        false,
    );
    futures::stream::unfold(state, |(bus, id, mut next, mut buffer, done)| async move {
        loop {
            if let Some(event) = buffer.pop_front() {
                let done = event.is_final();
                return Some((Ok(event), (bus, id, next, buffer, done)));
            }
            if done {
                return None;
            }
            match bus.read_events(&id, next, 1024, FOLLOW_WAIT).await {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        next = last.seq + 1;
                    }
                    buffer = events.into();
                }
                Err(e) => return Some((Err(e), (bus, id, next, buffer, true))),
            }
        }
    })
}

/// The state of an execution as its events tell it; what `walkoff run --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionSummary {
    pub execution_id: String,
    pub workflow_id: String,
    pub status: WorkflowStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// By label.
    pub nodes: BTreeMap<String, NodeSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    pub id: String,
    pub status: NodeStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl ExecutionSummary {
    pub fn new(execution_id: &str) -> ExecutionSummary {
        ExecutionSummary {
            execution_id: execution_id.to_string(),
            workflow_id: String::new(),
            status: WorkflowStatus::Pending,
            error: None,
            nodes: BTreeMap::new(),
        }
    }

    pub fn apply(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Workflow {
                workflow_id,
                status,
                error,
            } => {
                self.workflow_id.clone_from(workflow_id);
                self.status = *status;
                if error.is_some() {
                    self.error.clone_from(error);
                }
            }
            // Shard events describe parts of a node, not the node.
            EventKind::Node(node) if node.shard.is_some() => {}
            EventKind::Node(node) => {
                let summary = self
                    .nodes
                    .entry(node.label.clone())
                    .or_insert_with(|| NodeSummary {
                        id: node.node_id.clone(),
                        status: node.status,
                        result: None,
                        error: None,
                        attempts: 0,
                        started_at: None,
                        finished_at: None,
                    });
                summary.status = node.status;
                summary.attempts = summary.attempts.max(node.attempt);
                match node.status {
                    NodeStatus::Executing | NodeStatus::AwaitingData => {
                        summary.started_at.get_or_insert(event.at);
                        if node.error.is_some() {
                            summary.error.clone_from(&node.error);
                        }
                    }
                    _ => {
                        summary.finished_at = Some(event.at);
                        summary.result.clone_from(&node.result);
                        summary.error.clone_from(&node.error);
                    }
                }
            }
        }
    }
}
