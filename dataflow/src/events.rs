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
    let from_seq = from_seq.max(1);
    let state = Follow {
        bus,
        id: execution_id,
        next: from_seq,
        buffer: VecDeque::new(),
        // A reader resuming past the start first checks whether it resumes past the end.
        done: false,
        check_resume: from_seq > 1,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.buffer.pop_front() {
                state.done = event.is_final();
                return Some((Ok(event), state));
            }
            if state.done {
                return None;
            }
            if std::mem::take(&mut state.check_resume) {
                let before = state
                    .bus
                    .read_events(&state.id, state.next - 1, 1, Duration::ZERO)
                    .await;
                if before.is_ok_and(|e| e.first().is_some_and(Event::is_final)) {
                    return None;
                }
            }
            match state
                .bus
                .read_events(&state.id, state.next, 1024, FOLLOW_WAIT)
                .await
            {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        state.next = last.seq + 1;
                    }
                    state.buffer = events.into();
                }
                Err(e) => {
                    state.done = true;
                    return Some((Err(e), state));
                }
            }
        }
    })
}

struct Follow {
    bus: Arc<dyn Bus>,
    id: String,
    next: u64,
    buffer: VecDeque<Event>,
    done: bool,
    check_resume: bool,
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
